//! `START_REPLICATION`: committed WAL to a replication client (the
//! pageserver, `pg_receivewal`, a recovering proposer).
//!
//! Only WAL below the commit LSN is sent: that WAL is on a majority and no
//! future proposer truncates it. The stream is PostgreSQL's physical
//! replication: XLogData (`w`) with the WAL, keepalives (`k`) every
//! [`KEEPALIVE_INTERVAL`] while idle; the client's status updates (`r`) are
//! its feedback (written, durable, applied LSNs): relayed to the proposer,
//! and WAL below its durable LSN may be removed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};
use zenith_utils::lsn::Lsn;
use zenith_utils::postgres_backend::{BackendReader, HandlerError, PostgresBackend};
use zenith_utils::pq_proto::replication::{PrimaryKeepalive, ReplicationMessage, XLogData};
use zenith_utils::pq_proto::{BeMessage, CopyResponse, FeMessage, SqlState};

use crate::timeline::Timeline;

/// Largest XLogData payload.
const MAX_CHUNK: usize = 128 * 1024;
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

fn pg_now() -> i64 {
    postgres_ffi::xlog_utils::to_pg_timestamp(std::time::SystemTime::now())
}

enum Incoming {
    More,
    Done,
}

fn handle(tl: &Timeline, msg: Option<FeMessage>) -> Result<Incoming, HandlerError> {
    match msg {
        Some(FeMessage::CopyData(data)) => {
            match ReplicationMessage::parse(&data)? {
                ReplicationMessage::StandbyStatusUpdate(s) => {
                    debug!(write = %s.write_lsn, flush = %s.flush_lsn, apply = %s.apply_lsn, "feedback");
                    tl.pageserver_feedback(s.write_lsn, s.flush_lsn, s.apply_lsn);
                }
                ReplicationMessage::HotStandbyFeedback(_) => {}
                other => {
                    return Err(HandlerError::fatal(
                        SqlState::PROTOCOL_VIOLATION,
                        format!(
                            "unexpected replication message '{}' from the client",
                            other.tag() as char
                        ),
                    ))
                }
            }
            Ok(Incoming::More)
        }
        Some(FeMessage::CopyDone) => Ok(Incoming::Done),
        Some(FeMessage::Terminate) | None => Err(HandlerError::ClientGone),
        Some(other) => Err(HandlerError::fatal(
            SqlState::PROTOCOL_VIOLATION,
            format!("expected CopyData during replication, got {other:?}"),
        )),
    }
}

/// A message from the client if one is already buffered or readable now.
async fn poll_client(
    reader: &mut BackendReader,
) -> Result<Option<Option<FeMessage>>, HandlerError> {
    tokio::select! {
        biased;
        m = reader.read_message() => Ok(Some(m?)),
        _ = std::future::ready(()) => Ok(None),
    }
}

/// Stream WAL from `start`: committed WAL, or with `recovery` everything
/// this walkeeper has flushed (for a newly elected proposer reading the
/// donor's WAL).
pub async fn run(
    pgb: &mut PostgresBackend,
    tl: Arc<Timeline>,
    start: Lsn,
    peer: SocketAddr,
    recovery: bool,
) -> Result<(), HandlerError> {
    let first = tl.start_lsn();
    if start < first {
        return Err(HandlerError::query(
            SqlState::UNDEFINED_FILE,
            format!(
                "requested WAL at {start} has been removed; this walkeeper's WAL starts at {first}"
            ),
        ));
    }
    let mut commit_rx = tl.commit_lsn();
    info!(%peer, %start, commit = %*commit_rx.borrow(), recovery, "replication started");
    let _conn = tl.replication_connected(peer.to_string());
    pgb.writer
        .send(&BeMessage::CopyBothResponse(CopyResponse::BINARY))
        .await?;
    let (reader, writer) = pgb.split();
    let mut pos = start;
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        let mut commit = *commit_rx.borrow_and_update();
        if recovery {
            commit = commit.max(tl.flush_and_epoch().0);
        }
        if pos < commit {
            let (t, b) = (Arc::clone(&tl), std::mem::take(&mut buf));
            let (n, b) = tokio::task::spawn_blocking(move || {
                let mut b = b;
                let n = t.read_wal(pos, commit, &mut b);
                (n, b)
            })
            .await
            .map_err(|e| {
                HandlerError::query(
                    SqlState::INTERNAL_ERROR,
                    format!("WAL read task failed: {e}"),
                )
            })?;
            buf = b;
            let n = n.map_err(|e| {
                HandlerError::query(SqlState::IO_ERROR, format!("reading WAL at {pos}: {e}"))
            })?;
            let msg = ReplicationMessage::XLogData(XLogData {
                wal_start: pos,
                wal_end: commit,
                send_time: pg_now(),
                data: bytes::Bytes::copy_from_slice(&buf[..n]),
            });
            writer.send(&BeMessage::CopyData(&msg.to_bytes())).await?;
            pos = Lsn(pos.0 + n as u64);
            if let Some(m) = poll_client(reader).await? {
                if let Incoming::Done = handle(&tl, m)? {
                    break;
                }
            }
            continue;
        }
        tokio::select! {
            m = reader.read_message() => {
                if let Incoming::Done = handle(&tl, m?)? {
                    break;
                }
            }
            changed = commit_rx.changed() => {
                if changed.is_err() {
                    return Err(HandlerError::Shutdown);
                }
            }
            _ = tokio::time::sleep(if recovery { Duration::from_millis(100) } else { KEEPALIVE_INTERVAL }) => {
                let k = ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                    wal_end: commit,
                    send_time: pg_now(),
                    reply_requested: false,
                });
                writer.send(&BeMessage::CopyData(&k.to_bytes())).await?;
            }
        }
    }
    writer.send(&BeMessage::CopyDone).await?;
    pgb.write_message(&BeMessage::CommandComplete("START_REPLICATION"))
}
