//! The page service (docs/architecture.md §5): the pageserver's PostgreSQL-protocol
//! endpoint, where computes fetch pages (`pagestream`) and basebackups.
//!
//! Connections are accepted and driven by [`zenith_utils::postgres_backend`]
//! (startup, SSL/GSS refusal, limits and timeouts, shutdown); this module is
//! its [`Handler`]: the simple queries of the page service.
//!
//! | query | answer |
//! |---|---|
//! | `pagestream <tenant> <timeline>` | CopyBoth; one [`PagestreamRequest`](crate::pagestream::PagestreamRequest) per CopyData from the client, one response per CopyData back, in request order (byte format: `docs/pagestream.md`) |
//! | `basebackup <tenant> <timeline> [<lsn>] [--full]` | CopyOut of the tar of docs/architecture.md §8, then `BASEBACKUP` |
//! | `identify_system` | one row: systemid, timeline, xlogpos, dbname (the pageserver holds many systems, so it names none: `0`, `1`, `0/0`, NULL) |
//! | `set ...` | `SET` (ignored) |
//! | anything else | ERROR 42601 |
//!
//! With `auth_type = "ZenithJWT"` the client's password is a token
//! ([`zenith_utils::auth`]): an invalid one is FATAL 28P01 at login; a
//! `pagestream` or `basebackup` of a tenant the token does not cover
//! (a `tenant` token for another tenant, a `walkeeperdata` token) is
//! ERROR 42501.
//!
//! # Invariants
//!
//! - A connection never takes the server down: every error is logged in the
//!   connection's span (peer, tenant_id, timeline_id) and ends at most that
//!   connection. A panic in a request handler becomes an error response.
//! - Errors in a query's parameters (malformed ids or LSNs, unknown tenant or
//!   timeline, an LSN the timeline cannot serve) are an ERROR followed by
//!   ReadyForQuery: the connection stays usable.
//! - In a pagestream, a request that does not parse is answered with an error
//!   response (the request's reqid if its header is complete, else 0) and the
//!   connection is closed; a request that parses but cannot be answered gets
//!   an error response and the stream goes on.
//! - Pagestream requests of one connection are answered concurrently (at most
//!   [`PIPELINE_DEPTH`] in flight, then reading stops: backpressure), but the
//!   responses are sent in request order. Reads that need file I/O or WAL
//!   redo run on blocking threads; reads the in-memory layers and the page
//!   cache can answer are answered in the connection's task.
//! - A basebackup is produced on a blocking thread and streamed through a
//!   bounded channel, so a connection never holds more than a few chunks of
//!   it in memory.
//! - Shutdown: idle connections and pagestreams end at their next message
//!   boundary with FATAL 57P01 (the backend's rule).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{field, info_span, Span};
use zenith_utils::auth::JwtAuth;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;
use zenith_utils::postgres_backend::{
    self, truncated, BackendConf, ConnectionAuth, Handler, HandlerError, PostgresBackend,
};
use zenith_utils::pq_proto::{write_text_result, BeMessage, SqlState};

mod basebackup;
mod pagestream;
mod smgr_metrics;

use crate::config::PageServerConf;
use crate::tenant::timeline::Timeline;
use crate::tenant_mgr::TenantManager;

/// Largest frontend message accepted. Queries and pagestream requests are
/// tiny; the limit keeps a hostile length from making us buffer much.
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;

/// Pagestream requests of one connection being answered at once.
pub const PIPELINE_DEPTH: usize = 64;

/// Buffered response bytes that force a write to the socket.
const FLUSH_THRESHOLD: usize = 256 * 1024;

/// Size of the CopyData messages of a basebackup.
pub const BASEBACKUP_CHUNK_SIZE: usize = 64 * 1024;

/// Basebackup chunks queued between the tar producer and the socket.
const BASEBACKUP_CHANNEL_DEPTH: usize = 4;

/// How long [`serve`] waits for connections to end after shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Registers the page service's metrics (see [`crate::register_metrics`]).
pub fn register_metrics() {
    basebackup::register_metrics();
    smgr_metrics::register();
}

/// The backend settings of the page service.
pub fn backend_conf(conf: &PageServerConf) -> BackendConf {
    BackendConf {
        max_message_size: MAX_MESSAGE_SIZE,
        startup_timeout: conf.pg_startup_timeout,
        idle_timeout: Some(conf.pg_idle_timeout),
        max_connections: conf.pg_max_connections,
        shutdown_grace: SHUTDOWN_GRACE,
        ..BackendConf::new("page service")
    }
}

