//! `pagestream`: the requests of one connection answered concurrently, the
//! responses sent in request order (see the invariants in [`super`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use postgres_ffi::pg_constants::DEFAULTTABLESPACE_OID;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn, Instrument, Span};
use zenith_utils::lsn::Lsn;
use zenith_utils::postgres_backend::{BackendReader, BackendWriter, HandlerError, PostgresBackend};
use zenith_utils::pq_proto::{BeMessage, CopyResponse, FeMessage, SqlState};

use super::smgr_metrics::SmgrQuery;
use super::{PageServiceHandler, FLUSH_THRESHOLD, PIPELINE_DEPTH};
use crate::pagestream::{
    PagestreamRequest, PagestreamRequestBody, PagestreamResponse, PagestreamResponseBody,
    RequestLsnError,
};
use crate::pgdatadir_mapping::DatadirReader;
use crate::tenant::timeline::{ReadLsnError, Timeline, TimelineError};
use postgres_ffi::relfile::RelTag;

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

impl PageServiceHandler {
    pub(super) async fn pagestream(
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

/// Why a pagestream request got an error response. The one place its kinds
/// are told apart: the SQLSTATE of each ([`sqlstate`](Self::sqlstate), in
/// the log line) and whether it is the server's fault (logged as a warning).
#[derive(Debug, thiserror::Error)]
pub enum PageStreamError {
    /// The request's LSNs are invalid.
    #[error(transparent)]
    Request(#[from] RequestLsnError),
    /// The timeline cannot serve the LSN the request asks for.
    #[error(transparent)]
    Lsn(#[from] ReadLsnError),
    #[error("relation {rel} does not exist at LSN {lsn}")]
    NoRelation { rel: RelTag, lsn: Lsn },
    /// Reading the storage failed.
    #[error(transparent)]
    Storage(TimelineError),
    #[error("internal error in the pageserver: {0}")]
    Internal(String),
}

impl PageStreamError {
    pub fn sqlstate(&self) -> SqlState {
        match self {
            PageStreamError::Request(_) => SqlState::INVALID_PARAMETER_VALUE,
            PageStreamError::Lsn(ReadLsnError::WaitTimeout { .. }) => {
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            PageStreamError::Lsn(ReadLsnError::BeyondLastRecord { .. }) => {
                SqlState::INVALID_PARAMETER_VALUE
            }
            PageStreamError::Lsn(ReadLsnError::BelowGcCutoff { .. }) => SqlState::SNAPSHOT_TOO_OLD,
            PageStreamError::NoRelation { .. } => SqlState::UNDEFINED_TABLE,
            PageStreamError::Storage(TimelineError::BelowGcCutoff { .. }) => {
                SqlState::SNAPSHOT_TOO_OLD
            }
            PageStreamError::Storage(TimelineError::Layer(_) | TimelineError::Io { .. }) => {
                SqlState::IO_ERROR
            }
            PageStreamError::Storage(_) | PageStreamError::Internal(_) => SqlState::INTERNAL_ERROR,
        }
    }

    /// The error response for request `reqid`, logged: at debug level when
    /// it is the request's fault, as a warning when it is the server's.
    fn response(&self, reqid: u64) -> PagestreamResponse {
        let code = self.sqlstate();
        match self {
            PageStreamError::Storage(_) | PageStreamError::Internal(_) => {
                warn!(reqid, sqlstate = %code, "pagestream read failed: {self}")
            }
            _ => debug!(reqid, sqlstate = %code, "pagestream request failed: {self}"),
        }
        PagestreamResponse::error(reqid, self)
    }
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
        Err(e) => e.response(reqid),
    }
}

/// Applies the timeline's read-LSN policy (waiting for WAL if needed), then
/// reads on a blocking thread.
async fn read_at_lsn(
    tl: Arc<Timeline>,
    wait_timeout: Duration,
    req: PagestreamRequest,
) -> Result<PagestreamResponseBody, PageStreamError> {
    req.validate()?;
    let lsn = tl
        .wait_read_lsn(req.request_lsn, req.not_modified_since, wait_timeout)
        .await?;
    let span = Span::current();
    tokio::task::spawn_blocking(move || {
        span.in_scope(
            || match read_body(&DatadirReader::new(&tl, lsn), req.body) {
                Ok(body) => Ok(body),
                Err(ReadFail::Error(e)) => Err(e),
                Err(ReadFail::WouldBlock) => Err(PageStreamError::Internal(
                    "a blocking read would block".into(),
                )),
            },
        )
    })
    .await
    .map_err(|e| PageStreamError::Internal(e.to_string()))?
}

/// The answer to `req` if it can be given without waiting for WAL, reading
/// a layer file or running WAL redo; `None` otherwise.
fn answer_now(tl: &Timeline, req: &PagestreamRequest) -> Option<PagestreamResponse> {
    let reqid = req.reqid;
    if let Err(e) = req.validate() {
        return Some(PageStreamError::from(e).response(reqid));
    }
    if tl.read_needs_wait(req.not_modified_since) {
        return None;
    }
    let body = tl
        .read_lsn(req.request_lsn, req.not_modified_since)
        .map_err(|e| ReadFail::Error(e.into()))
        .and_then(|lsn| read_body(&DatadirReader::cached_only(tl, lsn), req.body.clone()));
    match body {
        Ok(body) => Some(PagestreamResponse { reqid, body }),
        Err(ReadFail::WouldBlock) => None,
        Err(ReadFail::Error(e)) => Some(e.response(reqid)),
    }
}

/// Why a read gave no answer.
enum ReadFail {
    /// A cached-only read needs I/O or redo.
    WouldBlock,
    Error(PageStreamError),
}

impl From<TimelineError> for ReadFail {
    fn from(e: TimelineError) -> Self {
        match e {
            TimelineError::WouldBlock => ReadFail::WouldBlock,
            e => ReadFail::Error(PageStreamError::Storage(e)),
        }
    }
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
            None => Err(ReadFail::Error(PageStreamError::NoRelation { rel, lsn })),
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
