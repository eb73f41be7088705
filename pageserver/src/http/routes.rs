//! Routing and handlers of the HTTP API (see `openapi_spec.yml`).
//!
//! [`handle`] matches the path first (unknown path: 404), then the method
//! (wrong method: 405), then parses ids and LSNs in the path (400) and looks
//! the tenant and timeline up (404) before doing anything.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};
use zenith_metrics::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use super::{
    blocking, json_response, parse_json, read_body, text_response, ApiError, ApiState, OPENAPI_SPEC,
};
use crate::pgdatadir_mapping::DatadirReader;
use crate::tenant::mgr::Tenant;
use crate::tenant::timeline::{Timeline, TimelineError};
use crate::wal_sources::{self, WalSourceError};

static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "pageserver_http_requests_total",
        "HTTP API requests by route, method and status",
        &["route", "method", "status"]
    )
    .expect("registering pageserver_http_requests_total")
});

static HTTP_REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "pageserver_http_request_duration_seconds",
        "Time to answer an HTTP API request, by route",
        &["route"]
    )
    .expect("registering pageserver_http_request_duration_seconds")
});

static LAST_RECORD_LSN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "pageserver_last_record_lsn",
        "End of the last WAL record ingested, per timeline (updated on scrape)",
        &["tenant_id", "timeline_id"]
    )
    .expect("registering pageserver_last_record_lsn")
});

static DISK_CONSISTENT_LSN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "pageserver_disk_consistent_lsn",
        "WAL position up to which the timeline is in layer files (updated on scrape)",
        &["tenant_id", "timeline_id"]
    )
    .expect("registering pageserver_disk_consistent_lsn")
});

static PHYSICAL_SIZE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "pageserver_current_physical_size_bytes",
        "Bytes of layer files per timeline (updated on scrape)",
        &["tenant_id", "timeline_id"]
    )
    .expect("registering pageserver_current_physical_size_bytes")
});

static WAL_RECEIVERS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "pageserver_wal_receivers",
        "Running WAL receivers (updated on scrape)"
    )
    .expect("registering pageserver_wal_receivers")
});

static TENANTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("pageserver_tenants", "Tenants loaded (updated on scrape)")
        .expect("registering pageserver_tenants")
});

/// A matched route: its template (the metrics label) and what it captured.
enum Route<'a> {
    Metrics,
    Status,
    OpenApi,
    Tenants,
    Timelines(&'a str),
    Timeline(&'a str, &'a str),
    WalSource(&'a str, &'a str),
    Checkpoint(&'a str, &'a str),
    DoGc(&'a str, &'a str),
    Compact(&'a str, &'a str),
    LsnByTimestamp(&'a str, &'a str),
}

