//! The page service (docs/architecture.md §5): the pageserver's PostgreSQL-protocol
//! endpoint, where computes fetch pages (`pagestream`) and basebackups.
//!
//! [`serve`] accepts connections and runs each in its own task. A connection
//! goes through the startup phase (SSL and GSS encryption are refused, no
//! authentication yet), then runs simple queries:
//!
//! | query | answer |
//! |---|---|
//! | `pagestream <tenant> <timeline>` | CopyBoth; one [`PagestreamRequest`] per CopyData from the client, one response per CopyData back, in request order (byte format: `docs/pagestream.md`) |
//! | `basebackup <tenant> <timeline> [<lsn>] [--full]` | CopyOut of the tar of docs/architecture.md §8, then `BASEBACKUP` |
//! | `identify_system` | one row: systemid, timeline, xlogpos, dbname (the pageserver holds many systems, so it names none: `0`, `1`, `0/0`, NULL) |
//! | `set ...` | `SET` (ignored) |
//! | anything else | ERROR 42601 |
//!
//! # Invariants
//!
//! - A connection never takes the server down: every error is logged in the
//!   connection's span (peer, tenant_id, timeline_id) and ends at most that
//!   connection. A panic in a request handler becomes an error response.
//! - Errors in a query's parameters (malformed ids or LSNs, unknown tenant or
//!   timeline, an LSN the timeline cannot serve) are an ERROR followed by
//!   ReadyForQuery: the connection stays usable.
//! - In a pagestream, a request that does not parse is answered with an error
//!   response (the request's reqid if its header is complete, else 0) and the
//!   connection is closed; a request that parses but cannot be answered gets
//!   an error response and the stream goes on.
//! - Pagestream requests of one connection are answered concurrently (at most
//!   [`PIPELINE_DEPTH`] in flight, then reading stops: backpressure), but the
//!   responses are sent in request order. Storage reads run on blocking
//!   threads: they do file I/O and may run WAL redo.
//! - A basebackup is produced on a blocking thread and streamed through a
//!   bounded channel, so a connection never holds more than a few chunks of
//!   it in memory.
//! - Shutdown: when the `shutdown` watch turns true (or its sender is
//!   dropped), [`serve`] stops accepting; idle connections and pagestreams end
//!   at their next message boundary with FATAL 57P01; [`serve`] returns once
//!   they are gone (or after [`SHUTDOWN_GRACE`]).
//!
//! [`client`] is a small pagestream client and [`bench`] the load generator of
//! the `pagebench` binary built on it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_ffi::pg_constants::DEFAULTTABLESPACE_OID;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, field, info, info_span, warn, Instrument, Span};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;
use zenith_utils::pq_proto::{
    write_text_result, BeMessage, CancelKeyData, CopyResponse, ErrorFields, FeDecoder, FeMessage,
    FeStartupPacket, ProtocolError, SqlState, TransactionStatus, GSSENC_REFUSED, SSL_REFUSED,
};

use crate::basebackup::send_basebackup;
use crate::config::PageServerConf;
use crate::pagestream::{
    effective_lsn, needs_wait, PagestreamRequest, PagestreamRequestBody, PagestreamResponse,
    PagestreamResponseBody,
};
use crate::pgdatadir_mapping::DatadirReader;
use crate::tenant::mgr::TenantManager;
use crate::tenant::timeline::{Timeline, TimelineError};

/// Largest frontend message accepted. Queries and pagestream requests are
/// tiny; the limit keeps a hostile length from making us buffer much.
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;

/// Pagestream requests of one connection being answered at once.
pub const PIPELINE_DEPTH: usize = 64;

/// Buffered response bytes that force a write to the socket.
const FLUSH_THRESHOLD: usize = 256 * 1024;

/// Size of the CopyData messages of a basebackup.
pub const BASEBACKUP_CHUNK_SIZE: usize = 64 * 1024;

/// Basebackup chunks queued between the tar producer and the socket.
const BASEBACKUP_CHANNEL_DEPTH: usize = 4;

/// How long [`serve`] waits for connections to end after shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The PostgreSQL version we announce in ParameterStatus.
const SERVER_VERSION: &str = "15.18";

