//! Backend (server → client) messages parsed by clients: [`BeDecoder`] cuts
//! a receive buffer into [`BackendMessage`]s, the owned counterpart of
//! [`BeMessage`] (which borrows, for serializing without copies).
//!
//! Only what a simple-query client meets is understood: authentication
//! requests, session parameters, query results, errors and notices,
//! notifications and COPY. Extended-query replies (ParseComplete,
//! BindComplete, ...) are not sent to a client that never uses the
//! extended protocol, so they are errors here, like any unknown type byte.
//! The consumption and limit invariants are those of the module docs of
//! [`crate::pq_proto`]: nothing is consumed until a whole message is there,
//! and the type byte and length are checked before the body is waited for.

use bytes::{Buf, Bytes, BytesMut};

use super::backend::{
    BeMessage, CopyResponse, Format, RowDescriptor, Severity, SqlState, TransactionStatus,
};
use super::frontend::split_cstr;
use super::{
    put_cstr, split_message, write_message, CancelKeyData, ProtocolError, DEFAULT_MAX_MESSAGE_SIZE,
};

/// An authentication request ('R') from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    /// AuthenticationOk: no (more) authentication needed.
    Ok,
    CleartextPassword,
    /// MD5Password with its 4-byte salt.
    Md5Password([u8; 4]),
    /// SASL with the mechanisms offered, in the server's order.
    Sasl(Vec<String>),
    /// SASLContinue with the server's challenge.
    SaslContinue(Bytes),
    /// SASLFinal with the server's outcome data.
    SaslFinal(Bytes),
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowField {
    pub name: String,
    pub table_oid: u32,
    pub column_attr: i16,
    pub type_oid: u32,
    pub type_size: i16,
    pub type_modifier: i32,
    pub format: Format,
}

/// The body of CopyInResponse, CopyOutResponse or CopyBothResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    pub format: Format,
    pub column_formats: Vec<Format>,
}

/// The fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorNotice {
    /// 'V' (not localized) or else 'S'; `ERROR`, `FATAL`, `NOTICE`, ...
    pub severity: String,
    /// 'C': the SQLSTATE as sent (five characters from a well-behaved server).
    pub code: String,
    /// 'M': the primary message.
    pub message: String,
    /// 'D'
    pub detail: Option<String>,
    /// 'H'
    pub hint: Option<String>,
    /// Every other field (position, where, file, line, routine, ...) by
    /// type byte, in the order received.
    pub other: Vec<(u8, String)>,
}

impl ErrorNotice {
    /// The SQLSTATE, if the server sent a well-formed one.
    pub fn sql_state(&self) -> Option<SqlState> {
        SqlState::parse(&self.code)
    }

    /// The severity as our enum (unknown names count as ERROR).
    pub fn severity(&self) -> Severity {
        match self.severity.as_str() {
            "FATAL" => Severity::Fatal,
            "PANIC" => Severity::Panic,
            "WARNING" => Severity::Warning,
            "NOTICE" => Severity::Notice,
            "DEBUG" => Severity::Debug,
            "INFO" => Severity::Info,
            "LOG" => Severity::Log,
            _ => Severity::Error,
        }
    }

    fn parse(mut body: &[u8]) -> Result<ErrorNotice, ProtocolError> {
        const WHAT: &str = "error or notice field";
        let mut e = ErrorNotice::default();
        let mut localized_severity = None;
        loop {
            let Some((&t, rest)) = body.split_first() else {
                return Err(ProtocolError::Truncated("error or notice response"));
            };
            if t == 0 {
                if !rest.is_empty() {
                    return Err(ProtocolError::TrailingBytes("error or notice response"));
                }
                break;
            }
            let (value, rest) = split_cstr(rest, WHAT)?;
            let value = value.to_string();
            match t {
                b'S' => localized_severity = Some(value),
                b'V' => e.severity = value,
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                _ => e.other.push((t, value)),
            }
            body = rest;
        }
        if e.severity.is_empty() {
            e.severity = localized_severity.unwrap_or_default();
        }
        Ok(e)
    }

