//! The startup phase: StartupMessage, SSLRequest, GSSENCRequest,
//! CancelRequest, their framing and their refusals.

use bytes::BytesMut;

use super::buf;
use crate::pq_proto::*;

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
