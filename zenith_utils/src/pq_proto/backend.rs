//! Backend (server → client) messages and their serialization.
//!
//! Every message is `byte tag, int32 length (including itself, not the
//! tag), payload`. [`BeMessage::write`] appends one whole message or, on
//! error, nothing. Integers are big-endian; strings are NUL-terminated and may
//! not contain NUL.

use std::fmt;

use bytes::{BufMut, BytesMut};

use super::{put_cstr, write_message, CancelKeyData, ProtocolError};

/// Type OIDs of the built-in types our servers return (`pg_type.dat`).
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const PG_LSN: u32 = 3220;
}

/// Data format code of a column or a COPY stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Text = 0,
    Binary = 1,
}

/// Transaction status reported in ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    /// 'I': not in a transaction block.
    Idle,
    /// 'T': in a transaction block.
    InTransaction,
    /// 'E': in a failed transaction block.
    Failed,
}

impl TransactionStatus {
    pub fn as_byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// A five-character SQLSTATE error code (PostgreSQL's `errcodes.txt`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState([u8; 5]);

impl SqlState {
    pub const SUCCESSFUL_COMPLETION: SqlState = SqlState::new(b"00000");
    pub const WARNING: SqlState = SqlState::new(b"01000");
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState::new(b"0A000");
    pub const CONNECTION_EXCEPTION: SqlState = SqlState::new(b"08000");
    pub const CONNECTION_FAILURE: SqlState = SqlState::new(b"08006");
    pub const PROTOCOL_VIOLATION: SqlState = SqlState::new(b"08P01");
    pub const INVALID_PARAMETER_VALUE: SqlState = SqlState::new(b"22023");
    pub const INVALID_AUTHORIZATION_SPECIFICATION: SqlState = SqlState::new(b"28000");
    pub const INVALID_PASSWORD: SqlState = SqlState::new(b"28P01");
    pub const INVALID_CATALOG_NAME: SqlState = SqlState::new(b"3D000");
    pub const INSUFFICIENT_PRIVILEGE: SqlState = SqlState::new(b"42501");
    pub const SYNTAX_ERROR: SqlState = SqlState::new(b"42601");
    pub const UNDEFINED_TABLE: SqlState = SqlState::new(b"42P01");
    pub const UNDEFINED_OBJECT: SqlState = SqlState::new(b"42704");
    pub const TOO_MANY_CONNECTIONS: SqlState = SqlState::new(b"53300");
    pub const PROGRAM_LIMIT_EXCEEDED: SqlState = SqlState::new(b"54000");
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: SqlState = SqlState::new(b"55000");
    pub const QUERY_CANCELED: SqlState = SqlState::new(b"57014");
    pub const ADMIN_SHUTDOWN: SqlState = SqlState::new(b"57P01");
    pub const IDLE_SESSION_TIMEOUT: SqlState = SqlState::new(b"57P05");
    pub const CANNOT_CONNECT_NOW: SqlState = SqlState::new(b"57P03");
    /// A read of history that is gone (PostgreSQL's "snapshot too old").
    pub const SNAPSHOT_TOO_OLD: SqlState = SqlState::new(b"72000");
    pub const IO_ERROR: SqlState = SqlState::new(b"58030");
    pub const UNDEFINED_FILE: SqlState = SqlState::new(b"58P01");
    pub const INTERNAL_ERROR: SqlState = SqlState::new(b"XX000");
    pub const DATA_CORRUPTED: SqlState = SqlState::new(b"XX001");

    /// A code from its five characters, each a digit or an upper-case ASCII
    /// letter. Meant for constants: an invalid code panics (at compile time
    /// in a `const`).
    pub const fn new(code: &[u8; 5]) -> SqlState {
        let mut i = 0;
        while i < 5 {
            assert!(
                code[i].is_ascii_digit() || code[i].is_ascii_uppercase(),
                "SQLSTATE characters are 0-9 and A-Z"
            );
            i += 1;
        }
        SqlState(*code)
    }

    /// A code received from a peer: `None` unless it is five digits or
    /// upper-case ASCII letters.
    pub fn parse(code: &str) -> Option<SqlState> {
        let bytes: [u8; 5] = code.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
            .then_some(SqlState(bytes))
    }

    pub fn as_str(&self) -> &str {
        // `new` admits only ASCII.
        std::str::from_utf8(&self.0).unwrap_or("XX000")
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqlState({})", self.as_str())
    }
}

/// Severity of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// ERROR: the command failed; the session goes on.
    Error,
    /// FATAL: the session ends.
    Fatal,
    Panic,
    Warning,
    Notice,
    Debug,
    Info,
    Log,
}