    fn write_body(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        use bytes::BufMut;
        let fixed = [
            (b'S', Some(&self.severity)),
            (b'V', Some(&self.severity)),
            (b'C', Some(&self.code)),
            (b'M', Some(&self.message)),
            (b'D', self.detail.as_ref()),
            (b'H', self.hint.as_ref()),
        ];
        let other = self.other.iter().map(|(t, v)| (*t, Some(v)));
        for (t, v) in fixed.into_iter().chain(other) {
            if let Some(v) = v {
                if t == 0 {
                    return Err(ProtocolError::Unserializable("an error field of type 0"));
                }
                buf.put_u8(t);
                put_cstr(buf, v, "error field")?;
            }
        }
        buf.put_u8(0);
        Ok(())
    }
}

impl std::fmt::Display for ErrorNotice {
    /// `SEVERITY:  message (SQLSTATE xxxxx)` plus detail and hint, as psql
    /// shows them, on one line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:  {}", self.severity, self.message)?;
        if !self.code.is_empty() {
            write!(f, " (SQLSTATE {})", self.code)?;
        }
        if let Some(d) = &self.detail {
            write!(f, "; DETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; HINT: {h}")?;
        }
        Ok(())
    }
}

/// A message a client receives, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    Authentication(AuthRequest),
    ParameterStatus {
        name: String,
        value: String,
    },
    BackendKeyData(CancelKeyData),
    ReadyForQuery(TransactionStatus),
    RowDescription(Vec<RowField>),
    /// One row; `None` is SQL NULL.
    DataRow(Vec<Option<Bytes>>),
    CommandComplete(String),
    EmptyQueryResponse,
    ErrorResponse(ErrorNotice),
    NoticeResponse(ErrorNotice),
    /// NotificationResponse ('A'): a NOTIFY from another session.
    NotificationResponse {
        pid: i32,
        channel: String,
        payload: String,
    },
    CopyInResponse(CopyFormat),
    CopyOutResponse(CopyFormat),
    CopyBothResponse(CopyFormat),
    CopyData(Bytes),
    CopyDone,
    NegotiateProtocolVersion {
        newest_minor: u16,
        unrecognized_options: Vec<String>,
    },
}

/// Parses backend messages out of a client's receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeDecoder {
    max_message_size: usize,
}

impl Default for BeDecoder {
    fn default() -> Self {
        BeDecoder::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

/// Body limits of the messages whose size does not depend on the data.
const SMALL_MESSAGE: usize = 64 * 1024;

impl BeDecoder {
    /// A decoder that rejects any message whose body (after the length
    /// word) is longer than `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> Self {
        BeDecoder { max_message_size }
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Parses one message from the front of `buf`; `Ok(None)` (nothing
    /// consumed) while it is incomplete.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<BackendMessage>, ProtocolError> {
        let Some(&tag) = buf.first() else {
            return Ok(None);
        };
        let limit = match tag {
            b'D' | b'd' | b'T' | b'E' | b'N' | b'A' => self.max_message_size,
            b'R' | b'S' | b'C' | b'v' | b'G' | b'H' | b'W' => SMALL_MESSAGE,
            b'K' => 8,
            b'Z' => 1,
            b'I' | b'c' => 0,
            _ => return Err(ProtocolError::UnknownBackendMessageType(tag)),
        };
        let Some(body) = split_message(buf, tag, limit)? else {
            return Ok(None);
        };
        parse_body(tag, body).map(Some)
    }
}

/// Reads fixed-width fields and strings off a message body.
struct Body {
    data: Bytes,
    what: &'static str,
}

impl Body {
    fn need(&self, n: usize) -> Result<(), ProtocolError> {
        if self.data.len() < n {
            Err(ProtocolError::Truncated(self.what))
        } else {
            Ok(())
        }
    }

    fn i16(&mut self) -> Result<i16, ProtocolError> {
        self.need(2)?;
        Ok(self.data.get_i16())
    }

    fn i32(&mut self) -> Result<i32, ProtocolError> {
        self.need(4)?;
        Ok(self.data.get_i32())
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        self.need(4)?;
        Ok(self.data.get_u32())
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        self.need(1)?;
        Ok(self.data.get_u8())
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, ProtocolError> {
        self.need(n)?;
        Ok(self.data.split_to(n))
    }

    fn cstr(&mut self) -> Result<String, ProtocolError> {
        let (s, rest) = split_cstr(&self.data, self.what)?;
        let (s, consumed) = (s.to_string(), self.data.len() - rest.len());
        self.data.advance(consumed);
        Ok(s)
    }

    fn rest(self) -> Bytes {
        self.data
    }

    fn end(self) -> Result<(), ProtocolError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes(self.what))
        }
    }

