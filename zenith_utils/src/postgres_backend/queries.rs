//! The query phase: simple queries dispatched to the handler, the idle
//! timeout.

use tracing::{debug, info};

use super::conf::BackendConf;
use super::connection::PostgresBackend;
use super::error::HandlerError;
use super::handler::Handler;
use crate::pq_proto::{BeMessage, FeMessage, SqlState};

impl PostgresBackend {
    pub(super) async fn query_loop<H: Handler>(
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
}

/// At most `max` characters of `s`, for echoing client input.
pub fn truncated(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}
