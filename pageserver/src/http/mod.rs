//! The pageserver's HTTP management API (docs/architecture.md §10).
//!
//! JSON over HTTP/1.1 (hyper 1). The routes are described in
//! `openapi_spec.yml` beside this file (also served at `GET /v1/openapi.yml`)
//! and summarized in `docs/pageserver.md`; [`routes`] implements them.
//!
//! Conventions:
//! - Errors are 4xx/5xx responses with the body `{"msg": "..."}`: a malformed
//!   id, LSN or JSON body is 400, an unknown tenant or timeline 404, a wrong
//!   method 405 (with `Allow`), a conflict with existing state 409, a body over
//!   [`MAX_BODY_SIZE`] 413, what is not built yet 501, anything else 500.
//! - Ids are 32 hex characters, LSNs `X/Y` strings, in paths and bodies alike.
//! - Work that blocks (initdb and import, flushing layers, stopping a WAL
//!   receiver, fsyncs) runs in `spawn_blocking`, never on the async workers.
//!
//! [`serve`] accepts connections until the shutdown signal; then it stops
//! accepting, lets in-flight requests finish (bounded by
//! [`SHUTDOWN_GRACE`]) and returns.

pub mod routes;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::config::PageServerConf;
use crate::tenant::mgr::TenantManager;
use crate::wal_sources::WalSources;

pub use routes::handle;

/// Largest request body accepted.
pub const MAX_BODY_SIZE: usize = 64 * 1024;

/// How long [`serve`] waits for in-flight requests at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The OpenAPI 3 description of this API.
pub const OPENAPI_SPEC: &str = include_str!("openapi_spec.yml");

/// What the handlers work on.
pub struct ApiState {
    pub mgr: Arc<TenantManager>,
    pub conf: Arc<PageServerConf>,
    pub wal_sources: Arc<WalSources>,
    /// Serializes the operations that change which timelines exist or what
    /// runs on them (branch creation, deletion, GC, WAL source changes): a
    /// timeline is never deleted while a branch of it is being created or
    /// while its WAL receiver is being started, and no branch is created
    /// below a GC cutoff being moved. Bootstrap needs no serialization (its
    /// timeline is invisible until complete).
    timeline_ops: Arc<tokio::sync::Mutex<()>>,
}

impl ApiState {
    pub fn new(
        mgr: Arc<TenantManager>,
        conf: Arc<PageServerConf>,
        wal_sources: Arc<WalSources>,
    ) -> ApiState {
        ApiState {
            mgr,
            conf,
            wal_sources,
            timeline_ops: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

impl ApiState {
    /// Wait for the other timeline-changing operations (see `timeline_ops`).
    /// The guard is owned so that it can move into the blocking work: it is
    /// held until that work ends even if the client goes away.
    pub(crate) async fn serialize(&self) -> tokio::sync::OwnedMutexGuard<()> {
        Arc::clone(&self.timeline_ops).lock_owned().await
    }
}

/// A request that failed; becomes a response with `{"msg": ...}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {MAX_BODY_SIZE} bytes")]
    PayloadTooLarge,
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
            tracing::error!("HTTP request failed: {self}");
        }
        let mut resp = json_response(status, &serde_json::json!({ "msg": self.to_string() }));
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::Internal(e)
    }
}

/// A JSON response.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut resp = Response::new(Full::new(Bytes::from(bytes)));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => {
            let mut resp = Response::new(Full::new(Bytes::from(format!(
                "{{\"msg\":\"cannot serialize the response: {e}\"}}"
            ))));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    }
}

/// A response with a text body of the given content type.
pub fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Read a whole request body, at most [`MAX_BODY_SIZE`] bytes.
pub async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A declared length over the limit is refused before reading anything.
    if body.size_hint().lower() > MAX_BODY_SIZE as u64 {
        return Err(ApiError::PayloadTooLarge);
    }
    match Limited::new(body, MAX_BODY_SIZE).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge),
        Err(e) => Err(ApiError::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// Parse a JSON request body; an empty body is `None`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Run blocking work off the async workers.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("request task failed: {e}")))
}

/// Resolves once `rx` is true or its sender is gone.
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Serve the API on `listener` until `shutdown` becomes true (or its sender
/// is dropped).
pub async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let conn_shutdown = shutdown.clone();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // E.g. out of file descriptors: do not spin, do not die.
                        warn!("HTTP accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let state = Arc::clone(&state);
                let mut stop = conn_shutdown.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    let res = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = stopped(&mut stop) => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = res {
                        debug!(%peer, "HTTP connection ended with an error: {e}");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            "{} HTTP connections still busy after {SHUTDOWN_GRACE:?}; closing them",
            conns.len()
        );
        conns.shutdown().await;
    }
    Ok(())
}
