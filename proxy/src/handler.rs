//! One client connection: route, authenticate, wake, log in to the
//! compute, splice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{info, Span};
use zenith_utils::api::console::{EndpointAuth, LinkApproval};
use zenith_utils::postgres_backend::{
    AuthMethod, AuthOutcome, Handler, HandlerError, PostgresBackend,
};
use zenith_utils::postgres_client::{ClientError, Config, Connection};
use zenith_utils::pq_proto::{
    BeMessage, CancelKeyData, SqlState, StartupParams, TransactionStatus,
};
use zenith_utils::scram::{ScramKeys, ScramSecret};

use crate::auth::{self, Refusal};
use crate::cancel::CancelGuard;
use crate::console::ConsoleError;
use crate::metrics;
use crate::routing::{self, HOW_TO_NAME_AN_ENDPOINT};
use crate::state::ProxyState;

/// "Configuration limit exceeded": too many failed authentications.
const CONFIGURATION_LIMIT_EXCEEDED: SqlState = SqlState::new(b"53400");

pub struct ProxyHandler {
    state: Arc<ProxyState>,
    _open: metrics::OpenConnection,
    /// After authentication: what [`Handler::take_over`] does.
    next: Option<Next>,
}

enum Next {
    /// Splice the client to this logged-in compute session.
    Splice(Session),
    /// Wait for the link approval, then log in and splice.
    Link {
        wait: crate::state::LinkWait,
        params: StartupParams,
        options: Option<String>,
    },
}

struct Session {
    compute: Connection<TcpStream>,
    _cancel: CancelGuard,
    endpoint: String,
}

impl ProxyHandler {
    pub fn new(state: Arc<ProxyState>, _peer: SocketAddr) -> ProxyHandler {
        ProxyHandler {
            state,
            _open: metrics::OpenConnection::new(),
            next: None,
        }
    }

    async fn authenticate_or_refuse(
        &mut self,
        pgb: &mut PostgresBackend,
    ) -> Result<AuthOutcome, Refusal> {
        let state = Arc::clone(&self.state);
        let params = pgb.startup_params().clone();
        let user = params
            .user()
            .ok_or_else(|| {
                Refusal::new(
                    "protocol",
                    SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                    "no PostgreSQL user name specified in startup packet",
                )
            })?
            .to_string();
        let route =
            routing::route(pgb.sni(), params.get("options"), &state.conf.domain).map_err(|e| {
                Refusal::new(
                    "no_endpoint",
                    SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                    e.to_string(),
                )
            })?;
        let (endpoint, password) = match route.endpoint {
            Some((e, _)) => (e, None),
            None if pgb.is_tls() => {
                // The password form: endpoint=<name>;<password>.
                let pw = auth::cleartext_password(pgb).await?;
                match routing::split_password(&pw) {
                    Some(Ok((e, p))) => (e, Some(p.to_string())),
                    Some(Err(e)) => {
                        return Err(Refusal::new(
                            "no_endpoint",
                            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                            e.to_string(),
                        ))
                    }
                    None => {
                        return Err(Refusal::new(
                            "no_endpoint",
                            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                            format!("no endpoint given: {HOW_TO_NAME_AN_ENDPOINT}"),
                        ))
                    }
                }
            }
            None => {
                return Err(Refusal::new(
                    "no_endpoint",
                    SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                    format!(
                    "no endpoint given (and this connection is not TLS): {HOW_TO_NAME_AN_ENDPOINT}"
                ),
                ))
            }
        };
        Span::current().record("endpoint", endpoint.as_str());
        Span::current().record("user", user.as_str());
        if let Err(wait) = state.limiter.check(&endpoint, &user) {
            return Err(Refusal::new(
                "rate_limited",
                CONFIGURATION_LIMIT_EXCEEDED,
                format!(
                    "too many failed authentications for role \"{user}\" of endpoint \"{endpoint}\"; try again in {} s",
                    wait.as_secs().max(1)
                ),
            ));
        }
        let role = state
            .console
            .role_secret(&endpoint, &user)
            .await
            .map_err(|e| console_refusal(e, &endpoint))?;
        if role.auth == EndpointAuth::Link {
            let wait = auth::link(
                pgb,
                &state,
                &endpoint,
                &user,
                params.database().unwrap_or(&user),
            )
            .await?;
            self.next = Some(Next::Link {
                wait,
                params,
                options: route.options,
            });
            return Ok(AuthOutcome::TakeOver);
        }
        let secret = role
            .secret
            .as_deref()
            .ok_or_else(|| {
                Refusal::new(
                    "console",
                    SqlState::INTERNAL_ERROR,
                    "the console gave no secret for the role",
                )
            })
            .and_then(|s| {
                ScramSecret::parse(s).map_err(|e| {
                    Refusal::new(
                        "console",
                        SqlState::INTERNAL_ERROR,
                        format!("the role's secret from the console: {e}"),
                    )
                })
            })?;
        let keys = match password {
            Some(pw) => auth::check_password(&secret, pw, &user).await,
            None => auth::scram(pgb, &state, &secret, &user).await,
        };
        let keys = match keys {
            Ok(k) => k,
            Err(r) => {
                if r.reason == "wrong_password" {
                    state.limiter.failed(&endpoint, &user);
                    // The password may have changed since it was cached.
                    state.console.invalidate(&endpoint, &user);
                }
                return Err(r);
            }
        };
        let addr = wake(&state, &endpoint).await?;
        let db = params.database().unwrap_or(&user).to_string();
        let session = login(
            &state,
            &endpoint,
            &addr,
            &user,
            &db,
            &params,
            route.options,
            keys,
        )
        .await?;
        self.relay_startup(pgb, session, true).await?;
        Ok(AuthOutcome::TakeOver)
    }

