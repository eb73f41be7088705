//! The authentication exchanges with the client: SCRAM-SHA-256(-PLUS)
//! against a role's secret, the cleartext password of the password form,
//! and the login link.

use std::time::Duration;

use tracing::info;
use zenith_utils::api::console::LinkApproval;
use zenith_utils::postgres_backend::{HandlerError, PostgresBackend};
use zenith_utils::pq_proto::{
    parse_password, parse_sasl_initial_response, BeMessage, ErrorFields, FeMessage, Severity,
    SqlState,
};
use zenith_utils::scram::{ScramKeys, ScramSecret, ServerExchange};

use crate::state::{LinkWait, ProxyState};

/// A refused connection: the metric's reason, and what the client reads.
#[derive(Debug)]
pub struct Refusal {
    pub reason: &'static str,
    pub code: SqlState,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: &'static str, code: SqlState, message: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            code,
            message: message.into(),
        }
    }

    pub fn wrong_password(user: &str) -> Refusal {
        Refusal::new(
            "wrong_password",
            SqlState::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        )
    }
}

impl From<HandlerError> for Refusal {
    fn from(e: HandlerError) -> Refusal {
        match e {
            HandlerError::Fatal { code, message } | HandlerError::Query { code, message } => {
                Refusal::new("protocol", code, message)
            }
            HandlerError::Protocol(p) => Refusal::new("protocol", p.sql_state(), p.to_string()),
            e => Refusal::new("client_gone", SqlState::CONNECTION_FAILURE, e.to_string()),
        }
    }
}

/// The client's next password-type message body.
async fn read_auth_response(pgb: &mut PostgresBackend) -> Result<Vec<u8>, Refusal> {
    match pgb.reader.read_message().await? {
        Some(FeMessage::AuthResponse(body)) => Ok(body.to_vec()),
        Some(_) => Err(Refusal::new(
            "protocol",
            SqlState::PROTOCOL_VIOLATION,
            "expected an authentication response",
        )),
        None => Err(Refusal::new(
            "client_gone",
            SqlState::CONNECTION_FAILURE,
            "the client closed the connection during authentication",
        )),
    }
}

/// SCRAM with the client. On success the role's keys, recovered from the
/// client's proof: the proxy logs in to the compute with them.
pub async fn scram(
    pgb: &mut PostgresBackend,
    state: &ProxyState,
    secret: &ScramSecret,
    user: &str,
) -> Result<ScramKeys, Refusal> {
    // Channel binding only where the client's TLS ends here.
    let cb = if pgb.is_tls() {
        state.channel_binding.clone()
    } else {
        None
    };
    let mut exchange = ServerExchange::new(secret, cb);
    pgb.writer
        .send(&BeMessage::AuthenticationSasl(exchange.mechanisms()))
        .await?;
    let body = read_auth_response(pgb).await?;
    let (mechanism, data) = parse_sasl_initial_response(&body).map_err(HandlerError::from)?;
    let server_first = exchange
        .client_first(mechanism, data.unwrap_or_default())
        .map_err(|e| scram_refusal(e, user))?;
    pgb.writer
        .send(&BeMessage::AuthenticationSaslContinue(&server_first))
        .await?;
    let body = read_auth_response(pgb).await?;
    let (server_final, keys) = exchange
        .client_final(&body)
        .map_err(|e| scram_refusal(e, user))?;
    pgb.writer
        .queue(&BeMessage::AuthenticationSaslFinal(&server_final))
        .map_err(HandlerError::from)?;
    Ok(keys)
}

fn scram_refusal(e: zenith_utils::scram::ScramError, user: &str) -> Refusal {
    let code = e.sql_state();
    if code == SqlState::INVALID_PASSWORD {
        Refusal::wrong_password(user)
    } else {
        Refusal::new(
            "protocol",
            code,
            format!("SCRAM authentication failed: {e}"),
        )
    }
}

/// Asks for a cleartext password (the password form, TLS only).
pub async fn cleartext_password(pgb: &mut PostgresBackend) -> Result<String, Refusal> {
    pgb.writer
        .send(&BeMessage::AuthenticationCleartextPassword)
        .await?;
    let body = read_auth_response(pgb).await?;
    Ok(parse_password(&body)
        .map_err(HandlerError::from)?
        .to_string())
}

/// Checks a cleartext password against the role's secret; the keys on
/// success. PBKDF2 (milliseconds) runs on the blocking pool.
pub async fn check_password(
    secret: &ScramSecret,
    password: String,
    user: &str,
) -> Result<ScramKeys, Refusal> {
    let s = secret.clone();
    let keys = tokio::task::spawn_blocking(move || ScramKeys::from_password(&password, &s))
        .await
        .map_err(|e| {
            Refusal::new(
                "protocol",
                SqlState::INTERNAL_ERROR,
                format!("the password check failed: {e}"),
            )
        })?;
    if secret.matches(&keys) {
        Ok(keys)
    } else {
        Err(Refusal::wrong_password(user))
    }
}

/// Link authentication, first half: AuthenticationOk and a notice with the
/// login URL. The
/// wait for the console's approval ([`wait_link`]) runs after the startup
/// phase, outside its timeout.
pub async fn link(
    pgb: &mut PostgresBackend,
    state: &ProxyState,
    endpoint: &str,
    user: &str,
    dbname: &str,
) -> Result<LinkWait, Refusal> {
    let wait = state.links.open(zenith_utils::api::console::LinkSession {
        endpoint: endpoint.to_string(),
        user: user.to_string(),
        dbname: dbname.to_string(),
    });
    // The page asks the proxy what this session is for; the URL carries
    // only the session id.
    let url = format!("{}/psql_session/{}", state.console.base_url(), wait.id);
    let text = format!("Welcome to Zenith!\nAuthenticate by visiting:\n    {url}\n\n");
    // libpq takes notices only once authenticated: the client is told it
    // is (its session starts only after the approval, or ends in an error).
    let notice = BeMessage::NoticeResponse(ErrorFields::new(
        Severity::Notice,
        SqlState::SUCCESSFUL_COMPLETION,
        &text,
    ));
    let sent = match pgb.writer.queue(&BeMessage::AuthenticationOk) {
        Ok(()) => pgb.writer.send(&notice).await,
        Err(e) => Err(e.into()),
    };
    sent?;
    // The id is the session's only secret: not logged.
    info!("waiting for the link-auth approval");
    Ok(wait)
}

/// Link authentication, second half: the console's approval.
pub async fn wait_link(state: &ProxyState, mut wait: LinkWait) -> Result<LinkApproval, Refusal> {
    let timeout: Duration = state.conf.link_timeout();
    let res = tokio::time::timeout(timeout, &mut wait.rx).await;
    drop(wait);
    match res {
        Ok(Ok(approval)) => Ok(approval),
        Ok(Err(_)) => Err(Refusal::new(
            "link_timeout",
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            "the login link session was dropped",
        )),
        Err(_) => Err(Refusal::new(
            "link_timeout",
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            format!("the login link was not approved within {timeout:?}"),
        )),
    }
}
