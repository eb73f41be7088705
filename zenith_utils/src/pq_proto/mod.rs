//! The PostgreSQL v3 frontend/backend wire protocol, both directions, as a
//! synchronous codec over [`bytes::BytesMut`]. Every process of the project
//! that speaks the protocol (the page service, the WAL receiver, the control
//! plane, pagebench, tests; later the walkeeper and the proxy) reads and
//! writes messages only through this module.
//!
//! The format is documented in the PostgreSQL manual, chapter "Frontend/Backend
//! Protocol" (§55.7 "Message Formats" in the PostgreSQL 15 docs) and, for the
//! replication sub-protocol, §55.4 "Streaming Replication Protocol". This
//! module only turns bytes into typed messages and back; connection state
//! machines live in [`crate::postgres_backend`] (server side) and
//! [`crate::postgres_client`] (client side).
//!
//! - [`FeDecoder`] parses what a client sends: first a startup-phase packet
//!   ([`FeStartupPacket`]: StartupMessage, SSLRequest, GSSENCRequest,
//!   CancelRequest; no type byte), then typed messages ([`FeMessage`]).
//!   The caller knows the phase and calls the matching method.
//!   [`FeStartupPacket::write`] and [`FeMessage::write`] serialize the same
//!   messages for clients.
//! - [`BeMessage`] serializes what a server sends; [`BeDecoder`] parses it
//!   back into an owned [`BackendMessage`] for clients.
//! - [`replication`]: the messages inside the CopyData of a physical
//!   replication stream (XLogData, keepalive, standby status update,
//!   hot-standby feedback), for both ends.
//!
//! Invariants:
//! - Decoding returns `Ok(None)` and consumes nothing while the buffer holds
//!   less than one whole message; `Ok(Some(_))` consumes exactly that message.
//! - A length field is validated against a limit before anything waits for or
//!   copies the body, so a hostile length can never make us allocate: the
//!   startup packet is limited to [`MAX_STARTUP_PACKET_LENGTH`] (as in
//!   PostgreSQL), a password to [`MAX_PASSWORD_LENGTH`], other messages to the
//!   decoder's `max_message_size`.
//! - Any `Err` from the decoder means the stream is broken (framing is lost).
//!   The server should send an ErrorResponse (see
//!   [`ProtocolError::sql_state`]) and close the connection. What the
//!   decoder consumed before failing is unspecified.
//! - Serializing never writes a partial message: on error the output buffer is
//!   left as it was (strings with interior NUL bytes cannot be sent as C
//!   strings, counts must fit the protocol's integer widths).
//!
//! Raw single-byte answers to SSLRequest/GSSENCRequest are not messages; they
//! are the constants [`SSL_REFUSED`], [`SSL_ACCEPTED`], [`GSSENC_REFUSED`].

mod backend;
mod backend_decode;
#[cfg(test)]
mod decode_tests;
mod frontend;
pub mod replication;
#[cfg(test)]
mod tests;

pub use backend::{
    oid, write_single_row_text_result, write_text_result, BeMessage, CopyResponse, ErrorFields,
    Format, RowDescriptor, Severity, SqlState, TransactionStatus,
};
pub use backend_decode::{
    AuthRequest, BackendMessage, BeDecoder, CopyFormat, ErrorNotice, RowField,
};
pub use frontend::{
    parse_password, parse_sasl_initial_response, FeDecoder, FeMessage, FeStartupPacket,
    StartupParams,
};

/// Default limit for one frontend message body (CopyData can be large):
/// 1 GiB, PostgreSQL's `PQ_LARGE_MESSAGE_LIMIT` rounded.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 30;

/// Largest startup packet body (after the length word) PostgreSQL accepts
/// (`MAX_STARTUP_PACKET_LENGTH` in `libpq/pqcomm.h`).
pub const MAX_STARTUP_PACKET_LENGTH: usize = 10_000;

/// Largest PasswordMessage body accepted (`PG_MAX_AUTH_TOKEN_LENGTH`).
pub const MAX_PASSWORD_LENGTH: usize = 65_535;

/// The protocol version code of protocol 3.0 in a StartupMessage.
pub const PROTOCOL_VERSION_3_0: u32 = 3 << 16;
/// Request code of CancelRequest (1234.5678).
pub const CANCEL_REQUEST_CODE: u32 = (1234 << 16) | 5678;
/// Request code of SSLRequest (1234.5679).
pub const NEGOTIATE_SSL_CODE: u32 = (1234 << 16) | 5679;
/// Request code of GSSENCRequest (1234.5680).
pub const NEGOTIATE_GSS_CODE: u32 = (1234 << 16) | 5680;

/// The single raw byte (not a message) a server sends to refuse an
/// SSLRequest; the client then continues in plain text with a StartupMessage.
pub const SSL_REFUSED: u8 = b'N';
/// The single raw byte a server sends to accept an SSLRequest; the TLS
/// handshake starts right after it.
pub const SSL_ACCEPTED: u8 = b'S';
/// The single raw byte a server sends to refuse a GSSENCRequest.
pub const GSSENC_REFUSED: u8 = b'N';

/// Identifies a backend for CancelRequest; sent to the client in
/// BackendKeyData.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKeyData {
    pub backend_pid: i32,
    pub cancel_key: i32,
}

