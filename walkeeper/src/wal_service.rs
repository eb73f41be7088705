//! The walkeeper's PostgreSQL-protocol service (on the shared
//! `postgres_backend`): which timeline a connection is for, and its
//! commands.
//!
//! The timeline is named in the startup packet's `options`, the way
//! PostgreSQL passes settings: `options='-c tenant_id=<hex> -c
//! timeline_id=<hex>'` (also `-ckey=value` and `--key=value`).
//!
//! Commands:
//! - `IDENTIFY_SYSTEM`: system id, timeline 1, the commit LSN;
//! - `START_WAL_PUSH`: the consensus protocol with a proposer
//!   ([`crate::receive_wal`]);
//! - `START_REPLICATION [PHYSICAL] X/Y`: committed WAL from `X/Y`
//!   ([`crate::send_wal`]); with `application_name=walproposer_recovery`
//!   (a newly elected proposer reading the donor's WAL) up to the flush LSN;
//! - `SET ...` is accepted and ignored (clients send it).
//!
//! With `--auth-type ZenithJWT` the password is a token: an invalid one is
//! FATAL 28P01 at login, and every command but `SET` needs a
//! `walkeeperdata` token (for all tenants or for the connection's tenant),
//! else ERROR 42501.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{field, Span};
use zenith_utils::auth::JwtAuth;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;
use zenith_utils::postgres_backend::{ConnectionAuth, Handler, HandlerError, PostgresBackend};
use zenith_utils::pq_proto::{write_text_result, BeMessage, SqlState, StartupParams};

use crate::timeline::{Timeline, Timelines};

/// A failed command with an invalid parameter.
pub(crate) fn invalid(message: impl Into<String>) -> HandlerError {
    HandlerError::query(SqlState::INVALID_PARAMETER_VALUE, message)
}

/// `key=value` settings from a startup `options` string.
pub fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut words = options.split_whitespace();
    while let Some(w) = words.next() {
        let setting = if w == "-c" {
            words.next()
        } else if let Some(s) = w.strip_prefix("-c") {
            Some(s)
        } else {
            w.strip_prefix("--")
        };
        if let Some((k, v)) = setting.and_then(|s| s.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_string()));
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Empty,
    Set,
    IdentifySystem,
    StartWalPush,
    StartReplication { start: Lsn },
}

fn parse_command(query: &str) -> Result<Command, HandlerError> {
    let q = query.trim().trim_end_matches(';').trim_end();
    let words: Vec<&str> = q.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    let usage = |u: &str| HandlerError::query(SqlState::SYNTAX_ERROR, format!("usage: {u}"));
    match upper[..] {
        [] => Ok(Command::Empty),
        ["SET", ..] => Ok(Command::Set),
        ["IDENTIFY_SYSTEM"] => Ok(Command::IdentifySystem),
        ["START_WAL_PUSH"] => Ok(Command::StartWalPush),
        ["START_REPLICATION", ref rest @ ..] => {
            // START_REPLICATION [SLOT name] [PHYSICAL] X/Y [TIMELINE n]: there
            // are no slots here, and the one timeline is 1.
            let mut rest = rest;
            if let ["SLOT", _, r @ ..] = rest {
                rest = r;
            }
            if let ["PHYSICAL", r @ ..] = rest {
                rest = r;
            }
            let lsn_at = words.len() - rest.len();
            let lsn = match rest {
                [_] | [_, "TIMELINE", _] => words[lsn_at],
                _ => return Err(usage("START_REPLICATION [SLOT name] [PHYSICAL] X/Y [TIMELINE 1]")),
            };
            let start = lsn
                .parse::<Lsn>()
                .map_err(|e| invalid(format!("START_REPLICATION: invalid LSN {lsn:?}: {e}")))?;
            Ok(Command::StartReplication { start })
        }
        _ => Err(HandlerError::query(
            SqlState::SYNTAX_ERROR,
            format!(
                "unsupported command {:?} (this walkeeper serves IDENTIFY_SYSTEM, START_WAL_PUSH, START_REPLICATION)",
                zenith_utils::postgres_backend::truncated(q, 60)
            ),
        )),
    }
}

/// One connection.
pub struct WalServiceHandler {
    pub timelines: Arc<Timelines>,
    pub peer: SocketAddr,
    ids: Option<(TenantId, TimelineId)>,
    /// A proposer reading a donor's WAL: replication goes up to the flush
    /// LSN, not only the commit LSN.
    recovery: bool,
    /// The connection's token, when auth is on.
    auth: ConnectionAuth,
}

/// The application_name of a proposer's recovery connection.
pub const RECOVERY_APPLICATION_NAME: &str = "walproposer_recovery";

impl WalServiceHandler {
    pub fn new(
        timelines: Arc<Timelines>,
        peer: SocketAddr,
        auth: Option<Arc<JwtAuth>>,
    ) -> WalServiceHandler {
        WalServiceHandler {
            timelines,
            peer,
            ids: None,
            recovery: false,
            auth: ConnectionAuth::new(auth),
        }
    }