/// Serves the page service on `listener` until `shutdown` becomes true (or
/// its sender is dropped). Each connection runs in its own task; their errors
/// are logged, never returned.
pub async fn serve(
    listener: TcpListener,
    mgr: Arc<TenantManager>,
    conf: Arc<PageServerConf>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    info!(addr = ?listener.local_addr().ok(), "page service listening");
    let mut conns = JoinSet::new();
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break; // The sender is gone: nobody can keep us running.
                }
            }
            Some(res) = conns.join_next(), if !conns.is_empty() => log_task_end(res),
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    let span = info_span!(
                        "page_service",
                        %peer,
                        tenant_id = field::Empty,
                        timeline_id = field::Empty,
                    );
                    let conn = handle_connection(
                        sock,
                        Arc::clone(&mgr),
                        Arc::clone(&conf),
                        shutdown.clone(),
                    );
                    conns.spawn(conn.instrument(span));
                }
                Err(e) => {
                    // E.g. out of file descriptors: transient, do not spin.
                    warn!("page service accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    info!(
        connections = conns.len(),
        "page service stopped accepting connections"
    );
    let drain = async {
        while let Some(res) = conns.join_next().await {
            log_task_end(res);
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!(
            connections = conns.len(),
            "page service connections still busy after {SHUTDOWN_GRACE:?}; aborting them"
        );
        conns.abort_all();
    }
    Ok(())
}

fn log_task_end(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        if e.is_panic() {
            error!("page service connection task panicked: {e}");
        }
    }
}

async fn handle_connection(
    sock: TcpStream,
    mgr: Arc<TenantManager>,
    conf: Arc<PageServerConf>,
    shutdown: watch::Receiver<bool>,
) {
    debug!("connection accepted");
    if let Err(e) = sock.set_nodelay(true) {
        debug!("cannot set TCP_NODELAY: {e}");
    }
    let (rd, wr) = sock.into_split();
    let mut conn = Connection {
        reader: Reader {
            rd,
            buf: BytesMut::with_capacity(8192),
            decoder: FeDecoder::new(MAX_MESSAGE_SIZE),
            shutdown,
        },
        writer: Writer {
            wr,
            buf: BytesMut::with_capacity(8192),
        },
        mgr,
        conf,
    };
    match conn.run().await {
        Ok(()) => debug!("connection closed"),
        Err(e) => warn!("connection closed after an error: {e:#}"),
    }
}

/// A parsed simple query.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    Empty,
    Set,
    IdentifySystem,
    Pagestream {
        tenant_id: TenantId,
        timeline_id: TimelineId,
    },
    Basebackup {
        tenant_id: TenantId,
        timeline_id: TimelineId,
        lsn: Option<Lsn>,
        full: bool,
    },
}

/// A query that fails: answered with ERROR and ReadyForQuery.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QueryError {
    code: SqlState,
    message: String,
}

impl QueryError {
    fn new(code: SqlState, message: impl Into<String>) -> Self {
        QueryError {
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(SqlState::INVALID_PARAMETER_VALUE, message)
    }
}

/// At most `max` characters of `s`, for echoing client input in messages.
fn truncated(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn parse_ids(
    cmd: &str,
    tenant: &str,
    timeline: &str,
) -> Result<(TenantId, TimelineId), QueryError> {
    let tenant_id = tenant.parse().map_err(|e| {
        QueryError::invalid(format!(
            "{cmd}: invalid tenant id {:?}: {e}",
            truncated(tenant, 40)
        ))
    })?;
    let timeline_id = timeline.parse().map_err(|e| {
        QueryError::invalid(format!(
            "{cmd}: invalid timeline id {:?}: {e}",
            truncated(timeline, 40)
        ))
    })?;
    Ok((tenant_id, timeline_id))
}

/// Parses a simple query. Keywords are case-insensitive; a trailing `;` is
/// allowed.
fn parse_command(query: &str) -> Result<Command, QueryError> {
    let q = query.trim().trim_end_matches(';').trim_end();
    let mut words = q.split_whitespace();
    let Some(first) = words.next() else {
        return Ok(Command::Empty);
    };
    let args: Vec<&str> = words.collect();
    let usage = |u: &str| QueryError::new(SqlState::SYNTAX_ERROR, format!("usage: {u}"));
    match first.to_ascii_lowercase().as_str() {
        "pagestream" => match args[..] {
            [tenant, timeline] => {
                let (tenant_id, timeline_id) = parse_ids("pagestream", tenant, timeline)?;
                Ok(Command::Pagestream {
                    tenant_id,
                    timeline_id,
                })
            }
            _ => Err(usage("pagestream <tenant_id> <timeline_id>")),
        },
        "basebackup" => {
            const USAGE: &str = "basebackup <tenant_id> <timeline_id> [<lsn>] [--full]";
            let [tenant, timeline, rest @ ..] = &args[..] else {
                return Err(usage(USAGE));
            };
            let (tenant_id, timeline_id) = parse_ids("basebackup", tenant, timeline)?;
            let (mut lsn, mut full) = (None, false);
            for arg in rest {
                if arg.eq_ignore_ascii_case("--full") && !full {
                    full = true;
                } else if arg.starts_with('-') || lsn.is_some() {
                    return Err(usage(USAGE));
                } else {
                    lsn = Some(arg.parse::<Lsn>().map_err(|_| {
                        QueryError::invalid(format!(
                            "basebackup: invalid LSN {:?}: expected X/Y in hex",
                            truncated(arg, 40)
                        ))
                    })?);
                }
            }
            Ok(Command::Basebackup {
                tenant_id,
                timeline_id,
                lsn,
                full,
            })
        }
        "identify_system" if args.is_empty() => Ok(Command::IdentifySystem),
        "set" => Ok(Command::Set),
        _ => Err(QueryError::new(
            SqlState::SYNTAX_ERROR,
            format!(
                "unsupported command {:?}: the page service runs pagestream, basebackup, identify_system and set",
                truncated(q, 100)
            ),
        )),
    }
}

/// What the next read from the client produced.
enum Input<T> {
    Message(T),
    /// The client closed the connection between messages.
    Eof,
    /// The server is shutting down.
    Shutdown,
    /// The bytes are not a valid message: framing is lost.
    Malformed(ProtocolError),
}

/// The receiving half of a connection.
struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    decoder: FeDecoder,
    shutdown: watch::Receiver<bool>,
}

impl Reader {
    async fn next_startup(&mut self) -> anyhow::Result<Input<FeStartupPacket>> {
        loop {
            match self.decoder.decode_startup(&mut self.buf) {
                Ok(Some(p)) => return Ok(Input::Message(p)),
                Ok(None) => {}
                Err(e) => return Ok(Input::Malformed(e)),
            }
            if let Some(end) = self.fill().await? {
                return Ok(end);
            }
        }
    }

