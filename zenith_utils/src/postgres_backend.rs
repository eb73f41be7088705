//! The server side of a PostgreSQL connection, shared by every daemon that
//! accepts libpq clients (the pageserver's page service today; the
//! walkeeper and the proxy next).
//!
//! [`serve`] accepts connections and runs each in its own task:
//!
//! 1. **Startup**: SSLRequest is answered with `S` and a TLS handshake
//!    (rustls) when [`BackendConf::tls`] is set, else `N`; GSSENCRequest
//!    with `N`; a CancelRequest is passed to [`Handler::cancel`] and the
//!    connection closed; the StartupMessage goes to [`Handler::startup`]
//!    (which may refuse it), minor versions above 3.0 and `_pq_.` options
//!    get NegotiateProtocolVersion.
//! 2. **Authentication** by [`Handler::auth_method`]: trust, or a cleartext
//!    password checked by [`Handler::check_password`] (JWTs travel this
//!    way), or the handler's own exchange ([`Handler::authenticate`]: the
//!    proxy's SCRAM). Then AuthenticationOk, ParameterStatus,
//!    BackendKeyData and ReadyForQuery; or the handler has answered those
//!    itself and runs the rest of the connection in [`Handler::take_over`]
//!    (the proxy splices the client to a compute, with
//!    [`PostgresBackend::take_stream`]).
//! 3. **Queries**: each simple query goes to [`Handler::process_query`],
//!    which writes its results (rows, CopyOut or CopyBoth streams) through
//!    the [`PostgresBackend`]; the backend then sends ReadyForQuery, or for
//!    a [`HandlerError::Query`] an ERROR and ReadyForQuery.
//!
//! Limits and guarantees:
//! - The whole startup phase (TLS, authentication included) must end
//!   within [`BackendConf::startup_timeout`]; a session waiting for a query
//!   is closed after [`BackendConf::idle_timeout`] (57P05). Streams started
//!   by the handler are not subject to the idle timeout.
//! - At most [`BackendConf::max_connections`] connections are served; one
//!   more is answered FATAL 53300 after its startup packet, like PostgreSQL.
//! - Every message is read through [`FeDecoder`] with
//!   [`BackendConf::max_message_size`]: a malformed or oversized message is
//!   FATAL with the decoder's SQLSTATE, and only that connection ends.
//! - Shutdown (the watch turning true): [`serve`] stops accepting; a
//!   connection ends at its next read with FATAL 57P01 (reads are cancel
//!   safe: nothing half-read is lost or misparsed); [`serve`] returns when
//!   all are gone or after [`BackendConf::shutdown_grace`], aborting the
//!   rest. A panicking handler ends its connection only.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn, Instrument, Span};

use crate::pq_proto::{
    parse_password, BeMessage, CancelKeyData, ErrorFields, FeDecoder, FeMessage, FeStartupPacket,
    ProtocolError, SqlState, StartupParams, TransactionStatus, GSSENC_REFUSED, SSL_ACCEPTED,
    SSL_REFUSED,
};

mod connection_auth;

pub use connection_auth::ConnectionAuth;

/// How a backend serves its connections.
#[derive(Clone)]
pub struct BackendConf {
    /// What the logs call this server ("page service", ...).
    pub name: &'static str,
    /// Largest frontend message body accepted.
    pub max_message_size: usize,
    /// Time allowed from accept to the first ReadyForQuery.
    pub startup_timeout: Duration,
    /// A session idle between queries this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Connections served at once.
    pub max_connections: usize,
    /// TLS for clients that send SSLRequest; `None` refuses it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Announced in ParameterStatus `server_version`.
    pub server_version: &'static str,
    /// How long [`serve`] waits for connections after shutdown.
    pub shutdown_grace: Duration,
}

