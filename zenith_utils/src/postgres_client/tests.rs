//! Tests of [`crate::postgres_client`]: connection strings, and logging in
//! with SCRAM (keys or password) against a [`crate::scram`] server.

use super::*;
use crate::pq_proto::{
    parse_sasl_initial_response, BeMessage, ErrorFields, FeDecoder, TransactionStatus,
};
use crate::scram::{ScramError, ScramSecret, ServerExchange};

#[test]
fn connection_strings_parse_like_libpq() {
    let c = Config::parse("host=127.0.0.1 port=15432 user=u password=p dbname=d").unwrap();
    assert_eq!(
        (c.host.as_str(), c.port, c.user.as_str()),
        ("127.0.0.1", 15432, "u")
    );
    assert_eq!(c.password.as_deref(), Some("p"));
    assert_eq!(c.dbname.as_deref(), Some("d"));
    let c = Config::parse("  password = 'a b\\'c\\\\' replication=true ").unwrap();
    assert_eq!(c.password.as_deref(), Some("a b'c\\"));
    assert_eq!(c.params, vec![("replication".into(), "true".into())]);
    assert_eq!(c.port, 5432);
    assert_eq!(
        parse_connstr("a=1 b='' c=x\\ y").unwrap(),
        vec![
            ("a".into(), "1".into()),
            ("b".into(), "".into()),
            ("c".into(), "x y".into())
        ]
    );
    assert!(matches!(
        Config::parse("host"),
        Err(ConnStrError::Malformed(_))
    ));
    assert!(matches!(
        Config::parse("=x"),
        Err(ConnStrError::Malformed(_))
    ));
    assert!(matches!(
        Config::parse("password='x"),
        Err(ConnStrError::UnterminatedQuote)
    ));
    assert!(matches!(
        Config::parse("port=x"),
        Err(ConnStrError::InvalidValue { .. })
    ));
    assert!(matches!(
        Config::parse("sslmode=require"),
        Err(ConnStrError::UnknownKey(_))
    ));
}

#[test]
fn debug_output_hides_the_password() {
    let c = Config::new("h", 1, "u").password("hunter2");
    assert!(!format!("{c:?}").contains("hunter2"));
    let keys = ScramKeys {
        client_key: [0xab; 32],
        server_key: [0xcd; 32],
    };
    let c = c.scram_keys(keys.clone());
    assert!(!format!("{c:?}").to_lowercase().contains("abab"));
    assert!(!format!("{c:?}").contains("171"));
    assert_eq!(c.clone(), c);
    assert_ne!(
        c.clone().scram_keys(ScramKeys {
            client_key: [0; 32],
            ..keys
        }),
        c
    );
}

/// A server that runs SCRAM against `secret` (as PostgreSQL and the
/// proxy do) on one connection; the keys the client proved to hold.
async fn scram_server(
    stream: tokio::io::DuplexStream,
    secret: ScramSecret,
) -> Result<ScramKeys, ScramError> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let dec = FeDecoder::default();
    let mut buf = BytesMut::new();
    while dec.decode_startup(&mut buf).unwrap().is_none() {
        rd.read_buf(&mut buf).await.unwrap();
    }
    let send = |msgs: &[BeMessage]| {
        let mut out = BytesMut::new();
        for m in msgs {
            m.write(&mut out).unwrap();
        }
        out
    };
    let mut next = async || loop {
        if let Some(FeMessage::AuthResponse(body)) = dec.decode_message(&mut buf).unwrap() {
            return body;
        }
        assert_ne!(rd.read_buf(&mut buf).await.unwrap(), 0);
    };
    let mut exchange = ServerExchange::new(&secret, None);
    let out = send(&[BeMessage::AuthenticationSasl(exchange.mechanisms())]);
    wr.write_all(&out).await.unwrap();
    let body = next().await;
    let (mechanism, data) = parse_sasl_initial_response(&body).unwrap();
    let outcome = match exchange.client_first(mechanism, data.unwrap_or_default()) {
        Ok(first) => {
            let out = send(&[BeMessage::AuthenticationSaslContinue(&first)]);
            wr.write_all(&out).await.unwrap();
            exchange.client_final(&next().await)
        }
        Err(e) => Err(e),
    };
    let out = match &outcome {
        Ok((last, _)) => send(&[
            BeMessage::AuthenticationSaslFinal(last),
            BeMessage::AuthenticationOk,
            BeMessage::ReadyForQuery(TransactionStatus::Idle),
        ]),
        Err(e) => send(&[BeMessage::ErrorResponse(ErrorFields::fatal(
            e.sql_state(),
            &e.to_string(),
        ))]),
    };
    wr.write_all(&out).await.unwrap();
    outcome.map(|(_, keys)| keys)
}

async fn login(
    config: Config,
    secret: &ScramSecret,
) -> (Result<(), ClientError>, Result<ScramKeys, ScramError>) {
    let (client, server) = tokio::io::duplex(4096);
    let server = tokio::spawn(scram_server(server, secret.clone()));
    let client = Connection::startup(client, &config).await.map(|_| ());
    (client, server.await.unwrap())
}

#[tokio::test]
async fn logs_in_with_scram_keys_or_password() {
    let secret = ScramSecret::with_salt("pw", b"salt", 16);
    let keys = ScramKeys::from_password("pw", &secret);
    let config = Config::new("h", 1, "u");

    // The keys, which take precedence over a (wrong) password.
    let (client, server) = login(
        config.clone().password("wrong").scram_keys(keys.clone()),
        &secret,
    )
    .await;
    client.unwrap();
    assert_eq!(server.unwrap(), keys);

    // The password, by postgres-protocol.
    let (client, server) = login(config.clone().password("pw"), &secret).await;
    client.unwrap();
    assert_eq!(server.unwrap(), keys);

    // Wrong keys: the server's 28P01.
    let wrong = ScramKeys::from_password("other", &secret);
    let (client, server) = login(config.clone().scram_keys(wrong), &secret).await;
    assert_eq!(
        client.unwrap_err().sql_state(),
        Some(SqlState::INVALID_PASSWORD)
    );
    assert_eq!(server.unwrap_err(), ScramError::InvalidProof);

    // A server with another secret for the role cannot sign: the
    // client refuses it even though the server says all is well.
    let mut forged = secret.clone();
    forged.server_key[0] ^= 1;
    let (client, _) = login(config.scram_keys(keys), &forged).await;
    let err = client.unwrap_err();
    assert!(matches!(err, ClientError::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("signature"), "{err}");
}
