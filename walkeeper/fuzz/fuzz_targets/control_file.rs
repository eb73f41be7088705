//! Fuzz the control file decoder: arbitrary bytes are refused or decoded,
//! never a panic; what decodes encodes back to bytes that decode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walkeeper::control_file::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = decode(data) {
        assert_eq!(decode(&encode(&state)).expect("re-decode"), state);
    }
});