    async fn next_message(&mut self) -> anyhow::Result<Input<FeMessage>> {
        loop {
            match self.decoder.decode_message(&mut self.buf) {
                Ok(Some(m)) => return Ok(Input::Message(m)),
                Ok(None) => {}
                Err(e) => return Ok(Input::Malformed(e)),
            }
            if let Some(end) = self.fill().await? {
                return Ok(end);
            }
        }
    }

    /// Reads more bytes; `Some` when the connection or the server ends.
    async fn fill<T>(&mut self) -> anyhow::Result<Option<Input<T>>> {
        let shutdown = &mut self.shutdown;
        tokio::select! {
            // read_buf is cancel safe: nothing is lost if shutdown wins.
            n = self.rd.read_buf(&mut self.buf) => {
                if n? > 0 {
                    Ok(None)
                } else if self.buf.is_empty() {
                    Ok(Some(Input::Eof))
                } else {
                    anyhow::bail!("the client closed the connection in the middle of a message")
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => Ok(Some(Input::Shutdown)),
        }
    }
}

/// The sending half of a connection: messages are queued in a buffer and
/// written by `flush`.
struct Writer {
    wr: OwnedWriteHalf,
    buf: BytesMut,
}

impl Writer {
    fn queue(&mut self, msg: &BeMessage) -> anyhow::Result<()> {
        msg.write(&mut self.buf)?;
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.wr.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    async fn send(&mut self, msg: &BeMessage<'_>) -> anyhow::Result<()> {
        self.queue(msg)?;
        Ok(self.flush().await?)
    }

    /// ERROR, then ReadyForQuery: the query failed, the session goes on.
    async fn query_error(&mut self, e: &QueryError) -> anyhow::Result<()> {
        self.queue(&BeMessage::error(e.code, &e.message))?;
        self.ready().await
    }

    async fn ready(&mut self) -> anyhow::Result<()> {
        self.send(&BeMessage::ReadyForQuery(TransactionStatus::Idle))
            .await
    }

    /// FATAL: sent just before the server closes the connection. Errors are
    /// ignored: the client may be gone already.
    async fn fatal(&mut self, code: SqlState, message: &str) {
        let message = message.replace('\0', "\u{FFFD}");
        let msg = BeMessage::ErrorResponse(ErrorFields::fatal(code, &message));
        if self.queue(&msg).is_ok() {
            let _ = self.flush().await;
        }
    }
}

/// How a query left the connection.
enum Flow {
    Continue,
    Close,
}

/// How a pagestream ended.
enum StreamEnd {
    /// CopyDone: the client goes back to queries.
    CopyDone,
    /// Terminate, CopyFail, EOF, or a malformed request already answered.
    Close,
    Shutdown,
    /// Framing lost, or a message that has no place in a copy stream.
    Violation(SqlState, String),
}

/// A response the pagestream writer sends, in request order.
enum Pending {
    Answer {
        reqid: u64,
        task: JoinHandle<PagestreamResponse>,
    },
    Ready(PagestreamResponse),
}

struct Connection {
    reader: Reader,
    writer: Writer,
    mgr: Arc<TenantManager>,
    conf: Arc<PageServerConf>,
}

impl Connection {
    async fn run(&mut self) -> anyhow::Result<()> {
        if !self.startup().await? {
            return Ok(());
        }
        loop {
            let msg = match self.reader.next_message().await? {
                Input::Message(m) => m,
                Input::Eof => return Ok(()),
                Input::Shutdown => return self.shutdown_close().await,
                Input::Malformed(e) => {
                    self.writer.fatal(e.sql_state(), &e.to_string()).await;
                    return Err(e.into());
                }
            };
            match msg {
                FeMessage::Query(q) => {
                    if let Flow::Close = self.query(&q).await? {
                        return Ok(());
                    }
                }
                FeMessage::Terminate => return Ok(()),
                // Outside COPY these are ignored, as PostgreSQL does.
                FeMessage::Sync
                | FeMessage::CopyData(_)
                | FeMessage::CopyDone
                | FeMessage::CopyFail(_) => {}
                FeMessage::Password(_) => {
                    let msg = "unexpected password message: no authentication was requested";
                    self.writer.fatal(SqlState::PROTOCOL_VIOLATION, msg).await;
                    anyhow::bail!(msg);
                }
            }
        }
    }

    async fn shutdown_close(&mut self) -> anyhow::Result<()> {
        debug!("closing the connection: the pageserver is shutting down");
        let msg = "terminating connection due to pageserver shutdown";
        self.writer.fatal(SqlState::ADMIN_SHUTDOWN, msg).await;
        Ok(())
    }

    /// The startup phase. Returns false if the connection ends in it.
    async fn startup(&mut self) -> anyhow::Result<bool> {
        let (mut ssl_refused, mut gss_refused) = (false, false);
        loop {
            let packet = match self.reader.next_startup().await? {
                Input::Message(p) => p,
                Input::Eof => return Ok(false),
                Input::Shutdown => {
                    self.shutdown_close().await?;
                    return Ok(false);
                }
                Input::Malformed(e) => {
                    self.writer.fatal(e.sql_state(), &e.to_string()).await;
                    return Err(e.into());
                }
            };
            match packet {
                FeStartupPacket::SslRequest if !ssl_refused => {
                    ssl_refused = true;
                    self.writer.wr.write_all(&[SSL_REFUSED]).await?;
                }
                FeStartupPacket::GssEncRequest if !gss_refused => {
                    gss_refused = true;
                    self.writer.wr.write_all(&[GSSENC_REFUSED]).await?;
                }
                FeStartupPacket::SslRequest | FeStartupPacket::GssEncRequest => {
                    let msg = "repeated encryption negotiation request";
                    self.writer.fatal(SqlState::PROTOCOL_VIOLATION, msg).await;
                    anyhow::bail!(msg);
                }
                FeStartupPacket::CancelRequest(_) => {
                    debug!("ignoring a cancel request: page service queries cannot be canceled");
                    return Ok(false);
                }
                FeStartupPacket::StartupMessage {
                    minor_version,
                    params,
                    ..
                } => {
                    debug!(
                        user = params.user().unwrap_or(""),
                        application_name = params.get("application_name").unwrap_or(""),
                        "startup"
                    );
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
                    self.writer.queue(&BeMessage::AuthenticationOk)?;
                    for (name, value) in [
                        ("server_version", SERVER_VERSION),
                        ("server_encoding", "UTF8"),
                        ("client_encoding", "UTF8"),
                        ("DateStyle", "ISO"),
                        ("integer_datetimes", "on"),
                        ("standard_conforming_strings", "on"),
                    ] {
                        self.writer
                            .queue(&BeMessage::ParameterStatus { name, value })?;
                    }
                    let key = random_u64();
                    self.writer
                        .queue(&BeMessage::BackendKeyData(CancelKeyData {
                            backend_pid: (key >> 32) as i32 & i32::MAX,
                            cancel_key: key as i32,
                        }))?;
                    self.writer.ready().await?;
                    return Ok(true);
                }
            }
        }
    }

    async fn query(&mut self, q: &str) -> anyhow::Result<Flow> {
        debug!(query = %truncated(q, 200), "query");
        let res = match parse_command(q) {
            Ok(cmd) => self.command(cmd).await?,
            Err(e) => Err(e),
        };
        match res {
            Ok(flow) => Ok(flow),
            Err(e) => {
                info!("query failed: {}", e.message);
                self.writer.query_error(&e).await?;
                Ok(Flow::Continue)
            }
        }
    }

    /// Runs a command. The inner error is a failed query; the outer one ends
    /// the connection.
    async fn command(&mut self, cmd: Command) -> anyhow::Result<Result<Flow, QueryError>> {
        match cmd {
            Command::Empty => {
                self.writer.queue(&BeMessage::EmptyQueryResponse)?;
                self.writer.ready().await?;
            }
            Command::Set => {
                self.writer.queue(&BeMessage::CommandComplete("SET"))?;
                self.writer.ready().await?;
            }
            Command::IdentifySystem => {
                write_text_result(
                    &mut self.writer.buf,
                    &["systemid", "timeline", "xlogpos", "dbname"],
                    &[&[Some("0"), Some("1"), Some("0/0"), None]],
                )?;
                self.writer.ready().await?;
            }
            Command::Pagestream {
                tenant_id,
                timeline_id,
            } => {
                let tl = match self.timeline(tenant_id, timeline_id) {
                    Ok(tl) => tl,
                    Err(e) => return Ok(Err(e)),
                };
                return self.pagestream(tl).await.map(Ok);
            }
            Command::Basebackup {
                tenant_id,
                timeline_id,
                lsn,
                full,
            } => {
                let tl = match self.timeline(tenant_id, timeline_id) {
                    Ok(tl) => tl,
                    Err(e) => return Ok(Err(e)),
                };
                return self.basebackup(tl, lsn, full).await;
            }
        }
        Ok(Ok(Flow::Continue))
    }

    fn timeline(
        &self,
        tenant_id: TenantId,
        timeline_id: TimelineId,
    ) -> Result<Arc<Timeline>, QueryError> {
        let span = Span::current();
        span.record("tenant_id", field::display(tenant_id));
        span.record("timeline_id", field::display(timeline_id));
        let not_found = |what: String| QueryError::new(SqlState::INVALID_CATALOG_NAME, what);
        let tenant = self
            .mgr
            .get(tenant_id)
            .ok_or_else(|| not_found(format!("tenant {tenant_id} not found")))?;
        tenant.get_timeline(timeline_id).ok_or_else(|| {
            not_found(format!(
                "timeline {timeline_id} not found in tenant {tenant_id}"
            ))
        })
    }

    async fn pagestream(&mut self, tl: Arc<Timeline>) -> anyhow::Result<Flow> {
        info!("pagestream started");
        self.writer
            .send(&BeMessage::CopyBothResponse(CopyResponse::TEXT))
            .await?;
        let (tx, rx) = mpsc::channel(PIPELINE_DEPTH);
        let wait_timeout = self.conf.wait_lsn_timeout;
        let reader = read_requests(&mut self.reader, &tl, wait_timeout, tx);
        let writer = write_responses(&mut self.writer, rx);
        let (end, ()) = tokio::try_join!(reader, writer)?;
        match end {
            StreamEnd::CopyDone => {
                debug!("pagestream ended by the client");
                self.writer.queue(&BeMessage::CopyDone)?;
                self.writer
                    .queue(&BeMessage::CommandComplete("PAGESTREAM"))?;
                self.writer.ready().await?;
                Ok(Flow::Continue)
            }
            StreamEnd::Close => Ok(Flow::Close),
            StreamEnd::Shutdown => {
                self.shutdown_close().await?;
                Ok(Flow::Close)
            }
            StreamEnd::Violation(code, msg) => {
                self.writer.fatal(code, &msg).await;
                anyhow::bail!(msg)
            }
        }
    }

    async fn basebackup(
        &mut self,
        tl: Arc<Timeline>,
        lsn: Option<Lsn>,
        full: bool,
    ) -> anyhow::Result<Result<Flow, QueryError>> {
        let last = tl.last_record_lsn();
        let lsn = lsn.unwrap_or(last);
        if lsn > last {
            let timeout = self.conf.wait_lsn_timeout;
            if tl.wait_lsn(lsn, timeout).await.is_err() {
                return Ok(Err(QueryError::new(
                    SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!(
                        "basebackup: timed out after {} waiting for WAL up to {lsn}; the timeline has reached {}",
                        humantime::format_duration(timeout),
                        tl.last_record_lsn()
                    ),
                )));
            }
        }
        let cutoff = tl.gc_cutoff_lsn();
        if lsn < cutoff {
            return Ok(Err(QueryError::invalid(format!(
                "basebackup: LSN {lsn} is below the GC cutoff {cutoff}"
            ))));
        }
        info!(%lsn, full, "basebackup started");
        self.writer
            .send(&BeMessage::CopyOutResponse(CopyResponse::TEXT))
            .await?;

        let (tx, mut rx) = mpsc::channel(BASEBACKUP_CHANNEL_DEPTH);
        let span = Span::current();
        let producer = tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                let out = ChunkWriter {
                    tx,
                    buf: BytesMut::with_capacity(BASEBACKUP_CHUNK_SIZE),
                };
                send_basebackup(&tl, lsn, full, out)?.finish()
            })
        });
        let mut bytes = 0usize;
        while let Some(chunk) = rx.recv().await {
            bytes += chunk.len();
            self.writer.send(&BeMessage::CopyData(&chunk)).await?;
        }
        let res = match producer.await {
            Ok(res) => res,
            Err(e) => Err(anyhow::anyhow!("basebackup task failed: {e}")),
        };
        if let Err(e) = res {
            let msg = format!("basebackup at {lsn} failed: {e:#}");
            self.writer.fatal(SqlState::INTERNAL_ERROR, &msg).await;
            anyhow::bail!(msg);
        }
        self.writer.queue(&BeMessage::CopyDone)?;
        self.writer
            .queue(&BeMessage::CommandComplete("BASEBACKUP"))?;
        self.writer.ready().await?;
        info!(%lsn, full, bytes, "basebackup sent");
        Ok(Ok(Flow::Continue))
    }
}

