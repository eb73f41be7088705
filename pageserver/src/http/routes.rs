//! Routing and handlers of the HTTP API (see `openapi_spec.yml`).
//!
//! [`router`] lists the routes; the shared [`Router`] answers unknown paths
//! (404) and wrong methods (405). Each handler parses the ids and LSNs in
//! the path (400) and looks the tenant and timeline up (404) before doing
//! anything.

use std::sync::{Arc, LazyLock, Mutex};

use hyper::StatusCode;
use tracing::warn;
use zenith_metrics::{register_int_gauge, register_int_gauge_vec, IntGauge, IntGaugeVec};
use zenith_utils::api::pageserver::{
    CheckpointResponse, CompactResponse, GcRequest, GcResponse, LsnByTimestampResponse,
    LsnTimestampKind, TenantCreateRequest, TenantInfo, TimelineCreateRequest, TimelineDeleted,
    TimelineInfo, TimelineState, WalSourceRequest, WalSourceResponse,
};
use zenith_utils::auth::{AuthError, Claims, JwtAuth, Scope};
use zenith_utils::http::{
    blocking, json_response, text_response, ApiError, ApiRequest, ApiResult, HttpConf, RouteMatch,
    Router,
};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use super::{ApiState, OPENAPI_SPEC};
use crate::pgdatadir_mapping::DatadirReader;
use crate::tenant::timeline::{Timeline, TimelineError};
use crate::tenant::Tenant;
use crate::wal_sources::{self, WalSourceError};
use crate::walreceiver::WalSource;

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

static REMOTE_CONSISTENT_LSN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "pageserver_remote_consistent_lsn",
        "WAL position up to which the timeline is in remote storage: the disk_consistent_lsn of \
         its last uploaded index (updated on scrape; absent without remote storage)",
        &["tenant_id", "timeline_id"]
    )
    .expect("registering pageserver_remote_consistent_lsn")
});

static REMOTE_QUEUED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "pageserver_remote_upload_queue_length",
        "Uploads (layer files and indexes) scheduled and not done, per timeline (updated on scrape)",
        &["tenant_id", "timeline_id"]
    )
    .expect("registering pageserver_remote_upload_queue_length")
});

static PHYSICAL_SIZE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "pageserver_current_physical_size_bytes",
        "Bytes of layer files per timeline (updated on scrape)",
        &["tenant_id", "timeline_id"]
    )
    .expect("registering pageserver_current_physical_size_bytes")
});

static LAYERS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "pageserver_layers",
        "Layer files per timeline and kind (delta, image) (updated on scrape)",
        &["tenant_id", "timeline_id", "kind"]
    )
    .expect("registering pageserver_layers")
});

static LAYER_BYTES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "pageserver_layer_bytes",
        "Bytes of layer files per timeline and kind (delta, image) (updated on scrape)",
        &["tenant_id", "timeline_id", "kind"]
    )
    .expect("registering pageserver_layer_bytes")
});

static TIMELINE_BROKEN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "pageserver_timeline_broken",
        "1 if the timeline is broken (ingest stopped, or not loaded), else 0 (updated on scrape)",
        &["tenant_id", "timeline_id"]
    )
    .expect("registering pageserver_timeline_broken")
});

static WAL_RECEIVERS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "pageserver_wal_receivers",
        "Running WAL receivers (updated on scrape)"
    )
    .expect("registering pageserver_wal_receivers")
});

static BROKEN_TIMELINES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "pageserver_broken_timelines",
        "Timelines that failed (ingest stopped, or not loaded) (updated on scrape)"
    )
    .expect("registering pageserver_broken_timelines")
});

static TENANTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("pageserver_tenants", "Tenants loaded (updated on scrape)")
        .expect("registering pageserver_tenants")
});