impl<'a> Route<'a> {
    fn find(path: &'a str) -> Option<Route<'a>> {
        let path = path.strip_prefix('/')?;
        let path = path.strip_suffix('/').unwrap_or(path);
        let segs: Vec<&str> = path.split('/').collect();
        Some(match segs.as_slice() {
            ["metrics"] => Route::Metrics,
            ["v1", "status"] => Route::Status,
            ["v1", "openapi.yml"] => Route::OpenApi,
            ["v1", "tenant"] => Route::Tenants,
            ["v1", "tenant", t, "timeline"] => Route::Timelines(t),
            ["v1", "tenant", t, "timeline", tl] => Route::Timeline(t, tl),
            ["v1", "tenant", t, "timeline", tl, action] => match *action {
                "wal_source" => Route::WalSource(t, tl),
                "checkpoint" => Route::Checkpoint(t, tl),
                "do_gc" => Route::DoGc(t, tl),
                "compact" => Route::Compact(t, tl),
                "get_lsn_by_timestamp" => Route::LsnByTimestamp(t, tl),
                _ => return None,
            },
            _ => return None,
        })
    }

    /// The route's template (metrics label) and its allowed methods.
    fn describe(&self) -> (&'static str, &'static str) {
        const TL: &str = "/v1/tenant/{tenant_id}/timeline/{timeline_id}";
        match self {
            Route::Metrics => ("/metrics", "GET"),
            Route::Status => ("/v1/status", "GET"),
            Route::OpenApi => ("/v1/openapi.yml", "GET"),
            Route::Tenants => ("/v1/tenant", "GET, POST"),
            Route::Timelines(..) => ("/v1/tenant/{tenant_id}/timeline", "GET, POST"),
            Route::Timeline(..) => (TL, "GET, DELETE"),
            Route::WalSource(..) => (tpl::WAL_SOURCE, "PUT, DELETE"),
            Route::Checkpoint(..) => (tpl::CHECKPOINT, "PUT"),
            Route::DoGc(..) => (tpl::DO_GC, "PUT"),
            Route::Compact(..) => (tpl::COMPACT, "PUT"),
            Route::LsnByTimestamp(..) => (tpl::LSN_BY_TIMESTAMP, "GET"),
        }
    }
}

/// Route templates below a timeline.
mod tpl {
    pub const WAL_SOURCE: &str = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/wal_source";
    pub const CHECKPOINT: &str = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/checkpoint";
    pub const DO_GC: &str = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/do_gc";
    pub const COMPACT: &str = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/compact";
    pub const LSN_BY_TIMESTAMP: &str =
        "/v1/tenant/{tenant_id}/timeline/{timeline_id}/get_lsn_by_timestamp";
}

/// Every route template, for tests that compare the router with the spec.
pub const ROUTE_TEMPLATES: &[&str] = &[
    "/metrics",
    "/v1/status",
    "/v1/openapi.yml",
    "/v1/tenant",
    "/v1/tenant/{tenant_id}/timeline",
    "/v1/tenant/{tenant_id}/timeline/{timeline_id}",
    tpl::WAL_SOURCE,
    tpl::CHECKPOINT,
    tpl::DO_GC,
    tpl::COMPACT,
    tpl::LSN_BY_TIMESTAMP,
];

/// Answer one request. Never fails: errors become JSON error responses.
pub async fn handle<B>(state: Arc<ApiState>, req: Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = Route::find(&path);
    let template = route.as_ref().map(|r| r.describe().0).unwrap_or("unknown");
    let resp = match route {
        None => Err(ApiError::NotFound(format!("no such path: {path}"))),
        Some(route) => {
            let allow = route.describe().1;
            if allow.split(", ").any(|m| m == method.as_str()) {
                dispatch(&state, route, req).await
            } else {
                Err(ApiError::MethodNotAllowed {
                    method: method.to_string(),
                    allow,
                })
            }
        }
    };
    let resp = resp.unwrap_or_else(ApiError::into_response);
    let status = resp.status();
    let method_label = match method {
        Method::GET | Method::POST | Method::PUT | Method::DELETE | Method::HEAD => method.as_str(),
        _ => "other",
    };
    HTTP_REQUESTS
        .with_label_values(&[template, method_label, status.as_str()])
        .inc();
    HTTP_REQUEST_SECONDS
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

type ApiResult = Result<Response<Full<Bytes>>, ApiError>;

async fn dispatch<B>(state: &Arc<ApiState>, route: Route<'_>, req: Request<B>) -> ApiResult
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = req.into_body();
    // `handle` has checked the method against the route's allowed methods,
    // so `_` below stands for the one remaining method.
    match (route, method) {
        (Route::Metrics, _) => metrics(state).await,
        (Route::Status, _) => Ok(status()),
        (Route::OpenApi, _) => Ok(text_response(
            StatusCode::OK,
            "application/yaml",
            OPENAPI_SPEC.to_string(),
        )),
        (Route::Tenants, Method::GET) => Ok(list_tenants(state)),
        (Route::Tenants, _) => create_tenant(state, read_body(body).await?).await,
        (Route::Timelines(t), Method::GET) => list_timelines(state, t).await,
        (Route::Timelines(t), _) => create_timeline(state, t, read_body(body).await?).await,
        (Route::Timeline(t, tl), Method::GET) => timeline_detail(state, t, tl).await,
        (Route::Timeline(t, tl), _) => delete_timeline(state, t, tl).await,
        (Route::WalSource(t, tl), Method::PUT) => {
            set_wal_source(state, t, tl, read_body(body).await?).await
        }
        (Route::WalSource(t, tl), _) => remove_wal_source(state, t, tl).await,
        (Route::Checkpoint(t, tl), _) => checkpoint(state, t, tl).await,
        (Route::DoGc(t, tl), _) => do_gc(state, t, tl, read_body(body).await?).await,
        (Route::Compact(t, tl), _) => compact(state, t, tl).await,
        (Route::LsnByTimestamp(t, tl), _) => lsn_by_timestamp(state, t, tl, &query),
    }
}

// ---------------------------------------------------------------------------
// Path parsing and lookups
// ---------------------------------------------------------------------------

fn parse_tenant_id(s: &str) -> Result<TenantId, ApiError> {
    s.parse()
        .map_err(|e| ApiError::BadRequest(format!("invalid tenant id {s:?}: {e}")))
}

fn parse_timeline_id(s: &str) -> Result<TimelineId, ApiError> {
    s.parse()
        .map_err(|e| ApiError::BadRequest(format!("invalid timeline id {s:?}: {e}")))
}

fn find_tenant(state: &ApiState, t: &str) -> Result<Arc<Tenant>, ApiError> {
    let id = parse_tenant_id(t)?;
    state
        .mgr
        .get(id)
        .ok_or_else(|| ApiError::NotFound(format!("tenant {id} not found")))
}

fn find_timeline(state: &ApiState, t: &str, tl: &str) -> Result<Arc<Timeline>, ApiError> {
    let tenant_id = parse_tenant_id(t)?;
    let timeline_id = parse_timeline_id(tl)?;
    let tenant = find_tenant(state, t)?;
    tenant.get_timeline(timeline_id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "timeline {timeline_id} not found in tenant {tenant_id}"
        ))
    })
}