/// The reading side of a pagestream: parses requests and starts a task for
/// each, queueing it for the writer in request order.
async fn read_requests(
    reader: &mut Reader,
    tl: &Arc<Timeline>,
    wait_timeout: Duration,
    tx: mpsc::Sender<Pending>,
) -> anyhow::Result<StreamEnd> {
    loop {
        let msg = match reader.next_message().await? {
            Input::Message(m) => m,
            Input::Eof => return Ok(StreamEnd::Close),
            Input::Shutdown => return Ok(StreamEnd::Shutdown),
            Input::Malformed(e) => return Ok(StreamEnd::Violation(e.sql_state(), e.to_string())),
        };
        let data = match msg {
            FeMessage::CopyData(data) => data,
            FeMessage::CopyDone => return Ok(StreamEnd::CopyDone),
            FeMessage::CopyFail(m) => {
                debug!("the client failed the pagestream: {m}");
                return Ok(StreamEnd::Close);
            }
            FeMessage::Terminate => return Ok(StreamEnd::Close),
            other => {
                let msg = format!(
                    "unexpected message type {:?} in a pagestream",
                    char::from(other.tag())
                );
                return Ok(StreamEnd::Violation(SqlState::PROTOCOL_VIOLATION, msg));
            }
        };
        let pending = match PagestreamRequest::parse(&data) {
            // Most reads are answered from memory and the page cache right
            // here: no task, no blocking thread, no hand-off.
            Ok(req) => match answer_now(tl, &req) {
                Some(resp) => Pending::Ready(resp),
                None => Pending::Answer {
                    reqid: req.reqid,
                    task: tokio::spawn(
                        answer_request(Arc::clone(tl), wait_timeout, req)
                            .instrument(Span::current()),
                    ),
                },
            },
            Err(e) => {
                // The reqid, if the header got that far.
                let reqid = data
                    .get(1..9)
                    .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
                warn!(
                    reqid,
                    "malformed pagestream request, closing the connection: {e}"
                );
                let resp =
                    PagestreamResponse::error(reqid, format!("malformed pagestream request: {e}"));
                let _ = tx.send(Pending::Ready(resp)).await;
                return Ok(StreamEnd::Close);
            }
        };
        if tx.send(pending).await.is_err() {
            return Ok(StreamEnd::Close);
        }
    }
}