    /// Sends the client AuthenticationOk (unless link auth did), the
    /// compute's parameters, our cancel key and ReadyForQuery.
    async fn relay_startup(
        &mut self,
        pgb: &mut PostgresBackend,
        session: Session,
        auth_ok: bool,
    ) -> Result<(), Refusal> {
        let q = |pgb: &mut PostgresBackend, m: &BeMessage| {
            pgb.writer.queue(m).map_err(HandlerError::from)
        };
        if auth_ok {
            q(pgb, &BeMessage::AuthenticationOk)?;
        }
        for (name, value) in session.compute.parameters() {
            q(pgb, &BeMessage::ParameterStatus { name, value })?;
        }
        q(pgb, &BeMessage::BackendKeyData(session_key(&session)))?;
        pgb.writer
            .send(&BeMessage::ReadyForQuery(TransactionStatus::Idle))
            .await?;
        metrics::SESSIONS_TOTAL.inc();
        info!(endpoint = %session.endpoint, "session started");
        self.next = Some(Next::Splice(session));
        Ok(())
    }
}

fn session_key(s: &Session) -> CancelKeyData {
    s._cancel.key()
}

fn console_refusal(e: ConsoleError, endpoint: &str) -> Refusal {
    match e {
        ConsoleError::NotFound(msg) if msg.starts_with("role ") => Refusal::new(
            "unknown_role",
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            msg,
        ),
        ConsoleError::NotFound(_) => Refusal::new(
            "unknown_endpoint",
            SqlState::INVALID_CATALOG_NAME,
            format!("endpoint \"{endpoint}\" does not exist; {HOW_TO_NAME_AN_ENDPOINT}"),
        ),
        e => Refusal::new("console", SqlState::CONNECTION_FAILURE, e.to_string()),
    }
}

/// The endpoint's compute address, starting it if it is suspended.
async fn wake(state: &ProxyState, endpoint: &str) -> Result<String, Refusal> {
    let started = Instant::now();
    let addr = state
        .console
        .wake(endpoint)
        .await
        .map_err(|e| console_refusal(e, endpoint))?;
    if addr.started_ms > 0 {
        metrics::WAKEUPS.inc();
        metrics::WAKEUP_SECONDS.observe(started.elapsed().as_secs_f64());
        info!(
            endpoint,
            ms = started.elapsed().as_millis() as u64,
            "woke the endpoint"
        );
    }
    Ok(format!("{}:{}", addr.host, addr.port))
}

/// Logs in to the compute at `addr` with the role's SCRAM keys.
#[allow(clippy::too_many_arguments)]
async fn login(
    state: &ProxyState,
    endpoint: &str,
    addr: &str,
    user: &str,
    dbname: &str,
    params: &StartupParams,
    options: Option<String>,
    keys: ScramKeys,
) -> Result<Session, Refusal> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            Refusal::new(
                "console",
                SqlState::INTERNAL_ERROR,
                format!("bad compute address {addr:?}"),
            )
        })?;
    let mut config = Config::new(host, port, user)
        .dbname(dbname)
        .scram_keys(keys);
    config.connect_timeout = state.conf.startup_timeout();
    for (k, v) in params.iter() {
        if !matches!(k, "user" | "database" | "options") {
            config = config.param(k, v);
        }
    }
    if let Some(o) = options {
        config = config.param("options", o);
    }
    let compute_err = |e: ClientError| match (e.sql_state(), e.server_error()) {
        // The compute's own refusal (no such database, ...), as it said it.
        (Some(code), Some(err)) => Refusal::new("compute", code, err.message.clone()),
        _ => Refusal::new(
            "compute",
            SqlState::CONNECTION_FAILURE,
            format!("cannot connect to endpoint \"{endpoint}\": {e}"),
        ),
    };
    let compute = Connection::connect(&config).await.map_err(compute_err)?;
    let compute_key = compute.cancel_key().unwrap_or(CancelKeyData {
        backend_pid: 0,
        cancel_key: 0,
    });
    let (_, cancel) = state.cancels.register(addr.to_string(), compute_key);
    Ok(Session {
        compute,
        _cancel: cancel,
        endpoint: endpoint.to_string(),
    })
}

