//! Fuzz both parsers of the walproposer <-> walkeeper protocol: the first
//! byte picks the direction. A parsed message must write back to the same
//! bytes (the encoding is canonical), and feeding it to an acceptor must
//! not panic. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walkeeper::proto::{AcceptorMessage, ProposerMessage};

fuzz_target!(|data: &[u8]| {
    let Some((&dir, body)) = data.split_first() else { return };
    if dir & 1 == 0 {
        if let Ok(m) = ProposerMessage::parse(body) {
            assert_eq!(&m.to_bytes()[..], body);
        }
    } else if let Ok(m) = AcceptorMessage::parse(body) {
        let again = AcceptorMessage::parse(&m.to_bytes()).expect("re-parse");
        assert_eq!(again, m);
    }
});