/// Serves the page service on `listener` until `shutdown` becomes true (or
/// its sender is dropped). Each connection runs in its own task; their errors
/// are logged, never returned.
pub async fn serve(
    listener: TcpListener,
    mgr: Arc<TenantManager>,
    conf: Arc<PageServerConf>,
    auth: Option<Arc<JwtAuth>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let backend = Arc::new(backend_conf(&conf));
    postgres_backend::serve(
        listener,
        backend,
        move |peer| {
            let span = info_span!(
                "page_service",
                %peer,
                tenant_id = field::Empty,
                timeline_id = field::Empty,
            );
            let handler = PageServiceHandler {
                mgr: Arc::clone(&mgr),
                conf: Arc::clone(&conf),
                auth: ConnectionAuth::new(auth.clone()),
            };
            (handler, span)
        },
        shutdown,
    )
    .await?;
    Ok(())
}

/// A parsed simple query.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    Empty,
    Set,
    IdentifySystem,
    Pagestream {
        tenant_id: TenantId,
        timeline_id: TimelineId,
    },
    Basebackup {
        tenant_id: TenantId,
        timeline_id: TimelineId,
        lsn: Option<Lsn>,
        full: bool,
    },
}

/// A failed query with an invalid parameter.
fn invalid(message: impl Into<String>) -> HandlerError {
    HandlerError::query(SqlState::INVALID_PARAMETER_VALUE, message)
}

fn parse_ids(
    cmd: &str,
    tenant: &str,
    timeline: &str,
) -> Result<(TenantId, TimelineId), HandlerError> {
    let tenant_id = tenant.parse().map_err(|e| {
        invalid(format!(
            "{cmd}: invalid tenant id {:?}: {e}",
            truncated(tenant, 40)
        ))
    })?;
    let timeline_id = timeline.parse().map_err(|e| {
        invalid(format!(
            "{cmd}: invalid timeline id {:?}: {e}",
            truncated(timeline, 40)
        ))
    })?;
    Ok((tenant_id, timeline_id))
}

/// Parses a simple query. Keywords are case-insensitive; a trailing `;` is
/// allowed.
fn parse_command(query: &str) -> Result<Command, HandlerError> {
    let q = query.trim().trim_end_matches(';').trim_end();
    let mut words = q.split_whitespace();
    let Some(first) = words.next() else {
        return Ok(Command::Empty);
    };
    let args: Vec<&str> = words.collect();
    let usage = |u: &str| HandlerError::query(SqlState::SYNTAX_ERROR, format!("usage: {u}"));
    match first.to_ascii_lowercase().as_str() {
        "pagestream" => match args[..] {
            [tenant, timeline] => {
                let (tenant_id, timeline_id) = parse_ids("pagestream", tenant, timeline)?;
                Ok(Command::Pagestream {
                    tenant_id,
                    timeline_id,
                })
            }
            _ => Err(usage("pagestream <tenant_id> <timeline_id>")),
        },
        "basebackup" => {
            const USAGE: &str = "basebackup <tenant_id> <timeline_id> [<lsn>] [--full]";
            let [tenant, timeline, rest @ ..] = &args[..] else {
                return Err(usage(USAGE));
            };
            let (tenant_id, timeline_id) = parse_ids("basebackup", tenant, timeline)?;
            let (mut lsn, mut full) = (None, false);
            for arg in rest {
                if arg.eq_ignore_ascii_case("--full") && !full {
                    full = true;
                } else if arg.starts_with('-') || lsn.is_some() {
                    return Err(usage(USAGE));
                } else {
                    lsn = Some(arg.parse::<Lsn>().map_err(|_| {
                        invalid(format!(
                            "basebackup: invalid LSN {:?}: expected X/Y in hex",
                            truncated(arg, 40)
                        ))
                    })?);
                }
            }
            Ok(Command::Basebackup {
                tenant_id,
                timeline_id,
                lsn,
                full,
            })
        }
        "identify_system" if args.is_empty() => Ok(Command::IdentifySystem),
        "set" => Ok(Command::Set),
        _ => Err(HandlerError::query(
            SqlState::SYNTAX_ERROR,
            format!(
                "unsupported command {:?}: the page service runs pagestream, basebackup, identify_system and set",
                truncated(q, 100)
            ),
        )),
    }
}

/// The page service's side of one connection.
struct PageServiceHandler {
    mgr: Arc<TenantManager>,
    conf: Arc<PageServerConf>,
    /// The connection's token, when auth is on.
    auth: ConnectionAuth,
}

impl Handler for PageServiceHandler {
    fn token_auth(&self) -> Option<&ConnectionAuth> {
        Some(&self.auth)
    }

