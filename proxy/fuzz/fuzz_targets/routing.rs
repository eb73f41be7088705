//! Fuzz what the proxy reads from a client to find its endpoint: the TLS
//! server name, the `options` startup parameter and the password form. The
//! first byte splits the input into the three. Any panic is a bug; a name
//! that is accepted must be a valid endpoint name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::routing::{route, split_password, valid_name};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let cut = text
        .char_indices()
        .map(|(i, _)| i)
        .nth(usize::from(split) % (text.chars().count() + 1))
        .unwrap_or(text.len());
    let (sni, options) = text.split_at(cut);
    if let Ok(r) = route(Some(sni), Some(options), "zenith.localhost") {
        if let Some((name, _)) = r.endpoint {
            assert!(valid_name(&name), "{name:?}");
        }
    }
    if let Some(Ok((name, _))) = split_password(&text) {
        assert!(valid_name(&name), "{name:?}");
    }
});