/// The pageserver's API: every route, with the per-timeline gauges
/// refreshed on each `/metrics` scrape.
pub fn router(auth: Option<Arc<JwtAuth>>) -> Router<ApiState> {
    const TL: &str = "/v1/tenant/{tenant_id}/timeline/{timeline_id}";
    crate::register_metrics();
    Router::new("pageserver", env!("CARGO_PKG_VERSION"), HttpConf::default())
        .with_auth(auth, authorize)
        .on_scrape(refresh_gauges)
        .get("/v1/openapi.yml", |_, _| async {
            Ok(text_response(
                StatusCode::OK,
                "application/yaml",
                OPENAPI_SPEC.to_string(),
            ))
        })
        .get("/v1/tenant", list_tenants)
        .post("/v1/tenant", create_tenant)
        .get("/v1/tenant/{tenant_id}/timeline", list_timelines)
        .post("/v1/tenant/{tenant_id}/timeline", create_timeline)
        .get(TL, timeline_detail)
        .delete(TL, delete_timeline)
        .put(tpl::WAL_SOURCE, set_wal_source)
        .delete(tpl::WAL_SOURCE, remove_wal_source)
        .put(tpl::CHECKPOINT, checkpoint)
        .put(tpl::DO_GC, do_gc)
        .put(tpl::COMPACT, compact)
        .get(tpl::LSN_BY_TIMESTAMP, lsn_by_timestamp)
        .with_failpoints()
}

