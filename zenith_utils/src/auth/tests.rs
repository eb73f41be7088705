use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;

/// Key pairs are slow to make in debug builds: two per test binary.
fn keys() -> &'static [(String, String); 2] {
    static KEYS: OnceLock<[(String, String); 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            generate_key_pair().expect("key pair"),
            generate_key_pair().expect("key pair"),
        ]
    })
}

fn issuer(i: usize) -> TokenIssuer {
    TokenIssuer::from_pem(keys()[i].0.as_bytes()).unwrap()
}

fn auth() -> JwtAuth {
    JwtAuth::from_pem(keys()[0].1.as_bytes()).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn tenant(n: u8) -> TenantId {
    format!("{n:02x}{}", "0".repeat(30)).parse().unwrap()
}

#[test]
fn a_token_round_trips_its_claims() {
    for claims in [
        Claims::new(Scope::PageServerApi, None),
        Claims::new(Scope::Tenant, Some(tenant(1))),
        Claims::new(Scope::WalkeeperData, None),
        Claims {
            scope: Scope::ControlPlane,
            tenant_id: None,
            exp: Some(now() + 3600),
        },
    ] {
        let token = issuer(0).issue(&claims).unwrap();
        assert_eq!(auth().decode(&token).unwrap(), claims);
    }
}

#[test]
fn expired_foreign_and_malformed_tokens_are_refused() {
    let expired = Claims {
        exp: Some(now() - 3600),
        ..Claims::new(Scope::PageServerApi, None)
    };
    let token = issuer(0).issue(&expired).unwrap();
    assert_eq!(auth().decode(&token), Err(AuthError::Expired));

    let foreign = issuer(1)
        .issue(&Claims::new(Scope::PageServerApi, None))
        .unwrap();
    assert_eq!(auth().decode(&foreign), Err(AuthError::BadSignature));

    assert_eq!(auth().decode(""), Err(AuthError::Missing));
    for bad in ["x", "a.b.c", "eyJ0eXAiOiJKV1QifQ.e30.AAAA"] {
        let err = auth().decode(bad).unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_)), "{bad}: {err:?}");
        assert!(err.is_unauthenticated());
    }

    // HS256 with the public key as the secret: the classic confusion attack.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &Claims::new(Scope::PageServerApi, None),
        &EncodingKey::from_secret(keys()[0].1.as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(matches!(auth().decode(&hs), Err(AuthError::Malformed(_))));

    // Claims that are not ours.
    let odd = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &serde_json::json!({"scope": "superuser"}),
        &EncodingKey::from_rsa_pem(keys()[0].0.as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(matches!(auth().decode(&odd), Err(AuthError::Malformed(_))));
}

#[test]
fn scopes_give_what_they_say() {
    let a = tenant(0xa);
    let b = tenant(0xb);
    let api = Claims::new(Scope::PageServerApi, None);
    let ta = Claims::new(Scope::Tenant, Some(a));
    let wk = Claims::new(Scope::WalkeeperData, None);
    let wka = Claims::new(Scope::WalkeeperData, Some(a));
    assert!(api.check_tenant(a).is_ok());
    assert!(ta.check_tenant(a).is_ok());
    assert!(matches!(ta.check_tenant(b), Err(AuthError::Forbidden(_))));
    assert!(Claims::new(Scope::Tenant, None).check_tenant(a).is_err());
    assert!(wk.check_tenant(a).is_err());
    assert!(ta.check_scope(Scope::PageServerApi).is_err());
    assert!(api.check_scope(Scope::PageServerApi).is_ok());
    assert!(wk.check_walkeeper(b).is_ok());
    assert!(wka.check_walkeeper(a).is_ok());
    assert!(wka.check_walkeeper(b).is_err());
    assert!(ta.check_walkeeper(a).is_err());
    assert!(api.check_walkeeper(a).is_err());
    assert!(!AuthError::Forbidden(String::new()).is_unauthenticated());
}

#[test]
fn bearer_headers_parse() {
    assert_eq!(parse_bearer("Bearer abc"), Ok("abc"));
    assert_eq!(parse_bearer("bearer  abc "), Ok("abc"));
    assert!(matches!(
        parse_bearer("Basic abc"),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(parse_bearer("abc"), Err(AuthError::Malformed(_))));
    assert_eq!(
        parse_bearer("Bearer "),
        Err(AuthError::Malformed(
            "expected \"Authorization: Bearer <token>\"".into()
        ))
    );
}

#[test]
fn names_parse() {
    assert_eq!("ZenithJWT".parse::<AuthType>(), Ok(AuthType::ZenithJwt));
    assert_eq!("Trust".parse::<AuthType>(), Ok(AuthType::Trust));
    assert!("none".parse::<AuthType>().is_err());
    for s in [
        Scope::PageServerApi,
        Scope::Tenant,
        Scope::WalkeeperData,
        Scope::ControlPlane,
    ] {
        assert_eq!(s.to_string().parse::<Scope>(), Ok(s));
    }
    assert!("root".parse::<Scope>().is_err());
    assert_eq!(
        toml::from_str::<std::collections::BTreeMap<String, AuthType>>("a = \"ZenithJWT\"")
            .unwrap()["a"],
        AuthType::ZenithJwt
    );
}

#[test]
fn bad_keys_are_errors() {
    assert!(matches!(JwtAuth::from_pem(b"nope"), Err(AuthError::Key(_))));
    assert!(matches!(
        TokenIssuer::from_pem(b"nope"),
        Err(AuthError::Key(_))
    ));
    assert!(JwtAuth::from_key_path(Path::new("/nonexistent/key.pem")).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary text is an error, never a panic or a valid token.
    #[test]
    fn arbitrary_tokens_are_refused(s in ".{0,300}") {
        prop_assert!(auth().decode(&s).is_err());
        let _ = parse_bearer(&s);
    }

    /// A valid token with one byte changed is refused.
    #[test]
    fn tampered_tokens_are_refused(pos in 0usize..400, byte in any::<u8>()) {
        static TOKEN: OnceLock<String> = OnceLock::new();
        let token = TOKEN.get_or_init(|| {
            issuer(0).issue(&Claims::new(Scope::Tenant, Some(tenant(3)))).unwrap()
        });
        let mut bytes = token.clone().into_bytes();
        let pos = pos % bytes.len();
        prop_assume!(bytes[pos] != byte);
        bytes[pos] = byte;
        let tampered = String::from_utf8_lossy(&bytes).into_owned();
        prop_assert!(auth().decode(&tampered).is_err());
    }
}
