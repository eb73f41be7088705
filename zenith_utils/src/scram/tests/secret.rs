//! Secrets and keys: PostgreSQL's format, its defaults, matching, and
//! what `Debug` shows.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use postgres_protocol::authentication::sasl::ChannelBinding;

use super::{cheap_secret, oracle_login, secret, PASSWORD};
use crate::pq_proto::SqlState;
use crate::scram::*;

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
