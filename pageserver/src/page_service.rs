//! The page service (docs/architecture.md §5): the pageserver's PostgreSQL-protocol
//! endpoint, where computes fetch pages (`pagestream`) and basebackups.
//!
//! Connections are accepted and driven by [`zenith_utils::postgres_backend`]
//! (startup, SSL/GSS refusal, limits and timeouts, shutdown); this module is
//! its [`Handler`]: the simple queries of the page service.
//!
//! | query | answer |
//! |---|---|
//! | `pagestream <tenant> <timeline>` | CopyBoth; one [`PagestreamRequest`] per CopyData from the client, one response per CopyData back, in request order (byte format: `docs/pagestream.md`) |
//! | `basebackup <tenant> <timeline> [<lsn>] [--full]` | CopyOut of the tar of docs/architecture.md §8, then `BASEBACKUP` |
//! | `identify_system` | one row: systemid, timeline, xlogpos, dbname (the pageserver holds many systems, so it names none: `0`, `1`, `0/0`, NULL) |
//! | `set ...` | `SET` (ignored) |
//! | anything else | ERROR 42601 |
//!
//! With `auth_type = "ZenithJWT"` the client's password is a token
//! ([`zenith_utils::auth`]): an invalid one is FATAL 28P01 at login; a
//! `pagestream` or `basebackup` of a tenant the token does not cover
//! (a `tenant` token for another tenant, a `walkeeperdata` token) is
//! ERROR 42501.
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
//!   responses are sent in request order. Reads that need file I/O or WAL
//!   redo run on blocking threads; reads the in-memory layers and the page
//!   cache can answer are answered in the connection's task.
//! - A basebackup is produced on a blocking thread and streamed through a
//!   bounded channel, so a connection never holds more than a few chunks of
//!   it in memory.
//! - Shutdown: idle connections and pagestreams end at their next message
//!   boundary with FATAL 57P01 (the backend's rule).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use postgres_ffi::pg_constants::DEFAULTTABLESPACE_OID;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, field, info, info_span, warn, Instrument, Span};
use zenith_utils::auth::{ConnectionAuth, JwtAuth};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;
use zenith_utils::postgres_backend::{
    self, truncated, BackendConf, BackendReader, BackendWriter, Handler, HandlerError,
    PostgresBackend,
};
use zenith_utils::pq_proto::{write_text_result, BeMessage, CopyResponse, FeMessage, SqlState};

mod smgr_metrics;

use self::smgr_metrics::SmgrQuery;
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

static BASEBACKUPS_IN_PROGRESS: std::sync::LazyLock<zenith_metrics::IntGauge> =
    std::sync::LazyLock::new(|| {
        zenith_metrics::register_int_gauge!(
            "pageserver_basebackups_in_progress",
            "Basebackups being produced and sent"
        )
        .expect("registering pageserver_basebackups_in_progress")
    });

/// Registers the page service's metrics (see [`crate::register_metrics`]).
pub fn register_metrics() {
    std::sync::LazyLock::force(&BASEBACKUPS_IN_PROGRESS);
    smgr_metrics::register();
}