    /// With auth on, the token must be `walkeeperdata` (for every tenant
    /// or for this connection's one).
    fn authorize(&self) -> Result<(), HandlerError> {
        let (tenant_id, _) = self.ids()?;
        self.auth.allow(|claims| claims.check_walkeeper(tenant_id))
    }

    fn ids(&self) -> Result<(TenantId, TimelineId), HandlerError> {
        self.ids.ok_or_else(|| {
            invalid("no timeline: connect with options='-c tenant_id=<hex> -c timeline_id=<hex>'")
        })
    }

    /// The named timeline, which must exist.
    fn existing_timeline(&self) -> Result<Arc<Timeline>, HandlerError> {
        let (tenant_id, timeline_id) = self.ids()?;
        self.timelines.get(tenant_id, timeline_id).ok_or_else(|| {
            HandlerError::query(
                SqlState::UNDEFINED_OBJECT,
                format!("timeline {timeline_id} of tenant {tenant_id} is not on this walkeeper"),
            )
        })
    }
}

impl Handler for WalServiceHandler {
    fn startup(&mut self, params: &StartupParams) -> Result<(), HandlerError> {
        self.recovery = params.get("application_name") == Some(RECOVERY_APPLICATION_NAME);
        let Some(options) = params.get("options") else {
            return Ok(());
        };
        let (mut tenant, mut timeline) = (None, None);
        for (k, v) in parse_options(options) {
            match k.as_str() {
                "tenant_id" | "zenith.tenant_id" => {
                    tenant = Some(v.parse::<TenantId>().map_err(|e| {
                        HandlerError::fatal(
                            SqlState::INVALID_PARAMETER_VALUE,
                            format!("invalid tenant_id {v:?}: {e}"),
                        )
                    })?)
                }
                "timeline_id" | "zenith.timeline_id" => {
                    timeline = Some(v.parse::<TimelineId>().map_err(|e| {
                        HandlerError::fatal(
                            SqlState::INVALID_PARAMETER_VALUE,
                            format!("invalid timeline_id {v:?}: {e}"),
                        )
                    })?)
                }
                _ => {}
            }
        }
        match (tenant, timeline) {
            (Some(t), Some(l)) => {
                let span = Span::current();
                span.record("tenant_id", field::display(t));
                span.record("timeline_id", field::display(l));
                self.ids = Some((t, l));
                Ok(())
            }
            (None, None) => Ok(()),
            _ => Err(HandlerError::fatal(
                SqlState::INVALID_PARAMETER_VALUE,
                "options name only one of tenant_id and timeline_id; both are needed",
            )),
        }
    }

    fn token_auth(&self) -> Option<&ConnectionAuth> {
        Some(&self.auth)
    }

    async fn process_query(
        &mut self,
        pgb: &mut PostgresBackend,
        query: &str,
    ) -> Result<(), HandlerError> {
        let command = parse_command(query)?;
        if !matches!(command, Command::Empty | Command::Set) {
            self.authorize()?;
        }
        match command {
            Command::Empty => pgb.write_message(&BeMessage::EmptyQueryResponse),
            Command::Set => pgb.write_message(&BeMessage::CommandComplete("SET")),
            Command::IdentifySystem => {
                let tl = self.existing_timeline()?;
                let commit = *tl.commit_lsn().borrow();
                let sysid = tl.system_id().to_string();
                let pos = commit.to_string();
                Ok(write_text_result(
                    pgb.writer.buf_mut(),
                    &["systemid", "timeline", "xlogpos", "dbname"],
                    &[&[Some(&sysid), Some("1"), Some(&pos), None]],
                )?)
            }
            Command::StartWalPush => {
                let (tenant_id, timeline_id) = self.ids()?;
                crate::receive_wal::run(pgb, &self.timelines, tenant_id, timeline_id, self.peer)
                    .await
            }
            Command::StartReplication { start } => {
                let tl = self.existing_timeline()?;
                crate::send_wal::run(pgb, tl, start, self.peer, self.recovery).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_commands() {
        let o = parse_options("-c tenant_id=ab -ctimeline_id=cd --x-y=1 junk -c");
        assert_eq!(
            o,
            vec![
                ("tenant_id".into(), "ab".into()),
                ("timeline_id".into(), "cd".into()),
                ("x_y".into(), "1".into())
            ]
        );
        assert_eq!(parse_command("").unwrap(), Command::Empty);
        assert_eq!(
            parse_command("identify_system;").unwrap(),
            Command::IdentifySystem
        );
        assert_eq!(
            parse_command("START_WAL_PUSH").unwrap(),
            Command::StartWalPush
        );
        for q in [
            "START_REPLICATION 0/16B3748",
            "START_REPLICATION PHYSICAL 0/16B3748",
            "START_REPLICATION SLOT s PHYSICAL 0/16B3748 TIMELINE 1",
            "start_replication 0/16b3748 timeline 1",
        ] {
            assert_eq!(
                parse_command(q).unwrap(),
                Command::StartReplication {
                    start: Lsn(0x16B3748)
                },
                "{q}"
            );
        }
        assert!(parse_command("START_REPLICATION PHYSICAL nope").is_err());
        assert!(parse_command("START_REPLICATION").is_err());
        assert!(parse_command("DROP TABLE x").is_err());
    }
}
