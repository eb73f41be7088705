//! Tests of [`BeDecoder`]: backend messages as PostgreSQL sends them (byte
//! vectors built field by field from §55.7 "Message Formats"), the same
//! vectors through [`BackendMessage::write`], and properties: round trips,
//! any split of the input, arbitrary and corrupted bytes never panic, and a
//! hostile length is refused before its body is buffered.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn decode_all(bytes: &[u8]) -> Result<Vec<BackendMessage>, ProtocolError> {
    let dec = BeDecoder::default();
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(m) = dec.decode(&mut buf)? {
        out.push(m);
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    Ok(out)
}

fn decode_one(bytes: &[u8]) -> BackendMessage {
    let mut msgs = decode_all(bytes).unwrap();
    assert_eq!(msgs.len(), 1);
    msgs.pop().unwrap()
}

fn written(m: &BackendMessage) -> Vec<u8> {
    let mut out = BytesMut::new();
    m.write(&mut out).unwrap();
    out.to_vec()
}

/// Each vector decodes to the message and the message writes the vector.
fn check_both_ways(cases: &[(&[u8], BackendMessage)]) {
    for (bytes, expected) in cases {
        assert_eq!(&decode_one(bytes), expected, "decoding {bytes:?}");
        assert_eq!(&written(expected)[..], *bytes, "writing {expected:?}");
    }
}

#[test]
fn authentication_requests() {
    check_both_ways(&[
        (
            b"R\0\0\0\x08\0\0\0\0",
            BackendMessage::Authentication(AuthRequest::Ok),
        ),
        (
            b"R\0\0\0\x08\0\0\0\x03",
            BackendMessage::Authentication(AuthRequest::CleartextPassword),
        ),
        (
            b"R\0\0\0\x0c\0\0\0\x05\x01\x02\x03\x04",
            BackendMessage::Authentication(AuthRequest::Md5Password([1, 2, 3, 4])),
        ),
        // What PostgreSQL 15 sends with scram-sha-256 in pg_hba.conf and no
        // TLS: one mechanism, then the empty terminator.
        (
            b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0",
            BackendMessage::Authentication(AuthRequest::Sasl(vec!["SCRAM-SHA-256".into()])),
        ),
        (
            b"R\0\0\0\x0d\0\0\0\x0br=abc",
            BackendMessage::Authentication(AuthRequest::SaslContinue(Bytes::from_static(b"r=abc"))),
        ),
        (
            b"R\0\0\0\x0d\0\0\0\x0cv=xyz",
            BackendMessage::Authentication(AuthRequest::SaslFinal(Bytes::from_static(b"v=xyz"))),
        ),
    ]);
}

#[test]
fn session_and_query_messages() {
    check_both_ways(&[
        (
            b"S\0\0\0\x19client_encoding\0UTF8\0",
            BackendMessage::ParameterStatus {
                name: "client_encoding".into(),
                value: "UTF8".into(),
            },
        ),
        (
            b"K\0\0\0\x0c\0\0\x30\x39\xff\xff\xff\xfe",
            BackendMessage::BackendKeyData(CancelKeyData {
                backend_pid: 12345,
                cancel_key: -2,
            }),
        ),
        (
            b"Z\0\0\0\x05I",
            BackendMessage::ReadyForQuery(TransactionStatus::Idle),
        ),
        (
            b"Z\0\0\0\x05T",
            BackendMessage::ReadyForQuery(TransactionStatus::InTransaction),
        ),
        (
            b"Z\0\0\0\x05E",
            BackendMessage::ReadyForQuery(TransactionStatus::Failed),
        ),
        (
            b"T\0\0\0\x1a\0\x01a\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0",
            BackendMessage::RowDescription(vec![RowField {
                name: "a".into(),
                table_oid: 0,
                column_attr: 0,
                type_oid: oid::TEXT,
                type_size: -1,
                type_modifier: -1,
                format: Format::Text,
            }]),
        ),
        (
            b"D\0\0\0\x13\0\x03\0\0\0\x011\xff\xff\xff\xff\0\0\0\0",
            BackendMessage::DataRow(vec![
                Some(Bytes::from_static(b"1")),
                None,
                Some(Bytes::new()),
            ]),
        ),
        (
            b"C\0\0\0\x0dSELECT 1\0",
            BackendMessage::CommandComplete("SELECT 1".into()),
        ),
        (b"I\0\0\0\x04", BackendMessage::EmptyQueryResponse),
        (
            b"A\0\0\0\x0e\0\0\0\x07ch\0hi\0",
            BackendMessage::NotificationResponse {
                pid: 7,
                channel: "ch".into(),
                payload: "hi".into(),
            },
        ),
        (
            b"v\0\0\0\x13\0\x03\0\0\0\0\0\x01_pq_.x\0",
            BackendMessage::NegotiateProtocolVersion {
                newest_minor: 0,
                unrecognized_options: vec!["_pq_.x".into()],
            },
        ),
    ]);
}

