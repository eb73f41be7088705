//! Properties: any split of a valid stream decodes the same, arbitrary
//! and corrupted bytes never panic, rows and errors round-trip.

use bytes::{Buf, Bytes, BytesMut};
use proptest::prelude::*;

use super::split_be_messages;
use crate::pq_proto::*;

/// Feeds chunks into a decoder the way a server loop does: startup packets
/// until a StartupMessage or CancelRequest, then typed messages, stopping
/// at the first error.
#[derive(Debug, Default, PartialEq)]
struct Decoded {
    startup: Vec<FeStartupPacket>,
    messages: Vec<FeMessage>,
    error: Option<ProtocolError>,
}

fn decode_chunks(dec: FeDecoder, start_in_startup: bool, chunks: &[&[u8]]) -> Decoded {
    let mut out = Decoded::default();
    let mut in_startup = start_in_startup;
    let mut buf = BytesMut::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            let res = if in_startup {
                dec.decode_startup(&mut buf).map(|p| {
                    p.map(|p| {
                        if matches!(
                            p,
                            FeStartupPacket::StartupMessage { .. }
                                | FeStartupPacket::CancelRequest(_)
                        ) {
                            in_startup = false;
                        }
                        out.startup.push(p);
                    })
                })
            } else {
                dec.decode_message(&mut buf)
                    .map(|m| m.map(|m| out.messages.push(m)))
            };
            match res {
                Ok(Some(())) => assert!(buf.len() < before, "a decoded message consumes bytes"),
                Ok(None) => {
                    assert_eq!(buf.len(), before, "waiting consumes nothing");
                    break;
                }
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
        }
    }
    out
}

/// Cuts `data` at the given points (taken modulo its length).
fn split_at_points<'a>(data: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points
        .iter()
        .map(|p| {
            if data.is_empty() {
                0
            } else {
                p % (data.len() + 1)
            }
        })
        .collect();
    cuts.push(0);
    cuts.push(data.len());
    cuts.sort_unstable();
    cuts.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

fn cstring() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,24}"
}

fn fe_message() -> impl Strategy<Value = FeMessage> {
    prop_oneof![
        cstring().prop_map(|p| FeMessage::password(&p).unwrap()),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|v| FeMessage::sasl_response(&v)),
        cstring().prop_map(FeMessage::Query),
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|v| FeMessage::CopyData(Bytes::from(v))),
        Just(FeMessage::CopyDone),
        cstring().prop_map(FeMessage::CopyFail),
        Just(FeMessage::Sync),
        Just(FeMessage::Terminate),
    ]
}

fn startup_message() -> impl Strategy<Value = FeStartupPacket> {
    (
        0u16..3,
        proptest::collection::vec(("[^\u{0}]{1,12}", cstring()), 0..4),
    )
        .prop_map(|(minor_version, params)| FeStartupPacket::StartupMessage {
            major_version: 3,
            minor_version,
            params: params.into_iter().collect(),
        })
}

/// A valid client stream: optional SSL/GSS requests, a StartupMessage, then
/// typed messages; with its expected decoding.
fn client_stream() -> impl Strategy<Value = (Vec<u8>, Decoded)> {
    (
        proptest::collection::vec(
            prop_oneof![
                Just(FeStartupPacket::SslRequest),
                Just(FeStartupPacket::GssEncRequest)
            ],
            0..3,
        ),
        startup_message(),
        proptest::collection::vec(fe_message(), 0..12),
    )
        .prop_map(|(mut startup, startup_message, messages)| {
            startup.push(startup_message);
            let mut bytes = BytesMut::new();
            for p in &startup {
                p.write(&mut bytes).unwrap();
            }
            for m in &messages {
                m.write(&mut bytes).unwrap();
            }
            (
                bytes.to_vec(),
                Decoded {
                    startup,
                    messages,
                    error: None,
                },
            )
        })
}

