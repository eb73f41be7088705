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
use crate::tenant::timeline::Timeline;
pub use crate::tenant::Tenant;
use crate::walredo::PostgresRedoManager;

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
}

impl TenantManager {
    /// Load every tenant under `<workdir>/tenants`.
    pub fn load(workdir: &Path, conf: Arc<PageServerConf>) -> anyhow::Result<TenantManager> {
        let mgr = TenantManager {
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
        Tenant::new(id, path, Arc::clone(&self.conf), walredo, live_keyspace)
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
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("flushing failed for {}", failed.join("; "))
        }
    }
}
