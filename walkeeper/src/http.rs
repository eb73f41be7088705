//! The walkeeper's HTTP API, on the shared kit ([`zenith_utils::http`]):
//!
//! - `GET /v1/status`: process id and version (from the kit), plus
//! - `GET /v1/walkeeper`: this walkeeper's id and its timelines;
//! - `GET /v1/tenant/{tenant_id}/timeline/{timeline_id}`: a timeline's
//!   term, epoch, term history, flush/commit/truncate LSNs, the connected
//!   proposer and replication clients, the pageserver's last feedback
//!   (404 with a JSON body for an unknown timeline, 400 for a bad id);
//! - `GET /metrics`.

use std::sync::{Arc, LazyLock, Mutex};

use hyper::StatusCode;
use prometheus::{register_int_gauge, register_int_gauge_vec, IntGauge, IntGaugeVec};
use zenith_utils::auth::{JwtAuth, Scope};
use zenith_utils::http::{json_response, ApiError, ApiRequest, ApiResult, HttpConf, Router};
use zenith_utils::id::{TenantId, TimelineId};

use crate::timeline::Timelines;
use zenith_utils::api::walkeeper::WalkeeperStatus;

pub struct HttpState {
    pub node_id: u64,
    pub timelines: Arc<Timelines>,
}

static TIMELINES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "walkeeper_timelines",
        "Timelines on this walkeeper (updated on scrape)"
    )
    .expect("registering walkeeper_timelines")
});

static FLUSH_LSN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "walkeeper_flush_lsn",
        "End of the WAL this walkeeper has fsynced, per timeline (updated on scrape)",
        &["tenant_id", "timeline_id"]
    )
    .expect("registering walkeeper_flush_lsn")
});

static COMMIT_LSN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "walkeeper_commit_lsn",
        "WAL position a quorum has acknowledged, as known here, per timeline (updated on scrape)",
        &["tenant_id", "timeline_id"]
    )
    .expect("registering walkeeper_commit_lsn")
});

static CONNECTED_PROPOSERS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "walkeeper_connected_proposers",
        "Timelines with a proposer (a compute's walproposer) connected (updated on scrape)"
    )
    .expect("registering walkeeper_connected_proposers")
});

/// Serializes scrapes: the per-timeline gauges are reset and refilled.
static SCRAPE_LOCK: Mutex<()> = Mutex::new(());

/// Refreshes the gauges that describe current state (before each scrape).
fn refresh_gauges(s: &HttpState) {
    let _scraping = SCRAPE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let timelines = s.timelines.all();
    TIMELINES.set(timelines.len() as i64);
    FLUSH_LSN.reset();
    COMMIT_LSN.reset();
    let mut proposers = 0;
    for tl in &timelines {
        let (t, id) = (tl.tenant_id.to_string(), tl.timeline_id.to_string());
        let labels = [t.as_str(), id.as_str()];
        let (flush, commit) = tl.flush_and_commit_lsn();
        FLUSH_LSN.with_label_values(&labels).set(lsn_gauge(flush));
        COMMIT_LSN.with_label_values(&labels).set(lsn_gauge(commit));
        proposers += i64::from(tl.has_proposer());
    }
    CONNECTED_PROPOSERS.set(proposers);
}

/// An LSN as a gauge value (LSNs never reach 2^63 in practice).
fn lsn_gauge(lsn: zenith_utils::lsn::Lsn) -> i64 {
    i64::try_from(lsn.0).unwrap_or(i64::MAX)
}

/// The walkeeper's API; with `auth`, every route but `/metrics` and
/// `/v1/status` needs a `walkeeperdata` token (bound to the route's tenant,
/// if the token names one).
pub fn router(auth: Option<Arc<JwtAuth>>) -> Router<HttpState> {
    crate::wal_storage::register_metrics();
    Router::new("walkeeper", env!("CARGO_PKG_VERSION"), HttpConf::default())
        .with_auth(auth, |route, claims| {
            match route.param("tenant_id").map(str::parse::<TenantId>) {
                Some(Ok(tenant)) => claims.check_walkeeper(tenant),
                _ => claims.check_scope(Scope::WalkeeperData),
            }
        })
        .on_scrape(refresh_gauges)
        .get("/v1/walkeeper", |s: Arc<HttpState>, _req| async move {
            let timelines = s.timelines.all().iter().map(|t| t.status()).collect();
            Ok(json_response(
                StatusCode::OK,
                &WalkeeperStatus {
                    id: s.node_id,
                    timelines,
                },
            ))
        })
        .get(
            "/v1/tenant/{tenant_id}/timeline/{timeline_id}",
            timeline_status,
        )
        .with_failpoints()
}

async fn timeline_status(s: Arc<HttpState>, req: ApiRequest) -> ApiResult {
    let t = req.param("tenant_id")?;
    let tenant_id: TenantId = t
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("invalid tenant id {t:?}: {e}")))?;
    let l = req.param("timeline_id")?;
    let timeline_id: TimelineId = l
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("invalid timeline id {l:?}: {e}")))?;
    let tl = s.timelines.get(tenant_id, timeline_id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "timeline {timeline_id} of tenant {tenant_id} is not on this walkeeper"
        ))
    })?;
    Ok(json_response(StatusCode::OK, &tl.status()))
}
