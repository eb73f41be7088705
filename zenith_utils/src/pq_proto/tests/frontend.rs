//! Typed frontend messages: exact bytes, framing, refusals, redaction.

use bytes::{Bytes, BytesMut};

use super::buf;
use crate::pq_proto::*;

#[test]
fn frontend_messages_from_exact_bytes() {
    let cases: Vec<(&[u8], FeMessage)> = vec![
        (
            b"Q\x00\x00\x00\x0dSELECT 1\x00",
            FeMessage::Query("SELECT 1".into()),
        ),
        (b"Q\x00\x00\x00\x05\x00", FeMessage::Query(String::new())),
        (
            b"p\x00\x00\x00\x0bsecret\x00",
            FeMessage::password("secret").unwrap(),
        ),
        // SASLInitialResponse as libpq sends it for SCRAM-SHA-256 (the data
        // is the client-first-message "n,,n=,r=<nonce>").
        (
            b"p\x00\x00\x00\x23SCRAM-SHA-256\x00\x00\x00\x00\x0dn,,n=,r=abcde",
            FeMessage::sasl_initial_response("SCRAM-SHA-256", Some(b"n,,n=,r=abcde")).unwrap(),
        ),
        (b"p\x00\x00\x00\x08c=bi", FeMessage::sasl_response(b"c=bi")),
        (
            b"d\x00\x00\x00\x07\x01\x00\x03",
            FeMessage::CopyData(Bytes::from_static(&[1, 0, 3])),
        ),
        (b"d\x00\x00\x00\x04", FeMessage::CopyData(Bytes::new())),
        (b"c\x00\x00\x00\x04", FeMessage::CopyDone),
        (
            b"f\x00\x00\x00\x08bad\x00",
            FeMessage::CopyFail("bad".into()),
        ),
        (b"S\x00\x00\x00\x04", FeMessage::Sync),
        (b"X\x00\x00\x00\x04", FeMessage::Terminate),
    ];
    let dec = FeDecoder::default();
    for (bytes, expected) in cases {
        let mut b = buf(bytes);
        assert_eq!(dec.decode_message(&mut b).unwrap(), Some(expected.clone()));
        assert!(b.is_empty());
        let mut out = BytesMut::new();
        expected.write(&mut out).unwrap();
        assert_eq!(&out[..], bytes, "serializing {expected:?}");
    }
}

#[test]
fn incomplete_message_waits_and_consumes_nothing() {
    let full = b"Q\x00\x00\x00\x0dSELECT 1\x00";
    let dec = FeDecoder::default();
    for cut in 0..full.len() {
        let mut b = buf(&full[..cut]);
        assert_eq!(dec.decode_message(&mut b).unwrap(), None, "cut at {cut}");
        assert_eq!(&b[..], &full[..cut]);
    }
}

#[test]
fn two_messages_in_one_buffer_are_decoded_one_at_a_time() {
    let mut b = buf(b"Q\x00\x00\x00\x0dSELECT 1\x00X\x00\x00\x00\x04");
    let dec = FeDecoder::default();
    assert_eq!(
        dec.decode_message(&mut b).unwrap(),
        Some(FeMessage::Query("SELECT 1".into()))
    );
    assert_eq!(
        dec.decode_message(&mut b).unwrap(),
        Some(FeMessage::Terminate)
    );
    assert_eq!(dec.decode_message(&mut b).unwrap(), None);
}

#[test]
fn malformed_frontend_messages_are_rejected() {
    let dec = FeDecoder::default();
    let check = |bytes: &[u8], expected: ProtocolError| {
        let mut b = buf(bytes);
        assert_eq!(dec.decode_message(&mut b), Err(expected), "{bytes:?}");
    };
    check(
        b"Q\x00\x00\x00\x03",
        ProtocolError::InvalidMessageLength { tag: b'Q', len: 3 },
    );
    check(
        b"d\xff\xff\xff\xff",
        ProtocolError::InvalidMessageLength { tag: b'd', len: -1 },
    );
    check(b"z", ProtocolError::UnknownMessageType(b'z'));
    check(b"\0\0\0\0\x04", ProtocolError::UnknownMessageType(0));
    check(b"P", ProtocolError::UnsupportedMessageType(b'P'));
    check(b"B\x00\x00", ProtocolError::UnsupportedMessageType(b'B'));
    check(
        b"Q\x00\x00\x00\x08abcd",
        ProtocolError::MissingNulTerminator("query message"),
    );
    check(
        b"Q\x00\x00\x00\x07\xc3\x28\x00",
        ProtocolError::InvalidUtf8("query message"),
    );
    check(
        b"Q\x00\x00\x00\x07a\x00b",
        ProtocolError::TrailingBytes("query message"),
    );
    // An authentication response is parsed by kind later
    // (`auth_response_bodies_parse_by_kind`).
    // Fixed empty bodies: rejected on the length alone.
    check(
        b"S\x00\x00\x00\x05",
        ProtocolError::InvalidMessageLength { tag: b'S', len: 5 },
    );
    check(
        b"X\x00\x00\x01\x00",
        ProtocolError::InvalidMessageLength {
            tag: b'X',
            len: 256,
        },
    );
}

