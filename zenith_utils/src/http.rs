//! HTTP/JSON serving shared by every daemon's management API (hyper 1,
//! HTTP/1.1).
//!
//! - [`Router`] maps route templates like
//!   `/v1/tenant/{tenant_id}/timeline/{timeline_id}` and methods to async
//!   handlers. It answers an unknown path with 404, a known path with the
//!   wrong method with 405 (and `Allow`), and it counts every request in
//!   `<prefix>_http_requests_total{route,method,status}` and
//!   `<prefix>_http_request_duration_seconds{route}`.
//! - Every router serves `GET /metrics` (the Prometheus text of the default
//!   registry, after an optional refresh hook) and `GET /v1/status`.
//! - Errors are [`ApiError`]s, sent as `{"msg": "..."}` with a 4xx/5xx
//!   status; a request body over [`HttpConf::max_body_size`] is 413 before
//!   it is read; a body that does not arrive within
//!   [`HttpConf::body_timeout`] is 408.
//! - [`serve`] accepts until shutdown, then lets in-flight requests finish
//!   (bounded by [`HttpConf::shutdown_grace`]). A client gets
//!   [`HttpConf::header_read_timeout`] to send its headers.
//! - [`blocking`] runs blocking work (fsyncs, file reads) off the async
//!   workers.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::auth::{parse_bearer, AuthError, Claims, JwtAuth};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use zenith_metrics::{
    register_histogram_vec, register_int_counter_vec, HistogramVec, IntCounterVec,
};

/// Limits and timeouts of a server.
#[derive(Debug, Clone)]
pub struct HttpConf {
    pub max_body_size: usize,
    pub header_read_timeout: Duration,
    pub body_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Default for HttpConf {
    fn default() -> Self {
        HttpConf {
            max_body_size: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// A request that failed; becomes a response with `{"msg": ...}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: String },
    #[error("the request body did not arrive within {0:?}")]
    RequestTimeout(Duration),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// An internal error from any message.
    pub fn internal(msg: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(anyhow::anyhow!("{msg}"))
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("HTTP request failed: {self}");
        }
        let mut resp = json_response(status, &serde_json::json!({ "msg": self.to_string() }));
        if let ApiError::MethodNotAllowed { allow, .. } = &self {
            if let Ok(v) = HeaderValue::from_str(allow) {
                resp.headers_mut().insert(ALLOW, v);
            }
        }
        if let ApiError::Unauthorized(_) = &self {
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        if e.is_unauthenticated() {
            ApiError::Unauthorized(e.to_string())
        } else {
            ApiError::Forbidden(e.to_string())
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::Internal(e)
    }
}

/// What a handler returns.
pub type ApiResult = Result<Response<Full<Bytes>>, ApiError>;

/// For clients: the message of an error response (`{"msg": ...}`, as
/// [`ApiError::into_response`] writes it), else the whole body.
pub fn error_message(body: String) -> String {
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or(body)
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

/// Parses a JSON request body; an empty body is `None`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Runs blocking work off the async workers.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("request task failed: {e}")))
}

/// Reads a whole body, at most `max` bytes, within `timeout`.
async fn read_body<B>(body: B, max: usize, timeout: Duration) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A declared length over the limit is refused before reading anything.
    if body.size_hint().lower() > max as u64 {
        return Err(ApiError::PayloadTooLarge(max));
    }
    match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await {
        Err(_) => Err(ApiError::RequestTimeout(timeout)),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge(max))
        }
        Ok(Err(e)) => Err(ApiError::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// A request as handlers see it: its body is already read.
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    params: HashMap<&'static str, String>,
}

impl ApiRequest {
    /// The path segment matched by `{name}` in the route template.
    pub fn param(&self, name: &str) -> Result<&str, ApiError> {
        self.params
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| ApiError::internal(format!("route has no parameter {name:?}")))
    }

    /// The value of `name` in the query string, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode(v))
        })
    }

    /// The body as JSON; an empty body is `None`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<Option<T>, ApiError> {
        parse_json(&self.body)
    }
}

/// `%XX` and `+` decoding of a query-string value (invalid escapes are
/// kept as they are).
pub fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where every router serves the Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// The path of every daemon's status route (no token needed).
pub const STATUS_PATH: &str = "/v1/status";

type BoxFuture = Pin<Box<dyn Future<Output = ApiResult> + Send>>;
type HandlerFn<S> = Arc<dyn Fn(Arc<S>, ApiRequest) -> BoxFuture + Send + Sync>;
type ScrapeHook<S> = Arc<dyn Fn(&S) + Send + Sync>;

