//! Tests of the wire-protocol codec: exact byte vectors as PostgreSQL and
//! libpq send them, round trips, and properties over arbitrary input.

use bytes::{Buf, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn buf(bytes: &[u8]) -> BytesMut {
    BytesMut::from(bytes)
}

/// `tag, int32 len, body` with the length computed, for expected values.
fn framed(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn be_bytes(msg: BeMessage) -> Vec<u8> {
    let mut out = BytesMut::new();
    msg.write(&mut out).unwrap();
    out.to_vec()
}

/// Splits serialized backend messages, checking that each length word
/// frames its message exactly.
fn split_be_messages(mut data: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !data.is_empty() {
        assert!(data.len() >= 5, "truncated header");
        let tag = data[0];
        let len = i32::from_be_bytes(data[1..5].try_into().unwrap());
        assert!(len >= 4);
        let end = 1 + len as usize;
        assert!(data.len() >= end, "length {len} runs past the data");
        out.push((tag, data[5..end].to_vec()));
        data = &data[end..];
    }
    out
}

// ---------------------------------------------------------------------------
// Startup phase

/// What `psql -U alice -d db` sends (minus the other parameters).
const PSQL_STARTUP: &[u8] =
    b"\x00\x00\x00\x20\x00\x03\x00\x00user\x00alice\x00database\x00db\x00\x00";

#[test]
fn startup_message_from_psql_is_parsed() {
    assert_eq!(PSQL_STARTUP.len(), 0x20);
    let mut b = buf(PSQL_STARTUP);
    let packet = FeDecoder::default()
        .decode_startup(&mut b)
        .unwrap()
        .unwrap();
    assert!(b.is_empty());
    let FeStartupPacket::StartupMessage {
        major_version,
        minor_version,
        params,
    } = packet
    else {
        panic!("not a startup message: {packet:?}");
    };
    assert_eq!((major_version, minor_version), (3, 0));
    assert_eq!(params.user(), Some("alice"));
    assert_eq!(params.database(), Some("db"));
    assert_eq!(params.len(), 2);
}

#[test]
fn startup_message_serializes_to_the_psql_bytes() {
    let packet = FeStartupPacket::StartupMessage {
        major_version: 3,
        minor_version: 0,
        params: [("user", "alice"), ("database", "db")]
            .into_iter()
            .collect(),
    };
    let mut out = BytesMut::new();
    packet.write(&mut out).unwrap();
    // Parameters are written in name order; psql's order differs, so compare
    // the parsed form and the length.
    assert_eq!(out.len(), PSQL_STARTUP.len());
    let back = FeDecoder::default().decode_startup(&mut out).unwrap();
    assert_eq!(back, Some(packet));
}

#[test]
fn ssl_gss_and_cancel_requests_are_parsed() {
    let dec = FeDecoder::default();
    let mut b = buf(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
    assert_eq!(
        dec.decode_startup(&mut b).unwrap(),
        Some(FeStartupPacket::SslRequest)
    );
    let mut b = buf(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]);
    assert_eq!(
        dec.decode_startup(&mut b).unwrap(),
        Some(FeStartupPacket::GssEncRequest)
    );
    let mut b = buf(&[
        0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0x30, 0x39, 0xff, 0xff, 0xff, 0xfe,
    ]);
    assert_eq!(
        dec.decode_startup(&mut b).unwrap(),
        Some(FeStartupPacket::CancelRequest(CancelKeyData {
            backend_pid: 12345,
            cancel_key: -2,
        }))
    );
    assert!(b.is_empty());

    for packet in [
        FeStartupPacket::SslRequest,
        FeStartupPacket::GssEncRequest,
        FeStartupPacket::CancelRequest(CancelKeyData {
            backend_pid: 1,
            cancel_key: 2,
        }),
    ] {
        let mut out = BytesMut::new();
        packet.write(&mut out).unwrap();
        assert_eq!(dec.decode_startup(&mut out).unwrap(), Some(packet));
    }
}

#[test]
fn ssl_request_followed_by_startup_message_in_one_buffer() {
    let dec = FeDecoder::default();
    let mut b = buf(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
    b.extend_from_slice(PSQL_STARTUP);
    assert_eq!(
        dec.decode_startup(&mut b).unwrap(),
        Some(FeStartupPacket::SslRequest)
    );
    assert_eq!(b.len(), PSQL_STARTUP.len());
    assert!(matches!(
        dec.decode_startup(&mut b).unwrap(),
        Some(FeStartupPacket::StartupMessage { .. })
    ));
    assert!(b.is_empty());
}

#[test]
fn incomplete_startup_packet_waits_and_consumes_nothing() {
    let dec = FeDecoder::default();
    for cut in 0..PSQL_STARTUP.len() {
        let mut b = buf(&PSQL_STARTUP[..cut]);
        assert_eq!(dec.decode_startup(&mut b).unwrap(), None, "cut at {cut}");
        assert_eq!(&b[..], &PSQL_STARTUP[..cut]);
    }
}

#[test]
fn startup_packet_with_bad_length_is_rejected() {
    let dec = FeDecoder::default();
    for len in [0i32, 3, 4, 7, -1, i32::MIN, 10_005, i32::MAX] {
        let mut b = buf(&len.to_be_bytes());
        assert_eq!(
            dec.decode_startup(&mut b),
            Err(ProtocolError::InvalidStartupPacketLength(len)),
            "length {len}"
        );
    }
    // Fixed-size requests with extra bytes.
    let mut b = buf(&[0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f, 0]);
    assert_eq!(
        dec.decode_startup(&mut b),
        Err(ProtocolError::InvalidStartupPacketLength(9))
    );
    let mut b = buf(&[0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1]);
    assert_eq!(
        dec.decode_startup(&mut b),
        Err(ProtocolError::InvalidStartupPacketLength(12))
    );
}

#[test]
fn largest_allowed_startup_packet_is_accepted() {
    // length word + version + "k\0" + value + "\0" + terminator
    let value = "v".repeat(MAX_STARTUP_PACKET_LENGTH + 4 - 4 - 4 - 2 - 1 - 1);
    let mut params = StartupParams::new();
    params.insert("k", value.as_str());
    let packet = FeStartupPacket::StartupMessage {
        major_version: 3,
        minor_version: 0,
        params,
    };
    let mut out = BytesMut::new();
    packet.write(&mut out).unwrap();
    assert_eq!(out.len(), MAX_STARTUP_PACKET_LENGTH + 4);
    assert_eq!(
        FeDecoder::default().decode_startup(&mut out).unwrap(),
        Some(packet)
    );
}

#[test]
fn unknown_protocol_versions_are_rejected_and_3_x_accepted() {
    let dec = FeDecoder::default();
    // Protocol 2.0, as pre-7.4 clients sent.
    let mut b = buf(b"\x00\x00\x00\x09\x00\x02\x00\x00\x00");
    assert_eq!(
        dec.decode_startup(&mut b),
        Err(ProtocolError::UnsupportedProtocolVersion { major: 2, minor: 0 })
    );
    let mut b = buf(b"\x00\x00\x00\x09\x00\x04\x00\x00\x00");
    assert!(matches!(
        dec.decode_startup(&mut b),
        Err(ProtocolError::UnsupportedProtocolVersion { major: 4, .. })
    ));
    // 3.2 (PostgreSQL 18 libpq when asked): parsed, the server may negotiate.
    let mut b = buf(b"\x00\x00\x00\x09\x00\x03\x00\x02\x00");
    assert!(matches!(
        dec.decode_startup(&mut b).unwrap(),
        Some(FeStartupPacket::StartupMessage {
            major_version: 3,
            minor_version: 2,
            ..
        })
    ));
}

#[test]
fn malformed_startup_parameters_are_rejected() {
    fn startup(params: &[u8]) -> Result<Option<FeStartupPacket>, ProtocolError> {
        let mut b = BytesMut::new();
        b.extend_from_slice(&(params.len() as i32 + 8).to_be_bytes());
        b.extend_from_slice(&[0, 3, 0, 0]);
        b.extend_from_slice(params);
        FeDecoder::default().decode_startup(&mut b)
    }
    assert_eq!(
        startup(b""),
        Err(ProtocolError::InvalidStartupPacketLayout(
            "expected terminator as last byte"
        ))
    );
    assert_eq!(
        startup(b"user\0alice\0"),
        Err(ProtocolError::InvalidStartupPacketLayout(
            "expected terminator as last byte"
        ))
    );
    assert_eq!(
        startup(b"\0user\0alice\0\0"),
        Err(ProtocolError::InvalidStartupPacketLayout(
            "expected terminator as last byte"
        ))
    );
    assert_eq!(
        startup(b"user\0"),
        Err(ProtocolError::MissingNulTerminator(
            "startup parameter value"
        ))
    );
    assert_eq!(
        startup(b"user"),
        Err(ProtocolError::MissingNulTerminator(
            "startup parameter name"
        ))
    );
    assert_eq!(
        startup(b"user\0\xff\0\0"),
        Err(ProtocolError::InvalidUtf8("startup parameter value"))
    );
    // No parameters at all is well-formed (the server then complains that
    // there is no user).
    assert!(matches!(
        startup(b"\0"),
        Ok(Some(FeStartupPacket::StartupMessage { params, .. })) if params.is_empty()
    ));
    // A repeated name: the last value wins.
    assert!(matches!(
        startup(b"user\0a\0user\0b\0\0"),
        Ok(Some(FeStartupPacket::StartupMessage { params, .. })) if params.user() == Some("b")
    ));
}

#[test]
fn startup_parameter_with_nul_cannot_be_written() {
    let packet = FeStartupPacket::StartupMessage {
        major_version: 3,
        minor_version: 0,
        params: [("us\0er", "x")].into_iter().collect(),
    };
    let mut out = BytesMut::from(&b"keep"[..]);
    assert_eq!(
        packet.write(&mut out),
        Err(ProtocolError::InteriorNul("startup parameter name"))
    );
    assert_eq!(&out[..], b"keep");
}

// ---------------------------------------------------------------------------
// Typed frontend messages

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

// ---------------------------------------------------------------------------
// Backend messages

#[test]
fn authentication_messages_match_postgres_bytes() {
    assert_eq!(
        be_bytes(BeMessage::AuthenticationOk),
        b"R\0\0\0\x08\0\0\0\0"
    );
    assert_eq!(
        be_bytes(BeMessage::AuthenticationCleartextPassword),
        b"R\0\0\0\x08\0\0\0\x03"
    );
    assert_eq!(
        be_bytes(BeMessage::AuthenticationMD5Password([1, 2, 3, 4])),
        b"R\0\0\0\x0c\0\0\0\x05\x01\x02\x03\x04"
    );
}

#[test]
fn session_messages_match_postgres_bytes() {
    assert_eq!(
        be_bytes(BeMessage::ParameterStatus {
            name: "client_encoding",
            value: "UTF8"
        }),
        b"S\0\0\0\x19client_encoding\0UTF8\0"
    );
    assert_eq!(
        be_bytes(BeMessage::BackendKeyData(CancelKeyData {
            backend_pid: 12345,
            cancel_key: -2
        })),
        b"K\0\0\0\x0c\0\0\x30\x39\xff\xff\xff\xfe"
    );
    assert_eq!(
        be_bytes(BeMessage::ReadyForQuery(TransactionStatus::Idle)),
        b"Z\0\0\0\x05I"
    );
    assert_eq!(
        be_bytes(BeMessage::ReadyForQuery(TransactionStatus::InTransaction)),
        b"Z\0\0\0\x05T"
    );
    assert_eq!(
        be_bytes(BeMessage::ReadyForQuery(TransactionStatus::Failed)),
        b"Z\0\0\0\x05E"
    );
    assert_eq!(be_bytes(BeMessage::EmptyQueryResponse), b"I\0\0\0\x04");
    assert_eq!(
        be_bytes(BeMessage::CommandComplete("SELECT 1")),
        b"C\0\0\0\x0dSELECT 1\0"
    );
}

#[test]
fn query_result_messages_match_postgres_bytes() {
    // `SELECT 'x'::text AS a`: PostgreSQL describes a text column with no
    // source table, typlen -1, typmod -1, text format.
    assert_eq!(
        be_bytes(BeMessage::RowDescription(&[RowDescriptor::text_col("a")])),
        b"T\0\0\0\x1a\0\x01a\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0"
    );
    assert_eq!(
        be_bytes(BeMessage::RowDescription(&[RowDescriptor::int8_col("n")])),
        b"T\0\0\0\x1a\0\x01n\0\0\0\0\0\0\0\0\0\0\x14\0\x08\xff\xff\xff\xff\0\0"
    );
    assert_eq!(
        be_bytes(BeMessage::DataRow(&[Some(b"1"), None, Some(b"")])),
        b"D\0\0\0\x13\0\x03\0\0\0\x011\xff\xff\xff\xff\0\0\0\0"
    );
}

#[test]
fn error_and_notice_responses_match_postgres_bytes() {
    assert_eq!(
        be_bytes(BeMessage::error(SqlState::SYNTAX_ERROR, "oops")),
        b"E\0\0\0\x20SERROR\0VERROR\0C42601\0Moops\0\0"
    );
    let fields = ErrorFields::fatal(SqlState::INVALID_PASSWORD, "bad password")
        .with_detail("d")
        .with_hint("h");
    assert_eq!(
        be_bytes(BeMessage::ErrorResponse(fields)),
        framed(b'E', b"SFATAL\0VFATAL\0C28P01\0Mbad password\0Dd\0Hh\0\0")
    );
    assert_eq!(
        be_bytes(BeMessage::NoticeResponse(ErrorFields::new(
            Severity::Notice,
            SqlState::SUCCESSFUL_COMPLETION,
            "hi"
        ))),
        framed(b'N', b"SNOTICE\0VNOTICE\0C00000\0Mhi\0\0")
    );
}

#[test]
fn copy_messages_match_postgres_bytes() {
    // What walsender sends for START_REPLICATION.
    assert_eq!(
        be_bytes(BeMessage::CopyBothResponse(CopyResponse::TEXT)),
        b"W\0\0\0\x07\0\0\0"
    );
    assert_eq!(
        be_bytes(BeMessage::CopyOutResponse(CopyResponse {
            format: Format::Binary,
            column_formats: &[Format::Binary, Format::Binary],
        })),
        b"H\0\0\0\x0b\x01\0\x02\0\x01\0\x01"
    );
    assert_eq!(
        be_bytes(BeMessage::CopyInResponse(CopyResponse {
            format: Format::Text,
            column_formats: &[Format::Text],
        })),
        b"G\0\0\0\x09\0\0\x01\0\0"
    );
    assert_eq!(be_bytes(BeMessage::CopyData(b"abc")), b"d\0\0\0\x07abc");
    assert_eq!(be_bytes(BeMessage::CopyDone), b"c\0\0\0\x04");
}

#[test]
fn negotiate_protocol_version_matches_postgres_bytes() {
    assert_eq!(
        be_bytes(BeMessage::NegotiateProtocolVersion {
            newest_minor: 0,
            unrecognized_options: &["_pq_.x"],
        }),
        b"v\0\0\0\x13\0\x03\0\0\0\0\0\x01_pq_.x\0"
    );
}

#[test]
fn interior_nul_fails_and_leaves_the_buffer_unchanged() {
    let mut out = BytesMut::from(&b"prefix"[..]);
    assert_eq!(
        BeMessage::error(SqlState::INTERNAL_ERROR, "a\0b").write(&mut out),
        Err(ProtocolError::InteriorNul("error message"))
    );
    assert_eq!(
        BeMessage::CommandComplete("x\0").write(&mut out),
        Err(ProtocolError::InteriorNul("command tag"))
    );
    assert_eq!(&out[..], b"prefix");
}

#[test]
fn single_row_text_result_is_row_description_data_row_command_complete() {
    let mut out = BytesMut::new();
    write_single_row_text_result(&mut out, &[("systemid", Some("42")), ("dbname", None)]).unwrap();
    let mut expected = BytesMut::new();
    BeMessage::RowDescription(&[
        RowDescriptor::text_col("systemid"),
        RowDescriptor::text_col("dbname"),
    ])
    .write(&mut expected)
    .unwrap();
    BeMessage::DataRow(&[Some(b"42"), None])
        .write(&mut expected)
        .unwrap();
    BeMessage::CommandComplete("SELECT 1")
        .write(&mut expected)
        .unwrap();
    assert_eq!(out, expected);
    let tags: Vec<u8> = split_be_messages(&out).iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, b"TDC");
}

#[test]
fn text_result_checks_row_width_and_writes_nothing_on_error() {
    let mut out = BytesMut::from(&b"x"[..]);
    assert_eq!(
        write_text_result(
            &mut out,
            &["a", "b"],
            &[&[Some("1"), Some("2")], &[Some("1")]]
        ),
        Err(ProtocolError::ColumnCountMismatch {
            expected: 2,
            got: 1
        })
    );
    assert_eq!(&out[..], b"x");

    let mut out = BytesMut::new();
    write_text_result(&mut out, &["a"], &[]).unwrap();
    let msgs = split_be_messages(&out);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1], (b'C', b"SELECT 0\0".to_vec()));
}

#[test]
#[should_panic(expected = "SQLSTATE characters")]
fn sqlstate_rejects_lower_case() {
    let _ = SqlState::new(b"abcde");
}

// ---------------------------------------------------------------------------
// Properties

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
