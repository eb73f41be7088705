//! Fuzz token checking as the daemons run it on untrusted bytes: an
//! `Authorization` header value, then the token in it (or the whole input,
//! as a page-service password). Any panic is a bug; no input may pass, since
//! the fuzzer cannot sign with the private key made at start-up.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use zenith_utils::auth::{generate_key_pair, parse_bearer, JwtAuth};

fn auth() -> &'static JwtAuth {
    static AUTH: OnceLock<JwtAuth> = OnceLock::new();
    AUTH.get_or_init(|| {
        let (_, public) = generate_key_pair().expect("a key pair");
        JwtAuth::from_pem(public.as_bytes()).expect("the public key")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(token) = parse_bearer(&text) {
        assert!(auth().decode(token).is_err());
    }
    assert!(auth().decode(&text).is_err());
});