enum Segment {
    Literal(&'static str),
    Param(&'static str),
}

struct Route<S> {
    template: &'static str,
    segments: Vec<Segment>,
    methods: Vec<(Method, HandlerFn<S>)>,
}

/// The route a request matched, as an auth policy sees it.
pub struct RouteMatch<'a> {
    pub method: &'a Method,
    pub template: &'static str,
    params: &'a HashMap<&'static str, String>,
}

impl RouteMatch<'_> {
    /// The path segment matched by `{name}`, if the template has one.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Decides whether a token's claims allow a request.
pub type AuthPolicy = Arc<dyn Fn(&RouteMatch<'_>, &Claims) -> Result<(), AuthError> + Send + Sync>;

/// The routes of one API, with request metrics.
pub struct Router<S> {
    routes: Vec<Route<S>>,
    requests: IntCounterVec,
    durations: HistogramVec,
    scrape: Option<ScrapeHook<S>>,
    conf: HttpConf,
    auth: Option<(Arc<JwtAuth>, AuthPolicy)>,
    /// Routes open to anyone even with auth on (pages a browser visits).
    public: Vec<&'static str>,
}

/// The request counter and duration histogram of routers with `prefix`,
/// registered in the default registry on first use.
fn request_metrics(prefix: &str) -> (IntCounterVec, HistogramVec) {
    static BY_PREFIX: Mutex<BTreeMap<String, (IntCounterVec, HistogramVec)>> =
        Mutex::new(BTreeMap::new());
    let mut map = BY_PREFIX.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(prefix.to_string())
        .or_insert_with(|| {
            // Names are made of a static prefix and suffix: registration can
            // only fail on a programming error, found by any test.
            let requests = register_int_counter_vec!(
                format!("{prefix}_http_requests_total"),
                "HTTP API requests by route, method and status",
                &["route", "method", "status"]
            )
            .expect("registering the HTTP request counter");
            let durations = register_histogram_vec!(
                format!("{prefix}_http_request_duration_seconds"),
                "Time to answer an HTTP API request, by route",
                &["route"]
            )
            .expect("registering the HTTP request histogram");
            (requests, durations)
        })
        .clone()
}

/// `/v1/status`.
#[derive(Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StatusResponse {
    /// Process id of the daemon.
    pub id: u32,
    pub version: String,
}

impl<S: Send + Sync + 'static> Router<S> {
    /// A router whose metrics are named `<metrics_prefix>_http_...`, with
    /// `/metrics` and `/v1/status` (reporting `version`) already routed.
    /// Routers with the same prefix in one process share their metrics.
    pub fn new(metrics_prefix: &str, version: &'static str, conf: HttpConf) -> Router<S> {
        let (requests, durations) = request_metrics(metrics_prefix);
        let router = Router {
            routes: Vec::new(),
            requests,
            durations,
            scrape: None,
            conf,
            auth: None,
            public: Vec::new(),
        };
        router.get(STATUS_PATH, move |_state, _req| async move {
            Ok(json_response(
                StatusCode::OK,
                &StatusResponse {
                    id: std::process::id(),
                    version: version.to_string(),
                },
            ))
        })
    }

    /// Runs `hook` (on a blocking thread) before each `/metrics` scrape,
    /// to refresh gauges that are computed rather than counted.
    pub fn on_scrape(mut self, hook: impl Fn(&S) + Send + Sync + 'static) -> Self {
        self.scrape = Some(Arc::new(hook));
        self
    }

