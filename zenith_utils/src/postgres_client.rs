//! The one async PostgreSQL client of the project, on [`crate::pq_proto`].
//!
//! It does what our processes need from a server, and no more: the startup
//! phase with trust, cleartext, MD5 or SCRAM-SHA-256 authentication (SCRAM
//! by `postgres-protocol` with a password, or by [`crate::scram`] with a
//! role's keys: [`Config::scram_keys`]), simple queries with text results, and COPY
//! streams in both directions (CopyBoth: physical replication and
//! pagestream; CopyOut: basebackups). The WAL receiver, the control plane's
//! basebackup client, the pagestream client behind `pagebench` and the Rust
//! tests all connect through it.
//!
//! - [`Config`] says where and as whom to connect; [`Config::parse`] reads a
//!   libpq `key=value` connection string.
//! - [`Connection`] is one session, generic over its byte stream (TCP by
//!   default). The client does not negotiate TLS itself (it never sends
//!   SSLRequest); [`Connection::startup`] runs on any stream a caller has
//!   already set up.
//! - [`Connection::copy_both`] and [`Connection::copy_out`] consume the
//!   connection and give it back when the stream ends, so a stream can be
//!   owned by whoever reads it.
//!
//! Errors are [`ClientError`]; an error the server sent keeps its fields and
//! SQLSTATE ([`ClientError::sql_state`]). Every read goes through
//! [`BeDecoder`] with a message size limit ([`Config::max_message_size`]).
//!
//! Reading ([`Connection::next_message`], [`CopyBoth::recv`],
//! [`CopyOut::recv`]) is cancel safe: dropping the future loses no bytes,
//! so a caller may race it against a timer. Writing (`flush`) is not: a
//! session whose flush was cancelled must be dropped.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use crate::pq_proto::{
    AuthRequest, BackendMessage, BeDecoder, CancelKeyData, ErrorNotice, FeMessage, FeStartupPacket,
    ProtocolError, Severity, SqlState, StartupParams,
};
use crate::scram::{ClientExchange, ScramKeys};