impl BackendConf {
    pub fn new(name: &'static str) -> BackendConf {
        BackendConf {
            name,
            max_message_size: 1 << 20,
            startup_timeout: Duration::from_secs(60),
            idle_timeout: None,
            max_connections: 512,
            tls: None,
            server_version: "15.18",
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Anyone the handler's startup check admits.
    Trust,
    /// A cleartext password (or token), checked by
    /// [`Handler::check_password`]. Only sensible over TLS or loopback.
    CleartextPassword,
    /// The handler's own exchange, [`Handler::authenticate`].
    Custom,
}

/// How [`Handler::authenticate`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The client is who it says: the backend sends AuthenticationOk and the
    /// rest, then serves queries.
    Authenticated,
    /// The handler has sent AuthenticationOk and what follows itself; the
    /// rest of the connection is [`Handler::take_over`], outside the
    /// startup timeout.
    TakeOver,
}

/// What ends a query or a connection.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The query failed; the session continues (ERROR, ReadyForQuery).
    #[error("{message}")]
    Query { code: SqlState, message: String },
    /// The session ends with this FATAL error.
    #[error("{message}")]
    Fatal { code: SqlState, message: String },
    /// The server is shutting down: FATAL 57P01, then close.
    #[error("the server is shutting down")]
    Shutdown,
    /// The client went away (EOF, Terminate, reset): close quietly.
    #[error("the client closed the connection")]
    ClientGone,
    /// The client's bytes are not the protocol: FATAL with its SQLSTATE.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Reading or writing the socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl HandlerError {
    /// A failed query with its SQLSTATE.
    pub fn query(code: SqlState, message: impl Into<String>) -> HandlerError {
        HandlerError::Query {
            code,
            message: message.into(),
        }
    }

    /// A connection-ending error with its SQLSTATE.
    pub fn fatal(code: SqlState, message: impl Into<String>) -> HandlerError {
        HandlerError::Fatal {
            code,
            message: message.into(),
        }
    }
}

/// The application behind a backend: one value per connection.
pub trait Handler: Send {
    /// Checks the StartupMessage's parameters (user, database, options);
    /// an error refuses the connection.
    fn startup(&mut self, _params: &StartupParams) -> Result<(), HandlerError> {
        Ok(())
    }

    /// The connection's JWT auth, for a daemon whose clients present a
    /// token as their password: the default [`auth_method`](Self::auth_method)
    /// and [`check_password`](Self::check_password) then use it.
    fn token_auth(&self) -> Option<&ConnectionAuth> {
        None
    }

    /// How this connection must authenticate (by default: a token as the
    /// password when [`token_auth`](Self::token_auth) says auth is on, else
    /// trust).
    fn auth_method(&self) -> AuthMethod {
        self.token_auth()
            .map_or(AuthMethod::Trust, ConnectionAuth::method)
    }

    /// Checks a cleartext password; an error is sent as FATAL (use
    /// [`SqlState::INVALID_PASSWORD`]). By default the password is the
    /// token [`token_auth`](Self::token_auth) checks.
    fn check_password(
        &mut self,
        _params: &StartupParams,
        password: &str,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let res = match self.token_auth() {
            Some(auth) => auth.login(password),
            None => Err(HandlerError::fatal(
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                "password authentication is not configured",
            )),
        };
        async { res }
    }

    /// The authentication exchange of [`AuthMethod::Custom`], run within
    /// the startup timeout; [`PostgresBackend::startup_params`] is set.
    fn authenticate(
        &mut self,
        _pgb: &mut PostgresBackend,
    ) -> impl Future<Output = Result<AuthOutcome, HandlerError>> + Send {
        async {
            Err(HandlerError::fatal(
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                "this server has no authentication exchange of its own",
            ))
        }
    }

    /// The rest of a connection after [`AuthOutcome::TakeOver`].
    fn take_over(
        &mut self,
        _pgb: &mut PostgresBackend,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async { Ok(()) }
    }

    /// A CancelRequest arrived on a new connection.
    fn cancel(&mut self, key: CancelKeyData) {
        debug!(pid = key.backend_pid, "cancel request ignored");
    }

