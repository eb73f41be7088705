//! Client messages our server refuses, and the errors it answers with.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::{cheap_secret, PASSWORD};
use crate::pq_proto::SqlState;
use crate::scram::crypto::{auth_message, hmac, sha256, xor};
use crate::scram::*;

#[test]
fn client_first_messages_the_server_refuses() {
    use ScramError as E;
    let secret = cheap_secret();
    let cases: &[(&[u8], &str, E)] = &[
        (b"", SCRAM_SHA_256, E::Malformed("the message is empty")),
        (
            b"n,,n=,r=abc\0",
            SCRAM_SHA_256,
            E::Malformed("the message contains a NUL byte"),
        ),
        (
            b"x,,n=,r=abc",
            SCRAM_SHA_256,
            E::Malformed("unexpected channel-binding flag"),
        ),
        (
            b"n",
            SCRAM_SHA_256,
            E::Malformed("the GS2 header is incomplete"),
        ),
        (
            b"n,",
            SCRAM_SHA_256,
            E::Malformed("the GS2 header is incomplete"),
        ),
        (
            b"n,x,n=,r=abc",
            SCRAM_SHA_256,
            E::Malformed("unexpected attribute in the GS2 header"),
        ),
        (
            b"n,a=admin,n=,r=abc",
            SCRAM_SHA_256,
            E::Unsupported("client uses authorization identity, but it is not supported"),
        ),
        (
            b"n,,m=ext,n=,r=abc",
            SCRAM_SHA_256,
            E::Unsupported("client requires an unsupported SCRAM extension"),
        ),
        (
            b"p=tls-unique,,n=,r=abc",
            SCRAM_SHA_256_PLUS,
            E::UnsupportedChannelBinding,
        ),
        (
            b"n,,",
            SCRAM_SHA_256,
            E::Malformed("expected the user name attribute \"n\""),
        ),
        (
            b"n,,r=abc",
            SCRAM_SHA_256,
            E::Malformed("expected the user name attribute \"n\""),
        ),
        (
            b"n,,n=",
            SCRAM_SHA_256,
            E::Malformed("expected the nonce attribute \"r\""),
        ),
        (
            b"n,,n=,s=abc",
            SCRAM_SHA_256,
            E::Malformed("expected the nonce attribute \"r\""),
        ),
        (
            b"n,,n=,r=",
            SCRAM_SHA_256,
            E::Malformed("the nonce is empty or has non-printable characters"),
        ),
        (
            b"n,,n=,r=a\x7fb",
            SCRAM_SHA_256,
            E::Malformed("the nonce is empty or has non-printable characters"),
        ),
        (
            b"n,,n=,r=abc,",
            SCRAM_SHA_256,
            E::Malformed("an attribute was expected, but the message ends"),
        ),
        (
            b"n,,n=,r=abc,1=x",
            SCRAM_SHA_256,
            E::Malformed("an attribute is not of the form x=value"),
        ),
    ];
    for (data, mechanism, expected) in cases {
        let mut server = ServerExchange::new(&secret, Some(vec![1; 32]));
        let err = server.client_first(mechanism, data).unwrap_err();
        assert_eq!(&err, expected, "{:?}", String::from_utf8_lossy(data));
        let state = err.sql_state();
        assert!(
            state == SqlState::PROTOCOL_VIOLATION || state == SqlState::FEATURE_NOT_SUPPORTED,
            "{err:?}"
        );
        // Refused once, the exchange is over.
        assert!(matches!(
            server.client_first(SCRAM_SHA_256, b"n,,n=,r=abc"),
            Err(E::OutOfOrder(_))
        ));
    }
    // Accepted: a user name (ignored) and extensions.
    let mut server = ServerExchange::new(&secret, None);
    let first = server
        .client_first(SCRAM_SHA_256, b"n,,n=someone,r=abc,x=1,Y=")
        .unwrap();
    assert!(first.starts_with(b"r=abc"));
    assert!(first.ends_with(b",s=c2FsdA==,i=2"));
}