/// Default limit for one backend message: replication and pagestream
/// messages are far smaller; a DataRow of a big value is not something our
/// clients ask for.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Default time allowed to connect and log in.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and as whom to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// Log in with these SCRAM keys instead of a password when the server
    /// asks for SCRAM-SHA-256 (they take precedence over `password` then;
    /// cleartext and MD5 still need the password).
    pub scram_keys: Option<ScramKeys>,
    /// `None`: the server's default (the user name).
    pub dbname: Option<String>,
    pub application_name: Option<String>,
    /// Further startup parameters, e.g. `replication=true` or `options`.
    pub params: Vec<(String, String)>,
    /// Limit for connecting and logging in together.
    pub connect_timeout: Duration,
    /// Largest backend message body accepted.
    pub max_message_size: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "scram_keys",
                &self.scram_keys.as_ref().map(|_| "<redacted>"),
            )
            .field("dbname", &self.dbname)
            .field("application_name", &self.application_name)
            .field("params", &self.params)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl Config {
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>) -> Config {
        Config {
            host: host.into(),
            port,
            user: user.into(),
            password: None,
            scram_keys: None,
            dbname: None,
            application_name: None,
            params: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }

    pub fn password(mut self, password: impl Into<String>) -> Config {
        self.password = Some(password.into());
        self
    }

    /// Logs in with a role's SCRAM keys (from [`crate::scram`]) instead of
    /// its password.
    pub fn scram_keys(mut self, keys: ScramKeys) -> Config {
        self.scram_keys = Some(keys);
        self
    }

    pub fn dbname(mut self, dbname: impl Into<String>) -> Config {
        self.dbname = Some(dbname.into());
        self
    }

    pub fn application_name(mut self, name: impl Into<String>) -> Config {
        self.application_name = Some(name.into());
        self
    }

    /// Adds a startup parameter.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Config {
        self.params.push((name.into(), value.into()));
        self
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Reads a libpq connection string (`key=value` pairs separated by
    /// spaces; values may be single-quoted, with `\'` and `\\` escapes).
    /// Keys: `host`, `port`, `user`, `password`, `dbname`,
    /// `application_name`, `connect_timeout` (seconds), `options`,
    /// `replication`. Defaults: host 127.0.0.1, port 5432, user postgres.
    pub fn parse(connstr: &str) -> Result<Config, ConnStrError> {
        Config::from_pairs(parse_connstr(connstr)?)
    }

    /// [`Config::parse`] on pairs already split (see [`parse_connstr`]).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Config, ConnStrError> {
        let mut c = Config::new("127.0.0.1", 5432, "postgres");
        for (k, v) in pairs {
            match k.as_str() {
                "host" => c.host = v,
                "port" => {
                    c.port = v.parse().map_err(|_| ConnStrError::InvalidValue {
                        key: k.clone(),
                        value: v.clone(),
                    })?
                }
                "user" => c.user = v,
                "password" => c.password = Some(v),
                "dbname" => c.dbname = Some(v),
                "application_name" => c.application_name = Some(v),
                "connect_timeout" => {
                    let secs: u64 = v.parse().map_err(|_| ConnStrError::InvalidValue {
                        key: k.clone(),
                        value: v.clone(),
                    })?;
                    c.connect_timeout = Duration::from_secs(secs.max(1));
                }
                "options" | "replication" => c.params.push((k, v)),
                _ => return Err(ConnStrError::UnknownKey(k)),
            }
        }
        Ok(c)
    }

    fn startup_params(&self) -> StartupParams {
        let mut p = StartupParams::new();
        p.insert("user", self.user.as_str());
        if let Some(db) = &self.dbname {
            p.insert("database", db.as_str());
        }
        if let Some(app) = &self.application_name {
            p.insert("application_name", app.as_str());
        }
        p.insert("client_encoding", "UTF8");
        for (k, v) in &self.params {
            p.insert(k.as_str(), v.as_str());
        }
        p
    }
}

/// A connection string that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnStrError {
    #[error("invalid connection string part {0:?}: expected key=value")]
    Malformed(String),
    #[error("unterminated quoted value in the connection string")]
    UnterminatedQuote,
    #[error("unsupported connection string key {0:?}")]
    UnknownKey(String),
    #[error("invalid value {value:?} for {key}")]
    InvalidValue { key: String, value: String },
}

/// Splits a libpq connection string into `(key, value)` pairs in order.
pub fn parse_connstr(s: &str) -> Result<Vec<(String, String)>, ConnStrError> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') || key.is_empty() {
            return Err(ConnStrError::Malformed(key));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(ConnStrError::UnterminatedQuote),
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(ConnStrError::UnterminatedQuote),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// Why a connection or a query failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("I/O error talking to the server: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("unexpected {what} from the server {context}")]
    Unexpected {
        what: &'static str,
        context: &'static str,
    },
    /// An ErrorResponse (boxed: it is much larger than the other variants).
    #[error("{0}")]
    Server(Box<ErrorNotice>),
    /// Authentication failed on our side (no password to give, a SCRAM
    /// server signature that does not verify, ...).
    #[error("authentication failed: {0}")]
    Auth(String),
}

impl ClientError {
    /// The SQLSTATE of an error the server sent.
    pub fn sql_state(&self) -> Option<SqlState> {
        match self {
            ClientError::Server(e) => e.sql_state(),
            _ => None,
        }
    }

    /// The ErrorResponse, if the server sent one.
    pub fn server_error(&self) -> Option<&ErrorNotice> {
        match self {
            ClientError::Server(e) => Some(e),
            _ => None,
        }
    }
}