/// Map a tenant manager refusal: "already exists" is a conflict, "not found"
/// a missing object, anything else `otherwise`.
fn classify(e: anyhow::Error, otherwise: fn(String) -> ApiError) -> ApiError {
    let msg = format!("{e:#}");
    if msg.contains("already exists") {
        ApiError::Conflict(msg)
    } else if msg.contains("not found") {
        ApiError::NotFound(msg)
    } else {
        otherwise(msg)
    }
}

// ---------------------------------------------------------------------------
// Status and metrics
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct StatusResponse {
    /// Process id of this pageserver.
    id: u32,
    version: &'static str,
}

fn status() -> Response<Full<Bytes>> {
    json_response(
        StatusCode::OK,
        &StatusResponse {
            id: std::process::id(),
            version: env!("CARGO_PKG_VERSION"),
        },
    )
}

/// Serializes scrapes: the per-timeline gauges are reset and refilled.
static SCRAPE_LOCK: Mutex<()> = Mutex::new(());

async fn metrics(state: &Arc<ApiState>) -> ApiResult {
    let state = Arc::clone(state);
    blocking(move || {
        let _scraping = SCRAPE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let tenants = state.mgr.list();
        TENANTS.set(tenants.len() as i64);
        WAL_RECEIVERS.set(state.wal_sources.running_count() as i64);
        LAST_RECORD_LSN.reset();
        DISK_CONSISTENT_LSN.reset();
        PHYSICAL_SIZE.reset();
        for tenant in tenants {
            for tl in tenant.list_timelines() {
                let (t, id) = (tl.tenant_id.to_string(), tl.timeline_id.to_string());
                let labels = [t.as_str(), id.as_str()];
                LAST_RECORD_LSN
                    .with_label_values(&labels)
                    .set(tl.last_record_lsn().0 as i64);
                DISK_CONSISTENT_LSN
                    .with_label_values(&labels)
                    .set(tl.disk_consistent_lsn().0 as i64);
                PHYSICAL_SIZE
                    .with_label_values(&labels)
                    .set(tl.physical_size() as i64);
            }
        }
        zenith_metrics::gather_text()
    })
    .await?
    .map(|text| text_response(StatusCode::OK, zenith_metrics::METRICS_CONTENT_TYPE, text))
    .map_err(|e| ApiError::Internal(e.into()))
}