#[test]
fn copy_messages() {
    let text = CopyFormat {
        format: Format::Text,
        column_formats: vec![],
    };
    check_both_ways(&[
        (
            b"W\0\0\0\x07\0\0\0",
            BackendMessage::CopyBothResponse(text.clone()),
        ),
        (b"H\0\0\0\x07\0\0\0", BackendMessage::CopyOutResponse(text)),
        (
            b"G\0\0\0\x09\0\0\x01\0\0",
            BackendMessage::CopyInResponse(CopyFormat {
                format: Format::Text,
                column_formats: vec![Format::Text],
            }),
        ),
        (
            b"d\0\0\0\x07abc",
            BackendMessage::CopyData(Bytes::from_static(b"abc")),
        ),
        (b"c\0\0\0\x04", BackendMessage::CopyDone),
    ]);
}

#[test]
fn error_response_from_postgres() {
    // `SELECT * FROM x` on PostgreSQL 15: every field it sends.
    let body: &[u8] = b"SERROR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0P15\0Fparse_relation.c\0L1392\0RparserOpenTable\0\0";
    let mut bytes = vec![b'E'];
    bytes.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    bytes.extend_from_slice(body);
    let BackendMessage::ErrorResponse(e) = decode_one(&bytes) else {
        panic!("not an error")
    };
    assert_eq!(e.severity, "ERROR");
    assert_eq!(e.severity(), Severity::Error);
    assert_eq!(e.code, "42P01");
    assert_eq!(e.sql_state(), SqlState::parse("42P01"));
    assert_eq!(e.message, "relation \"x\" does not exist");
    assert_eq!(e.detail, None);
    assert_eq!(
        e.other,
        vec![
            (b'P', "15".to_string()),
            (b'F', "parse_relation.c".to_string()),
            (b'L', "1392".to_string()),
            (b'R', "parserOpenTable".to_string()),
        ]
    );
    assert_eq!(
        e.to_string(),
        "ERROR:  relation \"x\" does not exist (SQLSTATE 42P01)"
    );
    // Written back field for field.
    assert_eq!(written(&BackendMessage::ErrorResponse(e)), bytes);

    // Only the localized severity (servers before 9.6): it is used.
    let BackendMessage::NoticeResponse(n) = decode_one(b"N\0\0\0\x18SNOTICE\0C00000\0Mhi\0\0")
    else {
        panic!("not a notice")
    };
    assert_eq!((n.severity.as_str(), n.message.as_str()), ("NOTICE", "hi"));
}

#[test]
fn our_error_responses_decode_to_their_fields() {
    let mut out = BytesMut::new();
    BeMessage::ErrorResponse(
        ErrorFields::fatal(SqlState::INVALID_PASSWORD, "bad")
            .with_detail("d")
            .with_hint("h"),
    )
    .write(&mut out)
    .unwrap();
    let BackendMessage::ErrorResponse(e) = decode_one(&out) else {
        panic!("not an error")
    };
    assert_eq!(e.sql_state(), Some(SqlState::INVALID_PASSWORD));
    assert_eq!(e.severity(), Severity::Fatal);
    assert_eq!(
        (e.detail.as_deref(), e.hint.as_deref()),
        (Some("d"), Some("h"))
    );
}