fn unexpected(msg: &BackendMessage, context: &'static str) -> ClientError {
    let what = match msg {
        BackendMessage::Authentication(_) => "authentication request",
        BackendMessage::ParameterStatus { .. } => "ParameterStatus",
        BackendMessage::BackendKeyData(_) => "BackendKeyData",
        BackendMessage::ReadyForQuery(_) => "ReadyForQuery",
        BackendMessage::RowDescription(_) => "RowDescription",
        BackendMessage::DataRow(_) => "DataRow",
        BackendMessage::CommandComplete(_) => "CommandComplete",
        BackendMessage::EmptyQueryResponse => "EmptyQueryResponse",
        BackendMessage::ErrorResponse(_) => "ErrorResponse",
        BackendMessage::NoticeResponse(_) => "NoticeResponse",
        BackendMessage::NotificationResponse { .. } => "NotificationResponse",
        BackendMessage::CopyInResponse(_) => "CopyInResponse",
        BackendMessage::CopyOutResponse(_) => "CopyOutResponse",
        BackendMessage::CopyBothResponse(_) => "CopyBothResponse",
        BackendMessage::CopyData(_) => "CopyData",
        BackendMessage::CopyDone => "CopyDone",
        BackendMessage::NegotiateProtocolVersion { .. } => "NegotiateProtocolVersion",
    };
    ClientError::Unexpected { what, context }
}

/// One row of a simple query's result, in text format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub values: Vec<Option<String>>,
}

impl Row {
    /// The value of column `i`; `None` for NULL or a missing column.
    pub fn get(&self, i: usize) -> Option<&str> {
        self.values.get(i).and_then(|v| v.as_deref())
    }
}

/// A session with a server.
pub struct Connection<S = TcpStream> {
    stream: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    decoder: BeDecoder,
    parameters: HashMap<String, String>,
    cancel_key: Option<CancelKeyData>,
}