// ---------------------------------------------------------------------------
// Tenants
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct TenantInfo {
    id: TenantId,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateTenantRequest {
    new_tenant_id: Option<TenantId>,
}

fn list_tenants(state: &ApiState) -> Response<Full<Bytes>> {
    let list: Vec<TenantInfo> = state
        .mgr
        .list()
        .iter()
        .map(|t| TenantInfo { id: t.id })
        .collect();
    json_response(StatusCode::OK, &list)
}

async fn create_tenant(state: &Arc<ApiState>, body: Bytes) -> ApiResult {
    let req: CreateTenantRequest = parse_json(&body)?.unwrap_or_default();
    let id = req.new_tenant_id.unwrap_or_else(TenantId::generate);
    if state.mgr.get(id).is_some() {
        return Err(ApiError::Conflict(format!("tenant {id} already exists")));
    }
    let st = Arc::clone(state);
    blocking(move || st.mgr.create_tenant(id))
        .await?
        .map_err(|e| classify(e, |m| ApiError::Internal(anyhow::anyhow!(m))))?;
    Ok(json_response(StatusCode::CREATED, &TenantInfo { id }))
}

// ---------------------------------------------------------------------------
// Timelines
// ---------------------------------------------------------------------------

/// What `GET .../timeline/<id>` returns.
#[derive(Serialize, Debug)]
pub struct TimelineDetail {
    pub timeline_id: TimelineId,
    pub tenant_id: TenantId,
    pub ancestor_timeline_id: Option<TimelineId>,
    pub ancestor_lsn: Option<Lsn>,
    pub last_record_lsn: Lsn,
    pub prev_record_lsn: Lsn,
    pub disk_consistent_lsn: Lsn,
    pub latest_gc_cutoff_lsn: Lsn,
    pub initdb_lsn: Lsn,
    /// Sum of the databases' sizes at `last_record_lsn`; null if it could not
    /// be computed.
    pub current_logical_size: Option<u64>,
    /// Sum of the sizes of the timeline's layer files.
    pub current_physical_size: u64,
    /// The persisted WAL source, password replaced by `***`.
    pub wal_source: Option<String>,
}

fn logical_size(tl: &Timeline, lsn: Lsn) -> Result<u64, TimelineError> {
    let reader = DatadirReader::new(tl, lsn);
    let mut total = 0;
    for (spc, db) in reader.list_dbs()?.keys() {
        total += reader.db_size(*spc, *db)?;
    }
    Ok(total)
}

/// The detail of a timeline. Blocks (reads layers for the logical size).
pub fn describe_timeline(tl: &Timeline) -> TimelineDetail {
    let rl = tl.record_lsn();
    let md = tl.metadata();
    let current_logical_size = match logical_size(tl, rl.last) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id,
                  "cannot compute the logical size at {}: {e}", rl.last);
            None
        }
    };
    let wal_source = match wal_sources::load_persisted(&tl.path) {
        Ok(s) => s.map(|s| wal_sources::redact(&s)),
        Err(e) => {
            warn!("{e:#}");
            None
        }
    };
    TimelineDetail {
        timeline_id: tl.timeline_id,
        tenant_id: tl.tenant_id,
        ancestor_timeline_id: tl.ancestor().map(|(a, _)| a.timeline_id),
        ancestor_lsn: tl.ancestor().map(|(_, lsn)| lsn),
        last_record_lsn: rl.last,
        prev_record_lsn: rl.prev,
        disk_consistent_lsn: md.disk_consistent_lsn,
        latest_gc_cutoff_lsn: md.latest_gc_cutoff_lsn,
        initdb_lsn: md.initdb_lsn,
        current_logical_size,
        current_physical_size: tl.physical_size(),
        wal_source,
    }
}