    /// With `Some(auth)`, every route but `/metrics` and `/v1/status`
    /// needs `Authorization: Bearer <token>`: a missing or invalid token
    /// is 401, a valid one that `policy` refuses is 403; both before the
    /// body is read.
    pub fn with_auth(
        mut self,
        auth: Option<Arc<JwtAuth>>,
        policy: impl Fn(&RouteMatch<'_>, &Claims) -> Result<(), AuthError> + Send + Sync + 'static,
    ) -> Self {
        self.auth = auth.map(|a| (a, Arc::new(policy) as AuthPolicy));
        self
    }

    /// Routes served without a token even with auth on.
    pub fn public(mut self, templates: &[&'static str]) -> Self {
        self.public.extend_from_slice(templates);
        self
    }

    /// Checks the request's token against the policy, if auth is on.
    fn authorize(
        &self,
        template: &'static str,
        method: &Method,
        params: &HashMap<&'static str, String>,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        let Some((auth, policy)) = &self.auth else {
            return Ok(());
        };
        if template == STATUS_PATH || self.public.contains(&template) {
            return Ok(());
        }
        let header = match headers.get(hyper::header::AUTHORIZATION) {
            None => return Err(AuthError::Missing.into()),
            Some(v) => v.to_str().map_err(|_| {
                AuthError::Malformed("the Authorization header is not ASCII".into())
            })?,
        };
        let claims = auth.decode(parse_bearer(header)?)?;
        policy(
            &RouteMatch {
                method,
                template,
                params,
            },
            &claims,
        )?;
        Ok(())
    }

    pub fn get<F, Fut>(self, template: &'static str, f: F) -> Self
    where
        F: Fn(Arc<S>, ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ApiResult> + Send + 'static,
    {
        self.route(Method::GET, template, f)
    }

    pub fn post<F, Fut>(self, template: &'static str, f: F) -> Self
    where
        F: Fn(Arc<S>, ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ApiResult> + Send + 'static,
    {
        self.route(Method::POST, template, f)
    }

    pub fn put<F, Fut>(self, template: &'static str, f: F) -> Self
    where
        F: Fn(Arc<S>, ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ApiResult> + Send + 'static,
    {
        self.route(Method::PUT, template, f)
    }

    pub fn delete<F, Fut>(self, template: &'static str, f: F) -> Self
    where
        F: Fn(Arc<S>, ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ApiResult> + Send + 'static,
    {
        self.route(Method::DELETE, template, f)
    }

    /// Adds `PUT /v1/failpoints`: a JSON list of `{name, actions}` arms or
    /// disarms failpoints (the `fail` crate's syntax: `panic`, `return`,
    /// `sleep(100)`, `pause`, `off`, `1*panic`, ...). A build without
    /// failpoints (the `testing` features) answers 400.
    pub fn with_failpoints(self) -> Self {
        self.put(FAILPOINTS_PATH, |_, req| async move {
            configure_failpoints(req)
        })
    }

    /// Adds `method template` (panics on a malformed template or a
    /// duplicate: both are programming errors found by the first test).
    pub fn route<F, Fut>(mut self, method: Method, template: &'static str, f: F) -> Self
    where
        F: Fn(Arc<S>, ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ApiResult> + Send + 'static,
    {
        let handler: HandlerFn<S> = Arc::new(move |s, r| Box::pin(f(s, r)));
        if let Some(route) = self.routes.iter_mut().find(|r| r.template == template) {
            assert!(
                route.methods.iter().all(|(m, _)| *m != method),
                "route {method} {template} added twice"
            );
            route.methods.push((method, handler));
            return self;
        }
        let segments = template
            .strip_prefix('/')
            .unwrap_or_else(|| panic!("route template {template:?} must start with /"))
            .split('/')
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Segment::Param(name),
                    None => Segment::Literal(s),
                },
            )
            .collect();
        self.routes.push(Route {
            template,
            segments,
            methods: vec![(method, handler)],
        });
        self
    }

    /// Every route template: `/metrics`, then the others in the order
    /// added.
    pub fn templates(&self) -> Vec<&'static str> {
        std::iter::once(METRICS_PATH)
            .chain(self.routes.iter().map(|r| r.template))
            .collect()
    }

    fn find(&self, path: &str) -> Option<(&Route<S>, HashMap<&'static str, String>)> {
        let path = path.strip_prefix('/')?;
        let path = path.strip_suffix('/').unwrap_or(path);
        let segs: Vec<&str> = path.split('/').collect();
        'routes: for route in &self.routes {
            if route.segments.len() != segs.len() {
                continue;
            }
            let mut params = HashMap::new();
            for (pattern, seg) in route.segments.iter().zip(&segs) {
                match pattern {
                    Segment::Literal(l) if l == seg => {}
                    Segment::Literal(_) => continue 'routes,
                    Segment::Param(name) => {
                        params.insert(*name, percent_decode(seg));
                    }
                }
            }
            return Some((route, params));
        }
        None
    }

    /// Answers one request. Never fails: errors become JSON responses.
    pub async fn handle<B>(&self, state: Arc<S>, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let (template, resp) = match self.find(&path) {
            None if path == METRICS_PATH => (
                METRICS_PATH,
                if method == Method::GET {
                    self.metrics(state).await
                } else {
                    Err(ApiError::MethodNotAllowed {
                        method: method.to_string(),
                        allow: "GET".into(),
                    })
                },
            ),
            None => (
                "unknown",
                Err(ApiError::NotFound(format!("no such path: {path}"))),
            ),
            Some((route, params)) => (
                route.template,
                self.dispatch(route, params, state, req).await,
            ),
        };
        let resp = resp.unwrap_or_else(ApiError::into_response);
        let status = resp.status();
        let method_label = match method {
            Method::GET | Method::POST | Method::PUT | Method::DELETE | Method::HEAD => {
                method.as_str()
            }
            _ => "other",
        };
        self.requests
            .with_label_values(&[template, method_label, status.as_str()])
            .inc();
        self.durations
            .with_label_values(&[template])
            .observe(started.elapsed().as_secs_f64());
        if method == Method::GET && status.is_success() {
            debug!(%method, %path, status = status.as_u16(), "HTTP request");
        } else {
            info!(%method, %path, status = status.as_u16(),
                  ms = started.elapsed().as_millis() as u64, "HTTP request");
        }
        resp
    }

    async fn dispatch<B>(
        &self,
        route: &Route<S>,
        params: HashMap<&'static str, String>,
        state: Arc<S>,
        req: Request<B>,
    ) -> ApiResult
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = req.method().clone();
        let Some((_, handler)) = route.methods.iter().find(|(m, _)| *m == method) else {
            let allow: Vec<&str> = route.methods.iter().map(|(m, _)| m.as_str()).collect();
            return Err(ApiError::MethodNotAllowed {
                method: method.to_string(),
                allow: allow.join(", "),
            });
        };
        self.authorize(route.template, &method, &params, req.headers())?;
        let (parts, body) = req.into_parts();
        let body = read_body(body, self.conf.max_body_size, self.conf.body_timeout).await?;
        let req = ApiRequest {
            method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            headers: parts.headers,
            body,
            params,
        };
        handler(state, req).await
    }

    async fn metrics(&self, state: Arc<S>) -> ApiResult {
        let hook = self.scrape.clone();
        blocking(move || {
            if let Some(hook) = hook {
                hook(&state);
            }
            zenith_metrics::gather_text()
        })
        .await?
        .map(|text| text_response(StatusCode::OK, zenith_metrics::METRICS_CONTENT_TYPE, text))
        .map_err(|e| ApiError::Internal(e.into()))
    }
}

/// Resolves once `rx` is true or its sender is gone.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Serves `router` on `listener` until `shutdown` becomes true (or its
/// sender is dropped).
pub async fn serve<S: Send + Sync + 'static>(
    listener: TcpListener,
    router: Arc<Router<S>>,
    state: Arc<S>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let conn_shutdown = shutdown.clone();
    let mut conns = tokio::task::JoinSet::new();
    let conf = router.conf.clone();
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
                let (router, state) = (Arc::clone(&router), Arc::clone(&state));
                let mut stop = conn_shutdown.clone();
                let header_timeout = conf.header_read_timeout;
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        let (router, state) = (Arc::clone(&router), Arc::clone(&state));
                        async move { Ok::<_, Infallible>(router.handle(state, req).await) }
                    });
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_timeout)
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
    let drained = tokio::time::timeout(conf.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            "{} HTTP connections still busy after {:?}; closing them",
            conns.len(),
            conf.shutdown_grace
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// The failpoint route ([`Router::with_failpoints`]).
pub const FAILPOINTS_PATH: &str = "/v1/failpoints";

/// One failpoint and its actions.
#[derive(serde::Deserialize)]
struct FailpointConfig {
    name: String,
    actions: String,
}

fn configure_failpoints(req: ApiRequest) -> ApiResult {
    if !fail::has_failpoints() {
        return Err(ApiError::BadRequest(
            "this daemon was built without failpoints (build with the `testing` feature)"
                .to_string(),
        ));
    }
    let list: Vec<FailpointConfig> = req
        .json()?
        .ok_or_else(|| ApiError::BadRequest("expected a JSON list of {name, actions}".into()))?;
    for fp in &list {
        fail::cfg(&fp.name, &fp.actions)
            .map_err(|e| ApiError::BadRequest(format!("failpoint {}: {e}", fp.name)))?;
        tracing::warn!(failpoint = %fp.name, actions = %fp.actions, "failpoint configured");
    }
    Ok(json_response(StatusCode::OK, &serde_json::json!({})))
}
