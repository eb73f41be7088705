//! Frontend (client → server) messages: parsing for servers, and
//! serialization for Rust clients and tests.
//!
//! Startup-phase packets have no type byte: `int32 length (including
//! itself), int32 code, payload`. Later messages are `byte tag, int32 length
//! (including itself, not the tag), payload`. See the module docs of
//! [`crate::pq_proto`] for the consumption and limit invariants.

use std::collections::BTreeMap;
use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{
    put_cstr, split_message, write_message, CancelKeyData, ProtocolError, CANCEL_REQUEST_CODE,
    DEFAULT_MAX_MESSAGE_SIZE, MAX_PASSWORD_LENGTH, MAX_STARTUP_PACKET_LENGTH, NEGOTIATE_GSS_CODE,
    NEGOTIATE_SSL_CODE,
};

/// The parameters of a StartupMessage (`user`, `database`, `options`,
/// `application_name`, ...). If a name repeats, the last value wins, as in
/// PostgreSQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupParams {
    params: BTreeMap<String, String>,
}

impl StartupParams {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.params.insert(name.into(), value.into());
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The `user` parameter, which PostgreSQL requires.
    pub fn user(&self) -> Option<&str> {
        self.get("user")
    }

    /// The `database` parameter; PostgreSQL defaults it to the user name.
    pub fn database(&self) -> Option<&str> {
        self.get("database")
    }

    /// Parameters in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.params
    }

    pub fn into_map(self) -> BTreeMap<String, String> {
        self.params
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for StartupParams {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut params = StartupParams::new();
        for (k, v) in iter {
            params.insert(k, v);
        }
        params
    }
}

/// A packet of the startup phase, which has no type byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeStartupPacket {
    /// StartupMessage. `major_version` is always 3; a minor version above 0
    /// is accepted so that the server can answer with
    /// NegotiateProtocolVersion if it wishes (PostgreSQL 15 does the same).
    StartupMessage {
        major_version: u16,
        minor_version: u16,
        params: StartupParams,
    },
    /// SSLRequest: answer with the raw byte [`super::SSL_REFUSED`] or
    /// [`super::SSL_ACCEPTED`]; another startup packet follows.
    SslRequest,
    /// GSSENCRequest: answer with [`super::GSSENC_REFUSED`]; another
    /// startup packet follows.
    GssEncRequest,
    /// CancelRequest for the backend identified by the key; the connection
    /// carries nothing else.
    CancelRequest(CancelKeyData),
}

/// A typed message after the startup phase. Only what our servers handle:
/// the simple query protocol, COPY, and authentication.
#[derive(Clone, PartialEq, Eq)]
pub enum FeMessage {
    /// PasswordMessage, SASLInitialResponse or SASLResponse: one type byte
    /// ('p') whose body only the server's last authentication request
    /// explains, so it is kept raw. Build it with [`FeMessage::password`],
    /// [`FeMessage::sasl_initial_response`] or [`FeMessage::sasl_response`];
    /// read it with [`parse_password`] or [`parse_sasl_initial_response`]
    /// (a SASLResponse body is the raw SASL data). Its `Debug` output is
    /// redacted.
    AuthResponse(Bytes),
    /// Query ('Q'): a simple query string.
    Query(String),
    /// CopyData ('d').
    CopyData(Bytes),
    /// CopyDone ('c').
    CopyDone,
    /// CopyFail ('f') with the client's error message.
    CopyFail(String),
    /// Sync ('S').
    Sync,
    /// Terminate ('X').
    Terminate,
}

impl fmt::Debug for FeMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeMessage::AuthResponse(p) => {
                write!(f, "AuthResponse(<redacted, {} bytes>)", p.len())
            }
            FeMessage::Query(q) => f.debug_tuple("Query").field(q).finish(),
            FeMessage::CopyData(d) => f.debug_tuple("CopyData").field(d).finish(),
            FeMessage::CopyDone => f.write_str("CopyDone"),
            FeMessage::CopyFail(m) => f.debug_tuple("CopyFail").field(m).finish(),
            FeMessage::Sync => f.write_str("Sync"),
            FeMessage::Terminate => f.write_str("Terminate"),
        }
    }
}

