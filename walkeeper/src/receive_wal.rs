//! `START_WAL_PUSH`: a proposer's connection.
//!
//! After CopyBothResponse, each CopyData from the proposer holds one
//! [`ProposerMessage`]; each reply goes back in one CopyData. The first
//! message must be the greeting, and it must name the timeline of the
//! connection's options. Messages already buffered are handled together
//! with one fsync, before any of their replies goes out; the acceptor runs
//! in `block_in_place` (it fsyncs).
//!
//! Errors reach the proposer as an ErrorResponse and end the stream: bytes
//! that are not a message (08P01), a greeting for another timeline or
//! protocol version (22023), a request the acceptor refuses such as an
//! AppendRequest before the election (55000), storage failures (58030).
//! Other connections and timelines carry on.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{info, warn};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::postgres_backend::{BackendWriter, HandlerError, PostgresBackend};
use zenith_utils::pq_proto::{BeMessage, CopyResponse, FeMessage, SqlState};

use crate::acceptor::AcceptorError;
use crate::proto::ProposerMessage;
use crate::timeline::{Timeline, Timelines};

fn acceptor_error(e: AcceptorError) -> HandlerError {
    let code = match &e {
        AcceptorError::ProtocolVersion { .. }
        | AcceptorError::PgVersion { .. }
        | AcceptorError::WrongTimeline { .. } => SqlState::INVALID_PARAMETER_VALUE,
        AcceptorError::Refused(_) => SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        AcceptorError::Store(_) => SqlState::IO_ERROR,
    };
    HandlerError::query(code, e.to_string())
}

/// Handle `batch` (one fsync for all of it) and send the replies; an error
/// the acceptor refused with ends the stream.
async fn handle(
    tl: &Timeline,
    writer: &mut BackendWriter,
    batch: &[ProposerMessage],
) -> Result<(), HandlerError> {
    // The write and fsync block: block_in_place hands this worker's other
    // tasks to another thread first, and saves the round trip through the
    // blocking pool that spawn_blocking costs every commit.
    let (replies, err) = tokio::task::block_in_place(|| tl.process_batch(batch));
    for r in &replies {
        writer.queue(&BeMessage::CopyData(&r.to_bytes()))?;
    }
    writer.flush().await?;
    match err {
        Some(e) => {
            warn!("proposer request refused: {e}");
            Err(acceptor_error(e))
        }
        None => Ok(()),
    }
}

