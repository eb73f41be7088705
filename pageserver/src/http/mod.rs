//! The pageserver's HTTP management API (docs/architecture.md §10).
//!
//! JSON over HTTP/1.1, served by the shared kit in [`zenith_utils::http`]
//! (routing, `{"msg": ...}` errors with 4xx/5xx, body limit, timeouts,
//! `/metrics`, `/v1/status`, graceful shutdown). The routes are described in
//! `openapi_spec.yml` beside this file (also served at `GET /v1/openapi.yml`)
//! and summarized in `docs/pageserver.md`; [`routes`] implements them, with
//! the bodies defined in [`zenith_utils::api::pageserver`] so that the
//! control plane reads exactly what is written here.
//!
//! Conventions:
//! - A malformed id, LSN or JSON body is 400, an unknown tenant or timeline
//!   404, a conflict with existing state 409,
//!   anything else 500.
//! - With auth on (`auth_type = "ZenithJWT"`), a missing or invalid token is
//!   401 and a token that does not cover the route is 403
//!   ([`routes::router`]'s policy); `import_pgdata` outside
//!   `import_pgdata_dirs` and WAL sources on hosts outside
//!   `wal_source_allowed_hosts` are 403 whatever the token.
//! - Ids are 32 hex characters, LSNs `X/Y` strings, in paths and bodies alike.
//! - Work that blocks (initdb and import, flushing layers, stopping a WAL
//!   receiver, fsyncs, reads of layer files) runs in `spawn_blocking`, never
//!   on the async workers.

pub mod routes;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use zenith_utils::auth::JwtAuth;

use crate::config::PageServerConf;
use crate::tenant_mgr::TenantManager;
use crate::wal_sources::WalSources;

pub use routes::router;

/// The OpenAPI 3 description of this API.
pub const OPENAPI_SPEC: &str = include_str!("openapi_spec.yml");

/// What the handlers work on.
pub struct ApiState {
    pub mgr: Arc<TenantManager>,
    pub conf: Arc<PageServerConf>,
    pub wal_sources: Arc<WalSources>,
    /// Checks tokens when auth is on.
    pub auth: Option<Arc<JwtAuth>>,
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
        auth: Option<Arc<JwtAuth>>,
    ) -> ApiState {
        ApiState {
            mgr,
            conf,
            wal_sources,
            auth,
            timeline_ops: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Wait for the other timeline-changing operations (see `timeline_ops`).
    /// The guard is owned so that it can move into the blocking work: it is
    /// held until that work ends even if the client goes away.
    pub(crate) async fn serialize(&self) -> tokio::sync::OwnedMutexGuard<()> {
        Arc::clone(&self.timeline_ops).lock_owned().await
    }
}

/// Serves the API on `listener` until `shutdown` becomes true (or its sender
/// is dropped).
pub async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let router = Arc::new(router(state.auth.clone()));
    zenith_utils::http::serve(listener, router, state, shutdown).await?;
    Ok(())
}