/// A server that has answered client-first `n,,n=,r=abc`, and the
/// client-final-message-without-proof prefix it expects.
fn server_after_first(secret: &ScramSecret) -> (ServerExchange, Vec<u8>, Vec<u8>) {
    let mut server = ServerExchange::new(secret, None);
    server.set_server_nonce("XYZ");
    let first = server.client_first(SCRAM_SHA_256, b"n,,n=,r=abc").unwrap();
    (server, first, b"c=biws,r=abcXYZ".to_vec())
}

/// A proof for `without_proof` computed as a client with `password`.
fn proof(secret: &ScramSecret, server_first: &[u8], without_proof: &[u8]) -> String {
    let keys = ScramKeys::from_password(PASSWORD, secret);
    let auth = auth_message(b"n=,r=abc", server_first, without_proof);
    let p = xor(&keys.client_key, &hmac(&sha256(&keys.client_key), &auth));
    BASE64.encode(p)
}

#[test]
fn client_final_messages() {
    let secret = cheap_secret();
    // Extensions before the proof count in the AuthMessage.
    let (mut server, first, prefix) = server_after_first(&secret);
    let without_proof = [&prefix[..], b",x=1,y=2"].concat();
    let p = proof(&secret, &first, &without_proof);
    let last = [&without_proof[..], b",p=", p.as_bytes()].concat();
    server.client_final(&last).unwrap();

    let (_, first, prefix) = server_after_first(&secret);
    let good_proof = proof(&secret, &first, &prefix);
    let cases: Vec<(Vec<u8>, ScramError)> = vec![
        (
            format!("c=eSws,r=abcXYZ,p={good_proof}").into_bytes(),
            ScramError::Malformed(
                "unexpected channel-binding attribute in the client-final-message",
            ),
        ),
        (
            format!("c=biws,r=abcXYz,p={good_proof}").into_bytes(),
            ScramError::Malformed("the nonce does not match"),
        ),
        (
            format!("c=biws,r=abc,p={good_proof}").into_bytes(),
            ScramError::Malformed("the nonce does not match"),
        ),
        (
            format!("r=abcXYZ,c=biws,p={good_proof}").into_bytes(),
            ScramError::Malformed("expected the channel-binding attribute \"c\""),
        ),
        (
            b"c=biws,r=abcXYZ".to_vec(),
            ScramError::Malformed("the client-final-message has no proof"),
        ),
        (
            format!("c=biws,r=abcXYZ,p={good_proof},x=1").into_bytes(),
            ScramError::Malformed("garbage found after the proof in the client-final-message"),
        ),
        (
            b"c=biws,r=abcXYZ,p=AAAA".to_vec(),
            ScramError::Malformed(
                "the proof in the client-final-message is not 32 bytes of base64",
            ),
        ),
        (
            format!("c=biws,r=abcXYZ,p={}", BASE64.encode([0u8; 32])).into_bytes(),
            ScramError::InvalidProof,
        ),
        (
            format!("c=biws,r=abcXYZ,x=1,p={good_proof}").into_bytes(),
            ScramError::InvalidProof,
        ),
        (
            format!("c=biws,r=abcXYZ,p={good_proof}\0").into_bytes(),
            ScramError::Malformed("the message contains a NUL byte"),
        ),
    ];
    for (data, expected) in cases {
        let (mut server, _, _) = server_after_first(&secret);
        assert_eq!(
            server.client_final(&data),
            Err(expected),
            "{:?}",
            String::from_utf8_lossy(&data)
        );
        assert!(matches!(
            server.client_final(&data),
            Err(ScramError::OutOfOrder(_))
        ));
    }
    let (mut server, _, prefix) = server_after_first(&secret);
    let (last, _) = server
        .client_final(&[&prefix[..], b",p=", good_proof.as_bytes()].concat())
        .unwrap();
    assert!(last.starts_with(b"v="));

    let mut fresh = ServerExchange::new(&secret, None);
    assert!(matches!(
        fresh.client_final(b"c=biws,r=abc,p=AAAA"),
        Err(ScramError::OutOfOrder(_))
    ));
}