async fn list_timelines(state: &Arc<ApiState>, t: &str) -> ApiResult {
    let tenant = find_tenant(state, t)?;
    let details = blocking(move || {
        tenant
            .list_timelines()
            .iter()
            .map(|tl| describe_timeline(tl))
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(json_response(StatusCode::OK, &details))
}

async fn timeline_detail(state: &Arc<ApiState>, t: &str, tl: &str) -> ApiResult {
    let tl = find_timeline(state, t, tl)?;
    let detail = blocking(move || describe_timeline(&tl)).await?;
    Ok(json_response(StatusCode::OK, &detail))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateTimelineRequest {
    new_timeline_id: Option<TimelineId>,
    ancestor_timeline_id: Option<TimelineId>,
    ancestor_start_lsn: Option<Lsn>,
    /// Import this cleanly stopped PostgreSQL data directory (a path on the
    /// pageserver's machine) instead of running initdb.
    import_pgdata: Option<String>,
}

async fn create_timeline(state: &Arc<ApiState>, t: &str, body: Bytes) -> ApiResult {
    let tenant = find_tenant(state, t)?;
    let req: CreateTimelineRequest = parse_json(&body)?.unwrap_or_default();
    let id = req.new_timeline_id.unwrap_or_else(TimelineId::generate);
    if tenant.get_timeline(id).is_some() {
        return Err(ApiError::Conflict(format!(
            "timeline {id} already exists in tenant {}",
            tenant.id
        )));
    }
    let tl = match req.ancestor_timeline_id {
        None => {
            if req.ancestor_start_lsn.is_some() {
                return Err(ApiError::BadRequest(
                    "ancestor_start_lsn needs ancestor_timeline_id".into(),
                ));
            }
            match req.import_pgdata {
                Some(dir) => {
                    blocking(move || tenant.import_timeline(id, std::path::Path::new(&dir)))
                        .await?
                        .map_err(|e| {
                            ApiError::BadRequest(format!("importing the data directory: {e:#}"))
                        })?
                }
                None => blocking(move || tenant.bootstrap_timeline(id))
                    .await?
                    .map_err(|e| classify(e, |m| ApiError::Internal(anyhow::anyhow!(m))))?,
            }
        }
        Some(ancestor) => {
            if req.import_pgdata.is_some() {
                return Err(ApiError::BadRequest(
                    "import_pgdata and ancestor_timeline_id cannot be combined".into(),
                ));
            }
            let serial = state.serialize().await;
            if tenant.get_timeline(ancestor).is_none() {
                return Err(ApiError::NotFound(format!(
                    "ancestor timeline {ancestor} not found in tenant {}",
                    tenant.id
                )));
            }
            let lsn = req.ancestor_start_lsn;
            blocking(move || {
                let _serial = serial;
                tenant.branch_timeline(id, ancestor, lsn)
            })
            .await?
            .map_err(|e| classify(e, ApiError::BadRequest))?
        }
    };
    let detail = blocking(move || describe_timeline(&tl)).await?;
    Ok(json_response(StatusCode::CREATED, &detail))
}

#[derive(Serialize)]
struct DeletedTimeline {
    tenant_id: TenantId,
    timeline_id: TimelineId,
}

async fn delete_timeline(state: &Arc<ApiState>, t: &str, tl: &str) -> ApiResult {
    let serial = state.serialize().await;
    let timeline = find_timeline(state, t, tl)?;
    let tenant = find_tenant(state, t)?;
    let (tenant_id, timeline_id) = (timeline.tenant_id, timeline.timeline_id);
    let children: Vec<String> = tenant
        .list_timelines()
        .iter()
        .filter(|c| {
            c.ancestor()
                .is_some_and(|(a, _)| a.timeline_id == timeline_id)
        })
        .map(|c| c.timeline_id.to_string())
        .collect();
    if !children.is_empty() {
        return Err(ApiError::Conflict(format!(
            "timeline {timeline_id} is the ancestor of timelines {}; delete them first",
            children.join(", ")
        )));
    }
    drop(timeline);
    let sources = Arc::clone(&state.wal_sources);
    blocking(move || {
        let _serial = serial;
        sources.stop(tenant_id, timeline_id);
        tenant.remove_timeline(timeline_id)
    })
    .await?
    .map_err(|e| {
        let msg = format!("{e:#}");
        if msg.contains("ancestor of") {
            ApiError::Conflict(msg)
        } else {
            classify(e, |m| ApiError::Internal(anyhow::anyhow!(m)))
        }
    })?;
    Ok(json_response(
        StatusCode::OK,
        &DeletedTimeline {
            tenant_id,
            timeline_id,
        },
    ))
}

// ---------------------------------------------------------------------------
// WAL source
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetWalSourceRequest {
    connstr: String,
}

#[derive(Serialize)]
struct WalSourceResponse {
    /// The connection string (password replaced by `***`), or null.
    wal_source: Option<String>,
}

async fn set_wal_source(state: &Arc<ApiState>, t: &str, tl: &str, body: Bytes) -> ApiResult {
    // Not while the timeline is being deleted (it would get a receiver again).
    let serial = state.serialize().await;
    let timeline = find_timeline(state, t, tl)?;
    let req: SetWalSourceRequest = parse_json(&body)?.ok_or_else(|| {
        ApiError::BadRequest("expected a JSON body {\"connstr\": \"host=... port=...\"}".into())
    })?;
    let sources = Arc::clone(&state.wal_sources);
    let connstr = req.connstr.trim().to_string();
    let shown = wal_sources::redact(&connstr);
    blocking(move || {
        let _serial = serial;
        sources.set(&timeline, &connstr)
    })
    .await?
    .map_err(|e| match e {
        WalSourceError::Invalid(_) => ApiError::BadRequest(e.to_string()),
        WalSourceError::Io(e) => ApiError::Internal(e),
    })?;
    Ok(json_response(
        StatusCode::OK,
        &WalSourceResponse {
            wal_source: Some(shown),
        },
    ))
}

async fn remove_wal_source(state: &Arc<ApiState>, t: &str, tl: &str) -> ApiResult {
    let serial = state.serialize().await;
    let timeline = find_timeline(state, t, tl)?;
    let sources = Arc::clone(&state.wal_sources);
    blocking(move || {
        let _serial = serial;
        sources.remove(&timeline)
    })
    .await??;
    Ok(json_response(
        StatusCode::OK,
        &WalSourceResponse { wal_source: None },
    ))
}

// ---------------------------------------------------------------------------
// Maintenance
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct CheckpointResponse {
    disk_consistent_lsn: Lsn,
    last_record_lsn: Lsn,
}

async fn checkpoint(state: &Arc<ApiState>, t: &str, tl: &str) -> ApiResult {
    let timeline = find_timeline(state, t, tl)?;
    let resp = blocking(move || {
        timeline
            .freeze_and_flush()
            .map(|()| CheckpointResponse {
                disk_consistent_lsn: timeline.disk_consistent_lsn(),
                last_record_lsn: timeline.last_record_lsn(),
            })
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("checkpoint failed: {e}")))
    })
    .await??;
    Ok(json_response(StatusCode::OK, &resp))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GcRequest {
    /// Bytes of WAL history to keep below the last record (default: the
    /// tenant configuration's `gc_horizon`).
    gc_horizon: Option<u64>,
    /// History to keep by age, e.g. "0s" or "1h" (default: the tenant
    /// configuration's `pitr_interval`).
    pitr_interval: Option<String>,
}

#[derive(Serialize)]
struct GcResponse {
    cutoff: Lsn,
    layers_total: usize,
    layers_removed: usize,
    bytes_removed: u64,
}

async fn do_gc(state: &Arc<ApiState>, t: &str, tl: &str, body: Bytes) -> ApiResult {
    let timeline = find_timeline(state, t, tl)?;
    let tenant = find_tenant(state, t)?;
    let req: GcRequest = parse_json(&body)?.unwrap_or_default();
    let horizon = req
        .gc_horizon
        .unwrap_or(state.conf.tenant_config.gc_horizon);
    let pitr = match &req.pitr_interval {
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            ApiError::BadRequest(format!(
                "invalid pitr_interval {s:?}: {e} (e.g. \"0s\", \"1h\")"
            ))
        })?,
        None => state.conf.tenant_config.pitr_interval,
    };
    // No branch may be created below the cutoff while GC runs.
    let serial = state.serialize().await;
    let id = timeline.timeline_id;
    let r = blocking(move || {
        let _serial = serial;
        tenant.gc_timeline(id, horizon, pitr)
    })
    .await?
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("GC failed: {e}")))?;
    Ok(json_response(
        StatusCode::OK,
        &GcResponse {
            cutoff: r.cutoff,
            layers_total: r.layers_total,
            layers_removed: r.layers_removed,
            bytes_removed: r.bytes_removed,
        },
    ))
}

