//! TLS: the answer to SSLRequest and the handshake that wraps the socket.

use std::io;
use std::sync::Arc;

use super::connection::PostgresBackend;
use super::error::HandlerError;
use super::socket::{ReadHalf, WriteHalf};
use crate::pq_proto::{SqlState, SSL_ACCEPTED};

impl PostgresBackend {
    /// Answers SSLRequest with `S` and runs the TLS handshake.
    pub(super) async fn start_tls(
        &mut self,
        tls: Arc<rustls::ServerConfig>,
    ) -> Result<(), HandlerError> {
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
}
