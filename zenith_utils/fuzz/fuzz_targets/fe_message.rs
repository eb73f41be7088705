//! Fuzz the server's parser of typed frontend messages, with a small size
//! limit so that the limit path is exercised too, and the parsers of
//! authentication responses. A parsed message must write back to the bytes
//! it came from. Any panic is a bug.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use zenith_utils::pq_proto::{parse_password, parse_sasl_initial_response, FeDecoder, FeMessage};

fuzz_target!(|data: &[u8]| {
    let dec = FeDecoder::new(4096);
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        match dec.decode_message(&mut buf) {
            Ok(Some(msg)) => {
                let consumed = before.len() - buf.len();
                let mut out = BytesMut::new();
                msg.write(&mut out).expect("a parsed message can be written");
                assert_eq!(&out[..], &before[..consumed]);
                if let FeMessage::AuthResponse(body) = &msg {
                    let _ = parse_password(body);
                    let _ = parse_sasl_initial_response(body);
                }
            }
            Ok(None) | Err(_) => return,
        }
    }
});
