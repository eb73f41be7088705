//! Fuzz the server's startup-phase parser (StartupMessage, SSLRequest,
//! GSSENCRequest, CancelRequest) and what the server does with an accepted
//! packet: write it back and parse it again to the same value. The first
//! byte picks how the input is split into reads. Any panic is a bug.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use zenith_utils::pq_proto::FeDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let dec = FeDecoder::default();
    let mut buf = BytesMut::new();
    for piece in data.chunks(usize::from(split) + 1) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode_startup(&mut buf) {
                Ok(Some(packet)) => {
                    let mut out = BytesMut::new();
                    packet.write(&mut out).expect("a parsed packet can be written");
                    let again = dec.decode_startup(&mut out).expect("re-parse").expect("whole");
                    assert_eq!(again, packet);
                    assert!(out.is_empty());
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