#[derive(Serialize)]
struct CompactResponse {
    /// L1 delta layers written by merging L0 layers (0: fewer than two L0s).
    l1_layers_written: usize,
    /// The image layer created, if enough deltas were above the last one.
    image_layer: Option<String>,
}

async fn compact(state: &Arc<ApiState>, t: &str, tl: &str) -> ApiResult {
    let timeline = find_timeline(state, t, tl)?;
    let resp = blocking(move || -> Result<CompactResponse, ApiError> {
        let l1_layers_written = timeline
            .compact(true)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("compaction failed: {e}")))?;
        let image_layer = timeline
            .create_image_layer(false)
            .map_err(|e| {
                ApiError::Internal(anyhow::anyhow!(
                    "{l1_layers_written} L1 layers written, then image layer creation failed: {e}"
                ))
            })?
            .map(|n| n.to_string());
        Ok(CompactResponse {
            l1_layers_written,
            image_layer,
        })
    })
    .await??;
    Ok(json_response(StatusCode::OK, &resp))
}

fn lsn_by_timestamp(state: &ApiState, t: &str, tl: &str, query: &str) -> ApiResult {
    let timeline = find_timeline(state, t, tl)?;
    let ts = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "timestamp")
        .map(|(_, v)| percent_decode(v))
        .ok_or_else(|| {
            ApiError::BadRequest(
                "missing query parameter timestamp (ISO 8601, e.g. 2024-01-31T12:00:00Z)".into(),
            )
        })?;
    let time = humantime::parse_rfc3339_weak(&ts)
        .map_err(|e| ApiError::BadRequest(format!("invalid timestamp {ts:?}: {e}")))?;
    let pg_ts = postgres_ffi::xlog_utils::to_pg_timestamp(time);
    use crate::tenant::lsn_by_time::LsnForTimestamp::*;
    let (kind, lsn) = match timeline
        .find_lsn_for_timestamp(pg_ts)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("searching commit times: {e}")))?
    {
        Present(l) => ("present", l),
        Future(l) => ("future", l),
        Past(l) => ("past", l),
        NoData(l) => ("nodata", l),
    };
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "lsn": lsn.to_string(), "kind": kind }),
    ))
}