/// Who may call what with auth on: a `pageserverapi` token everything; a
/// `tenant` token the routes of its own tenant, except those that reach
/// outside the tenant's data or destroy history (WAL sources, GC);
/// any valid token the API description.
fn authorize(route: &RouteMatch<'_>, claims: &Claims) -> Result<(), AuthError> {
    if route.template == "/v1/openapi.yml" {
        return Ok(());
    }
    let management_only = matches!(route.template, tpl::WAL_SOURCE | tpl::DO_GC);
    match route.param("tenant_id").map(str::parse::<TenantId>) {
        Some(Ok(tenant)) if !management_only => claims.check_tenant(tenant),
        _ => claims.check_scope(Scope::PageServerApi),
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
    state.mgr.get(id).ok_or_else(|| {
        match state
            .mgr
            .broken_tenants()
            .into_iter()
            .find(|(b, _)| *b == id)
        {
            Some((_, reason)) => ApiError::Conflict(format!("tenant {id} is broken: {reason}")),
            None => ApiError::NotFound(format!("tenant {id} not found")),
        }
    })
}

fn find_timeline(state: &ApiState, t: &str, tl: &str) -> Result<Arc<Timeline>, ApiError> {
    let tenant_id = parse_tenant_id(t)?;
    let timeline_id = parse_timeline_id(tl)?;
    let tenant = find_tenant(state, t)?;
    tenant
        .get_timeline(timeline_id)
        .ok_or_else(|| match tenant.broken_reason(timeline_id) {
            Some(reason) => ApiError::Conflict(format!(
                "timeline {timeline_id} of tenant {tenant_id} is broken: {reason}"
            )),
            None => ApiError::NotFound(format!(
                "timeline {timeline_id} not found in tenant {tenant_id}"
            )),
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

/// Serializes scrapes: the per-timeline gauges are reset and refilled.
static SCRAPE_LOCK: Mutex<()> = Mutex::new(());

/// Refreshes the gauges that describe current state (runs on a blocking
/// thread before each scrape).
fn refresh_gauges(state: &ApiState) {
    let _scraping = SCRAPE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let tenants = state.mgr.list();
    TENANTS.set(tenants.len() as i64);
    let broken: usize = tenants
        .iter()
        .map(|t| {
            t.broken_timelines().len()
                + t.list_timelines()
                    .iter()
                    .filter(|tl| tl.broken_reason().is_some())
                    .count()
        })
        .sum();
    BROKEN_TIMELINES.set(broken as i64);
    WAL_RECEIVERS.set(state.wal_sources.running_count() as i64);
    LAST_RECORD_LSN.reset();
    DISK_CONSISTENT_LSN.reset();
    PHYSICAL_SIZE.reset();
    LAYERS.reset();
    LAYER_BYTES.reset();
    TIMELINE_BROKEN.reset();
    for tenant in tenants {
        let t = tenant.id.to_string();
        for (id, _) in tenant.broken_timelines() {
            let id = id.to_string();
            TIMELINE_BROKEN.with_label_values(&[&t, &id]).set(1);
        }
        for tl in tenant.list_timelines() {
            let id = tl.timeline_id.to_string();
            let labels = [t.as_str(), id.as_str()];
            TIMELINE_BROKEN
                .with_label_values(&labels)
                .set(i64::from(tl.broken_reason().is_some()));
            let (mut count, mut bytes) = ([0i64; 2], [0i64; 2]);
            for l in tl.layer_snapshot().iter() {
                let k = usize::from(!l.is_delta());
                count[k] += 1;
                bytes[k] += i64::try_from(l.file_size).unwrap_or(i64::MAX);
            }
            for (k, kind) in ["delta", "image"].into_iter().enumerate() {
                let kl = [t.as_str(), id.as_str(), kind];
                LAYERS.with_label_values(&kl).set(count[k]);
                LAYER_BYTES.with_label_values(&kl).set(bytes[k]);
            }
            LAST_RECORD_LSN
                .with_label_values(&labels)
                .set(tl.last_record_lsn().0 as i64);
            DISK_CONSISTENT_LSN
                .with_label_values(&labels)
                .set(tl.disk_consistent_lsn().0 as i64);
            if let Some(remote) = tl.remote() {
                REMOTE_CONSISTENT_LSN
                    .with_label_values(&labels)
                    .set(remote.remote_consistent_lsn().0 as i64);
                REMOTE_QUEUED
                    .with_label_values(&labels)
                    .set(remote.queued() as i64);
            }
            PHYSICAL_SIZE
                .with_label_values(&labels)
                .set(tl.physical_size() as i64);
        }
    }
}

// ---------------------------------------------------------------------------
// Tenants
// ---------------------------------------------------------------------------

async fn list_tenants(state: Arc<ApiState>, _req: ApiRequest) -> ApiResult {
    let list: Vec<TenantInfo> = state
        .mgr
        .list()
        .iter()
        .map(|t| TenantInfo { id: t.id })
        .collect();
    Ok(json_response(StatusCode::OK, &list))
}

async fn create_tenant(state: Arc<ApiState>, req: ApiRequest) -> ApiResult {
    let req: TenantCreateRequest = req.json()?.unwrap_or_default();
    let id = req.new_tenant_id.unwrap_or_else(TenantId::generate);
    if state.mgr.get(id).is_some() {
        return Err(ApiError::Conflict(format!("tenant {id} already exists")));
    }
    let st = Arc::clone(&state);
    blocking(move || st.mgr.create_tenant(id))
        .await?
        .map_err(|e| classify(e, |m| ApiError::Internal(anyhow::anyhow!(m))))?;
    Ok(json_response(StatusCode::CREATED, &TenantInfo { id }))
}

// ---------------------------------------------------------------------------
// Timelines
// ---------------------------------------------------------------------------

fn logical_size(tl: &Timeline, lsn: Lsn) -> Result<u64, TimelineError> {
    let reader = DatadirReader::new(tl, lsn);
    let mut total = 0;
    for (spc, db) in reader.list_dbs()?.keys() {
        total += reader.db_size(*spc, *db)?;
    }
    Ok(total)
}

/// The detail of a timeline. Blocks (reads layers for the logical size).
pub fn describe_timeline(tl: &Timeline) -> TimelineInfo {
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
    let broken_reason = tl.broken_reason();
    TimelineInfo {
        timeline_id: tl.timeline_id,
        tenant_id: tl.tenant_id,
        state: if broken_reason.is_some() {
            TimelineState::Broken
        } else {
            TimelineState::Active
        },
        broken_reason,
        ancestor_timeline_id: tl.ancestor().map(|(a, _)| a.timeline_id),
        ancestor_lsn: tl.ancestor().map(|(_, lsn)| lsn),
        last_record_lsn: rl.last,
        prev_record_lsn: rl.prev,
        disk_consistent_lsn: md.disk_consistent_lsn,
        remote_consistent_lsn: tl.remote().map(|r| r.remote_consistent_lsn()),
        latest_gc_cutoff_lsn: md.latest_gc_cutoff_lsn,
        initdb_lsn: md.initdb_lsn,
        current_logical_size,
        current_physical_size: tl.physical_size(),
        wal_source,
    }
}

/// What is known of a timeline that could not be loaded.
fn describe_broken(tenant_id: TenantId, timeline_id: TimelineId, reason: String) -> TimelineInfo {
    TimelineInfo {
        timeline_id,
        tenant_id,
        state: TimelineState::Broken,
        broken_reason: Some(reason),
        ancestor_timeline_id: None,
        ancestor_lsn: None,
        last_record_lsn: Lsn(0),
        prev_record_lsn: Lsn(0),
        disk_consistent_lsn: Lsn(0),
        remote_consistent_lsn: None,
        latest_gc_cutoff_lsn: Lsn(0),
        initdb_lsn: Lsn(0),
        current_logical_size: None,
        current_physical_size: 0,
        wal_source: None,
    }
}

async fn list_timelines(state: Arc<ApiState>, req: ApiRequest) -> ApiResult {
    let t = req.param("tenant_id")?;
    let tenant = find_tenant(&state, t)?;
    let details = blocking(move || {
        let mut all: Vec<TimelineInfo> = tenant
            .list_timelines()
            .iter()
            .map(|tl| describe_timeline(tl))
            .collect();
        all.extend(
            tenant
                .broken_timelines()
                .into_iter()
                .map(|(id, reason)| describe_broken(tenant.id, id, reason)),
        );
        all
    })
    .await?;
    Ok(json_response(StatusCode::OK, &details))
}

async fn timeline_detail(state: Arc<ApiState>, req: ApiRequest) -> ApiResult {
    let (t, tl) = (req.param("tenant_id")?, req.param("timeline_id")?);
    let tenant = find_tenant(&state, t)?;
    let id = parse_timeline_id(tl)?;
    if let Some(reason) = tenant.broken_reason(id) {
        return Ok(json_response(
            StatusCode::OK,
            &describe_broken(tenant.id, id, reason),
        ));
    }
    let tl = find_timeline(&state, t, tl)?;
    let detail = blocking(move || describe_timeline(&tl)).await?;
    Ok(json_response(StatusCode::OK, &detail))
}

async fn create_timeline(state: Arc<ApiState>, req: ApiRequest) -> ApiResult {
    let t = req.param("tenant_id")?;
    let tenant = find_tenant(&state, t)?;
    let req: TimelineCreateRequest = req.json()?.unwrap_or_default();
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
                    let dir = state
                        .conf
                        .check_import_dir(std::path::Path::new(&dir))
                        .map_err(ApiError::Forbidden)?;
                    blocking(move || tenant.import_timeline(id, &dir))
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

async fn delete_timeline(state: Arc<ApiState>, req: ApiRequest) -> ApiResult {
    let (t, tl) = (req.param("tenant_id")?, req.param("timeline_id")?);
    let serial = state.serialize().await;
    {
        // A timeline that could not be loaded can still be deleted.
        let tenant = find_tenant(&state, t)?;
        let id = parse_timeline_id(tl)?;
        if tenant.broken_reason(id).is_some() {
            blocking(move || {
                let _serial = serial;
                tenant.remove_timeline(id)
            })
            .await?
            .map_err(|e| classify(e, |m| ApiError::Internal(anyhow::anyhow!(m))))?;
            return Ok(json_response(
                StatusCode::OK,
                &TimelineDeleted {
                    tenant_id: parse_tenant_id(t)?,
                    timeline_id: id,
                },
            ));
        }
    }
    let timeline = find_timeline(&state, t, tl)?;
    let tenant = find_tenant(&state, t)?;
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
        &TimelineDeleted {
            tenant_id,
            timeline_id,
        },
    ))
}

// ---------------------------------------------------------------------------
// WAL source
// ---------------------------------------------------------------------------

async fn set_wal_source(state: Arc<ApiState>, req: ApiRequest) -> ApiResult {
    let (t, tl) = (req.param("tenant_id")?, req.param("timeline_id")?);
    // Not while the timeline is being deleted (it would get a receiver again).
    let serial = state.serialize().await;
    let timeline = find_timeline(&state, t, tl)?;
    let req: WalSourceRequest = req.json()?.ok_or_else(|| {
        ApiError::BadRequest("expected a JSON body {\"connstr\": \"host=... port=...\"}".into())
    })?;
    let sources = Arc::clone(&state.wal_sources);
    let connstr = req.connstr.trim().to_string();
    let source = WalSource::parse(&connstr).map_err(|e| ApiError::BadRequest(format!("{e:#}")))?;
    for host in source.hosts() {
        state
            .conf
            .check_wal_source_host(host)
            .map_err(ApiError::Forbidden)?;
    }
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

async fn remove_wal_source(state: Arc<ApiState>, req: ApiRequest) -> ApiResult {
    let (t, tl) = (req.param("tenant_id")?, req.param("timeline_id")?);
    let serial = state.serialize().await;
    let timeline = find_timeline(&state, t, tl)?;
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

async fn checkpoint(state: Arc<ApiState>, req: ApiRequest) -> ApiResult {
    let (t, tl) = (req.param("tenant_id")?, req.param("timeline_id")?);
    let timeline = find_timeline(&state, t, tl)?;
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

async fn do_gc(state: Arc<ApiState>, req: ApiRequest) -> ApiResult {
    let (t, tl) = (req.param("tenant_id")?, req.param("timeline_id")?);
    let timeline = find_timeline(&state, t, tl)?;
    let tenant = find_tenant(&state, t)?;
    let req: GcRequest = req.json()?.unwrap_or_default();
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

async fn compact(state: Arc<ApiState>, req: ApiRequest) -> ApiResult {
    let (t, tl) = (req.param("tenant_id")?, req.param("timeline_id")?);
    let timeline = find_timeline(&state, t, tl)?;
    let tenant = find_tenant(&state, t)?;
    let id = timeline.timeline_id;
    let (l1_layers_written, images) = blocking(move || tenant.compact_timeline(id))
        .await?
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("{e:#}")))?;
    Ok(json_response(
        StatusCode::OK,
        &CompactResponse {
            l1_layers_written,
            image_layer: images.last().map(|n| n.to_string()),
            image_layers: images.iter().map(|n| n.to_string()).collect(),
        },
    ))
}

async fn lsn_by_timestamp(state: Arc<ApiState>, req: ApiRequest) -> ApiResult {
    let (t, tl) = (req.param("tenant_id")?, req.param("timeline_id")?);
    let timeline = find_timeline(&state, t, tl)?;
    let ts = req.query_param("timestamp").ok_or_else(|| {
        ApiError::BadRequest(
            "missing query parameter timestamp (ISO 8601, e.g. 2024-01-31T12:00:00Z)".into(),
        )
    })?;
    let time = humantime::parse_rfc3339_weak(&ts)
        .map_err(|e| ApiError::BadRequest(format!("invalid timestamp {ts:?}: {e}")))?;
    let pg_ts = postgres_ffi::xlog_utils::to_pg_timestamp(time);
    use crate::tenant::timeline::lsn_by_time::LsnForTimestamp::*;
    // A binary search over commit records: layer reads, maybe WAL redo.
    let found = blocking(move || timeline.find_lsn_for_timestamp(pg_ts))
        .await?
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("searching commit times: {e}")))?;
    let (kind, lsn) = match found {
        Present(l) => (LsnTimestampKind::Present, l),
        Future(l) => (LsnTimestampKind::Future, l),
        Past(l) => (LsnTimestampKind::Past, l),
        NoData(l) => (LsnTimestampKind::NoData, l),
    };
    Ok(json_response(
        StatusCode::OK,
        &LsnByTimestampResponse { lsn, kind },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_openapi_spec() {
        for template in router(None).templates() {
            assert!(
                OPENAPI_SPEC.contains(&format!("\n  {template}:\n")),
                "{template} is missing from openapi_spec.yml"
            );
        }
    }
}