/// Counts one unit of work in a gauge while it lives.
struct InProgress(&'static zenith_metrics::IntGauge);

impl InProgress {
    fn start(g: &'static zenith_metrics::IntGauge) -> InProgress {
        g.inc();
        InProgress(g)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The backend settings of the page service.
pub fn backend_conf(conf: &PageServerConf) -> BackendConf {
    BackendConf {
        max_message_size: MAX_MESSAGE_SIZE,
        startup_timeout: conf.pg_startup_timeout,
        idle_timeout: Some(conf.pg_idle_timeout),
        max_connections: conf.pg_max_connections,
        shutdown_grace: SHUTDOWN_GRACE,
        ..BackendConf::new("page service")
    }
}

/// Serves the page service on `listener` until `shutdown` becomes true (or
/// its sender is dropped). Each connection runs in its own task; their errors
/// are logged, never returned.
pub async fn serve(
    listener: TcpListener,
    mgr: Arc<TenantManager>,
    conf: Arc<PageServerConf>,
    auth: Option<Arc<JwtAuth>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let backend = Arc::new(backend_conf(&conf));
    postgres_backend::serve(
        listener,
        backend,
        move |peer| {
            let span = info_span!(
                "page_service",
                %peer,
                tenant_id = field::Empty,
                timeline_id = field::Empty,
            );
            let handler = PageServiceHandler {
                mgr: Arc::clone(&mgr),
                conf: Arc::clone(&conf),
                auth: ConnectionAuth::new(auth.clone()),
            };
            (handler, span)
        },
        shutdown,
    )
    .await?;
    Ok(())
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

/// A failed query with an invalid parameter.
fn invalid(message: impl Into<String>) -> HandlerError {
    HandlerError::query(SqlState::INVALID_PARAMETER_VALUE, message)
}

fn parse_ids(
    cmd: &str,
    tenant: &str,
    timeline: &str,
) -> Result<(TenantId, TimelineId), HandlerError> {
    let tenant_id = tenant.parse().map_err(|e| {
        invalid(format!(
            "{cmd}: invalid tenant id {:?}: {e}",
            truncated(tenant, 40)
        ))
    })?;
    let timeline_id = timeline.parse().map_err(|e| {
        invalid(format!(
            "{cmd}: invalid timeline id {:?}: {e}",
            truncated(timeline, 40)
        ))
    })?;
    Ok((tenant_id, timeline_id))
}

/// Parses a simple query. Keywords are case-insensitive; a trailing `;` is
/// allowed.
fn parse_command(query: &str) -> Result<Command, HandlerError> {
    let q = query.trim().trim_end_matches(';').trim_end();
    let mut words = q.split_whitespace();
    let Some(first) = words.next() else {
        return Ok(Command::Empty);
    };
    let args: Vec<&str> = words.collect();
    let usage = |u: &str| HandlerError::query(SqlState::SYNTAX_ERROR, format!("usage: {u}"));
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
                        invalid(format!(
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
        _ => Err(HandlerError::query(
            SqlState::SYNTAX_ERROR,
            format!(
                "unsupported command {:?}: the page service runs pagestream, basebackup, identify_system and set",
                truncated(q, 100)
            ),
        )),
    }
}

/// How a pagestream ended.
enum StreamEnd {
    /// CopyDone: the client goes back to queries.
    CopyDone,
    /// Terminate, CopyFail, EOF, or a malformed request already answered.
    Close,
}

/// A response the pagestream writer sends, in request order.
enum Pending {
    Answer {
        reqid: u64,
        task: AbortOnDrop<PagestreamResponse>,
    },
    Ready(PagestreamResponse),
}

/// A request's task, aborted if its answer is no longer wanted (the
/// connection ended): tasks of a dropped connection do not run on.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The page service's side of one connection.
struct PageServiceHandler {
    mgr: Arc<TenantManager>,
    conf: Arc<PageServerConf>,
    /// The connection's token, when auth is on.
    auth: ConnectionAuth,
}

impl Handler for PageServiceHandler {
    fn token_auth(&self) -> Option<&ConnectionAuth> {
        Some(&self.auth)
    }

    async fn process_query(
        &mut self,
        pgb: &mut PostgresBackend,
        query: &str,
    ) -> Result<(), HandlerError> {
        match parse_command(query)? {
            Command::Empty => pgb.write_message(&BeMessage::EmptyQueryResponse),
            Command::Set => pgb.write_message(&BeMessage::CommandComplete("SET")),
            Command::IdentifySystem => Ok(write_text_result(
                pgb.writer.buf_mut(),
                &["systemid", "timeline", "xlogpos", "dbname"],
                &[&[Some("0"), Some("1"), Some("0/0"), None]],
            )?),
            Command::Pagestream {
                tenant_id,
                timeline_id,
            } => {
                let tl = self.timeline(tenant_id, timeline_id)?;
                self.pagestream(pgb, tl).await
            }
            Command::Basebackup {
                tenant_id,
                timeline_id,
                lsn,
                full,
            } => {
                let tl = self.timeline(tenant_id, timeline_id)?;
                self.basebackup(pgb, tl, lsn, full).await
            }
        }
    }
}

impl PageServiceHandler {
    fn timeline(
        &self,
        tenant_id: TenantId,
        timeline_id: TimelineId,
    ) -> Result<Arc<Timeline>, HandlerError> {
        self.auth.allow(|claims| claims.check_tenant(tenant_id))?;
        let span = Span::current();
        span.record("tenant_id", field::display(tenant_id));
        span.record("timeline_id", field::display(timeline_id));
        let not_found = |what: String| HandlerError::query(SqlState::INVALID_CATALOG_NAME, what);
        let tenant = self
            .mgr
            .get(tenant_id)
            .ok_or_else(|| not_found(format!("tenant {tenant_id} not found")))?;
        tenant
            .get_timeline(timeline_id)
            .ok_or_else(|| match tenant.broken_reason(timeline_id) {
                Some(reason) => HandlerError::query(
                    SqlState::DATA_CORRUPTED,
                    format!("timeline {timeline_id} of tenant {tenant_id} is broken: {reason}"),
                ),
                None => not_found(format!(
                    "timeline {timeline_id} not found in tenant {tenant_id}"
                )),
            })
    }

    async fn pagestream(
        &mut self,
        pgb: &mut PostgresBackend,
        tl: Arc<Timeline>,
    ) -> Result<(), HandlerError> {
        info!("pagestream started");
        pgb.writer
            .send(&BeMessage::CopyBothResponse(CopyResponse::TEXT))
            .await?;
        let (tx, rx) = mpsc::channel(PIPELINE_DEPTH);
        let wait_timeout = self.conf.wait_lsn_timeout;
        let (reader, writer) = pgb.split();
        let reading = read_requests(reader, &tl, wait_timeout, tx);
        let writing = write_responses(writer, rx);
        let (end, ()) = tokio::try_join!(reading, writing)?;
        match end {
            StreamEnd::CopyDone => {
                debug!("pagestream ended by the client");
                pgb.write_message(&BeMessage::CopyDone)?;
                pgb.write_message(&BeMessage::CommandComplete("PAGESTREAM"))
            }
            StreamEnd::Close => Err(HandlerError::ClientGone),
        }
    }

    async fn basebackup(
        &mut self,
        pgb: &mut PostgresBackend,
        tl: Arc<Timeline>,
        lsn: Option<Lsn>,
        full: bool,
    ) -> Result<(), HandlerError> {
        let last = tl.last_record_lsn();
        let lsn = lsn.unwrap_or(last);
        if lsn > last {
            let timeout = self.conf.wait_lsn_timeout;
            if tl.wait_lsn(lsn, timeout).await.is_err() {
                return Err(HandlerError::query(
                    SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!(
                        "basebackup: timed out after {} waiting for WAL up to {lsn}; the timeline has reached {}",
                        humantime::format_duration(timeout),
                        tl.last_record_lsn()
                    ),
                ));
            }
        }
        let cutoff = tl.gc_cutoff_lsn();
        if lsn < cutoff {
            return Err(invalid(format!(
                "basebackup: LSN {lsn} is below the GC cutoff {cutoff}"
            )));
        }
        info!(%lsn, full, "basebackup started");
        pgb.writer
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
        let _in_progress = InProgress::start(&BASEBACKUPS_IN_PROGRESS);
        let mut bytes = 0usize;
        let send_timeout = self.conf.pg_send_timeout;
        while let Some(chunk) = rx.recv().await {
            bytes += chunk.len();
            // A client that stops reading must not pin the producer's
            // blocking thread: after the timeout the connection (and with
            // it the channel) is dropped and the producer stops.
            match tokio::time::timeout(send_timeout, pgb.writer.send(&BeMessage::CopyData(&chunk)))
                .await
            {
                Ok(sent) => sent?,
                Err(_) => {
                    warn!(%lsn, bytes, "basebackup: the client read nothing for {send_timeout:?}; closing");
                    drop(rx);
                    let _ = producer.await;
                    return Err(HandlerError::ClientGone);
                }
            }
        }
        let res = match producer.await {
            Ok(res) => res,
            Err(e) => Err(anyhow::anyhow!("basebackup task failed: {e}")),
        };
        if let Err(e) = res {
            return Err(HandlerError::fatal(
                SqlState::INTERNAL_ERROR,
                format!("basebackup at {lsn} failed: {e:#}"),
            ));
        }
        pgb.write_message(&BeMessage::CopyDone)?;
        pgb.write_message(&BeMessage::CommandComplete("BASEBACKUP"))?;
        info!(%lsn, full, bytes, "basebackup sent");
        Ok(())
    }
}

/// The reading side of a pagestream: parses requests and starts a task for
/// each, queueing it for the writer in request order.
async fn read_requests(
    reader: &mut BackendReader,
    tl: &Arc<Timeline>,
    wait_timeout: Duration,
    tx: mpsc::Sender<Pending>,
) -> Result<StreamEnd, HandlerError> {
    loop {
        let Some(msg) = reader.read_message().await? else {
            return Ok(StreamEnd::Close);
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
                return Err(HandlerError::fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    format!(
                        "unexpected message type {:?} in a pagestream",
                        char::from(other.tag())
                    ),
                ));
            }
        };
        let pending = match PagestreamRequest::parse(&data) {
            // Most reads are answered from memory and the page cache right
            // here: no task, no blocking thread, no hand-off.
            Ok(req) => {
                let started = Instant::now();
                let kind = SmgrQuery::of(&req.body);
                match answer_now(tl, &req) {
                    Some(resp) => {
                        kind.observe(started);
                        Pending::Ready(resp)
                    }
                    None => Pending::Answer {
                        reqid: req.reqid,
                        task: AbortOnDrop(tokio::spawn(
                            answer_request(Arc::clone(tl), wait_timeout, req, started)
                                .instrument(Span::current()),
                        )),
                    },
                }
            }
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
    writer: &mut BackendWriter,
    mut rx: mpsc::Receiver<Pending>,
) -> Result<(), HandlerError> {
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
            Pending::Answer { reqid, mut task } => {
                if !task.0.is_finished() {
                    writer.flush().await?;
                }
                (&mut task.0).await.unwrap_or_else(|e| {
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
                .serialize(&mut payload)
                .map_err(|e| HandlerError::fatal(SqlState::INTERNAL_ERROR, e.to_string()))?;
        }
        writer.queue(&BeMessage::CopyData(&payload))?;
        if writer.buffered() >= FLUSH_THRESHOLD {
            writer.flush().await?;
        }
    }
    writer.flush().await?;
    Ok(())
}

/// Answers one request that arrived at `started`; failures become error
/// responses.
async fn answer_request(
    tl: Arc<Timeline>,
    wait_timeout: Duration,
    req: PagestreamRequest,
    started: Instant,
) -> PagestreamResponse {
    let reqid = req.reqid;
    let kind = SmgrQuery::of(&req.body);
    let answer = read_at_lsn(tl, wait_timeout, req).await;
    kind.observe(started);
    match answer {
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

static ZERO_PAGE: [u8; crate::pagestream::PAGE_SIZE] = [0u8; crate::pagestream::PAGE_SIZE];

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
                // A compute extends relations with empty pages that reach
                // WAL only once something is written into them; until then
                // (or never) such a page is all zeros.
                debug!("block {blkno} of relation {rel} is beyond its end at LSN {lsn} ({n} blocks): a zero page");
                return Ok(Resp::GetPage(bytes::Bytes::from_static(&ZERO_PAGE)));
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
        let code = |q: &str| match parse_command(q).unwrap_err() {
            HandlerError::Query { code, .. } => code,
            e => panic!("{e}"),
        };
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
        let e = parse_command(&format!("basebackup {T} zz"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid timeline id \"zz\""), "{e}");
        let long = "x".repeat(500);
        assert!(parse_command(&long).unwrap_err().to_string().len() < 250);
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