impl Severity {
    /// The non-localized name PostgreSQL sends in the 'V' field.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Panic => "PANIC",
            Severity::Warning => "WARNING",
            Severity::Notice => "NOTICE",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Log => "LOG",
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse that our servers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    pub severity: Severity,
    pub code: SqlState,
    pub message: &'a str,
    pub detail: Option<&'a str>,
    pub hint: Option<&'a str>,
}

impl<'a> ErrorFields<'a> {
    pub fn new(severity: Severity, code: SqlState, message: &'a str) -> Self {
        ErrorFields {
            severity,
            code,
            message,
            detail: None,
            hint: None,
        }
    }

    /// An ERROR: the command failed, the session continues.
    pub fn error(code: SqlState, message: &'a str) -> Self {
        Self::new(Severity::Error, code, message)
    }

    /// A FATAL error: the server closes the connection after sending it.
    pub fn fatal(code: SqlState, message: &'a str) -> Self {
        Self::new(Severity::Fatal, code, message)
    }

    pub fn with_detail(self, detail: &'a str) -> Self {
        ErrorFields {
            detail: Some(detail),
            ..self
        }
    }

    pub fn with_hint(self, hint: &'a str) -> Self {
        ErrorFields {
            hint: Some(hint),
            ..self
        }
    }

    fn write_body(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        // Field order as PostgreSQL sends them: S, V, C, M, D, H.
        buf.put_u8(b'S');
        put_cstr(buf, self.severity.as_str(), "severity")?;
        buf.put_u8(b'V');
        put_cstr(buf, self.severity.as_str(), "severity")?;
        buf.put_u8(b'C');
        put_cstr(buf, self.code.as_str(), "SQLSTATE")?;
        buf.put_u8(b'M');
        put_cstr(buf, self.message, "error message")?;
        if let Some(detail) = self.detail {
            buf.put_u8(b'D');
            put_cstr(buf, detail, "error detail")?;
        }
        if let Some(hint) = self.hint {
            buf.put_u8(b'H');
            put_cstr(buf, hint, "error hint")?;
        }
        buf.put_u8(0);
        Ok(())
    }
}

/// One column of a RowDescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowDescriptor<'a> {
    pub name: &'a str,
    /// OID of the table the column comes from, or 0.
    pub table_oid: u32,
    /// Attribute number of the column in that table, or 0.
    pub column_attr: i16,
    pub type_oid: u32,
    /// `pg_type.typlen`: negative for variable-length types.
    pub type_size: i16,
    /// `pg_attribute.atttypmod`: -1 when not applicable.
    pub type_modifier: i32,
    pub format: Format,
}

impl<'a> RowDescriptor<'a> {
    /// A column of type `text` in text format, not from a table.
    pub const fn text_col(name: &'a str) -> Self {
        RowDescriptor {
            name,
            table_oid: 0,
            column_attr: 0,
            type_oid: oid::TEXT,
            type_size: -1,
            type_modifier: -1,
            format: Format::Text,
        }
    }

    /// A column of type `int8` in text format, not from a table.
    pub const fn int8_col(name: &'a str) -> Self {
        RowDescriptor {
            type_oid: oid::INT8,
            type_size: 8,
            ..Self::text_col(name)
        }
    }

    /// A column of type `bytea` in binary format, not from a table.
    pub const fn bytea_col(name: &'a str) -> Self {
        RowDescriptor {
            type_oid: oid::BYTEA,
            format: Format::Binary,
            ..Self::text_col(name)
        }
    }
}

/// The body of CopyInResponse, CopyOutResponse and CopyBothResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyResponse<'a> {
    /// Overall format. Binary requires every column format to be binary.
    pub format: Format,
    pub column_formats: &'a [Format],
}

impl CopyResponse<'static> {
    /// Text format with no column list: what PostgreSQL's walsender sends
    /// for replication streams and what our pagestream uses.
    pub const TEXT: CopyResponse<'static> = CopyResponse {
        format: Format::Text,
        column_formats: &[],
    };
    /// Binary format with no column list.
    pub const BINARY: CopyResponse<'static> = CopyResponse {
        format: Format::Binary,
        column_formats: &[],
    };
}

