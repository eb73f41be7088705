//! Every tenant of the pageserver: loading them at startup (a tenant whose
//! directory cannot be read is reported broken, the others are served),
//! creating and listing them, and shutting them all down. It sits above the
//! storage (`tenant`) and the data model (`pgdatadir_mapping`) and hands
//! each tenant the data model's pieces the storage needs: the WAL redo
//! manager and the live keyspace that image layers hold.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context};
use tracing::info;
use zenith_utils::crashsafe;
use zenith_utils::id::{TenantId, TimelineId};

use crate::config::PageServerConf;
use crate::pgdatadir_mapping::live_keyspace;
use crate::tenant::remote_timeline::index::Generation;
use crate::tenant::remote_timeline::TenantRemote;
use crate::tenant::timeline::Timeline;
pub use crate::tenant::Tenant;
use crate::walredo::PostgresRedoManager;
use zenith_utils::remote_storage::RemoteStorage;

/// All tenants of this pageserver.
pub struct TenantManager {
    workdir: PathBuf,
    conf: Arc<PageServerConf>,
    tenants: RwLock<HashMap<TenantId, Arc<Tenant>>>,
    /// Ids of tenants being created (see [`TenantManager::create_tenant`]).
    creating: std::sync::Mutex<HashSet<TenantId>>,
    /// Tenants whose directory could not be read at startup, with the
    /// reason; the others are served.
    broken_tenants: RwLock<BTreeMap<TenantId, String>>,
    /// Remote storage of every tenant, if configured.
    remote: Option<TenantRemote>,
}

/// How long a shutdown waits for the upload queues to empty.
const UPLOADS_AT_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(10);

/// `<workdir>/generation`: the generation of this pageserver's last start.
pub const GENERATION_FILE_NAME: &str = "generation";