/// The writing side of a pagestream: sends responses in request order,
/// flushing whenever the next one is not ready yet.
async fn write_responses(
    writer: &mut Writer,
    mut rx: mpsc::Receiver<Pending>,
) -> anyhow::Result<()> {
    let mut payload = BytesMut::with_capacity(16 * 1024);
    loop {
        if rx.is_empty() {
            writer.flush().await?;
        }
        let Some(pending) = rx.recv().await else {
            break;
        };
        let resp = match pending {
            Pending::Ready(resp) => resp,
            Pending::Answer { reqid, task } => {
                if !task.is_finished() {
                    writer.flush().await?;
                }
                task.await.unwrap_or_else(|e| {
                    error!(reqid, "pagestream request handler failed: {e}");
                    PagestreamResponse::error(reqid, "internal error in the pageserver")
                })
            }
        };
        payload.clear();
        if let Err(e) = resp.serialize(&mut payload) {
            error!(
                reqid = resp.reqid,
                "cannot serialize a pagestream response: {e}"
            );
            PagestreamResponse::error(resp.reqid, format!("internal error: {e}"))
                .serialize(&mut payload)?;
        }
        writer.queue(&BeMessage::CopyData(&payload))?;
        if writer.buf.len() >= FLUSH_THRESHOLD {
            writer.flush().await?;
        }
    }
    writer.flush().await?;
    Ok(())
}