#[test]
fn malformed_backend_messages_are_errors() {
    let bad: &[(&[u8], &str)] = &[
        (b"?\0\0\0\x04", "unknown type"),
        (b"1\0\0\0\x04", "ParseComplete is not expected"),
        (b"Z\0\0\0\x03", "length below 4"),
        (b"Z\0\0\0\x06II", "ReadyForQuery too long"),
        (b"Z\0\0\0\x05X", "unknown transaction status"),
        (b"R\0\0\0\x08\0\0\0\x07", "GSSAPI"),
        (b"R\0\0\0\x06\0\0", "short auth request"),
        (b"R\0\0\0\x0a\0\0\0\x05\x01\x02", "short MD5 salt"),
        (b"R\0\0\0\x0b\0\0\0\x0aSCR", "SASL list without NUL"),
        (b"K\0\0\0\x08\0\0\0\x01", "short key data"),
        (b"D\0\0\0\x06\xff\xff", "negative column count"),
        (b"D\0\0\0\x06\x7f\xff", "column count beyond the body"),
        (
            b"D\0\0\0\x0a\0\x01\xff\xff\xff\xfe",
            "negative value length",
        ),
        (b"D\0\0\0\x0b\0\x01\0\0\0\x05ab", "value beyond the body"),
        (b"T\0\0\0\x08\0\x01a\0", "truncated row description"),
        (b"C\0\0\0\x07abc", "command tag without NUL"),
        (b"E\0\0\0\x07Mab", "unterminated error"),
        (b"E\0\0\0\x08Mab\0", "error without final NUL"),
        (b"W\0\0\0\x07\x02\0\0", "bad format"),
        (b"v\0\0\0\x0c\0\x02\0\0\0\0\0\0", "version 2 in negotiation"),
        (b"c\0\0\0\x05x", "CopyDone with a body"),
    ];
    for (bytes, why) in bad {
        // Each vector is complete: the decoder must fail, not wait.
        let mut buf = BytesMut::from(*bytes);
        assert!(
            BeDecoder::default().decode(&mut buf).is_err(),
            "{why}: {bytes:?} was accepted or waited for more"
        );
    }
    assert_eq!(
        decode_all(b"R\0\0\0\x08\0\0\0\x07").unwrap_err().to_string(),
        "unsupported authentication request 7 (GSSAPI): only trust, cleartext, MD5 and SCRAM-SHA-256 are supported"
    );
}

#[test]
fn lengths_are_checked_before_the_body_arrives() {
    // A 1 GiB DataRow announced by 5 bytes: refused by a 1 MiB decoder
    // without waiting for (or allocating) the body.
    let dec = BeDecoder::new(1 << 20);
    let mut buf = BytesMut::from(&b"D\x40\0\0\0"[..]);
    assert!(matches!(
        dec.decode(&mut buf),
        Err(ProtocolError::MessageTooLarge { tag: b'D', .. })
    ));
    // Small fixed messages have small limits whatever the decoder's.
    let mut buf = BytesMut::from(&b"Z\0\0\x01\0"[..]);
    assert!(BeDecoder::default().decode(&mut buf).is_err());
    // Garbage is refused on its first byte.
    let mut buf = BytesMut::from(&b"\x00"[..]);
    assert!(BeDecoder::default().decode(&mut buf).is_err());
    // An incomplete message consumes nothing.
    let mut buf = BytesMut::from(&b"C\0\0\0\x0dSELECT"[..]);
    assert_eq!(BeDecoder::default().decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), 11);
}

fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,16}"
}

fn format() -> impl Strategy<Value = Format> + Clone {
    prop_oneof![Just(Format::Text), Just(Format::Binary)]
}