#[test]
fn oversized_length_is_an_error_before_the_body_arrives() {
    let dec = FeDecoder::new(10);
    assert_eq!(dec.max_message_size(), 10);
    // 11-byte body announced, nothing of it buffered yet.
    let mut b = buf(b"d\x00\x00\x00\x0f");
    assert_eq!(
        dec.decode_message(&mut b),
        Err(ProtocolError::MessageTooLarge {
            tag: b'd',
            len: 11,
            max: 10
        })
    );
    // Exactly at the limit is fine.
    let mut b = buf(b"d\x00\x00\x00\x0e0123456789");
    assert!(matches!(
        dec.decode_message(&mut b),
        Ok(Some(FeMessage::CopyData(d))) if d.len() == 10
    ));
    // The default limit rejects a 2 GiB claim at once.
    let mut b = buf(b"d\x7f\xff\xff\xff");
    assert!(matches!(
        FeDecoder::default().decode_message(&mut b),
        Err(ProtocolError::MessageTooLarge { .. })
    ));
    // Passwords have their own, smaller limit.
    let mut b = buf(&[b'p', 0, 1, 0, 4]);
    assert_eq!(
        FeDecoder::default().decode_message(&mut b),
        Err(ProtocolError::MessageTooLarge {
            tag: b'p',
            len: 65_536,
            max: MAX_PASSWORD_LENGTH
        })
    );
}

#[test]
fn password_is_redacted_in_debug_output() {
    let msg = FeMessage::password("hunter2").unwrap();
    let dbg = format!("{msg:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert_eq!(dbg, "AuthResponse(<redacted, 8 bytes>)");
}

#[test]
fn auth_response_bodies_parse_by_kind() {
    let FeMessage::AuthResponse(body) = FeMessage::password("pw").unwrap() else {
        unreachable!()
    };
    assert_eq!(parse_password(&body), Ok("pw"));
    assert!(parse_password(b"pw").is_err());
    assert!(parse_password(b"pw\0x").is_err());

    let FeMessage::AuthResponse(body) =
        FeMessage::sasl_initial_response("SCRAM-SHA-256", Some(b"n,,n=,r=x")).unwrap()
    else {
        unreachable!()
    };
    assert_eq!(
        parse_sasl_initial_response(&body),
        Ok(("SCRAM-SHA-256", Some(&b"n,,n=,r=x"[..])))
    );
    let FeMessage::AuthResponse(body) = FeMessage::sasl_initial_response("M", None).unwrap() else {
        unreachable!()
    };
    assert_eq!(parse_sasl_initial_response(&body), Ok(("M", None)));
    // Length beyond the data, negative lengths, trailing bytes.
    assert!(parse_sasl_initial_response(b"M\0\0\0\0\x05abc").is_err());
    assert!(parse_sasl_initial_response(b"M\0\xff\xff\xff\xfe").is_err());
    assert!(parse_sasl_initial_response(b"M\0\xff\xff\xff\xffx").is_err());
    assert!(parse_sasl_initial_response(b"M\0\0\0\0\x01ab").is_err());
    assert!(parse_sasl_initial_response(b"M\0\0\0").is_err());
    assert!(parse_sasl_initial_response(b"M").is_err());
}

#[test]
fn protocol_errors_map_to_sqlstates() {
    assert_eq!(
        ProtocolError::UnknownMessageType(b'z').sql_state(),
        SqlState::PROTOCOL_VIOLATION
    );
    assert_eq!(
        ProtocolError::UnsupportedMessageType(b'P').sql_state(),
        SqlState::FEATURE_NOT_SUPPORTED
    );
    assert_eq!(
        ProtocolError::UnknownMessageType(b'z').to_string(),
        "invalid frontend message type 'z'"
    );
}