/// Answers one request; failures become error responses.
async fn answer_request(
    tl: Arc<Timeline>,
    wait_timeout: Duration,
    req: PagestreamRequest,
) -> PagestreamResponse {
    let reqid = req.reqid;
    match read_at_lsn(tl, wait_timeout, req).await {
        Ok(body) => PagestreamResponse { reqid, body },
        Err(msg) => {
            debug!(reqid, "pagestream request failed: {msg}");
            PagestreamResponse::error(reqid, msg)
        }
    }
}

fn show_request_lsn(lsn: Lsn) -> String {
    if lsn == Lsn::MAX {
        "latest".to_string()
    } else {
        lsn.to_string()
    }
}

/// Applies the LSN rules of docs/architecture.md §5 (waiting for WAL if needed),
/// then reads on a blocking thread.
async fn read_at_lsn(
    tl: Arc<Timeline>,
    wait_timeout: Duration,
    req: PagestreamRequest,
) -> Result<PagestreamResponseBody, String> {
    req.validate().map_err(|e| e.to_string())?;
    let (request_lsn, not_modified_since) = (req.request_lsn, req.not_modified_since);
    if needs_wait(not_modified_since, tl.last_record_lsn())
        && tl.wait_lsn(not_modified_since, wait_timeout).await.is_err()
    {
        return Err(format!(
            "timed out after {} waiting for WAL up to not_modified_since {not_modified_since} (request LSN {}): the timeline has reached {}",
            humantime::format_duration(wait_timeout),
            show_request_lsn(request_lsn),
            tl.last_record_lsn()
        ));
    }
    let lsn = read_lsn(&tl, &req)?;
    let span = Span::current();
    tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            read_body(&DatadirReader::new(&tl, lsn), req.body).map_err(|e| match e {
                ReadFail::Msg(m) => m,
                ReadFail::WouldBlock => "internal error: a blocking read would block".into(),
            })
        })
    })
    .await
    .map_err(|e| format!("internal error in the pageserver: {e}"))?
}

