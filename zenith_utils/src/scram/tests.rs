//! Tests of [`crate::scram`]: the RFC 7677 example, `postgres-protocol`'s
//! client and secrets as oracles, our client against our server, refusals,
//! and property tests that no input panics.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use proptest::prelude::*;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

use super::crypto::{auth_message, hmac, sha256, xor};
use super::*;
use crate::pq_proto::SqlState;

const PASSWORD: &str = "pencil";

/// A secret with few iterations, for tests that do not check PBKDF2.
fn cheap_secret() -> ScramSecret {
    ScramSecret::with_salt(PASSWORD, b"salt", 2)
}

fn secret() -> ScramSecret {
    ScramSecret::with_salt(PASSWORD, b"0123456789abcdef", DEFAULT_ITERATIONS)
}

/// `postgres-protocol`'s client (what PostgreSQL's Rust driver uses)
/// against our server. The client must accept everything our server
/// sends; the server's outcome is returned.
fn oracle_login(
    password: &str,
    channel_binding: ChannelBinding,
    mechanism: &str,
    server: &mut ServerExchange,
) -> Result<ScramKeys, ScramError> {
    let mut client = ScramSha256::new(password.as_bytes(), channel_binding);
    let first = server.client_first(mechanism, client.message())?;
    client
        .update(&first)
        .expect("the client accepts our server-first-message");
    let (last, keys) = server.client_final(client.message())?;
    client
        .finish(&last)
        .expect("the client verifies our server signature");
    Ok(keys)
}

/// Our client with `keys` against our server.
fn keys_login(keys: &ScramKeys, server: &mut ServerExchange) -> Result<ScramKeys, ScramError> {
    let mut client = ClientExchange::with_keys(keys.clone());
    let first = server.client_first(SCRAM_SHA_256, &client.client_first())?;
    let last = client.server_first(&first)?;
    let (server_final, recovered) = server.client_final(&last)?;
    client.server_final(&server_final)?;
    Ok(recovered)
}