/// Parses frontend packets and messages out of a receive buffer.
///
/// Stateless apart from its limit: the caller tracks whether the connection
/// is still in the startup phase and calls [`FeDecoder::decode_startup`] or
/// [`FeDecoder::decode_message`] accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeDecoder {
    max_message_size: usize,
}

impl Default for FeDecoder {
    fn default() -> Self {
        FeDecoder::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

impl FeDecoder {
    /// A decoder that rejects any message whose body (after the length word)
    /// is longer than `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> Self {
        FeDecoder { max_message_size }
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Parses one startup-phase packet from the front of `buf`.
    pub fn decode_startup(
        &self,
        buf: &mut BytesMut,
    ) -> Result<Option<FeStartupPacket>, ProtocolError> {
        let Some(len) = peek_i32(buf, 0) else {
            return Ok(None);
        };
        // The length includes itself and must leave room for the 4-byte code.
        let body_len = match usize::try_from(len) {
            Ok(l) if (8..=MAX_STARTUP_PACKET_LENGTH + 4).contains(&l) => l - 4,
            _ => return Err(ProtocolError::InvalidStartupPacketLength(len)),
        };
        if buf.len() < 4 + body_len {
            return Ok(None);
        }
        buf.advance(4);
        let mut body = buf.split_to(body_len);
        let code = body.get_u32();
        match code {
            NEGOTIATE_SSL_CODE | NEGOTIATE_GSS_CODE => {
                if !body.is_empty() {
                    return Err(ProtocolError::InvalidStartupPacketLength(len));
                }
                Ok(Some(if code == NEGOTIATE_SSL_CODE {
                    FeStartupPacket::SslRequest
                } else {
                    FeStartupPacket::GssEncRequest
                }))
            }
            CANCEL_REQUEST_CODE => {
                if body.len() != 8 {
                    return Err(ProtocolError::InvalidStartupPacketLength(len));
                }
                let backend_pid = body.get_i32();
                let cancel_key = body.get_i32();
                Ok(Some(FeStartupPacket::CancelRequest(CancelKeyData {
                    backend_pid,
                    cancel_key,
                })))
            }
            version => {
                let major_version = (version >> 16) as u16;
                let minor_version = (version & 0xffff) as u16;
                if major_version != 3 {
                    return Err(ProtocolError::UnsupportedProtocolVersion {
                        major: major_version,
                        minor: minor_version,
                    });
                }
                let params = parse_startup_params(&body)?;
                Ok(Some(FeStartupPacket::StartupMessage {
                    major_version,
                    minor_version,
                    params,
                }))
            }
        }
    }

    /// Parses one typed message from the front of `buf`.
    ///
    /// The type byte is checked as soon as it arrives and the length as soon
    /// as it arrives, so garbage and oversized messages are rejected before
    /// their bodies are buffered.
    pub fn decode_message(&self, buf: &mut BytesMut) -> Result<Option<FeMessage>, ProtocolError> {
        let Some(&tag) = buf.first() else {
            return Ok(None);
        };
        // Largest body allowed for this message type.
        let limit = match tag {
            b'Q' | b'd' | b'f' => self.max_message_size,
            b'p' => MAX_PASSWORD_LENGTH.min(self.max_message_size),
            b'c' | b'S' | b'X' => 0,
            // Parse, Bind, Describe, Execute, Flush, Close, FunctionCall.
            b'P' | b'B' | b'D' | b'E' | b'H' | b'C' | b'F' => {
                return Err(ProtocolError::UnsupportedMessageType(tag))
            }
            _ => return Err(ProtocolError::UnknownMessageType(tag)),
        };
        let Some(body) = split_message(buf, tag, limit)? else {
            return Ok(None);
        };
        let msg = match tag {
            b'p' => FeMessage::AuthResponse(body),
            b'Q' => FeMessage::Query(parse_cstr_body(&body, "query message")?),
            b'd' => FeMessage::CopyData(body),
            b'f' => FeMessage::CopyFail(parse_cstr_body(&body, "CopyFail message")?),
            b'c' => FeMessage::CopyDone,
            b'S' => FeMessage::Sync,
            b'X' => FeMessage::Terminate,
            _ => return Err(ProtocolError::UnknownMessageType(tag)),
        };
        Ok(Some(msg))
    }
}

impl FeStartupPacket {
    /// Serializes the packet as a client would send it.
    pub fn write(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        let start = buf.len();
        buf.put_i32(0); // length, patched below
        let res = match self {
            FeStartupPacket::StartupMessage {
                major_version,
                minor_version,
                params,
            } => {
                buf.put_u16(*major_version);
                buf.put_u16(*minor_version);
                params
                    .iter()
                    .try_for_each(|(k, v)| {
                        put_cstr(buf, k, "startup parameter name")?;
                        put_cstr(buf, v, "startup parameter value")
                    })
                    .map(|()| buf.put_u8(0))
            }
            FeStartupPacket::SslRequest => {
                buf.put_u32(NEGOTIATE_SSL_CODE);
                Ok(())
            }
            FeStartupPacket::GssEncRequest => {
                buf.put_u32(NEGOTIATE_GSS_CODE);
                Ok(())
            }
            FeStartupPacket::CancelRequest(key) => {
                buf.put_u32(CANCEL_REQUEST_CODE);
                buf.put_i32(key.backend_pid);
                buf.put_i32(key.cancel_key);
                Ok(())
            }
        };
        let len = buf.len() - start;
        if let Err(e) = res {
            buf.truncate(start);
            return Err(e);
        }
        if len > MAX_STARTUP_PACKET_LENGTH + 4 {
            buf.truncate(start);
            return Err(ProtocolError::TooMany {
                what: "startup packet bytes",
                count: len,
            });
        }
        // Cannot truncate: bounded by MAX_STARTUP_PACKET_LENGTH above.
        buf[start..start + 4].copy_from_slice(&(len as i32).to_be_bytes());
        Ok(())
    }
}

impl FeMessage {
    /// The message's type byte.
    pub fn tag(&self) -> u8 {
        match self {
            FeMessage::AuthResponse(_) => b'p',
            FeMessage::Query(_) => b'Q',
            FeMessage::CopyData(_) => b'd',
            FeMessage::CopyDone => b'c',
            FeMessage::CopyFail(_) => b'f',
            FeMessage::Sync => b'S',
            FeMessage::Terminate => b'X',
        }
    }

    /// Serializes the message as a client would send it.
    pub fn write(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        write_message(buf, self.tag(), |buf| match self {
            FeMessage::AuthResponse(d) => {
                buf.put_slice(d);
                Ok(())
            }
            FeMessage::Query(s) => put_cstr(buf, s, "query"),
            FeMessage::CopyFail(s) => put_cstr(buf, s, "CopyFail message"),
            FeMessage::CopyData(d) => {
                buf.put_slice(d);
                Ok(())
            }
            FeMessage::CopyDone | FeMessage::Sync | FeMessage::Terminate => Ok(()),
        })
    }
}

impl FeMessage {
    /// A PasswordMessage: a cleartext or MD5-hashed password (for us often
    /// a JWT), as a NUL-terminated string.
    pub fn password(password: &str) -> Result<FeMessage, ProtocolError> {
        let mut body = BytesMut::with_capacity(password.len() + 1);
        put_cstr(&mut body, password, "password")?;
        Ok(FeMessage::AuthResponse(body.freeze()))
    }

    /// SASLInitialResponse: the chosen mechanism and the client's first
    /// message (`None` sends length -1: no initial response).
    pub fn sasl_initial_response(
        mechanism: &str,
        data: Option<&[u8]>,
    ) -> Result<FeMessage, ProtocolError> {
        let mut body = BytesMut::with_capacity(mechanism.len() + 5 + data.map_or(0, <[u8]>::len));
        put_cstr(&mut body, mechanism, "SASL mechanism")?;
        match data {
            None => body.put_i32(-1),
            Some(d) => {
                let len = i32::try_from(d.len()).map_err(|_| ProtocolError::TooMany {
                    what: "SASL data bytes",
                    count: d.len(),
                })?;
                body.put_i32(len);
                body.put_slice(d);
            }
        }
        Ok(FeMessage::AuthResponse(body.freeze()))
    }

    /// SASLResponse: the raw SASL data.
    pub fn sasl_response(data: &[u8]) -> FeMessage {
        FeMessage::AuthResponse(Bytes::copy_from_slice(data))
    }
}

/// The password of a PasswordMessage body (one NUL-terminated UTF-8
/// string, at most [`MAX_PASSWORD_LENGTH`] bytes as the decoder enforces).
pub fn parse_password(body: &[u8]) -> Result<&str, ProtocolError> {
    let (s, rest) = split_cstr(body, "password message")?;
    if !rest.is_empty() {
        return Err(ProtocolError::TrailingBytes("password message"));
    }
    Ok(s)
}

/// The mechanism and initial data of a SASLInitialResponse body (`None`:
/// the client sent no initial response, length -1).
pub fn parse_sasl_initial_response(body: &[u8]) -> Result<(&str, Option<&[u8]>), ProtocolError> {
    const WHAT: &str = "SASLInitialResponse";
    let (mechanism, rest) = split_cstr(body, WHAT)?;
    let len = peek_i32(rest, 0).ok_or(ProtocolError::Truncated(WHAT))?;
    let data = &rest[4..];
    match len {
        -1 if data.is_empty() => Ok((mechanism, None)),
        -1 => Err(ProtocolError::TrailingBytes(WHAT)),
        l if usize::try_from(l) == Ok(data.len()) => Ok((mechanism, Some(data))),
        l if l < -1 || usize::try_from(l).is_ok_and(|l| l > data.len()) => {
            Err(ProtocolError::Truncated(WHAT))
        }
        _ => Err(ProtocolError::TrailingBytes(WHAT)),
    }
}

/// Big-endian i32 at `pos`, if the buffer holds it.
pub(super) fn peek_i32(buf: &[u8], pos: usize) -> Option<i32> {
    let bytes = buf.get(pos..pos + 4)?;
    Some(i32::from_be_bytes(bytes.try_into().ok()?))
}

/// The body must be exactly one NUL-terminated UTF-8 string.
pub(super) fn parse_cstr_body(body: &[u8], what: &'static str) -> Result<String, ProtocolError> {
    let (s, rest) = split_cstr(body, what)?;
    if !rest.is_empty() {
        return Err(ProtocolError::TrailingBytes(what));
    }
    Ok(s.to_owned())
}

/// Splits a NUL-terminated UTF-8 string off the front of `data`.
pub(super) fn split_cstr<'a>(
    data: &'a [u8],
    what: &'static str,
) -> Result<(&'a str, &'a [u8]), ProtocolError> {
    let nul = data
        .iter()
        .position(|&b| b == 0)
        .ok_or(ProtocolError::MissingNulTerminator(what))?;
    let s = std::str::from_utf8(&data[..nul]).map_err(|_| ProtocolError::InvalidUtf8(what))?;
    Ok((s, &data[nul + 1..]))
}

/// `name\0value\0 ... \0`: pairs of C strings ended by an empty name, which
/// must be the last byte (as PostgreSQL's `ProcessStartupPacket` requires).
fn parse_startup_params(mut data: &[u8]) -> Result<StartupParams, ProtocolError> {
    let mut params = StartupParams::new();
    loop {
        match data {
            [] => {
                return Err(ProtocolError::InvalidStartupPacketLayout(
                    "expected terminator as last byte",
                ))
            }
            [0] => return Ok(params),
            [0, ..] => {
                return Err(ProtocolError::InvalidStartupPacketLayout(
                    "expected terminator as last byte",
                ))
            }
            _ => {}
        }
        let (name, rest) = split_cstr(data, "startup parameter name")?;
        let (value, rest) = split_cstr(rest, "startup parameter value")?;
        params.insert(name, value);
        data = rest;
    }
}