/// The LSN a request reads at, once any wait for WAL is over.
fn read_lsn(tl: &Timeline, req: &PagestreamRequest) -> Result<Lsn, String> {
    let last = tl.last_record_lsn();
    let lsn = effective_lsn(req.request_lsn, req.not_modified_since, last);
    if lsn > last {
        return Err(format!(
            "LSN {lsn} is beyond the timeline's last record {last}"
        ));
    }
    let cutoff = tl.gc_cutoff_lsn();
    if lsn < cutoff {
        return Err(format!(
            "requested LSN {lsn} is below the GC cutoff {cutoff}: that history is gone"
        ));
    }
    Ok(lsn)
}

/// The answer to `req` if it can be given without waiting for WAL, reading
/// a layer file or running WAL redo; `None` otherwise.
fn answer_now(tl: &Timeline, req: &PagestreamRequest) -> Option<PagestreamResponse> {
    let reqid = req.reqid;
    if let Err(e) = req.validate() {
        return Some(PagestreamResponse::error(reqid, e.to_string()));
    }
    if needs_wait(req.not_modified_since, tl.last_record_lsn()) {
        return None;
    }
    let body = read_lsn(tl, req)
        .map_err(ReadFail::Msg)
        .and_then(|lsn| read_body(&DatadirReader::cached_only(tl, lsn), req.body.clone()));
    match body {
        Ok(body) => Some(PagestreamResponse { reqid, body }),
        Err(ReadFail::WouldBlock) => None,
        Err(ReadFail::Msg(msg)) => {
            debug!(reqid, "pagestream request failed: {msg}");
            Some(PagestreamResponse::error(reqid, msg))
        }
    }
}

/// Why a read gave no answer.
enum ReadFail {
    /// A cached-only read needs I/O or redo.
    WouldBlock,
    /// The error message for the client.
    Msg(String),
}

impl From<TimelineError> for ReadFail {
    fn from(e: TimelineError) -> Self {
        match e {
            TimelineError::WouldBlock => ReadFail::WouldBlock,
            e => ReadFail::Msg(storage_error(e)),
        }
    }
}

impl From<String> for ReadFail {
    fn from(m: String) -> Self {
        ReadFail::Msg(m)
    }
}

/// A storage error as a response message (logged: it is not the client's fault).
fn storage_error(e: TimelineError) -> String {
    warn!("storage read failed: {e}");
    e.to_string()
}

/// The answer to a request, read with `r`.
fn read_body(
    r: &DatadirReader,
    body: PagestreamRequestBody,
) -> Result<PagestreamResponseBody, ReadFail> {
    use PagestreamRequestBody as Req;
    use PagestreamResponseBody as Resp;
    let lsn = r.lsn;
    let size = |rel| -> Result<u32, ReadFail> {
        match r.rel_size(rel)? {
            Some(n) => Ok(n),
            None => Err(format!("relation {rel} does not exist at LSN {lsn}").into()),
        }
    };
    Ok(match body {
        Req::Exists { rel } => Resp::Exists(r.rel_exists(rel)?),
        Req::Nblocks { rel } => Resp::Nblocks(size(rel)?),
        Req::GetPage { rel, blkno } => {
            let n = size(rel)?;
            if blkno >= n {
                return Err(format!(
                    "block {blkno} of relation {rel} is beyond its end at LSN {lsn} ({n} blocks)"
                )
                .into());
            }
            Resp::GetPage(r.rel_page(rel, blkno)?)
        }
        Req::DbSize { dbnode } => {
            let bytes = r.db_size(DEFAULTTABLESPACE_OID, dbnode)?;
            Resp::DbSize(i64::try_from(bytes).unwrap_or(i64::MAX))
        }
        Req::GetSlruSegment { kind, segno } => {
            let n = r.slru_segment_size(kind, segno)?;
            let mut pages = BytesMut::with_capacity(n as usize * crate::pagestream::PAGE_SIZE);
            for blkno in 0..n {
                pages.put_slice(&r.slru_page(kind, segno, blkno)?);
            }
            Resp::GetSlruSegment(pages.freeze())
        }
    })
}

