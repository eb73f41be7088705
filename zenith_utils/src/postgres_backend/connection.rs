//! One client connection as handlers see it: [`PostgresBackend`].

use std::net::SocketAddr;

use bytes::BytesMut;

use super::error::HandlerError;
use super::messages::{BackendReader, BackendWriter};
use super::socket::{ClientStream, ReadHalf, WriteHalf};
use crate::pq_proto::{BeMessage, SqlState, StartupParams};

/// One client connection, as handlers see it.
pub struct PostgresBackend {
    pub reader: BackendReader,
    pub writer: BackendWriter,
    pub(super) peer: SocketAddr,
    pub(super) params: StartupParams,
    pub(super) tls: bool,
    pub(super) sni: Option<String>,
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

    /// Sends the FATAL error that ends the session, if it has one.
    pub(super) async fn report_fatal(&mut self, e: &HandlerError) {
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