impl Handler for ProxyHandler {
    fn auth_method(&self) -> AuthMethod {
        AuthMethod::Custom
    }

    fn cancel(&mut self, key: CancelKeyData) {
        self.state.cancels.cancel(key);
    }

    async fn authenticate(
        &mut self,
        pgb: &mut PostgresBackend,
    ) -> Result<AuthOutcome, HandlerError> {
        let limit = self.state.conf.startup_timeout();
        let res = match tokio::time::timeout(limit, self.authenticate_or_refuse(pgb)).await {
            Ok(r) => r,
            Err(_) => Err(Refusal::new(
                "timeout",
                SqlState::QUERY_CANCELED,
                format!("canceling authentication due to timeout ({limit:?})"),
            )),
        };
        res.map_err(refused)
    }

    async fn take_over(&mut self, pgb: &mut PostgresBackend) -> Result<(), HandlerError> {
        let session = match self.next.take() {
            Some(Next::Splice(s)) => s,
            Some(Next::Link {
                wait,
                params,
                options,
            }) => {
                let approval = auth::wait_link(&self.state, wait).await.map_err(refused)?;
                let session = login_approved(&self.state, approval, &params, options)
                    .await
                    .map_err(refused)?;
                self.relay_startup(pgb, session, false)
                    .await
                    .map_err(refused)?;
                match self.next.take() {
                    Some(Next::Splice(s)) => s,
                    _ => return Ok(()),
                }
            }
            None => return Ok(()),
        };
        splice(pgb, session).await
    }

    async fn process_query(
        &mut self,
        _pgb: &mut PostgresBackend,
        _query: &str,
    ) -> Result<(), HandlerError> {
        Err(HandlerError::fatal(
            SqlState::PROTOCOL_VIOLATION,
            "the proxy runs no queries itself",
        ))
    }
}

async fn login_approved(
    state: &ProxyState,
    a: LinkApproval,
    params: &StartupParams,
    options: Option<String>,
) -> Result<Session, Refusal> {
    let key = |s: &str| -> Result<[u8; 32], Refusal> {
        hex::decode(s)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| {
                Refusal::new(
                    "console",
                    SqlState::INTERNAL_ERROR,
                    "the console sent a malformed key",
                )
            })
    };
    let keys = ScramKeys {
        client_key: key(&a.client_key)?,
        server_key: key(&a.server_key)?,
    };
    let addr = format!("{}:{}", a.host, a.port);
    login(
        state, "(link)", &addr, &a.user, &a.dbname, params, options, keys,
    )
    .await
}

/// A refusal as the FATAL error the client gets, counted by reason.
fn refused(r: Refusal) -> HandlerError {
    metrics::AUTH_FAILURES.with_label_values(&[r.reason]).inc();
    info!(reason = r.reason, "connection refused: {}", r.message);
    HandlerError::fatal(r.code, r.message)
}

/// Relays bytes both ways until either side closes.
async fn splice(pgb: &mut PostgresBackend, session: Session) -> Result<(), HandlerError> {
    let (mut client, client_pending) = pgb.take_stream().await?;
    let (mut compute, compute_pending) = session.compute.into_parts();
    if !client_pending.is_empty() {
        compute.write_all(&client_pending).await?;
    }
    if !compute_pending.is_empty() {
        client.write_all(&compute_pending).await?;
    }
    let res = tokio::io::copy_bidirectional(&mut client, &mut compute).await;
    drop(session._cancel);
    match res {
        Ok((to_compute, to_client)) => {
            metrics::BYTES
                .with_label_values(&["to_compute"])
                .inc_by(to_compute);
            metrics::BYTES
                .with_label_values(&["to_client"])
                .inc_by(to_client);
            info!(to_compute, to_client, "session ended");
            Ok(())
        }
        Err(e) => {
            info!("session ended: {e}");
            Err(HandlerError::ClientGone)
        }
    }
}