impl Connection<TcpStream> {
    /// Connects over TCP and logs in, within `config.connect_timeout`.
    pub async fn connect(config: &Config) -> Result<Connection<TcpStream>, ClientError> {
        let addr = config.addr();
        let login = async {
            let stream = TcpStream::connect((config.host.as_str(), config.port))
                .await
                .map_err(|source| ClientError::Connect {
                    addr: addr.clone(),
                    source,
                })?;
            stream.set_nodelay(true)?;
            Connection::startup(stream, config).await
        };
        tokio::time::timeout(config.connect_timeout, login)
            .await
            .map_err(|_| ClientError::ConnectTimeout {
                addr: addr.clone(),
                timeout: config.connect_timeout,
            })?
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Runs the startup phase on an open stream: StartupMessage,
    /// authentication, then parameters up to the first ReadyForQuery.
    pub async fn startup(stream: S, config: &Config) -> Result<Connection<S>, ClientError> {
        let mut c = Connection {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::with_capacity(8 * 1024),
            decoder: BeDecoder::new(config.max_message_size),
            parameters: HashMap::new(),
            cancel_key: None,
        };
        FeStartupPacket::StartupMessage {
            major_version: 3,
            minor_version: 0,
            params: config.startup_params(),
        }
        .write(&mut c.wbuf)?;
        c.flush().await?;
        c.authenticate(config).await?;
        loop {
            match c.next_message().await? {
                BackendMessage::ReadyForQuery(_) => return Ok(c),
                BackendMessage::BackendKeyData(k) => c.cancel_key = Some(k),
                BackendMessage::ErrorResponse(e) => return Err(ClientError::Server(Box::new(e))),
                // ParameterStatus and notices are handled by next_message.
                m => return Err(unexpected(&m, "after authentication")),
            }
        }
    }

    async fn authenticate(&mut self, config: &Config) -> Result<(), ClientError> {
        let password = || {
            config.password.as_deref().ok_or_else(|| {
                ClientError::Auth(format!(
                    "the server asks user {:?} for a password, and none was given",
                    config.user
                ))
            })
        };
        let mut scram: Option<Scram> = None;
        loop {
            let req = match self.next_message().await? {
                BackendMessage::Authentication(req) => req,
                BackendMessage::ErrorResponse(e) => return Err(ClientError::Server(Box::new(e))),
                BackendMessage::NegotiateProtocolVersion { .. } => continue,
                m => return Err(unexpected(&m, "during authentication")),
            };
            match req {
                AuthRequest::Ok => {
                    if scram.is_some() {
                        return Err(ClientError::Auth(
                            "the server ended SCRAM authentication without its final message"
                                .into(),
                        ));
                    }
                    return Ok(());
                }
                AuthRequest::CleartextPassword => {
                    self.queue(&FeMessage::password(password()?)?)?;
                }
                AuthRequest::Md5Password(salt) => {
                    let hash = md5_hash(config.user.as_bytes(), password()?.as_bytes(), salt);
                    self.queue(&FeMessage::password(&hash)?)?;
                }
                AuthRequest::Sasl(mechanisms) => {
                    if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(ClientError::Auth(format!(
                            "the server offers SASL mechanisms {mechanisms:?}; only {SCRAM_SHA_256} is supported"
                        )));
                    }
                    let (s, first) = match &config.scram_keys {
                        Some(keys) => {
                            let c = ClientExchange::with_keys(keys.clone());
                            let first = c.client_first();
                            (Scram::Keys(c), first)
                        }
                        None => {
                            let s = ScramSha256::new(
                                password()?.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            let first = s.message().to_vec();
                            (Scram::Password(s), first)
                        }
                    };
                    self.queue(&FeMessage::sasl_initial_response(
                        SCRAM_SHA_256,
                        Some(&first),
                    )?)?;
                    scram = Some(s);
                }
                AuthRequest::SaslContinue(data) => {
                    let s = scram.as_mut().ok_or(ClientError::Unexpected {
                        what: "SASL continue",
                        context: "before SASL started",
                    })?;
                    let client_final = s.server_first(&data)?;
                    self.queue(&FeMessage::sasl_response(&client_final))?;
                }
                AuthRequest::SaslFinal(data) => {
                    let mut s = scram.take().ok_or(ClientError::Unexpected {
                        what: "SASL final",
                        context: "before SASL started",
                    })?;
                    s.server_final(&data)?;
                    // AuthenticationOk follows.
                    continue;
                }
            }
            self.flush().await?;
        }
    }

    /// A parameter the server reported (`server_version`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// Every parameter the server reported (ParameterStatus), by name.
    pub fn parameters(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut all: Vec<(&str, &str)> = self
            .parameters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.sort_unstable();
        all.into_iter()
    }

    /// The byte stream and the bytes read from it but not decoded yet, for
    /// a caller that relays the session as bytes (the proxy). Messages
    /// queued and not flushed are dropped.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.stream, self.rbuf)
    }

    /// The key a CancelRequest for this session needs.
    pub fn cancel_key(&self) -> Option<CancelKeyData> {
        self.cancel_key
    }

    /// Queues a message; [`flush`](Self::flush) sends what is queued.
    pub fn queue(&mut self, msg: &FeMessage) -> Result<(), ClientError> {
        msg.write(&mut self.wbuf)?;
        Ok(())
    }