    /// A count that must be non-negative; `each` is the least number of
    /// bytes one element takes, so that a hostile count cannot make us
    /// reserve more than the body could hold.
    fn count(&mut self, n: i64, each: usize) -> Result<usize, ProtocolError> {
        let n = usize::try_from(n).map_err(|_| ProtocolError::InvalidValue {
            what: "element count",
            value: n,
        })?;
        if n.saturating_mul(each) > self.data.len() {
            return Err(ProtocolError::Truncated(self.what));
        }
        Ok(n)
    }
}

fn format(code: i64) -> Result<Format, ProtocolError> {
    match code {
        0 => Ok(Format::Text),
        1 => Ok(Format::Binary),
        _ => Err(ProtocolError::InvalidValue {
            what: "format code",
            value: code,
        }),
    }
}

fn copy_format(mut b: Body) -> Result<CopyFormat, ProtocolError> {
    let overall = format(b.u8()?.into())?;
    let n = b.i16()?;
    let n = b.count(n.into(), 2)?;
    let mut column_formats = Vec::with_capacity(n);
    for _ in 0..n {
        column_formats.push(format(b.i16()?.into())?);
    }
    b.end()?;
    Ok(CopyFormat {
        format: overall,
        column_formats,
    })
}

fn parse_body(tag: u8, data: Bytes) -> Result<BackendMessage, ProtocolError> {
    let what = match tag {
        b'R' => "authentication request",
        b'S' => "ParameterStatus",
        b'K' => "BackendKeyData",
        b'Z' => "ReadyForQuery",
        b'T' => "RowDescription",
        b'D' => "DataRow",
        b'C' => "CommandComplete",
        b'A' => "NotificationResponse",
        b'G' | b'H' | b'W' => "copy response",
        b'v' => "NegotiateProtocolVersion",
        _ => "message",
    };
    let mut b = Body { data, what };
    Ok(match tag {
        b'R' => BackendMessage::Authentication(match b.i32()? {
            0 => {
                b.end()?;
                AuthRequest::Ok
            }
            3 => {
                b.end()?;
                AuthRequest::CleartextPassword
            }
            5 => {
                let salt = b.bytes(4)?;
                b.end()?;
                AuthRequest::Md5Password([salt[0], salt[1], salt[2], salt[3]])
            }
            10 => {
                let mut mechanisms = Vec::new();
                loop {
                    let m = b.cstr()?;
                    if m.is_empty() {
                        break;
                    }
                    mechanisms.push(m);
                }
                b.end()?;
                AuthRequest::Sasl(mechanisms)
            }
            11 => AuthRequest::SaslContinue(b.rest()),
            12 => AuthRequest::SaslFinal(b.rest()),
            code => return Err(ProtocolError::UnsupportedAuthentication(code)),
        }),
        b'S' => {
            let (name, value) = (b.cstr()?, b.cstr()?);
            b.end()?;
            BackendMessage::ParameterStatus { name, value }
        }
        b'K' => {
            let key = CancelKeyData {
                backend_pid: b.i32()?,
                cancel_key: b.i32()?,
            };
            b.end()?;
            BackendMessage::BackendKeyData(key)
        }
        b'Z' => BackendMessage::ReadyForQuery(match b.u8()? {
            b'I' => TransactionStatus::Idle,
            b'T' => TransactionStatus::InTransaction,
            b'E' => TransactionStatus::Failed,
            other => {
                return Err(ProtocolError::InvalidValue {
                    what: "transaction status",
                    value: other.into(),
                })
            }
        }),
        b'T' => {
            let n = b.i16()?;
            // A column takes at least a NUL and 18 bytes of fields.
            let n = b.count(n.into(), 19)?;
            let mut fields = Vec::with_capacity(n);
            for _ in 0..n {
                fields.push(RowField {
                    name: b.cstr()?,
                    table_oid: b.u32()?,
                    column_attr: b.i16()?,
                    type_oid: b.u32()?,
                    type_size: b.i16()?,
                    type_modifier: b.i32()?,
                    format: format(b.i16()?.into())?,
                });
            }
            b.end()?;
            BackendMessage::RowDescription(fields)
        }
        b'D' => {
            let n = b.i16()?;
            let n = b.count(n.into(), 4)?;
            let mut values = Vec::with_capacity(n);
            for _ in 0..n {
                let len = b.i32()?;
                values.push(match len {
                    -1 => None,
                    l if l >= 0 => Some(b.bytes(l as usize)?),
                    l => {
                        return Err(ProtocolError::InvalidValue {
                            what: "column value length",
                            value: l.into(),
                        })
                    }
                });
            }
            b.end()?;
            BackendMessage::DataRow(values)
        }
        b'C' => {
            let tag = b.cstr()?;
            b.end()?;
            BackendMessage::CommandComplete(tag)
        }
        b'I' => BackendMessage::EmptyQueryResponse,
        b'E' => BackendMessage::ErrorResponse(ErrorNotice::parse(&b.rest())?),
        b'N' => BackendMessage::NoticeResponse(ErrorNotice::parse(&b.rest())?),
        b'A' => {
            let pid = b.i32()?;
            let (channel, payload) = (b.cstr()?, b.cstr()?);
            b.end()?;
            BackendMessage::NotificationResponse {
                pid,
                channel,
                payload,
            }
        }
        b'G' => BackendMessage::CopyInResponse(copy_format(b)?),
        b'H' => BackendMessage::CopyOutResponse(copy_format(b)?),
        b'W' => BackendMessage::CopyBothResponse(copy_format(b)?),
        b'd' => BackendMessage::CopyData(b.rest()),
        b'c' => BackendMessage::CopyDone,
        b'v' => {
            let version = b.i32()?;
            if version >> 16 != 3 {
                return Err(ProtocolError::InvalidValue {
                    what: "protocol version in NegotiateProtocolVersion",
                    value: version.into(),
                });
            }
            let n = b.i32()?;
            let n = b.count(n.into(), 1)?;
            let mut unrecognized_options = Vec::with_capacity(n);
            for _ in 0..n {
                unrecognized_options.push(b.cstr()?);
            }
            b.end()?;
            BackendMessage::NegotiateProtocolVersion {
                newest_minor: (version & 0xffff) as u16,
                unrecognized_options,
            }
        }
        _ => return Err(ProtocolError::UnknownBackendMessageType(tag)),
    })
}