pub async fn run(
    pgb: &mut PostgresBackend,
    timelines: &Arc<Timelines>,
    tenant_id: TenantId,
    timeline_id: TimelineId,
    peer: SocketAddr,
) -> Result<(), HandlerError> {
    pgb.writer
        .send(&BeMessage::CopyBothResponse(CopyResponse::BINARY))
        .await?;
    let (reader, writer) = pgb.split();

    // The greeting, which creates the timeline on first contact.
    let first = match reader.read_message().await? {
        Some(FeMessage::CopyData(data)) => data,
        Some(FeMessage::CopyDone) | Some(FeMessage::Terminate) | None => {
            return Err(HandlerError::ClientGone)
        }
        Some(other) => {
            return Err(HandlerError::fatal(
                SqlState::PROTOCOL_VIOLATION,
                format!("expected CopyData in START_WAL_PUSH, got {other:?}"),
            ))
        }
    };
    let greeting = match ProposerMessage::parse(&first) {
        Ok(ProposerMessage::Greeting(g)) => g,
        Ok(other) => {
            return Err(HandlerError::query(
                SqlState::PROTOCOL_VIOLATION,
                format!(
                    "the first message of START_WAL_PUSH must be a greeting, not {}",
                    other.name()
                ),
            ))
        }
        Err(e) => {
            return Err(HandlerError::query(
                SqlState::PROTOCOL_VIOLATION,
                format!("bad greeting: {e}"),
            ))
        }
    };
    if greeting.tenant_id != tenant_id || greeting.timeline_id != timeline_id {
        return Err(acceptor_error(AcceptorError::WrongTimeline {
            tenant_id: greeting.tenant_id,
            timeline_id: greeting.timeline_id,
            expected: format!("tenant {tenant_id} timeline {timeline_id}"),
        }));
    }
    // Refuse a bad greeting before anything is created on disk.
    if greeting.protocol_version != crate::proto::PROTOCOL_VERSION {
        return Err(acceptor_error(AcceptorError::ProtocolVersion {
            got: greeting.protocol_version,
        }));
    }
    let tl = {
        let timelines = Arc::clone(timelines);
        tokio::task::spawn_blocking(move || timelines.get_or_create(tenant_id, timeline_id))
            .await
            .map_err(|e| {
                HandlerError::query(
                    SqlState::INTERNAL_ERROR,
                    format!("timeline task failed: {e}"),
                )
            })?
            .map_err(|e| HandlerError::query(SqlState::IO_ERROR, e.to_string()))?
    };
    let _conn = tl.proposer_connected(peer.to_string());
    handle(&tl, writer, &[ProposerMessage::Greeting(greeting)]).await?;
    info!(%peer, "proposer connected");

    // Messages that are already buffered are handled together, with one
    // fsync for all of them (the replies go out after it).
    let mut pending: Option<FeMessage> = None;
    loop {
        // A proposer deposed by a newer one learns it from the term in its
        // next reply.
        let first = match pending.take() {
            Some(m) => Some(m),
            None => reader.read_message().await?,
        };
        let msg = match classify(first)? {
            Ok(m) => m,
            Err(StreamEnd::CopyDone) => {
                writer.send(&BeMessage::CopyDone).await?;
                return Ok(());
            }
            Err(StreamEnd::Gone) => {
                info!("proposer disconnected");
                return Err(HandlerError::ClientGone);
            }
        };
        let mut batch = vec![msg];
        let mut batch_bytes = 0;
        while batch.len() < MAX_BATCH && batch_bytes < MAX_BATCH_BYTES {
            let next = tokio::select! {
                biased;
                m = reader.read_message() => m?,
                _ = std::future::ready(()) => break,
            };
            match next {
                Some(FeMessage::CopyData(d)) => {
                    batch_bytes += d.len();
                    batch.push(parse(&d)?);
                }
                other => {
                    pending = other;
                    break;
                }
            }
        }
        handle(&tl, writer, &batch).await?;
    }
}

enum StreamEnd {
    CopyDone,
    Gone,
}

/// A proposer message, or how the stream ended.
fn classify(m: Option<FeMessage>) -> Result<Result<ProposerMessage, StreamEnd>, HandlerError> {
    match m {
        Some(FeMessage::CopyData(d)) => Ok(Ok(parse(&d)?)),
        Some(FeMessage::CopyDone) => Ok(Err(StreamEnd::CopyDone)),
        Some(FeMessage::Terminate) | None => Ok(Err(StreamEnd::Gone)),
        Some(other) => Err(HandlerError::fatal(
            SqlState::PROTOCOL_VIOLATION,
            format!("expected CopyData in START_WAL_PUSH, got {other:?}"),
        )),
    }
}

/// Most messages handled with one fsync.
const MAX_BATCH: usize = 64;
const MAX_BATCH_BYTES: usize = 4 << 20;

fn parse(data: &[u8]) -> Result<ProposerMessage, HandlerError> {
    let msg = ProposerMessage::parse(data).map_err(|e| {
        HandlerError::query(
            SqlState::PROTOCOL_VIOLATION,
            format!("bad proposer message: {e}"),
        )
    })?;
    if let ProposerMessage::Greeting(_) = msg {
        return Err(HandlerError::query(
            SqlState::PROTOCOL_VIOLATION,
            "a second greeting on one connection",
        ));
    }
    Ok(msg)
}
