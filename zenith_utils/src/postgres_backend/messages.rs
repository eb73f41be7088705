//! Reading and writing protocol messages on a connection: the buffered
//! halves [`BackendReader`] and [`BackendWriter`].

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::error::HandlerError;
use super::socket::{ReadHalf, WriteHalf};
use crate::pq_proto::{
    BeMessage, ErrorFields, FeDecoder, FeMessage, FeStartupPacket, ProtocolError, SqlState,
    TransactionStatus,
};

/// The receiving half of a connection.
pub struct BackendReader {
    pub(super) rd: ReadHalf,
    pub(super) buf: BytesMut,
    pub(super) decoder: FeDecoder,
    pub(super) shutdown: watch::Receiver<bool>,
}

impl BackendReader {
    pub(super) async fn next_startup(&mut self) -> Result<Option<FeStartupPacket>, HandlerError> {
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
    pub(super) wr: WriteHalf,
    pub(super) buf: BytesMut,
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

    pub(super) async fn ready(&mut self) -> Result<(), HandlerError> {
        self.send(&BeMessage::ReadyForQuery(TransactionStatus::Idle))
            .await
    }

    pub(super) async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.flush().await?;
        self.wr.write_all(bytes).await?;
        self.wr.flush().await
    }

    /// FATAL, flushed; errors are ignored (the client may be gone).
    pub(super) async fn fatal(&mut self, code: SqlState, message: &str) {
        let message = message.replace('\0', "\u{FFFD}");
        let msg = BeMessage::ErrorResponse(ErrorFields::fatal(code, &message));
        if self.queue(&msg).is_ok() {
            let _ = self.flush().await;
        }
    }
}
