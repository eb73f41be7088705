//! Our client, with keys instead of a password, against our server and
//! against servers that misbehave.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use postgres_protocol::authentication::sasl::ChannelBinding;

use super::{cheap_secret, keys_login, oracle_login, secret, PASSWORD};
use crate::pq_proto::SqlState;
use crate::scram::*;

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