fn copy_format() -> impl Strategy<Value = CopyFormat> {
    (format(), proptest::collection::vec(format(), 0..4)).prop_map(|(f, c)| CopyFormat {
        format: f,
        column_formats: c,
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn error_notice() -> impl Strategy<Value = ErrorNotice> {
    (
        "[A-Z]{1,8}",
        "[0-9A-Z]{5}",
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::collection::vec(
            (prop::sample::select(b"PpqWstcdnFLR".to_vec()), text()),
            0..3,
        ),
    )
        .prop_map(
            |(severity, code, message, detail, hint, other)| ErrorNotice {
                severity,
                code,
                message,
                detail,
                hint,
                other,
            },
        )
}

fn backend_message() -> impl Strategy<Value = BackendMessage> {
    prop_oneof![
        prop_oneof![
            Just(AuthRequest::Ok),
            Just(AuthRequest::CleartextPassword),
            any::<[u8; 4]>().prop_map(AuthRequest::Md5Password),
            proptest::collection::vec("[^\u{0}]{1,16}", 0..3).prop_map(AuthRequest::Sasl),
            bytes(40).prop_map(AuthRequest::SaslContinue),
            bytes(40).prop_map(AuthRequest::SaslFinal),
        ]
        .prop_map(BackendMessage::Authentication),
        (text(), text()).prop_map(|(name, value)| BackendMessage::ParameterStatus { name, value }),
        any::<(i32, i32)>().prop_map(|(p, k)| BackendMessage::BackendKeyData(CancelKeyData {
            backend_pid: p,
            cancel_key: k
        })),
        prop_oneof![
            Just(TransactionStatus::Idle),
            Just(TransactionStatus::InTransaction),
            Just(TransactionStatus::Failed)
        ]
        .prop_map(BackendMessage::ReadyForQuery),
        proptest::collection::vec(
            (
                text(),
                any::<u32>(),
                any::<i16>(),
                any::<u32>(),
                any::<i16>(),
                any::<i32>(),
                format()
            ),
            0..4
        )
        .prop_map(|cols| BackendMessage::RowDescription(
            cols.into_iter()
                .map(
                    |(name, table_oid, column_attr, type_oid, type_size, type_modifier, format)| {
                        RowField {
                            name,
                            table_oid,
                            column_attr,
                            type_oid,
                            type_size,
                            type_modifier,
                            format,
                        }
                    }
                )
                .collect()
        )),
        proptest::collection::vec(proptest::option::of(bytes(20)), 0..5)
            .prop_map(BackendMessage::DataRow),
        text().prop_map(BackendMessage::CommandComplete),
        Just(BackendMessage::EmptyQueryResponse),
        error_notice().prop_map(BackendMessage::ErrorResponse),
        error_notice().prop_map(BackendMessage::NoticeResponse),
        (any::<i32>(), text(), text()).prop_map(|(pid, channel, payload)| {
            BackendMessage::NotificationResponse {
                pid,
                channel,
                payload,
            }
        }),
        copy_format().prop_map(BackendMessage::CopyInResponse),
        copy_format().prop_map(BackendMessage::CopyOutResponse),
        copy_format().prop_map(BackendMessage::CopyBothResponse),
        bytes(64).prop_map(BackendMessage::CopyData),
        Just(BackendMessage::CopyDone),
        (any::<u16>(), proptest::collection::vec(text(), 0..3)).prop_map(|(m, o)| {
            BackendMessage::NegotiateProtocolVersion {
                newest_minor: m,
                unrecognized_options: o,
            }
        }),
    ]
}

/// Decodes `chunks` delivered one after the other; stops at the first error.
fn decode_chunks(dec: BeDecoder, chunks: &[&[u8]]) -> (Vec<BackendMessage>, Option<ProtocolError>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(m)) => {
                    assert!(buf.len() < before);
                    out.push(m);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "waiting consumes nothing");
                    break;
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

proptest! {
    #[test]
    fn backend_messages_round_trip_at_any_split(
        msgs in proptest::collection::vec(backend_message(), 0..10),
        cut in any::<usize>(),
    ) {
        let mut bytes = BytesMut::new();
        for m in &msgs {
            m.write(&mut bytes).unwrap();
        }
        let dec = BeDecoder::default();
        prop_assert_eq!(decode_chunks(dec, &[&bytes]), (msgs.clone(), None));
        let cut = cut % (bytes.len() + 1);
        prop_assert_eq!(decode_chunks(dec, &[&bytes[..cut], &bytes[cut..]]), (msgs.clone(), None));
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(decode_chunks(dec, &singles), (msgs, None));
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..256),
        cut in any::<usize>(),
        max in 0usize..300,
    ) {
        let dec = BeDecoder::new(max);
        let whole = decode_chunks(dec, &[&data]);
        let cut = cut % (data.len() + 1);
        prop_assert_eq!(decode_chunks(dec, &[&data[..cut], &data[cut..]]), whole);
    }

    #[test]
    fn corrupted_messages_never_panic(
        msgs in proptest::collection::vec(backend_message(), 1..6),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = BytesMut::new();
        for m in &msgs {
            m.write(&mut bytes).unwrap();
        }
        let len = bytes.len();
        for (pos, v) in flips {
            bytes[pos % len] = v;
        }
        let _ = decode_chunks(BeDecoder::default(), &[&bytes]);
    }
}