    /// Bytes queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// The next message that is not ParameterStatus, NoticeResponse or
    /// NotificationResponse (those can arrive at any time: parameters are
    /// recorded, the others logged). Cancel safe.
    pub async fn next_message(&mut self) -> Result<BackendMessage, ClientError> {
        loop {
            match self.decoder.decode(&mut self.rbuf)? {
                Some(BackendMessage::ParameterStatus { name, value }) => {
                    self.parameters.insert(name, value);
                }
                Some(BackendMessage::NoticeResponse(n)) => debug!("server notice: {n}"),
                Some(BackendMessage::NotificationResponse { channel, .. }) => {
                    debug!(channel, "server notification ignored")
                }
                Some(m) => return Ok(m),
                None => {
                    if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                        return Err(ClientError::Closed);
                    }
                }
            }
        }
    }

    /// Runs a simple query (one or more statements) and returns the rows
    /// of all of them, as text. An ErrorResponse fails the call once the
    /// server is ready again, so the connection stays usable.
    pub async fn simple_query(&mut self, query: &str) -> Result<Vec<Row>, ClientError> {
        self.queue(&FeMessage::Query(query.to_string()))?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.next_message().await? {
                BackendMessage::DataRow(values) => {
                    let values = values
                        .into_iter()
                        .map(|v| v.map(text_value).transpose())
                        .collect::<Result<_, _>>()?;
                    rows.push(Row { values });
                }
                BackendMessage::RowDescription(_)
                | BackendMessage::CommandComplete(_)
                | BackendMessage::EmptyQueryResponse => {}
                BackendMessage::ErrorResponse(e) if is_fatal(&e) => {
                    return Err(ClientError::Server(Box::new(e)))
                }
                BackendMessage::ErrorResponse(e) => error = Some(e),
                BackendMessage::ReadyForQuery(_) => break,
                m => return Err(unexpected(&m, "in reply to a simple query")),
            }
        }
        match error {
            Some(e) => Err(ClientError::Server(Box::new(e))),
            None => Ok(rows),
        }
    }

    /// Sends `query` and waits for the response that starts a COPY.
    async fn start_copy(&mut self, query: &str) -> Result<BackendMessage, ClientError> {
        self.queue(&FeMessage::Query(query.to_string()))?;
        self.flush().await?;
        match self.next_message().await? {
            m @ (BackendMessage::CopyBothResponse(_) | BackendMessage::CopyOutResponse(_)) => Ok(m),
            BackendMessage::ErrorResponse(e) => {
                // Let the server finish the query so that the error is all
                // that remains of it.
                self.wait_ready().await?;
                Err(ClientError::Server(Box::new(e)))
            }
            m => Err(unexpected(&m, "instead of a COPY response")),
        }
    }

    /// Reads up to ReadyForQuery; an ErrorResponse on the way is returned.
    async fn wait_ready(&mut self) -> Result<(), ClientError> {
        let mut error = None;
        loop {
            match self.next_message().await? {
                BackendMessage::ReadyForQuery(_) => break,
                BackendMessage::ErrorResponse(e) if is_fatal(&e) => {
                    return Err(ClientError::Server(Box::new(e)))
                }
                BackendMessage::ErrorResponse(e) => error = Some(e),
                _ => {}
            }
        }
        match error {
            Some(e) => Err(ClientError::Server(Box::new(e))),
            None => Ok(()),
        }
    }

    /// Runs a query that answers with CopyBoth (`START_REPLICATION`,
    /// `pagestream`).
    pub async fn copy_both(mut self, query: &str) -> Result<CopyBoth<S>, ClientError> {
        match self.start_copy(query).await? {
            BackendMessage::CopyBothResponse(_) => Ok(CopyBoth {
                conn: self,
                server_done: false,
            }),
            m => Err(unexpected(&m, "instead of CopyBothResponse")),
        }
    }

    /// Runs a query that answers with CopyOut (`basebackup`).
    pub async fn copy_out(mut self, query: &str) -> Result<CopyOut<S>, ClientError> {
        match self.start_copy(query).await? {
            BackendMessage::CopyOutResponse(_) => Ok(CopyOut {
                conn: self,
                done: false,
            }),
            m => Err(unexpected(&m, "instead of CopyOutResponse")),
        }
    }

    /// Ends the session politely (Terminate) and closes the stream.
    pub async fn terminate(mut self) -> Result<(), ClientError> {
        self.queue(&FeMessage::Terminate)?;
        self.flush().await?;
        self.stream.shutdown().await?;
        Ok(())
    }
}

/// The client side of a SCRAM exchange: with the password
/// (`postgres-protocol`) or with the role's keys.
enum Scram {
    Password(ScramSha256),
    Keys(ClientExchange),
}

