//! Fuzz the client's parser of backend messages. A parsed message must
//! write back to something that parses to the same message (not always the
//! same bytes: a localized-only severity is written as S and V). Any panic
//! is a bug.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use zenith_utils::pq_proto::BeDecoder;

fuzz_target!(|data: &[u8]| {
    let dec = BeDecoder::new(1 << 16);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(msg)) = dec.decode(&mut buf) {
        let mut out = BytesMut::new();
        msg.write(&mut out).expect("a parsed message can be written");
        let again = dec.decode(&mut out).expect("re-parse").expect("whole");
        assert_eq!(again, msg);
        assert!(out.is_empty());
    }
});