/// Decode `%XX` escapes and `+` (a query string value).
fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_templates() {
        let t = "0123456789abcdef0123456789abcdef";
        let cases = [
            ("/metrics", "/metrics"),
            ("/v1/status", "/v1/status"),
            ("/v1/tenant/", "/v1/tenant"),
            (
                &*format!("/v1/tenant/{t}/timeline"),
                "/v1/tenant/{tenant_id}/timeline",
            ),
            (
                &*format!("/v1/tenant/{t}/timeline/{t}/checkpoint"),
                tpl::CHECKPOINT,
            ),
        ];
        for (path, template) in cases {
            let r = Route::find(path).unwrap_or_else(|| panic!("{path} not routed"));
            assert_eq!(r.describe().0, template);
        }
        for path in [
            "",
            "/",
            "/v1",
            "/v1/tenant/x/y",
            "/v1/tenant/a/timeline/b/nope",
            "//v1/status",
        ] {
            assert!(Route::find(path).is_none(), "{path} routed");
        }
    }

    #[test]
    fn every_route_is_in_the_openapi_spec() {
        for template in ROUTE_TEMPLATES {
            assert!(
                OPENAPI_SPEC.contains(&format!("\n  {template}:\n")),
                "{template} is missing from openapi_spec.yml"
            );
        }
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            percent_decode("2024-01-31T12%3A00%3A00Z"),
            "2024-01-31T12:00:00Z"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
