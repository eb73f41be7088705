//! Fuzz the SCRAM-SHA-256 parsers the proxy runs on untrusted bytes: a
//! role's secret, and the server side of an exchange (client-first, then
//! client-final), with and without channel binding. The first byte picks
//! the mechanism and where the input splits into the two client messages.
//! Any panic is a bug; no input may authenticate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zenith_utils::scram::{ScramSecret, ServerExchange};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = ScramSecret::parse(text);
    }
    let secret = ScramSecret::with_salt("fuzz", b"0123456789abcdef", 1);
    let binding = (ctl & 1 == 1).then(|| vec![7u8; 32]);
    let mechanism = if ctl & 2 == 2 {
        "SCRAM-SHA-256-PLUS"
    } else {
        "SCRAM-SHA-256"
    };
    let cut = usize::from(ctl >> 2).min(rest.len());
    let (first, last) = rest.split_at(cut);
    let mut server = ServerExchange::new(&secret, binding);
    if server.client_first(mechanism, first).is_ok() {
        // The server nonce is random: a proof made without it cannot verify.
        assert!(server.client_final(last).is_err());
    }
});