/// `std::io::Write` for the basebackup producer: cuts the tar into chunks of
/// [`BASEBACKUP_CHUNK_SIZE`] and hands them to the connection over a bounded
/// channel (blocking while it is full). Fails once the receiver is gone.
struct ChunkWriter {
    tx: mpsc::Sender<bytes::Bytes>,
    buf: BytesMut,
}

impl ChunkWriter {
    fn send_chunk(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(BASEBACKUP_CHUNK_SIZE);
        self.tx.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client connection is gone",
            )
        })
    }

    /// Sends what is left.
    fn finish(mut self) -> anyhow::Result<()> {
        Ok(self.send_chunk()?)
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(BASEBACKUP_CHUNK_SIZE - self.buf.len());
        self.buf.put_slice(&data[..n]);
        if self.buf.len() >= BASEBACKUP_CHUNK_SIZE {
            self.send_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// 64 unpredictable bits (for BackendKeyData and benchmark seeds) without a
/// random-number crate: std's hasher keys are random per process.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.finish()
}

pub mod client;

pub mod bench;

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0123456789abcdef0123456789abcdef";
    const TL: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn commands_parse() {
        let (t, tl) = (T.parse().unwrap(), TL.parse().unwrap());
        assert_eq!(parse_command("").unwrap(), Command::Empty);
        assert_eq!(parse_command(" ;").unwrap(), Command::Empty);
        assert_eq!(
            parse_command(&format!("pagestream {T} {TL}")).unwrap(),
            Command::Pagestream {
                tenant_id: t,
                timeline_id: tl
            }
        );
        assert_eq!(
            parse_command(&format!("BASEBACKUP {T} {TL};")).unwrap(),
            Command::Basebackup {
                tenant_id: t,
                timeline_id: tl,
                lsn: None,
                full: false
            }
        );
        assert_eq!(
            parse_command(&format!("basebackup {T} {TL} 1/2A --full")).unwrap(),
            Command::Basebackup {
                tenant_id: t,
                timeline_id: tl,
                lsn: Some(Lsn(0x1_0000_002A)),
                full: true
            }
        );
        assert_eq!(
            parse_command(&format!("basebackup {T} {TL} --full 0/10")).unwrap(),
            Command::Basebackup {
                tenant_id: t,
                timeline_id: tl,
                lsn: Some(Lsn(0x10)),
                full: true
            }
        );
        assert_eq!(
            parse_command("IDENTIFY_SYSTEM").unwrap(),
            Command::IdentifySystem
        );
        assert_eq!(parse_command("SET datestyle TO ISO").unwrap(), Command::Set);
    }

    #[test]
    fn bad_commands_have_the_right_sqlstate() {
        let code = |q: &str| parse_command(q).unwrap_err().code;
        assert_eq!(code("select 1"), SqlState::SYNTAX_ERROR);
        assert_eq!(code("identify_system now"), SqlState::SYNTAX_ERROR);
        assert_eq!(code(&format!("pagestream {T}")), SqlState::SYNTAX_ERROR);
        assert_eq!(
            code(&format!("pagestream {T} {TL} x")),
            SqlState::SYNTAX_ERROR
        );
        assert_eq!(
            code(&format!("pagestream xyz {TL}")),
            SqlState::INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            code(&format!("pagestream {T} {}", &TL[1..])),
            SqlState::INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            code(&format!("basebackup {T} {TL} nowhere")),
            SqlState::INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            code(&format!("basebackup {T} {TL} 0/1 0/2")),
            SqlState::SYNTAX_ERROR
        );
        assert_eq!(
            code(&format!("basebackup {T} {TL} --slim")),
            SqlState::SYNTAX_ERROR
        );
        let e = parse_command(&format!("basebackup {T} zz")).unwrap_err();
        assert!(
            e.message.contains("invalid timeline id \"zz\""),
            "{}",
            e.message
        );
        let long = "x".repeat(500);
        assert!(parse_command(&long).unwrap_err().message.len() < 250);
    }

    #[test]
    fn chunk_writer_sends_bounded_chunks_and_fails_when_the_reader_is_gone() {
        use std::io::Write;
        let (tx, mut rx) = mpsc::channel(1000);
        let mut w = ChunkWriter {
            tx,
            buf: BytesMut::new(),
        };
        let data: Vec<u8> = (0..BASEBACKUP_CHUNK_SIZE * 2 + 100)
            .map(|i| i as u8)
            .collect();
        w.write_all(&data).unwrap();
        w.finish().unwrap();
        let mut got = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            assert!(chunk.len() <= BASEBACKUP_CHUNK_SIZE);
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, data);

        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut w = ChunkWriter {
            tx,
            buf: BytesMut::new(),
        };
        let err = w.write_all(&data).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    }
}