    /// Runs one simple query, writing its results through `pgb`. The
    /// backend sends ReadyForQuery afterwards.
    fn process_query(
        &mut self,
        pgb: &mut PostgresBackend,
        query: &str,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Serves `listener` until `shutdown` turns true (or its sender is gone).
/// `new_connection` makes the handler of each accepted connection and the
/// span its logs go to.
pub async fn serve<H, F>(
    listener: TcpListener,
    conf: Arc<BackendConf>,
    new_connection: F,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()>
where
    H: Handler + 'static,
    F: Fn(SocketAddr) -> (H, Span),
{
    info!(addr = ?listener.local_addr().ok(), "{} listening", conf.name);
    let mut conns = JoinSet::new();
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(res) = conns.join_next(), if !conns.is_empty() => log_task_end(conf.name, res),
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    // Ended connections must not count against the limit.
                    while let Some(res) = conns.try_join_next() {
                        log_task_end(conf.name, res);
                    }
                    let over_limit = conns.len() >= conf.max_connections;
                    let (handler, span) = new_connection(peer);
                    let conn = run_connection(
                        sock, peer, handler, Arc::clone(&conf), shutdown.clone(), over_limit,
                    );
                    conns.spawn(conn.instrument(span));
                }
                Err(e) => {
                    // E.g. out of file descriptors: transient, do not spin.
                    warn!("{} accept failed: {e}", conf.name);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    info!(
        connections = conns.len(),
        "{} stopped accepting connections", conf.name
    );
    let drain = async {
        while let Some(res) = conns.join_next().await {
            log_task_end(conf.name, res);
        }
    };
    if tokio::time::timeout(conf.shutdown_grace, drain)
        .await
        .is_err()
    {
        warn!(
            connections = conns.len(),
            "{} connections still busy after {:?}; aborting them", conf.name, conf.shutdown_grace
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    Ok(())
}

fn log_task_end(name: &str, res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        if e.is_panic() {
            error!("{name} connection task panicked: {e}");
        }
    }
}

/// Runs one connection to its end; errors are logged in its span.
pub async fn run_connection<H: Handler>(
    sock: TcpStream,
    peer: SocketAddr,
    mut handler: H,
    conf: Arc<BackendConf>,
    shutdown: watch::Receiver<bool>,
    over_limit: bool,
) {
    debug!("connection accepted");
    if let Err(e) = sock.set_nodelay(true) {
        debug!("cannot set TCP_NODELAY: {e}");
    }
    let (rd, wr) = sock.into_split();
    let mut pgb = PostgresBackend {
        reader: BackendReader {
            rd: ReadHalf::Plain(rd),
            buf: BytesMut::with_capacity(8192),
            decoder: FeDecoder::new(conf.max_message_size),
            shutdown,
        },
        writer: BackendWriter {
            wr: WriteHalf::Plain(wr),
            buf: BytesMut::with_capacity(8192),
        },
        peer,
        params: StartupParams::new(),
        tls: false,
        sni: None,
    };
    let started = tokio::time::timeout(
        conf.startup_timeout,
        pgb.startup(&mut handler, &conf, over_limit),
    )
    .await
    .unwrap_or_else(|_| {
        Err(HandlerError::fatal(
            SqlState::QUERY_CANCELED,
            format!(
                "canceling authentication due to timeout ({:?})",
                conf.startup_timeout
            ),
        ))
    });
    let result = match started {
        Ok(Started::Queries) => pgb.query_loop(&mut handler, &conf).await,
        Ok(Started::TakeOver) => handler.take_over(&mut pgb).await,
        Ok(Started::Ended) => Ok(()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) | Err(HandlerError::ClientGone) => debug!("connection closed"),
        Err(e) => {
            pgb.report_fatal(&e).await;
            match e {
                HandlerError::Shutdown => debug!("connection closed at shutdown"),
                e => info!("connection closed: {e}"),
            }
        }
    }
}

/// How the startup phase ended.
enum Started {
    /// Quietly (EOF, a CancelRequest).
    Ended,
    Queries,
    TakeOver,
}

/// One client connection, as handlers see it.
pub struct PostgresBackend {
    pub reader: BackendReader,
    pub writer: BackendWriter,
    peer: SocketAddr,
    params: StartupParams,
    tls: bool,
    sni: Option<String>,
}

impl PostgresBackend {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The StartupMessage's parameters.
    pub fn startup_params(&self) -> &StartupParams {
        &self.params
    }

    /// Whether the session runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The server name the client asked for in its TLS handshake (SNI).
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// The connection's byte stream, for a handler that relays it as it is
    /// (after flushing what is queued), and the bytes the client sent that
    /// were read but not yet decoded. Afterwards reads and writes through
    /// this backend fail.
    pub async fn take_stream(&mut self) -> Result<(ClientStream, BytesMut), HandlerError> {
        self.writer.flush().await?;
        let stream = ClientStream {
            rd: std::mem::replace(&mut self.reader.rd, ReadHalf::Taken),
            wr: std::mem::replace(&mut self.writer.wr, WriteHalf::Taken),
        };
        Ok((stream, std::mem::take(&mut self.reader.buf)))
    }

    /// Queues a message; [`flush`](Self::flush) sends.
    pub fn write_message(&mut self, msg: &BeMessage) -> Result<(), HandlerError> {
        Ok(self.writer.queue(msg)?)
    }

    pub async fn flush(&mut self) -> Result<(), HandlerError> {
        Ok(self.writer.flush().await?)
    }

    /// The two halves, for a handler that reads and writes a stream at once.
    pub fn split(&mut self) -> (&mut BackendReader, &mut BackendWriter) {
        (&mut self.reader, &mut self.writer)
    }

    /// The startup phase.
    async fn startup<H: Handler>(
        &mut self,
        handler: &mut H,
        conf: &BackendConf,
        over_limit: bool,
    ) -> Result<Started, HandlerError> {
        let (mut ssl_done, mut gss_done) = (false, false);
        let params = loop {
            let packet = match self.reader.next_startup().await? {
                Some(p) => p,
                None => return Ok(Started::Ended),
            };
            match packet {
                FeStartupPacket::SslRequest if !ssl_done => {
                    ssl_done = true;
                    match &conf.tls {
                        Some(tls) => self.start_tls(Arc::clone(tls)).await?,
                        None => self.writer.write_raw(&[SSL_REFUSED]).await?,
                    }
                }
                FeStartupPacket::GssEncRequest if !gss_done => {
                    gss_done = true;
                    self.writer.write_raw(&[GSSENC_REFUSED]).await?;
                }
                FeStartupPacket::SslRequest | FeStartupPacket::GssEncRequest => {
                    return Err(HandlerError::fatal(
                        SqlState::PROTOCOL_VIOLATION,
                        "repeated encryption negotiation request",
                    ))
                }
                FeStartupPacket::CancelRequest(key) => {
                    handler.cancel(key);
                    return Ok(Started::Ended);
                }
                FeStartupPacket::StartupMessage {
                    minor_version,
                    params,
                    ..
                } => {
                    let unknown: Vec<&str> = params
                        .iter()
                        .map(|(k, _)| k)
                        .filter(|k| k.starts_with("_pq_."))
                        .collect();
                    if minor_version > 0 || !unknown.is_empty() {
                        self.writer.queue(&BeMessage::NegotiateProtocolVersion {
                            newest_minor: 0,
                            unrecognized_options: &unknown,
                        })?;
                    }
                    break params;
                }
            }
        };
        debug!(
            user = params.user().unwrap_or(""),
            application_name = params.get("application_name").unwrap_or(""),
            tls = self.tls,
            "startup"
        );
        if over_limit {
            return Err(HandlerError::fatal(
                SqlState::TOO_MANY_CONNECTIONS,
                format!(
                    "sorry, too many clients already (the {} serves at most {})",
                    conf.name, conf.max_connections
                ),
            ));
        }
        handler.startup(&params)?;
        if handler.auth_method() == AuthMethod::Custom {
            self.params = params;
            return match handler.authenticate(self).await? {
                AuthOutcome::TakeOver => Ok(Started::TakeOver),
                AuthOutcome::Authenticated => {
                    self.ready_after_auth(conf).await?;
                    Ok(Started::Queries)
                }
            };
        }
        if handler.auth_method() == AuthMethod::CleartextPassword {
            self.writer
                .send(&BeMessage::AuthenticationCleartextPassword)
                .await?;
            let password = match self.reader.read_message().await? {
                Some(FeMessage::AuthResponse(body)) => body,
                Some(_) => {
                    return Err(HandlerError::fatal(
                        SqlState::PROTOCOL_VIOLATION,
                        "expected a password message",
                    ))
                }
                None => return Ok(Started::Ended),
            };
            let password = parse_password(&password)?;
            handler.check_password(&params, password).await?;
        }
        self.params = params;
        self.ready_after_auth(conf).await?;
        Ok(Started::Queries)
    }

    /// AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery.
    async fn ready_after_auth(&mut self, conf: &BackendConf) -> Result<(), HandlerError> {
        self.writer.queue(&BeMessage::AuthenticationOk)?;
        for (name, value) in [
            ("server_version", conf.server_version),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
        ] {
            self.writer
                .queue(&BeMessage::ParameterStatus { name, value })?;
        }
        let key: u64 = rand::random();
        self.writer
            .queue(&BeMessage::BackendKeyData(CancelKeyData {
                backend_pid: (key >> 32) as i32 & i32::MAX,
                cancel_key: key as i32,
            }))?;
        self.writer.ready().await
    }

    /// Answers SSLRequest with `S` and runs the TLS handshake.
    async fn start_tls(&mut self, tls: Arc<rustls::ServerConfig>) -> Result<(), HandlerError> {
        if !self.reader.buf.is_empty() {
            // Bytes sent after SSLRequest before our answer could have been
            // injected by a man in the middle (CVE-2021-23214).
            return Err(HandlerError::fatal(
                SqlState::PROTOCOL_VIOLATION,
                "received unencrypted data after SSL request",
            ));
        }
        self.writer.write_raw(&[SSL_ACCEPTED]).await?;
        let (ReadHalf::Plain(rd), WriteHalf::Plain(wr)) = (
            std::mem::replace(&mut self.reader.rd, ReadHalf::Taken),
            std::mem::replace(&mut self.writer.wr, WriteHalf::Taken),
        ) else {
            return Err(HandlerError::fatal(
                SqlState::PROTOCOL_VIOLATION,
                "TLS requested twice",
            ));
        };
        let sock = rd
            .reunite(wr)
            .map_err(|e| io::Error::other(format!("reuniting the socket: {e}")))?;
        let stream = tokio_rustls::TlsAcceptor::from(tls)
            .accept(sock)
            .await
            .map_err(|e| {
                HandlerError::fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    format!("TLS handshake failed: {e}"),
                )
            })?;
        self.sni = stream.get_ref().1.server_name().map(str::to_string);
        let (rd, wr) = tokio::io::split(stream);
        self.reader.rd = ReadHalf::Tls(rd);
        self.writer.wr = WriteHalf::Tls(wr);
        self.tls = true;
        Ok(())
    }

    async fn query_loop<H: Handler>(
        &mut self,
        handler: &mut H,
        conf: &BackendConf,
    ) -> Result<(), HandlerError> {
        loop {
            let next = self.reader.read_message();
            let msg = match conf.idle_timeout {
                None => next.await?,
                Some(t) => match tokio::time::timeout(t, next).await {
                    Ok(m) => m?,
                    Err(_) => {
                        return Err(HandlerError::fatal(
                            SqlState::IDLE_SESSION_TIMEOUT,
                            format!("terminating connection due to idle-session timeout ({t:?})"),
                        ))
                    }
                },
            };
            match msg {
                None | Some(FeMessage::Terminate) => return Ok(()),
                Some(FeMessage::Query(q)) => {
                    debug!(query = %truncated(&q, 200), "query");
                    match handler.process_query(self, &q).await {
                        Ok(()) => self.writer.ready().await?,
                        Err(HandlerError::Query { code, message }) => {
                            info!("query failed: {message}");
                            self.writer.queue(&BeMessage::error(code, &message))?;
                            self.writer.ready().await?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                // Outside COPY these are ignored, as PostgreSQL does.
                Some(
                    FeMessage::Sync
                    | FeMessage::CopyData(_)
                    | FeMessage::CopyDone
                    | FeMessage::CopyFail(_),
                ) => {}
                Some(FeMessage::AuthResponse(_)) => {
                    return Err(HandlerError::fatal(
                        SqlState::PROTOCOL_VIOLATION,
                        "unexpected password message: no authentication was requested",
                    ))
                }
            }
        }
    }

    /// Sends the FATAL error that ends the session, if it has one.
    async fn report_fatal(&mut self, e: &HandlerError) {
        let (code, message) = match e {
            HandlerError::Fatal { code, message } | HandlerError::Query { code, message } => {
                (*code, message.clone())
            }
            HandlerError::Shutdown => (
                SqlState::ADMIN_SHUTDOWN,
                "terminating connection due to administrator command".to_string(),
            ),
            HandlerError::Protocol(e) => (e.sql_state(), e.to_string()),
            HandlerError::ClientGone | HandlerError::Io(_) => return,
        };
        self.writer.fatal(code, &message).await;
    }
}

/// At most `max` characters of `s`, for echoing client input.
pub fn truncated(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// The receiving half of a connection.
pub struct BackendReader {
    rd: ReadHalf,
    buf: BytesMut,
    decoder: FeDecoder,
    shutdown: watch::Receiver<bool>,
}

impl BackendReader {
    async fn next_startup(&mut self) -> Result<Option<FeStartupPacket>, HandlerError> {
        loop {
            if let Some(p) = self.decoder.decode_startup(&mut self.buf)? {
                return Ok(Some(p));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// The next message; `None` when the client closed the connection
    /// between messages. [`HandlerError::Shutdown`] when the server stops,
    /// [`HandlerError::Protocol`] for bytes that are not a message. Cancel
    /// safe.
    pub async fn read_message(&mut self) -> Result<Option<FeMessage>, HandlerError> {
        loop {
            if let Some(m) = self.decoder.decode_message(&mut self.buf)? {
                return Ok(Some(m));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Reads more bytes; false on EOF between messages.
    async fn fill(&mut self) -> Result<bool, HandlerError> {
        let shutdown = &mut self.shutdown;
        tokio::select! {
            // read_buf is cancel safe: nothing is lost if shutdown wins.
            n = self.rd.read_buf(&mut self.buf) => {
                if n? > 0 {
                    Ok(true)
                } else if self.buf.is_empty() {
                    Ok(false)
                } else {
                    Err(HandlerError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection in the middle of a message",
                    )))
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => Err(HandlerError::Shutdown),
        }
    }
}

/// The sending half: messages are queued in a buffer and written by
/// [`flush`](Self::flush).
pub struct BackendWriter {
    wr: WriteHalf,
    buf: BytesMut,
}

impl BackendWriter {
    /// Queues a message (nothing is queued on error).
    pub fn queue(&mut self, msg: &BeMessage) -> Result<(), ProtocolError> {
        msg.write(&mut self.buf)
    }

    /// The output buffer, for writers like
    /// [`crate::pq_proto::write_text_result`].
    pub fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes queued and not yet sent.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.wr.write_all(&self.buf).await?;
            self.buf.clear();
        }
        self.wr.flush().await
    }

    /// Queues and flushes.
    pub async fn send(&mut self, msg: &BeMessage<'_>) -> Result<(), HandlerError> {
        self.queue(msg)?;
        Ok(self.flush().await?)
    }

    async fn ready(&mut self) -> Result<(), HandlerError> {
        self.send(&BeMessage::ReadyForQuery(TransactionStatus::Idle))
            .await
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.flush().await?;
        self.wr.write_all(bytes).await?;
        self.wr.flush().await
    }

    /// FATAL, flushed; errors are ignored (the client may be gone).
    async fn fatal(&mut self, code: SqlState, message: &str) {
        let message = message.replace('\0', "\u{FFFD}");
        let msg = BeMessage::ErrorResponse(ErrorFields::fatal(code, &message));
        if self.queue(&msg).is_ok() {
            let _ = self.flush().await;
        }
    }
}

type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A client connection's byte stream (plain or TLS), from
/// [`PostgresBackend::take_stream`].
pub struct ClientStream {
    rd: ReadHalf,
    wr: WriteHalf,
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().rd).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().wr).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().wr).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().wr).poll_shutdown(cx)
    }
}

/// The read side of a plain or TLS socket.
enum ReadHalf {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream>),
    /// Only while the socket is being wrapped in TLS.
    Taken,
}

/// The write side of a plain or TLS socket.
enum WriteHalf {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream>),
    Taken,
}

fn taken() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the socket is being replaced")
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Tls(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Taken => Poll::Ready(Err(taken())),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Tls(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Taken => Poll::Ready(Err(taken())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Taken => Poll::Ready(Err(taken())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Taken => Poll::Ready(Err(taken())),
        }
    }
}