/// This start's generation: one above the last start's, persisted before
/// anything is uploaded with it. (Until the control plane issues them, each
/// pageserver counts its own starts.)
fn next_generation(workdir: &Path) -> anyhow::Result<Generation> {
    let path = workdir.join(GENERATION_FILE_NAME);
    let last = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .with_context(|| format!("{} holds {text:?}, not a generation", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let next = last
        .checked_add(1)
        .with_context(|| format!("{}: generations exhausted", path.display()))?;
    crashsafe::write_file_atomic(&path, format!("{next}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Generation(next))
}

impl TenantManager {
    /// Load every tenant under `<workdir>/tenants`. With remote storage,
    /// this start gets the next generation and the upload workers run on
    /// the current tokio runtime (call it from a blocking task of one).
    pub fn load(workdir: &Path, conf: Arc<PageServerConf>) -> anyhow::Result<TenantManager> {
        let remote = match &conf.remote_storage {
            Some(rs) => {
                let storage = RemoteStorage::new(rs)?;
                let runtime = tokio::runtime::Handle::try_current()
                    .context("remote storage needs a tokio runtime")?;
                let generation = next_generation(workdir)?;
                info!(%generation, "uploading layers to {storage}");
                Some(TenantRemote {
                    storage,
                    runtime,
                    generation,
                })
            }
            None => None,
        };
        let mgr = TenantManager {
            remote,
            workdir: workdir.to_path_buf(),
            conf,
            tenants: RwLock::new(HashMap::new()),
            creating: std::sync::Mutex::new(HashSet::new()),
            broken_tenants: RwLock::new(BTreeMap::new()),
        };
        let dir = mgr.tenants_dir();
        crashsafe::create_dir_all_durable(&dir)?;
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            if let Ok(id) = e.file_name().to_string_lossy().parse::<TenantId>() {
                let t = mgr.make_tenant(id);
                match t.load().and_then(|()| Ok(t.start_tasks()?)) {
                    Ok(()) => {
                        mgr.tenants
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(id, t);
                    }
                    Err(err) => {
                        tracing::error!(tenant_id = %id, "tenant is broken: {err:#}");
                        mgr.broken_tenants
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(id, format!("{err:#}"));
                    }
                }
            }
        }
        Ok(mgr)
    }

    fn tenants_dir(&self) -> PathBuf {
        self.workdir.join("tenants")
    }

    fn make_tenant(&self, id: TenantId) -> Arc<Tenant> {
        let path = self.tenants_dir().join(id.to_string());
        let walredo = Arc::new(PostgresRedoManager::new(
            self.conf.pg_distrib_dir.clone(),
            path.join("wal-redo-datadir"),
            id.to_string(),
            self.conf.wal_redo_timeout,
        ));
        Tenant::new(
            id,
            path,
            Arc::clone(&self.conf),
            walredo,
            live_keyspace,
            self.remote.clone(),
        )
    }

    /// Create an empty tenant. Two concurrent creations of one id: one
    /// wins, the other is refused (the id is reserved while its directory
    /// is made, without blocking lookups of other tenants).
    pub fn create_tenant(&self, id: TenantId) -> anyhow::Result<Arc<Tenant>> {
        {
            let mut creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
            let broken = self
                .broken_tenants
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&id);
            if self.get(id).is_some() || broken || !creating.insert(id) {
                bail!("tenant {id} already exists");
            }
        }
        let created = (|| {
            let t = self.make_tenant(id);
            fail::fail_point!("tenant-create", |_| bail!("failpoint tenant-create"));
            crashsafe::create_dir_all_durable(t.timelines_dir())?;
            t.start_tasks()?;
            self.tenants
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, Arc::clone(&t));
            info!(tenant_id = %id, "created tenant");
            Ok(t)
        })();
        self.creating
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        created
    }

    /// Tenants that could not be loaded, with the reason.
    pub fn broken_tenants(&self) -> Vec<(TenantId, String)> {
        self.broken_tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, r)| (*id, r.clone()))
            .collect()
    }

    pub fn get(&self, id: TenantId) -> Option<Arc<Tenant>> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn list(&self) -> Vec<Arc<Tenant>> {
        let mut v: Vec<_> = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|t| t.id.to_string());
        v
    }

    /// Look up a timeline.
    pub fn get_timeline(
        &self,
        tenant: TenantId,
        timeline: TimelineId,
    ) -> anyhow::Result<Arc<Timeline>> {
        let t = self
            .get(tenant)
            .with_context(|| format!("tenant {tenant} not found"))?;
        t.get_timeline(timeline)
            .with_context(|| format!("timeline {timeline} not found in tenant {tenant}"))
    }

    /// Flush everything (at shutdown). A timeline that cannot flush is
    /// reported and the others are flushed all the same.
    pub fn shutdown(&self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        for t in self.list() {
            t.stop_tasks();
            for tl in t.list_timelines() {
                if let Err(e) = tl.freeze_and_flush() {
                    tracing::error!(tenant_id = %t.id, timeline_id = %tl.timeline_id,
                                    "flushing at shutdown failed: {e}");
                    failed.push(format!("{}/{}: {e}", t.id, tl.timeline_id));
                }
            }
        }
        self.wait_for_uploads(UPLOADS_AT_SHUTDOWN);
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("flushing failed for {}", failed.join("; "))
        }
    }

    /// Waits up to `limit` for every timeline's upload queue to empty (at
    /// shutdown: what is left is uploaded again by the next start, under
    /// its generation). Blocking.
    fn wait_for_uploads(&self, limit: std::time::Duration) {
        let Some(remote) = &self.remote else { return };
        let queues: Vec<_> = self
            .list()
            .iter()
            .flat_map(|t| t.list_timelines())
            .filter_map(|tl| tl.remote().cloned())
            .collect();
        let all = futures_util::future::join_all(queues.iter().map(|q| q.wait_uploaded()));
        if remote
            .runtime
            .block_on(async { tokio::time::timeout(limit, all).await })
            .is_err()
        {
            let left: usize = queues.iter().map(|q| q.queued()).sum();
            tracing::warn!("shutting down with {left} uploads not done after {limit:?}");
        }
    }
}