/// A message a server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeMessage<'a> {
    AuthenticationOk,
    AuthenticationCleartextPassword,
    AuthenticationMD5Password([u8; 4]),
    /// AuthenticationSASL: the mechanisms the server offers.
    AuthenticationSasl(&'a [&'a str]),
    /// AuthenticationSASLContinue: SASL data (server-first-message).
    AuthenticationSaslContinue(&'a [u8]),
    /// AuthenticationSASLFinal: SASL outcome (server-final-message).
    AuthenticationSaslFinal(&'a [u8]),
    ParameterStatus {
        name: &'a str,
        value: &'a str,
    },
    BackendKeyData(CancelKeyData),
    ReadyForQuery(TransactionStatus),
    RowDescription(&'a [RowDescriptor<'a>]),
    /// One row; `None` is SQL NULL.
    DataRow(&'a [Option<&'a [u8]>]),
    /// The command tag, like `SELECT 1`.
    CommandComplete(&'a str),
    EmptyQueryResponse,
    ErrorResponse(ErrorFields<'a>),
    NoticeResponse(ErrorFields<'a>),
    CopyInResponse(CopyResponse<'a>),
    CopyOutResponse(CopyResponse<'a>),
    CopyBothResponse(CopyResponse<'a>),
    CopyData(&'a [u8]),
    CopyDone,
    /// Answer to a StartupMessage asking for a newer minor version or for
    /// `_pq_.` options the server does not know.
    NegotiateProtocolVersion {
        newest_minor: u16,
        unrecognized_options: &'a [&'a str],
    },
}

impl<'a> BeMessage<'a> {
    /// An ERROR response with just a code and a message.
    pub fn error(code: SqlState, message: &'a str) -> Self {
        BeMessage::ErrorResponse(ErrorFields::error(code, message))
    }

    /// The message's type byte.
    pub fn tag(&self) -> u8 {
        match self {
            BeMessage::AuthenticationOk
            | BeMessage::AuthenticationCleartextPassword
            | BeMessage::AuthenticationMD5Password(_)
            | BeMessage::AuthenticationSasl(_)
            | BeMessage::AuthenticationSaslContinue(_)
            | BeMessage::AuthenticationSaslFinal(_) => b'R',
            BeMessage::ParameterStatus { .. } => b'S',
            BeMessage::BackendKeyData(_) => b'K',
            BeMessage::ReadyForQuery(_) => b'Z',
            BeMessage::RowDescription(_) => b'T',
            BeMessage::DataRow(_) => b'D',
            BeMessage::CommandComplete(_) => b'C',
            BeMessage::EmptyQueryResponse => b'I',
            BeMessage::ErrorResponse(_) => b'E',
            BeMessage::NoticeResponse(_) => b'N',
            BeMessage::CopyInResponse(_) => b'G',
            BeMessage::CopyOutResponse(_) => b'H',
            BeMessage::CopyBothResponse(_) => b'W',
            BeMessage::CopyData(_) => b'd',
            BeMessage::CopyDone => b'c',
            BeMessage::NegotiateProtocolVersion { .. } => b'v',
        }
    }

    /// Appends the whole message to `buf`, or nothing on error.
    pub fn write(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        write_message(buf, self.tag(), |buf| self.write_body(buf))
    }

    fn write_body(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        match self {
            BeMessage::AuthenticationOk => buf.put_i32(0),
            BeMessage::AuthenticationCleartextPassword => buf.put_i32(3),
            BeMessage::AuthenticationMD5Password(salt) => {
                buf.put_i32(5);
                buf.put_slice(salt);
            }
            BeMessage::AuthenticationSasl(mechanisms) => {
                buf.put_i32(10);
                for m in mechanisms.iter() {
                    if m.is_empty() {
                        return Err(ProtocolError::Unserializable(
                            "an empty SASL mechanism name",
                        ));
                    }
                    put_cstr(buf, m, "SASL mechanism")?;
                }
                buf.put_u8(0);
            }
            BeMessage::AuthenticationSaslContinue(data) => {
                buf.put_i32(11);
                buf.put_slice(data);
            }
            BeMessage::AuthenticationSaslFinal(data) => {
                buf.put_i32(12);
                buf.put_slice(data);
            }
            BeMessage::ParameterStatus { name, value } => {
                put_cstr(buf, name, "parameter name")?;
                put_cstr(buf, value, "parameter value")?;
            }
            BeMessage::BackendKeyData(key) => {
                buf.put_i32(key.backend_pid);
                buf.put_i32(key.cancel_key);
            }
            BeMessage::ReadyForQuery(status) => buf.put_u8(status.as_byte()),
            BeMessage::RowDescription(fields) => {
                buf.put_i16(count_i16(fields.len(), "row description columns")?);
                for field in fields.iter() {
                    put_cstr(buf, field.name, "column name")?;
                    buf.put_u32(field.table_oid);
                    buf.put_i16(field.column_attr);
                    buf.put_u32(field.type_oid);
                    buf.put_i16(field.type_size);
                    buf.put_i32(field.type_modifier);
                    buf.put_i16(field.format as i16);
                }
            }
            BeMessage::DataRow(values) => {
                buf.put_i16(count_i16(values.len(), "data row columns")?);
                for value in values.iter() {
                    match value {
                        None => buf.put_i32(-1),
                        Some(v) => {
                            let len =
                                i32::try_from(v.len()).map_err(|_| ProtocolError::TooMany {
                                    what: "column value bytes",
                                    count: v.len(),
                                })?;
                            buf.put_i32(len);
                            buf.put_slice(v);
                        }
                    }
                }
            }
            BeMessage::CommandComplete(tag) => put_cstr(buf, tag, "command tag")?,
            BeMessage::EmptyQueryResponse | BeMessage::CopyDone => {}
            BeMessage::ErrorResponse(fields) | BeMessage::NoticeResponse(fields) => {
                fields.write_body(buf)?
            }
            BeMessage::CopyInResponse(resp)
            | BeMessage::CopyOutResponse(resp)
            | BeMessage::CopyBothResponse(resp) => {
                buf.put_i8(resp.format as i8);
                buf.put_i16(count_i16(resp.column_formats.len(), "copy columns")?);
                for format in resp.column_formats {
                    buf.put_i16(*format as i16);
                }
            }
            BeMessage::CopyData(data) => {
                // Refuse before copying what could never be framed.
                if data.len() > i32::MAX as usize - 4 {
                    return Err(ProtocolError::TooMany {
                        what: "CopyData bytes",
                        count: data.len(),
                    });
                }
                buf.put_slice(data);
            }
            BeMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized_options,
            } => {
                // The docs say "newest minor version", but PostgreSQL (and
                // libpq, which reads it) use the full version code: 3 << 16 | minor.
                buf.put_i32(i32::from(*newest_minor) | (3 << 16));
                let count = i32::try_from(unrecognized_options.len()).map_err(|_| {
                    ProtocolError::TooMany {
                        what: "unrecognized options",
                        count: unrecognized_options.len(),
                    }
                })?;
                buf.put_i32(count);
                for option in unrecognized_options.iter() {
                    put_cstr(buf, option, "option name")?;
                }
            }
        }
        Ok(())
    }
}

fn count_i16(count: usize, what: &'static str) -> Result<i16, ProtocolError> {
    i16::try_from(count).map_err(|_| ProtocolError::TooMany { what, count })
}

/// Appends the response to a query returning text columns: RowDescription
/// (every column `text`), one DataRow per row (`None` is NULL), and
/// CommandComplete `SELECT <rows>`. ReadyForQuery is left to the caller.
/// On error nothing is appended.
pub fn write_text_result(
    buf: &mut BytesMut,
    columns: &[&str],
    rows: &[&[Option<&str>]],
) -> Result<(), ProtocolError> {
    let start = buf.len();
    let res = (|| {
        let descriptors: Vec<RowDescriptor> = columns
            .iter()
            .map(|&name| RowDescriptor::text_col(name))
            .collect();
        BeMessage::RowDescription(&descriptors).write(buf)?;
        for row in rows {
            if row.len() != columns.len() {
                return Err(ProtocolError::ColumnCountMismatch {
                    expected: columns.len(),
                    got: row.len(),
                });
            }
            let values: Vec<Option<&[u8]>> = row.iter().map(|v| v.map(str::as_bytes)).collect();
            BeMessage::DataRow(&values).write(buf)?;
        }
        BeMessage::CommandComplete(&format!("SELECT {}", rows.len())).write(buf)
    })();
    if res.is_err() {
        buf.truncate(start);
    }
    res
}

/// [`write_text_result`] for the common one-row case: `(column name, value)`
/// pairs.
pub fn write_single_row_text_result(
    buf: &mut BytesMut,
    columns: &[(&str, Option<&str>)],
) -> Result<(), ProtocolError> {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let values: Vec<Option<&str>> = columns.iter().map(|(_, value)| *value).collect();
    write_text_result(buf, &names, &[&values])
}