impl BackendMessage {
    /// The message's type byte.
    pub fn tag(&self) -> u8 {
        match self {
            BackendMessage::Authentication(_) => b'R',
            BackendMessage::ParameterStatus { .. } => b'S',
            BackendMessage::BackendKeyData(_) => b'K',
            BackendMessage::ReadyForQuery(_) => b'Z',
            BackendMessage::RowDescription(_) => b'T',
            BackendMessage::DataRow(_) => b'D',
            BackendMessage::CommandComplete(_) => b'C',
            BackendMessage::EmptyQueryResponse => b'I',
            BackendMessage::ErrorResponse(_) => b'E',
            BackendMessage::NoticeResponse(_) => b'N',
            BackendMessage::NotificationResponse { .. } => b'A',
            BackendMessage::CopyInResponse(_) => b'G',
            BackendMessage::CopyOutResponse(_) => b'H',
            BackendMessage::CopyBothResponse(_) => b'W',
            BackendMessage::CopyData(_) => b'd',
            BackendMessage::CopyDone => b'c',
            BackendMessage::NegotiateProtocolVersion { .. } => b'v',
        }
    }

    /// Serializes the message as a server would send it (through
    /// [`BeMessage`], so both forms share one encoder); on error nothing
    /// is appended. Error and notice fields go out in the order S, V, C, M,
    /// D, H, then the others as received.
    pub fn write(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        match self {
            BackendMessage::Authentication(a) => match a {
                AuthRequest::Ok => BeMessage::AuthenticationOk.write(buf),
                AuthRequest::CleartextPassword => {
                    BeMessage::AuthenticationCleartextPassword.write(buf)
                }
                AuthRequest::Md5Password(salt) => {
                    BeMessage::AuthenticationMD5Password(*salt).write(buf)
                }
                AuthRequest::Sasl(mechs) => {
                    let mechs: Vec<&str> = mechs.iter().map(String::as_str).collect();
                    BeMessage::AuthenticationSasl(&mechs).write(buf)
                }
                AuthRequest::SaslContinue(d) => BeMessage::AuthenticationSaslContinue(d).write(buf),
                AuthRequest::SaslFinal(d) => BeMessage::AuthenticationSaslFinal(d).write(buf),
            },
            BackendMessage::ParameterStatus { name, value } => {
                BeMessage::ParameterStatus { name, value }.write(buf)
            }
            BackendMessage::BackendKeyData(k) => BeMessage::BackendKeyData(*k).write(buf),
            BackendMessage::ReadyForQuery(s) => BeMessage::ReadyForQuery(*s).write(buf),
            BackendMessage::RowDescription(fields) => {
                let fields: Vec<RowDescriptor> = fields
                    .iter()
                    .map(|f| RowDescriptor {
                        name: &f.name,
                        table_oid: f.table_oid,
                        column_attr: f.column_attr,
                        type_oid: f.type_oid,
                        type_size: f.type_size,
                        type_modifier: f.type_modifier,
                        format: f.format,
                    })
                    .collect();
                BeMessage::RowDescription(&fields).write(buf)
            }
            BackendMessage::DataRow(values) => {
                let values: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
                BeMessage::DataRow(&values).write(buf)
            }
            BackendMessage::CommandComplete(tag) => BeMessage::CommandComplete(tag).write(buf),
            BackendMessage::EmptyQueryResponse => BeMessage::EmptyQueryResponse.write(buf),
            BackendMessage::ErrorResponse(e) | BackendMessage::NoticeResponse(e) => {
                write_message(buf, self.tag(), |buf| e.write_body(buf))
            }
            BackendMessage::NotificationResponse {
                pid,
                channel,
                payload,
            } => write_message(buf, b'A', |buf| {
                use bytes::BufMut;
                buf.put_i32(*pid);
                put_cstr(buf, channel, "notification channel")?;
                put_cstr(buf, payload, "notification payload")
            }),
            BackendMessage::CopyInResponse(c) => {
                BeMessage::CopyInResponse(copy_response(c)).write(buf)
            }
            BackendMessage::CopyOutResponse(c) => {
                BeMessage::CopyOutResponse(copy_response(c)).write(buf)
            }
            BackendMessage::CopyBothResponse(c) => {
                BeMessage::CopyBothResponse(copy_response(c)).write(buf)
            }
            BackendMessage::CopyData(d) => BeMessage::CopyData(d).write(buf),
            BackendMessage::CopyDone => BeMessage::CopyDone.write(buf),
            BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized_options,
            } => {
                let opts: Vec<&str> = unrecognized_options.iter().map(String::as_str).collect();
                BeMessage::NegotiateProtocolVersion {
                    newest_minor: *newest_minor,
                    unrecognized_options: &opts,
                }
                .write(buf)
            }
        }
    }
}

fn copy_response(c: &CopyFormat) -> CopyResponse<'_> {
    CopyResponse {
        format: c.format,
        column_formats: &c.column_formats,
    }
}