#[test]
fn rfc7677_example() {
    // RFC 7677 §3 (user "user", password "pencil").
    let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let secret = ScramSecret::with_salt(PASSWORD, &salt, 4096);
    let mut server = ServerExchange::new(&secret, None);
    server.set_server_nonce("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    let first = server
        .client_first(SCRAM_SHA_256, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        .unwrap();
    assert_eq!(
        first,
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let (last, keys) = server
        .client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .unwrap();
    assert_eq!(last, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    assert_eq!(keys, ScramKeys::from_password(PASSWORD, &secret));
    assert!(secret.matches(&keys));
}

#[test]
fn oracle_client_with_the_right_password_gives_its_keys() {
    let secret = secret();
    let expected = ScramKeys::from_password(PASSWORD, &secret);
    for channel_binding in [None, Some(vec![7; 32])] {
        let mut server = ServerExchange::new(&secret, channel_binding);
        let keys = oracle_login(
            PASSWORD,
            ChannelBinding::unsupported(),
            SCRAM_SHA_256,
            &mut server,
        )
        .unwrap();
        assert_eq!(keys, expected);
        assert!(secret.matches(&keys));
        // The exchange is over.
        assert!(matches!(
            server.client_final(b"c=biws"),
            Err(ScramError::OutOfOrder(_))
        ));
    }
}

#[test]
fn oracle_client_with_a_wrong_password_is_28p01() {
    let secret = secret();
    let mut server = ServerExchange::new(&secret, None);
    let err = oracle_login(
        "pencil2",
        ChannelBinding::unsupported(),
        SCRAM_SHA_256,
        &mut server,
    )
    .unwrap_err();
    assert_eq!(err, ScramError::InvalidProof);
    assert_eq!(err.sql_state(), SqlState::INVALID_PASSWORD);
    assert_eq!(err.to_string(), "password authentication failed");
}

#[test]
fn channel_binding_with_the_servers_certificate() {
    let secret = secret();
    let hash = Sha256::digest(b"certificate").to_vec();
    let mut server = ServerExchange::new(&secret, Some(hash.clone()));
    assert_eq!(server.mechanisms(), [SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
    let keys = oracle_login(
        PASSWORD,
        ChannelBinding::tls_server_end_point(hash.clone()),
        SCRAM_SHA_256_PLUS,
        &mut server,
    )
    .unwrap();
    assert!(secret.matches(&keys));

    // A client whose TLS ends elsewhere (a man in the middle) sees another
    // certificate.
    let mut server = ServerExchange::new(&secret, Some(hash.clone()));
    let err = oracle_login(
        PASSWORD,
        ChannelBinding::tls_server_end_point(Sha256::digest(b"other").to_vec()),
        SCRAM_SHA_256_PLUS,
        &mut server,
    )
    .unwrap_err();
    assert_eq!(err, ScramError::ChannelBindingMismatch);
    assert_eq!(
        err.sql_state(),
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    );

    // Binding data, but the plain mechanism.
    let mut server = ServerExchange::new(&secret, Some(hash.clone()));
    let err = oracle_login(
        PASSWORD,
        ChannelBinding::tls_server_end_point(hash.clone()),
        SCRAM_SHA_256,
        &mut server,
    )
    .unwrap_err();
    assert!(matches!(err, ScramError::Malformed(_)), "{err:?}");
    assert_eq!(err.sql_state(), SqlState::PROTOCOL_VIOLATION);

    // PLUS, but no binding data.
    let mut server = ServerExchange::new(&secret, Some(hash));
    let err = oracle_login(
        PASSWORD,
        ChannelBinding::unsupported(),
        SCRAM_SHA_256_PLUS,
        &mut server,
    )
    .unwrap_err();
    assert!(matches!(err, ScramError::Malformed(_)), "{err:?}");
}

#[test]
fn plus_is_refused_when_not_offered() {
    let secret = cheap_secret();
    let mut server = ServerExchange::new(&secret, None);
    assert_eq!(server.mechanisms(), [SCRAM_SHA_256]);
    let err = oracle_login(
        PASSWORD,
        ChannelBinding::tls_server_end_point(vec![1; 32]),
        SCRAM_SHA_256_PLUS,
        &mut server,
    )
    .unwrap_err();
    assert_eq!(err, ScramError::InvalidMechanism);
    assert_eq!(err.sql_state(), SqlState::PROTOCOL_VIOLATION);
    for mechanism in ["", "PLAIN", "scram-sha-256", "SCRAM-SHA-1"] {
        let mut server = ServerExchange::new(&secret, Some(vec![1; 32]));
        assert_eq!(
            server.client_first(mechanism, b"n,,n=,r=abc"),
            Err(ScramError::InvalidMechanism)
        );
    }
}

#[test]
fn a_client_that_thinks_the_server_cannot_bind() {
    let secret = cheap_secret();
    // "y" to a server that offered PLUS: the offer was tampered with.
    let mut server = ServerExchange::new(&secret, Some(vec![1; 32]));
    let err = oracle_login(
        PASSWORD,
        ChannelBinding::unrequested(),
        SCRAM_SHA_256,
        &mut server,
    )
    .unwrap_err();
    assert_eq!(err, ScramError::ChannelBindingDowngrade);
    assert_eq!(
        err.sql_state(),
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    );
    // "y" to a server without TLS is right.
    let mut server = ServerExchange::new(&secret, None);
    let keys = oracle_login(
        PASSWORD,
        ChannelBinding::unrequested(),
        SCRAM_SHA_256,
        &mut server,
    )
    .unwrap();
    assert!(secret.matches(&keys));
}

#[test]
fn secrets_of_postgres_protocol_parse_and_match() {
    // ASCII; a soft hyphen SASLprep removes; NFKC folding (ﬁ -> fi); a
    // control character SASLprep prohibits (used as it is).
    for password in ["pencil", "pen\u{ad}cil", "\u{fb01}sh", "bell\u{7}", ""] {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let secret = ScramSecret::parse(&text).unwrap();
        assert_eq!(secret.to_string(), text);
        assert_eq!(secret.iterations, DEFAULT_ITERATIONS);
        assert_eq!(secret.salt.len(), DEFAULT_SALT_LEN);
        assert_eq!(
            ScramSecret::with_salt(password, &secret.salt, secret.iterations),
            secret,
            "{password:?}"
        );
        assert!(secret.matches(&ScramKeys::from_password(password, &secret)));
        assert!(!secret.matches(&ScramKeys::from_password("x", &secret)));
    }
    // SASLprep maps the soft hyphen to nothing: both spellings work.
    let text = postgres_protocol::password::scram_sha_256("pencil".as_bytes());
    let secret = ScramSecret::parse(&text).unwrap();
    assert!(secret.matches(&ScramKeys::from_password("pen\u{ad}cil", &secret)));
}

#[test]
fn new_secrets_use_postgres_defaults() {
    let a = ScramSecret::from_password(PASSWORD);
    let b = ScramSecret::from_password(PASSWORD);
    assert_eq!(a.iterations, 4096);
    assert_eq!(a.salt.len(), 16);
    assert_ne!(a.salt, b.salt);
    assert_ne!(a.stored_key, b.stored_key);
    assert_eq!(ScramSecret::parse(&a.to_string()).unwrap(), a);
    assert!(a.matches(&ScramKeys::from_password(PASSWORD, &a)));
    // The oracle client logs in against it.
    let mut server = ServerExchange::new(&a, None);
    oracle_login(
        PASSWORD,
        ChannelBinding::unsupported(),
        SCRAM_SHA_256,
        &mut server,
    )
    .unwrap();
}

#[test]
fn matches_wants_both_keys() {
    let secret = cheap_secret();
    let keys = ScramKeys::from_password(PASSWORD, &secret);
    assert!(secret.matches(&keys));
    let mut bad = keys.clone();
    bad.server_key[0] ^= 1;
    assert!(!secret.matches(&bad));
    assert_ne!(bad, keys);
    let mut bad = keys.clone();
    bad.client_key[31] ^= 0x80;
    assert!(!secret.matches(&bad));
}

#[test]
fn invalid_secrets() {
    let good = cheap_secret().to_string();
    let (head, keys) = good.rsplit_once('$').unwrap();
    let (stored, server) = keys.split_once(':').unwrap();
    let short = BASE64.encode([0u8; 31]);
    let cases = [
        String::new(),
        "md5abcdef".to_string(),
        good.replace("SCRAM-SHA-256", "SCRAM-SHA-1"),
        good.replace("$2:", "$0:"),
        good.replace("$2:", "$+2:"),
        good.replace("$2:", "$-2:"),
        good.replace("$2:", "$ 2:"),
        good.replace("$2:", "$4294967296:"),
        good.replace("$2:", "$:"),
        good.replace("$2:c2FsdA==", "$2:"),
        good.replace("c2FsdA==", "c2FsdA="),
        good.replace("c2FsdA==", "c2Fsd!=="),
        format!("{head}${stored}"),
        format!("{head}${stored}:{short}"),
        format!("{head}${short}:{server}"),
        format!("{head}${stored}:{server}:"),
        format!("{head}${stored}:{server}\n"),
        format!("{head}:{stored}:{server}"),
    ];
    assert!(ScramSecret::parse(&good).is_ok());
    for case in cases {
        let err = ScramSecret::parse(&case).unwrap_err();
        assert!(matches!(err, ScramError::InvalidSecret(_)), "{case:?}");
        assert_eq!(err.sql_state(), SqlState::INTERNAL_ERROR);
        assert!(!err.to_string().contains(stored));
    }
}

#[test]
fn nothing_secret_in_debug_output() {
    let secret = secret();
    let keys = ScramKeys::from_password(PASSWORD, &secret);
    let mut server = ServerExchange::new(&secret, Some(vec![1; 32]));
    server
        .client_first(SCRAM_SHA_256_PLUS, b"p=tls-server-end-point,,n=,r=a")
        .unwrap();
    let client = ClientExchange::with_keys(keys.clone());
    let text = format!("{secret:?} {keys:?} {server:?} {client:?}");
    for key in [secret.stored_key, secret.server_key, keys.client_key] {
        assert!(!text.contains(&BASE64.encode(key)), "{text}");
        assert!(!text.contains(&hex::encode(key)), "{text}");
        assert!(!text.contains(&format!("{:?}", &key[..4])), "{text}");
    }
}

#[test]
fn our_client_logs_in_with_keys() {
    let secret = secret();
    let keys = ScramKeys::from_password(PASSWORD, &secret);
    let mut server = ServerExchange::new(&secret, None);
    assert_eq!(keys_login(&keys, &mut server).unwrap(), keys);

    // The keys the server recovers from a password login work as well.
    let mut server = ServerExchange::new(&secret, Some(vec![3; 32]));
    let recovered = oracle_login(
        PASSWORD,
        ChannelBinding::unsupported(),
        SCRAM_SHA_256,
        &mut server,
    )
    .unwrap();
    let mut server = ServerExchange::new(&secret, None);
    keys_login(&recovered, &mut server).unwrap();

    // Wrong keys.
    let mut wrong = keys.clone();
    wrong.client_key[0] ^= 1;
    let mut server = ServerExchange::new(&secret, None);
    assert_eq!(
        keys_login(&wrong, &mut server),
        Err(ScramError::InvalidProof)
    );
    let other = ScramKeys::from_password("other", &secret);
    let mut server = ServerExchange::new(&secret, None);
    assert_eq!(
        keys_login(&other, &mut server),
        Err(ScramError::InvalidProof)
    );
}

#[test]
fn our_client_checks_the_server() {
    let secret = cheap_secret();
    let keys = ScramKeys::from_password(PASSWORD, &secret);
    let run = |tamper: &dyn Fn(Vec<u8>) -> Vec<u8>| {
        let mut server = ServerExchange::new(&secret, None);
        let mut client = ClientExchange::with_keys(keys.clone());
        let first = server
            .client_first(SCRAM_SHA_256, &client.client_first())
            .unwrap();
        let last = client.server_first(&first).unwrap();
        let (server_final, _) = server.client_final(&last).unwrap();
        client.server_final(&tamper(server_final))
    };
    assert_eq!(run(&|m| m), Ok(()));
    // A server that does not hold the secret cannot sign.
    let flipped = |m: Vec<u8>| {
        let mut sig = BASE64.decode(&m[2..]).unwrap();
        sig[5] ^= 1;
        format!("v={}", BASE64.encode(sig)).into_bytes()
    };
    let err = run(&flipped).unwrap_err();
    assert_eq!(err, ScramError::InvalidServerSignature);
    assert_eq!(
        err.sql_state(),
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    );
    let err = run(&|_| b"e=invalid-proof".to_vec()).unwrap_err();
    assert_eq!(err, ScramError::ServerError("invalid-proof".into()));
    assert_eq!(err.sql_state(), SqlState::INVALID_PASSWORD);
    let err = run(&|_| b"e=other-error\x7f\xff".to_vec()).unwrap_err();
    assert_eq!(err, ScramError::ServerError("other-error??".into()));
    assert_eq!(
        err.sql_state(),
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    );
    for bad in [&b""[..], b"v=", b"v=abc", b"x=1", b"v=AAAA,1"] {
        assert!(
            matches!(run(&|_| bad.to_vec()), Err(ScramError::Malformed(_))),
            "{bad:?}"
        );
    }
    let extended = |m: Vec<u8>| [m, b",x=ext".to_vec()].concat();
    assert_eq!(run(&extended), Ok(()));
}

#[test]
fn our_client_refuses_bad_server_first_messages() {
    let mut client = ClientExchange::with_keys(ScramKeys::from_password("x", &cheap_secret()));
    client.set_client_nonce("abc");
    assert_eq!(client.client_first(), b"n,,n=,r=abc");
    let cases: [&[u8]; 12] = [
        b"",
        b"r=abc,s=c2FsdA==,i=1",
        b"r=abX1,s=c2FsdA==,i=1",
        b"r=abc1,s=c2FsdA==,i=0",
        b"r=abc1,s=c2FsdA==,i=x",
        b"r=abc1,s=,i=1",
        b"r=abc1,s=!!,i=1",
        b"r=abc1,i=1,s=c2FsdA==",
        b"r=abc 1,s=c2FsdA==,i=1",
        b"r=abc1,s=c2FsdA==,i=1,",
        b"m=x,r=abc1,s=c2FsdA==,i=1",
        b"r=abc1,s=c2FsdA==,i=1\0",
    ];
    for case in cases {
        let mut c = ClientExchange::with_keys(client.keys.clone());
        c.set_client_nonce("abc");
        let err = c.server_first(case).unwrap_err();
        assert!(
            matches!(err, ScramError::Malformed(_) | ScramError::Unsupported(_)),
            "{case:?}: {err:?}"
        );
        // Refused once, the exchange is over.
        assert!(matches!(
            c.server_first(b"r=abc1,s=c2FsdA==,i=1"),
            Err(ScramError::OutOfOrder(_))
        ));
    }
    assert!(matches!(
        client.server_final(b"v=AAAA"),
        Err(ScramError::OutOfOrder(_))
    ));
    let last = client.server_first(b"r=abc1,s=c2FsdA==,i=1,x=y").unwrap();
    assert!(last.starts_with(b"c=biws,r=abc1,p="));
}

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

/// A minimal DER certificate: `SEQUENCE { SEQUENCE {}, SEQUENCE { OID },
/// BIT STRING }`, with the outer length in long form.
fn fake_cert(oid: &[u8]) -> Vec<u8> {
    let mut alg = vec![0x06, oid.len() as u8];
    alg.extend_from_slice(oid);
    let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
    body.extend_from_slice(&alg);
    body.extend_from_slice(&[0x03, 0x01, 0x00]);
    let mut cert = vec![0x30, 0x81, body.len() as u8];
    cert.extend_from_slice(&body);
    cert
}

#[test]
fn tls_server_end_point_hashes_like_the_signature() {
    let sha = |cert: &[u8], len| match len {
        28 => Sha224::digest(cert).to_vec(),
        32 => Sha256::digest(cert).to_vec(),
        48 => Sha384::digest(cert).to_vec(),
        _ => Sha512::digest(cert).to_vec(),
    };
    for (alg, len) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, 32),
        (&rcgen::PKCS_ECDSA_P384_SHA384, 48),
        (&rcgen::PKCS_ED25519, 32),
    ] {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der: &[u8] = cert.der();
        assert_eq!(tls_server_end_point(der), sha(der, len), "{alg:?}");
    }
    let rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    let ecdsa = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    for (oid, len) in [
        ([&rsa[..], &[4]].concat(), 32),  // md5WithRSAEncryption
        ([&rsa[..], &[5]].concat(), 32),  // sha1WithRSAEncryption
        ([&rsa[..], &[10]].concat(), 32), // RSASSA-PSS
        ([&rsa[..], &[11]].concat(), 32),
        ([&rsa[..], &[12]].concat(), 48),
        ([&rsa[..], &[13]].concat(), 64),
        ([&rsa[..], &[14]].concat(), 28),
        ([&ecdsa[..], &[1]].concat(), 28),
        ([&ecdsa[..], &[2]].concat(), 32),
        ([&ecdsa[..], &[3]].concat(), 48),
        ([&ecdsa[..], &[4]].concat(), 64),
        (vec![0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01], 32), // ecdsa-with-SHA1
        (vec![0x2b, 0x65, 0x70], 32),                         // Ed25519
    ] {
        let cert = fake_cert(&oid);
        assert_eq!(tls_server_end_point(&cert), sha(&cert, len), "{oid:x?}");
    }
    // Not a certificate: SHA-256.
    for junk in [&b""[..], b"\x30", b"\x30\x85\xff\xff\xff\xff\xff", b"hello"] {
        assert_eq!(tls_server_end_point(junk), sha(junk, 32));
    }
    let mut truncated = fake_cert(&[&rsa[..], &[13]].concat());
    truncated.truncate(truncated.len() - 4);
    assert_eq!(tls_server_end_point(&truncated), sha(&truncated, 32));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn secret_parser_never_panics(s in ".{0,120}", t in "SCRAM-SHA-256\\$[0-9]{0,11}:[A-Za-z0-9+/=]{0,30}\\$[A-Za-z0-9+/=]{0,46}:[A-Za-z0-9+/=]{0,46}") {
        let _ = ScramSecret::parse(&s);
        if let Ok(secret) = ScramSecret::parse(&t) {
            prop_assert_eq!(ScramSecret::parse(&secret.to_string()).unwrap(), secret);
        }
    }

    #[test]
    fn secrets_round_trip(
        iterations in 1u32..,
        salt in proptest::collection::vec(any::<u8>(), 1..64),
        stored_key in any::<[u8; 32]>(),
        server_key in any::<[u8; 32]>(),
    ) {
        let secret = ScramSecret { iterations, salt, stored_key, server_key };
        prop_assert_eq!(ScramSecret::parse(&secret.to_string()).unwrap(), secret);
    }

    #[test]
    fn server_never_panics(
        (mechanism, binding, first) in client_first_message(),
        last in client_final_message(),
    ) {
        let secret = cheap_secret();
        let mut server = ServerExchange::new(&secret, binding.then(|| vec![9; 32]));
        if let Ok(server_first) = server.client_first(mechanism, &first) {
            let last = fill_in_client_final(&last, &first, &server_first);
            match server.client_final(&last) {
                Ok(_) => prop_assert!(false, "a random proof was accepted"),
                Err(e) => prop_assert_ne!(e.sql_state(), SqlState::INTERNAL_ERROR),
            }
        }
        let _ = server.client_final(&last);
    }

    #[test]
    fn client_never_panics(first in server_first_message(), last in server_final_message()) {
        let keys = ScramKeys::from_password(PASSWORD, &cheap_secret());
        let mut client = ClientExchange::with_keys(keys);
        let nonce = client.client_nonce.clone();
        let first = replace(&first, b"@@", nonce.as_bytes());
        if client.server_first(&first).is_ok() {
            prop_assert!(client.server_final(&last).is_err());
        }
        prop_assert!(client.server_final(&last).is_err());
    }

    #[test]
    fn end_point_never_panics(der in proptest::collection::vec(any::<u8>(), 0..256)) {
        let hash = tls_server_end_point(&der);
        prop_assert!([28, 32, 48, 64].contains(&hash.len()));
    }
}

// Strategies for messages that are mostly well formed, so that the
// property tests get past the first checks as well: random bytes alone
// hardly ever make a client-first-message the server accepts.

/// Printable characters except ',' (RFC 5802 `printable`), mostly.
const VALUE: &str = "[!-+\\--~]";

fn re(pattern: &str) -> BoxedStrategy<String> {
    proptest::string::string_regex(pattern)
        .expect("a valid regex")
        .boxed()
}

fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

/// `(mechanism, server offers binding, client-first-message)`.
fn client_first_message() -> impl Strategy<Value = (&'static str, bool, Vec<u8>)> {
    let flag = prop_oneof![
        3 => Just("n"),
        2 => Just("y"),
        3 => Just("p=tls-server-end-point"),
        1 => Just("p=tls-unique"),
        1 => Just(""),
    ];
    let authzid = prop_oneof![9 => Just(",,"), 1 => Just(",a=b,"), 1 => Just(",")];
    let mext = prop_oneof![9 => Just(""), 1 => Just("m=x,")];
    let user = prop_oneof![9 => re("n=[a-z]{0,3},"), 1 => Just(String::new())];
    let nonce = re(&format!("r={VALUE}{{0,8}}"));
    let ext = prop_oneof![8 => Just(String::new()), 2 => re(&format!("(,[a-z1]={VALUE}{{0,3}}){{1,2}}")), 1 => Just(",".into())];
    let message = (
        flag,
        authzid,
        mext,
        user,
        nonce,
        ext,
        0..10u8,
        any::<bool>(),
    )
        .prop_map(|(flag, authzid, mext, user, nonce, ext, choice, binding)| {
            let mechanism = match choice {
                0..=7 if flag.starts_with("p=") => SCRAM_SHA_256_PLUS,
                0..=7 => SCRAM_SHA_256,
                8 => SCRAM_SHA_256_PLUS,
                _ => "SCRAM-SHA-1",
            };
            let binding = binding || mechanism == SCRAM_SHA_256_PLUS && choice < 7;
            let m = format!("{flag}{authzid}{mext}{user}{nonce}{ext}");
            (mechanism, binding, m.into_bytes())
        });
    prop_oneof![
        4 => message,
        1 => (any::<bool>(), random_bytes()).prop_map(|(b, m)| (SCRAM_SHA_256, b, m)),
    ]
}

/// A client-final-message where `@C` stands for the right channel binding
/// and `@@` for the combined nonce ([`fill_in_client_final`]).
fn client_final_message() -> impl Strategy<Value = Vec<u8>> {
    let cbind = prop_oneof![
        6 => Just("c=@C,".to_string()),
        1 => Just("c=biws,".into()),
        1 => Just("c=eSws,".into()),
        1 => re("c=[A-Za-z0-9+/=]{0,12},"),
        1 => Just(String::new()),
    ];
    let nonce = prop_oneof![
        7 => Just("r=@@,".to_string()),
        1 => re(&format!("r={VALUE}{{0,4}},")),
        1 => Just(String::new()),
    ];
    let ext =
        prop_oneof![8 => Just(String::new()), 2 => re(&format!("([a-z1]={VALUE}{{0,3}},){{1,2}}"))];
    let proof = prop_oneof![
        6 => any::<[u8; 32]>().prop_map(|p| format!("p={}", BASE64.encode(p))),
        2 => re("p=[A-Za-z0-9+/=]{0,48}"),
        1 => Just(String::new()),
    ];
    let tail = prop_oneof![9 => Just(""), 1 => Just(",x=1"), 1 => Just("\0")];
    let message = (cbind, nonce, ext, proof, tail)
        .prop_map(|(c, r, e, p, t)| format!("{c}{r}{e}{p}{t}").into_bytes());
    prop_oneof![4 => message, 1 => random_bytes()]
}

/// Puts the channel binding a client would send for `client_first` in
/// place of `@C`, and the nonce of `server_first` in place of `@@`.
fn fill_in_client_final(last: &[u8], client_first: &[u8], server_first: &[u8]) -> Vec<u8> {
    let header_len = client_first
        .iter()
        .enumerate()
        .filter(|(_, &c)| c == b',')
        .nth(1)
        .map_or(0, |(i, _)| i + 1);
    let mut cbind_input = client_first[..header_len].to_vec();
    if cbind_input.starts_with(b"p=") {
        cbind_input.extend_from_slice(&[9; 32]);
    }
    let nonce = &server_first
        .split(|&c| c == b',')
        .next()
        .unwrap_or_default()[2..];
    let last = replace(last, b"@C", BASE64.encode(cbind_input).as_bytes());
    replace(&last, b"@@", nonce)
}

/// A server-first-message where `@@` stands for the client's nonce.
fn server_first_message() -> impl Strategy<Value = Vec<u8>> {
    let mext = prop_oneof![9 => Just(""), 1 => Just("m=x,")];
    let nonce = prop_oneof![
        7 => re(&format!("r=@@{VALUE}{{1,4}}")),
        1 => Just("r=@@".to_string()),
        1 => re(&format!("r={VALUE}{{0,6}}")),
    ];
    let salt = prop_oneof![
        7 => proptest::collection::vec(any::<u8>(), 1..20).prop_map(|s| BASE64.encode(s)),
        2 => re("[A-Za-z0-9+/=]{0,12}"),
    ];
    let iterations =
        prop_oneof![8 => (1..100_000u32).prop_map(|i| i.to_string()), 2 => re("[0-9]{0,11}")];
    let ext =
        prop_oneof![8 => Just(String::new()), 2 => re(",[a-z1]=[^,]{0,3}"), 1 => Just(",".into())];
    let message = (mext, nonce, salt, iterations, ext)
        .prop_map(|(m, r, s, i, e)| format!("{m}{r},s={s},i={i}{e}").into_bytes());
    prop_oneof![4 => message, 1 => random_bytes()]
}

fn server_final_message() -> impl Strategy<Value = Vec<u8>> {
    let message = prop_oneof![
        6 => any::<[u8; 32]>().prop_map(|v| format!("v={}", BASE64.encode(v))),
        2 => re("(v|e|x)=[A-Za-z0-9+/=]{0,48}(,[a-z]=[^,]{0,3})?"),
    ];
    prop_oneof![4 => message.prop_map(String::into_bytes), 1 => random_bytes()]
}

fn replace(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    match data.windows(from.len()).position(|w| w == from) {
        Some(i) => [&data[..i], to, &data[i + from.len()..]].concat(),
        None => data.to_vec(),
    }
}
