//! Backend messages: the bytes PostgreSQL sends, text results, SQLSTATEs.

use bytes::BytesMut;

use super::{be_bytes, framed, split_be_messages};
use crate::pq_proto::*;

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