/// Malformed input from the peer, or a message that cannot be serialized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid length of startup packet: {0}")]
    InvalidStartupPacketLength(i32),
    #[error("invalid startup packet layout: {0}")]
    InvalidStartupPacketLayout(&'static str),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocolVersion { major: u16, minor: u16 },
    #[error("invalid message length {len} for message type {:?}", char::from(*.tag))]
    InvalidMessageLength { tag: u8, len: i32 },
    #[error("message type {:?} of {len} bytes exceeds the limit of {max} bytes", char::from(*.tag))]
    MessageTooLarge { tag: u8, len: usize, max: usize },
    #[error("invalid frontend message type {:?}", char::from(*.0))]
    UnknownMessageType(u8),
    #[error("invalid backend message type {:?}", char::from(*.0))]
    UnknownBackendMessageType(u8),
    #[error("unsupported authentication request {0} ({name}): only trust, cleartext, MD5 and SCRAM-SHA-256 are supported", name = auth_method_name(*.0))]
    UnsupportedAuthentication(i32),
    #[error("invalid {0}: the message ends too early")]
    Truncated(&'static str),
    #[error("invalid {what}: {value}")]
    InvalidValue { what: &'static str, value: i64 },
    #[error(
        "unsupported frontend message type {:?}: only the simple query protocol is supported",
        char::from(*.0)
    )]
    UnsupportedMessageType(u8),
    #[error("invalid {0}: missing NUL terminator")]
    MissingNulTerminator(&'static str),
    #[error("invalid {0}: not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("invalid {0}: unexpected bytes after the end of the message")]
    TrailingBytes(&'static str),
    #[error("cannot send {0}: it contains a NUL byte")]
    InteriorNul(&'static str),
    #[error("cannot send {0}")]
    Unserializable(&'static str),
    #[error("cannot send {what}: {count} is more than the protocol allows")]
    TooMany { what: &'static str, count: usize },
    #[error("data row has {got} values but the row description has {expected} columns")]
    ColumnCountMismatch { expected: usize, got: usize },
}

/// The name of an authentication request code (`AUTH_REQ_*` in
/// PostgreSQL's `libpq/pqcomm.h`), for error messages.
fn auth_method_name(code: i32) -> &'static str {
    match code {
        0 => "ok",
        2 => "Kerberos V5",
        3 => "cleartext password",
        5 => "MD5 password",
        6 => "SCM credentials",
        7 => "GSSAPI",
        8 => "GSSAPI continue",
        9 => "SSPI",
        10 => "SASL",
        11 => "SASL continue",
        12 => "SASL final",
        _ => "unknown",
    }
}

impl ProtocolError {
    /// The SQLSTATE a server should report to the client for this error.
    pub fn sql_state(&self) -> SqlState {
        match self {
            ProtocolError::UnsupportedProtocolVersion { .. }
            | ProtocolError::UnsupportedMessageType(_) => SqlState::FEATURE_NOT_SUPPORTED,
            ProtocolError::MessageTooLarge { .. } => SqlState::PROGRAM_LIMIT_EXCEEDED,
            ProtocolError::InteriorNul(_)
            | ProtocolError::Unserializable(_)
            | ProtocolError::TooMany { .. }
            | ProtocolError::ColumnCountMismatch { .. } => SqlState::INTERNAL_ERROR,
            _ => SqlState::PROTOCOL_VIOLATION,
        }
    }
}

/// Cuts one typed message (`tag`, length word, body) off the front of
/// `buf` once it is all there, and returns its body. `limit` is the largest
/// body allowed for `tag` (0: the body must be empty); the length is checked
/// against it as soon as it arrives, before the body is waited for. Consumes
/// nothing while the message is incomplete.
fn split_message(
    buf: &mut bytes::BytesMut,
    tag: u8,
    limit: usize,
) -> Result<Option<bytes::Bytes>, ProtocolError> {
    use bytes::Buf;

    let Some(len) = frontend::peek_i32(buf, 1) else {
        return Ok(None);
    };
    let body_len = match usize::try_from(len) {
        Ok(l) if l >= 4 => l - 4,
        _ => return Err(ProtocolError::InvalidMessageLength { tag, len }),
    };
    if body_len > limit {
        return Err(if limit == 0 {
            ProtocolError::InvalidMessageLength { tag, len }
        } else {
            ProtocolError::MessageTooLarge {
                tag,
                len: body_len,
                max: limit,
            }
        });
    }
    if buf.len() - 5 < body_len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(body_len).freeze()))
}

/// Appends one typed message: `tag`, a length word, and whatever `body`
/// writes, then patches the length. On error nothing is left behind.
fn write_message(
    buf: &mut bytes::BytesMut,
    tag: u8,
    body: impl FnOnce(&mut bytes::BytesMut) -> Result<(), ProtocolError>,
) -> Result<(), ProtocolError> {
    use bytes::BufMut;

    let start = buf.len();
    buf.put_u8(tag);
    buf.put_i32(0); // length, patched below
    if let Err(e) = body(buf) {
        buf.truncate(start);
        return Err(e);
    }
    // The length counts itself but not the tag.
    let len = buf.len() - start - 1;
    let Ok(len) = i32::try_from(len) else {
        buf.truncate(start);
        return Err(ProtocolError::TooMany {
            what: "message bytes",
            count: len,
        });
    };
    buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Appends `s` as a NUL-terminated string; `what` names it in the error if
/// `s` itself contains a NUL byte.
fn put_cstr(buf: &mut bytes::BytesMut, s: &str, what: &'static str) -> Result<(), ProtocolError> {
    use bytes::BufMut;

    if s.as_bytes().contains(&0) {
        return Err(ProtocolError::InteriorNul(what));
    }
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
    Ok(())
}