    async fn process_query(
        &mut self,
        pgb: &mut PostgresBackend,
        query: &str,
    ) -> Result<(), HandlerError> {
        match parse_command(query)? {
            Command::Empty => pgb.write_message(&BeMessage::EmptyQueryResponse),
            Command::Set => pgb.write_message(&BeMessage::CommandComplete("SET")),
            Command::IdentifySystem => Ok(write_text_result(
                pgb.writer.buf_mut(),
                &["systemid", "timeline", "xlogpos", "dbname"],
                &[&[Some("0"), Some("1"), Some("0/0"), None]],
            )?),
            Command::Pagestream {
                tenant_id,
                timeline_id,
            } => {
                let tl = self.timeline(tenant_id, timeline_id)?;
                self.pagestream(pgb, tl).await
            }
            Command::Basebackup {
                tenant_id,
                timeline_id,
                lsn,
                full,
            } => {
                let tl = self.timeline(tenant_id, timeline_id)?;
                self.basebackup(pgb, tl, lsn, full).await
            }
        }
    }
}

impl PageServiceHandler {
    fn timeline(
        &self,
        tenant_id: TenantId,
        timeline_id: TimelineId,
    ) -> Result<Arc<Timeline>, HandlerError> {
        self.auth.allow(|claims| claims.check_tenant(tenant_id))?;
        let span = Span::current();
        span.record("tenant_id", field::display(tenant_id));
        span.record("timeline_id", field::display(timeline_id));
        let not_found = |what: String| HandlerError::query(SqlState::INVALID_CATALOG_NAME, what);
        let tenant = self
            .mgr
            .get(tenant_id)
            .ok_or_else(|| not_found(format!("tenant {tenant_id} not found")))?;
        tenant
            .get_timeline(timeline_id)
            .ok_or_else(|| match tenant.broken_reason(timeline_id) {
                Some(reason) => HandlerError::query(
                    SqlState::DATA_CORRUPTED,
                    format!("timeline {timeline_id} of tenant {tenant_id} is broken: {reason}"),
                ),
                None => not_found(format!(
                    "timeline {timeline_id} not found in tenant {tenant_id}"
                )),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0123456789abcdef0123456789abcdef";
    const TL: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn commands_parse() {
        let (t, tl) = (T.parse().unwrap(), TL.parse().unwrap());
        assert_eq!(parse_command("").unwrap(), Command::Empty);
        assert_eq!(parse_command(" ;").unwrap(), Command::Empty);
        assert_eq!(
            parse_command(&format!("pagestream {T} {TL}")).unwrap(),
            Command::Pagestream {
                tenant_id: t,
                timeline_id: tl
            }
        );
        assert_eq!(
            parse_command(&format!("BASEBACKUP {T} {TL};")).unwrap(),
            Command::Basebackup {
                tenant_id: t,
                timeline_id: tl,
                lsn: None,
                full: false
            }
        );
        assert_eq!(
            parse_command(&format!("basebackup {T} {TL} 1/2A --full")).unwrap(),
            Command::Basebackup {
                tenant_id: t,
                timeline_id: tl,
                lsn: Some(Lsn(0x1_0000_002A)),
                full: true
            }
        );
        assert_eq!(
            parse_command(&format!("basebackup {T} {TL} --full 0/10")).unwrap(),
            Command::Basebackup {
                tenant_id: t,
                timeline_id: tl,
                lsn: Some(Lsn(0x10)),
                full: true
            }
        );
        assert_eq!(
            parse_command("IDENTIFY_SYSTEM").unwrap(),
            Command::IdentifySystem
        );
        assert_eq!(parse_command("SET datestyle TO ISO").unwrap(), Command::Set);
    }

    #[test]
    fn bad_commands_have_the_right_sqlstate() {
        let code = |q: &str| match parse_command(q).unwrap_err() {
            HandlerError::Query { code, .. } => code,
            e => panic!("{e}"),
        };
        assert_eq!(code("select 1"), SqlState::SYNTAX_ERROR);
        assert_eq!(code("identify_system now"), SqlState::SYNTAX_ERROR);
        assert_eq!(code(&format!("pagestream {T}")), SqlState::SYNTAX_ERROR);
        assert_eq!(
            code(&format!("pagestream {T} {TL} x")),
            SqlState::SYNTAX_ERROR
        );
        assert_eq!(
            code(&format!("pagestream xyz {TL}")),
            SqlState::INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            code(&format!("pagestream {T} {}", &TL[1..])),
            SqlState::INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            code(&format!("basebackup {T} {TL} nowhere")),
            SqlState::INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            code(&format!("basebackup {T} {TL} 0/1 0/2")),
            SqlState::SYNTAX_ERROR
        );
        assert_eq!(
            code(&format!("basebackup {T} {TL} --slim")),
            SqlState::SYNTAX_ERROR
        );
        let e = parse_command(&format!("basebackup {T} zz"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid timeline id \"zz\""), "{e}");
        let long = "x".repeat(500);
        assert!(parse_command(&long).unwrap_err().to_string().len() < 250);
    }
}
