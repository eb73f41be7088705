//! The startup phase: encryption negotiation, the StartupMessage, the
//! connection limit and authentication, up to the first ReadyForQuery.

use std::sync::Arc;

use tracing::debug;

use super::auth_method::{AuthMethod, AuthOutcome};
use super::conf::BackendConf;
use super::connection::PostgresBackend;
use super::error::HandlerError;
use super::handler::Handler;
use crate::pq_proto::{
    parse_password, BeMessage, CancelKeyData, FeMessage, FeStartupPacket, SqlState, GSSENC_REFUSED,
    SSL_REFUSED,
};

/// How the startup phase ended.
pub(super) enum Started {
    /// Quietly (EOF, a CancelRequest).
    Ended,
    Queries,
    TakeOver,
}

impl PostgresBackend {
    /// The startup phase.
    pub(super) async fn startup<H: Handler>(
        &mut self,
        handler: &mut H,
        conf: &BackendConf,
        over_limit: bool,
    ) -> Result<Started, HandlerError> {
        let (mut ssl_done, mut gss_done) = (false, false);
        let params = loop {
            let packet = match self.reader.next_startup().await? {
                Some(p) => p,
                None => return Ok(Started::Ended),
            };
            match packet {
                FeStartupPacket::SslRequest if !ssl_done => {
                    ssl_done = true;
                    match &conf.tls {
                        Some(tls) => self.start_tls(Arc::clone(tls)).await?,
                        None => self.writer.write_raw(&[SSL_REFUSED]).await?,
                    }
                }
                FeStartupPacket::GssEncRequest if !gss_done => {
                    gss_done = true;
                    self.writer.write_raw(&[GSSENC_REFUSED]).await?;
                }
                FeStartupPacket::SslRequest | FeStartupPacket::GssEncRequest => {
                    return Err(HandlerError::fatal(
                        SqlState::PROTOCOL_VIOLATION,
                        "repeated encryption negotiation request",
                    ))
                }
                FeStartupPacket::CancelRequest(key) => {
                    handler.cancel(key);
                    return Ok(Started::Ended);
                }
                FeStartupPacket::StartupMessage {
                    minor_version,
                    params,
                    ..
                } => {
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
                    break params;
                }
            }
        };
        debug!(
            user = params.user().unwrap_or(""),
            application_name = params.get("application_name").unwrap_or(""),
            tls = self.tls,
            "startup"
        );
        if over_limit {
            return Err(HandlerError::fatal(
                SqlState::TOO_MANY_CONNECTIONS,
                format!(
                    "sorry, too many clients already (the {} serves at most {})",
                    conf.name, conf.max_connections
                ),
            ));
        }
        handler.startup(&params)?;
        if handler.auth_method() == AuthMethod::Custom {
            self.params = params;
            return match handler.authenticate(self).await? {
                AuthOutcome::TakeOver => Ok(Started::TakeOver),
                AuthOutcome::Authenticated => {
                    self.ready_after_auth(conf).await?;
                    Ok(Started::Queries)
                }
            };
        }
        if handler.auth_method() == AuthMethod::CleartextPassword {
            self.writer
                .send(&BeMessage::AuthenticationCleartextPassword)
                .await?;
            let password = match self.reader.read_message().await? {
                Some(FeMessage::AuthResponse(body)) => body,
                Some(_) => {
                    return Err(HandlerError::fatal(
                        SqlState::PROTOCOL_VIOLATION,
                        "expected a password message",
                    ))
                }
                None => return Ok(Started::Ended),
            };
            let password = parse_password(&password)?;
            handler.check_password(&params, password).await?;
        }
        self.params = params;
        self.ready_after_auth(conf).await?;
        Ok(Started::Queries)
    }

    /// AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery.
    pub(super) async fn ready_after_auth(
        &mut self,
        conf: &BackendConf,
    ) -> Result<(), HandlerError> {
        self.writer.queue(&BeMessage::AuthenticationOk)?;
        for (name, value) in [
            ("server_version", conf.server_version),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
        ] {
            self.writer
                .queue(&BeMessage::ParameterStatus { name, value })?;
        }
        let key: u64 = rand::random();
        self.writer
            .queue(&BeMessage::BackendKeyData(CancelKeyData {
                backend_pid: (key >> 32) as i32 & i32::MAX,
                cancel_key: key as i32,
            }))?;
        self.writer.ready().await
    }
}
