//! `basebackup`: the tar of docs/architecture.md §8, produced on a blocking
//! thread and streamed through a bounded channel.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tokio::sync::mpsc;
use tracing::{info, warn, Span};
use zenith_utils::lsn::Lsn;
use zenith_utils::postgres_backend::{HandlerError, PostgresBackend};
use zenith_utils::pq_proto::{BeMessage, CopyResponse, SqlState};

use super::{PageServiceHandler, BASEBACKUP_CHANNEL_DEPTH, BASEBACKUP_CHUNK_SIZE};
use crate::basebackup::send_basebackup;
use crate::tenant::timeline::{ReadLsnError, Timeline};

static BASEBACKUPS_IN_PROGRESS: std::sync::LazyLock<zenith_metrics::IntGauge> =
    std::sync::LazyLock::new(|| {
        zenith_metrics::register_int_gauge!(
            "pageserver_basebackups_in_progress",
            "Basebackups being produced and sent"
        )
        .expect("registering pageserver_basebackups_in_progress")
    });

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

impl PageServiceHandler {
    pub(super) async fn basebackup(
        &mut self,
        pgb: &mut PostgresBackend,
        tl: Arc<Timeline>,
        lsn: Option<Lsn>,
        full: bool,
    ) -> Result<(), HandlerError> {
        // The timeline's read-LSN policy, for a read of everything as of
        // `lsn` (waiting for its WAL if needed).
        let lsn = lsn.unwrap_or_else(|| tl.last_record_lsn());
        let lsn = tl
            .wait_read_lsn(lsn, lsn, self.conf.wait_lsn_timeout)
            .await
            .map_err(|e| {
                let code = match e {
                    ReadLsnError::WaitTimeout { .. } => SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    _ => SqlState::INVALID_PARAMETER_VALUE,
                };
                HandlerError::query(code, format!("basebackup: {e}"))
            })?;
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

/// Registers the basebackup metrics.
pub(super) fn register_metrics() {
    std::sync::LazyLock::force(&BASEBACKUPS_IN_PROGRESS);
}

#[cfg(test)]
mod tests {
    use super::*;

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