proptest! {
    #[test]
    fn valid_stream_decodes_the_same_at_any_split(
        (bytes, expected) in client_stream(),
        points in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let dec = FeDecoder::default();
        prop_assert_eq!(&decode_chunks(dec, true, &[&bytes]), &expected);
        let chunks = split_at_points(&bytes, &points);
        prop_assert_eq!(&decode_chunks(dec, true, &chunks), &expected);
        // Byte by byte, the most fragmented delivery.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(&decode_chunks(dec, true, &singles), &expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_split_points_do_not_matter(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        points in proptest::collection::vec(any::<usize>(), 0..8),
        start_in_startup in any::<bool>(),
        max in 0usize..300,
    ) {
        let dec = FeDecoder::new(max);
        let whole = decode_chunks(dec, start_in_startup, &[&bytes]);
        let chunks = split_at_points(&bytes, &points);
        prop_assert_eq!(decode_chunks(dec, start_in_startup, &chunks), whole);
    }

    #[test]
    fn corrupted_valid_stream_never_panics(
        (mut bytes, _) in client_stream(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        points in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        for (pos, value) in flips {
            if !bytes.is_empty() {
                let len = bytes.len();
                bytes[pos % len] = value;
            }
        }
        let dec = FeDecoder::default();
        let whole = decode_chunks(dec, true, &[&bytes]);
        let chunks = split_at_points(&bytes, &points);
        prop_assert_eq!(decode_chunks(dec, true, &chunks), whole);
    }

    #[test]
    fn data_rows_round_trip(
        values in proptest::collection::vec(
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)), 0..8),
    ) {
        let borrowed: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
        let mut out = BytesMut::new();
        BeMessage::DataRow(&borrowed).write(&mut out).unwrap();
        let msgs = split_be_messages(&out);
        prop_assert_eq!(msgs.len(), 1);
        prop_assert_eq!(msgs[0].0, b'D');
        let mut body = &msgs[0].1[..];
        prop_assert_eq!(body.get_i16() as usize, values.len());
        for v in &values {
            let len = body.get_i32();
            match v {
                None => prop_assert_eq!(len, -1),
                Some(v) => {
                    prop_assert_eq!(len as usize, v.len());
                    prop_assert_eq!(&body[..v.len()], &v[..]);
                    body.advance(v.len());
                }
            }
        }
        prop_assert!(body.is_empty());
    }

    #[test]
    fn error_responses_are_framed_and_contain_their_fields(
        message in cstring(),
        detail in proptest::option::of(cstring()),
        hint in proptest::option::of(cstring()),
    ) {
        let mut fields = ErrorFields::error(SqlState::INTERNAL_ERROR, &message);
        fields.detail = detail.as_deref();
        fields.hint = hint.as_deref();
        let mut out = BytesMut::new();
        BeMessage::ErrorResponse(fields).write(&mut out).unwrap();
        let msgs = split_be_messages(&out);
        prop_assert_eq!(msgs.len(), 1);
        let body = &msgs[0].1;
        // Fields: type byte + C string each, then a final NUL.
        let mut found = Vec::new();
        let mut rest = &body[..];
        while rest[0] != 0 {
            let nul = rest[1..].iter().position(|&b| b == 0).unwrap() + 1;
            found.push((rest[0], String::from_utf8(rest[1..nul].to_vec()).unwrap()));
            rest = &rest[nul + 1..];
        }
        prop_assert_eq!(rest, &[0u8][..]);
        let mut expected = vec![
            (b'S', "ERROR".to_string()),
            (b'V', "ERROR".to_string()),
            (b'C', "XX000".to_string()),
            (b'M', message.clone()),
        ];
        if let Some(d) = &detail {
            expected.push((b'D', d.clone()));
        }
        if let Some(h) = &hint {
            expected.push((b'H', h.clone()));
        }
        prop_assert_eq!(found, expected);
    }
}
