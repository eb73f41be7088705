//! Our server against `postgres-protocol`'s client: the RFC 7677 example,
//! right and wrong passwords, channel binding and its negotiation.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use postgres_protocol::authentication::sasl::ChannelBinding;
use sha2::{Digest, Sha256};

use super::{cheap_secret, oracle_login, secret, PASSWORD};
use crate::pq_proto::SqlState;
use crate::scram::*;

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