impl Scram {
    /// The client-final-message for the server-first-message.
    fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ClientError> {
        match self {
            Scram::Password(s) => {
                s.update(data)
                    .map_err(|e| ClientError::Auth(format!("SCRAM: {e}")))?;
                Ok(s.message().to_vec())
            }
            Scram::Keys(c) => c
                .server_first(data)
                .map_err(|e| ClientError::Auth(format!("SCRAM: {e}"))),
        }
    }

    /// Checks the server-final-message.
    fn server_final(&mut self, data: &[u8]) -> Result<(), ClientError> {
        match self {
            Scram::Password(s) => s.finish(data).map_err(|e| {
                ClientError::Auth(format!(
                    "SCRAM: the server's signature does not verify ({e})"
                ))
            }),
            Scram::Keys(c) => c
                .server_final(data)
                .map_err(|e| ClientError::Auth(format!("SCRAM: {e}"))),
        }
    }
}

/// A FATAL or PANIC error: the server closes the session after it, so it
/// is reported at once instead of after a ReadyForQuery that never comes.
fn is_fatal(e: &ErrorNotice) -> bool {
    matches!(e.severity(), Severity::Fatal | Severity::Panic)
}

fn text_value(b: Bytes) -> Result<String, ClientError> {
    String::from_utf8(b.to_vec())
        .map_err(|_| ClientError::Protocol(ProtocolError::InvalidUtf8("text value in a DataRow")))
}

/// A CopyBoth stream: both sides send CopyData until one ends with
/// CopyDone.
pub struct CopyBoth<S = TcpStream> {
    conn: Connection<S>,
    server_done: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> CopyBoth<S> {
    /// Queues one CopyData; [`flush`](Self::flush) sends.
    pub fn queue(&mut self, data: Bytes) -> Result<(), ClientError> {
        self.conn.queue(&FeMessage::CopyData(data))
    }

    /// Bytes queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.conn.queued()
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.conn.flush().await
    }

    /// The next CopyData payload; `None` once the server sent CopyDone.
    /// An ErrorResponse ends the stream with [`ClientError::Server`].
    /// Cancel safe.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, ClientError> {
        if self.server_done {
            return Ok(None);
        }
        match self.conn.next_message().await? {
            BackendMessage::CopyData(d) => Ok(Some(d)),
            BackendMessage::CopyDone => {
                self.server_done = true;
                Ok(None)
            }
            BackendMessage::ErrorResponse(e) => Err(ClientError::Server(Box::new(e))),
            m => Err(unexpected(&m, "in a CopyBoth stream")),
        }
    }

    /// Ends our side with CopyDone, reads what the server still sends up
    /// to ReadyForQuery, and gives the connection back.
    pub async fn finish(mut self) -> Result<Connection<S>, ClientError> {
        self.conn.queue(&FeMessage::CopyDone)?;
        self.conn.flush().await?;
        self.conn.wait_ready().await?;
        Ok(self.conn)
    }
}

/// A CopyOut stream: the server sends CopyData until CopyDone.
pub struct CopyOut<S = TcpStream> {
    conn: Connection<S>,
    done: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> CopyOut<S> {
    /// The next CopyData payload; `None` at the end of the copy (after
    /// which the server's completion has been read). An ErrorResponse is
    /// [`ClientError::Server`]. Cancel safe.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, ClientError> {
        if self.done {
            return Ok(None);
        }
        match self.conn.next_message().await? {
            BackendMessage::CopyData(d) => Ok(Some(d)),
            BackendMessage::CopyDone => {
                self.done = true;
                self.conn.wait_ready().await?;
                Ok(None)
            }
            BackendMessage::ErrorResponse(e) => {
                self.done = true;
                self.conn.wait_ready().await.ok();
                Err(ClientError::Server(Box::new(e)))
            }
            m => Err(unexpected(&m, "in a CopyOut stream")),
        }
    }

    /// The connection, once [`recv`](Self::recv) has returned `None`.
    pub fn into_connection(self) -> Option<Connection<S>> {
        self.done.then_some(self.conn)
    }
}

#[cfg(test)]
mod tests;
