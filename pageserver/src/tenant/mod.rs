//! Tenants and their timelines, as one pageserver holds them.
//!
//! On disk: `<workdir>/tenants/<tenant>/timelines/<timeline>/` (metadata and
//! layer files), `<workdir>/tenants/<tenant>/wal-redo-datadir/` (the redo
//! process's data directory) and `<workdir>/tenants/<tenant>/timelines/<id>.___temp`
//! while a timeline is being created.
//!
//! Modules, by concern:
//! - this one: [`Tenant`], a tenant's timelines, their creation by branching
//!   and removal (creation by import and bootstrap is
//!   `crate::import_datadir`'s, above the storage);
//! - [`timeline`]: one timeline: its read path, its layer set (the one owner
//!   of installing and removing layer files and of saving the metadata, with
//!   the lock order), flushes, compaction and image layers, GC and the WAL
//!   receiver;
//! - [`tasks`]: the background loops (flushing; compaction, images and GC);
//! - [`layer_map`], [`storage_layer`], [`metadata`]: the on-disk pieces.
//!
//! Creation is crash-safe: a timeline is built in a temporary directory
//! (import or branch) and renamed into place once complete; startup removes
//! leftover temporary directories. Branches are O(1): a new metadata file
//! naming the ancestor and the branch LSN, no data copied.

pub mod layer_map;
pub mod metadata;
pub mod remote_timeline;
pub mod storage_layer;
pub mod tasks;
pub mod timeline;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context};
use tracing::info;
use zenith_utils::crashsafe;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use crate::config::PageServerConf;
use crate::walredo::WalRedoManager;
use metadata::TimelineMetadata;
use tasks::{TenantTasks, Wakeup};
use timeline::{LiveKeySpace, RecordLsn, Timeline, METADATA_FILE_NAME};

/// One tenant: its timelines and its WAL redo manager.
pub struct Tenant {
    pub id: TenantId,
    pub path: PathBuf,
    pub(crate) conf: Arc<PageServerConf>,
    pub(crate) walredo: Arc<dyn WalRedoManager>,
    /// The live keyspace image layers hold, from the data model above the
    /// storage (`crate::tenant_mgr` hands it over).
    pub(crate) live_keyspace: LiveKeySpace,
    /// Remote storage of its timelines, if the pageserver has one.
    pub(crate) remote: Option<remote_timeline::TenantRemote>,
    timelines: RwLock<HashMap<TimelineId, Arc<Timeline>>>,
    /// Timelines on disk that could not be loaded (corrupt metadata, a
    /// missing or broken ancestor, an unreadable layer directory), with the
    /// reason: shown by the API, refused by the page service; the tenant's
    /// other timelines are served as usual.
    broken: RwLock<BTreeMap<TimelineId, String>>,
    /// Ids of timelines being created: a second creation of the same id is
    /// refused instead of sharing (and clobbering) the first one's
    /// temporary directory.
    creating: std::sync::Mutex<HashSet<TimelineId>>,
    /// Held while branching and while GC runs, so that a branch can never be
    /// created below a cutoff that GC is acting on.
    gc_lock: std::sync::Mutex<()>,
    /// Wakes the tenant's flush thread ([`tasks`]).
    wakeup: Arc<Wakeup>,
    /// Its background threads, while the tenant is served.
    tasks: std::sync::Mutex<Option<TenantTasks>>,
}

/// The reservation of a timeline id during its creation
/// ([`Tenant::reserve`]); released when dropped.
pub(crate) struct Creating<'t> {
    tenant: &'t Tenant,
    id: TimelineId,
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.tenant
            .creating
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Tenant {
    /// A tenant with no timelines loaded yet, at `path`, with the data
    /// model's pieces the storage needs (its WAL redo manager and the live
    /// keyspace) and its remote storage, if any.
    pub(crate) fn new(
        id: TenantId,
        path: PathBuf,
        conf: Arc<PageServerConf>,
        walredo: Arc<dyn WalRedoManager>,
        live_keyspace: LiveKeySpace,
        remote: Option<remote_timeline::TenantRemote>,
    ) -> Arc<Tenant> {
        Arc::new(Tenant {
            id,
            path,
            conf,
            walredo,
            live_keyspace,
            remote,
            timelines: RwLock::new(HashMap::new()),
            broken: RwLock::new(BTreeMap::new()),
            creating: std::sync::Mutex::new(HashSet::new()),
            gc_lock: std::sync::Mutex::new(()),
            wakeup: Arc::new(Wakeup::default()),
            tasks: std::sync::Mutex::new(None),
        })
    }

    pub(crate) fn timelines_dir(&self) -> PathBuf {
        self.path.join("timelines")
    }

    pub fn get_timeline(&self, id: TimelineId) -> Option<Arc<Timeline>> {
        self.timelines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Makes `tl` one of the tenant's timelines, served and maintained by
    /// its background thread.
    /// Loads timeline `id` from its directory (`ancestor` loaded before it).
    fn load_timeline(
        &self,
        id: TimelineId,
        ancestor: Option<Arc<Timeline>>,
    ) -> Result<Arc<Timeline>, timeline::TimelineError> {
        Timeline::load(
            &self.timelines_dir().join(id.to_string()),
            self.id,
            id,
            self.conf.tenant_config.clone(),
            ancestor,
            Arc::clone(&self.walredo),
        )
    }

    /// The last step of creating timeline `id` (by branching, import or
    /// bootstrap): its complete temporary directory `tmp` is renamed into
    /// place durably, loaded like at startup and registered.
    pub(crate) fn install_timeline(
        &self,
        tmp: &std::path::Path,
        id: TimelineId,
        ancestor: Option<Arc<Timeline>>,
    ) -> anyhow::Result<Arc<Timeline>> {
        crashsafe::rename_durable(tmp, self.timelines_dir().join(id.to_string()))?;
        let tl = self.load_timeline(id, ancestor)?;
        self.register(id, Arc::clone(&tl));
        Ok(tl)
    }

    fn register(&self, id: TimelineId, tl: Arc<Timeline>) {
        tl.set_wakeup(Arc::clone(&self.wakeup));
        tl.set_live_keyspace(self.live_keyspace);
        if let Some(remote) = &self.remote {
            match remote.start_timeline(self.id, &tl) {
                Ok(queue) => {
                    let _ = tl.remote.set(queue);
                }
                // Served from local disk; the next start tries again.
                Err(e) => tracing::error!(tenant_id = %self.id, timeline_id = %id,
                    "remote storage of the timeline not started: {e:#}"),
            }
        }
        self.timelines
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tl);
    }

    /// Starts the background thread (flush, compaction, images, GC).
    pub(crate) fn start_tasks(self: &Arc<Self>) -> std::io::Result<()> {
        let tc = &self.conf.tenant_config;
        let gc =
            (!tc.gc_period.is_zero()).then_some((tc.gc_period, tc.gc_horizon, tc.pitr_interval));
        let tasks = TenantTasks::spawn(Arc::downgrade(self), Arc::clone(&self.wakeup), gc)?;
        *self.tasks.lock().unwrap_or_else(|e| e.into_inner()) = Some(tasks);
        Ok(())
    }

    /// Stops the background thread (at shutdown), after its current pass.
    pub fn stop_tasks(&self) {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut t) = tasks {
            t.stop();
        }
    }

    /// Compacts timeline `id` now (also below the threshold) and creates
    /// the image layers its thresholds call for.
    pub fn compact_timeline(
        &self,
        id: TimelineId,
    ) -> anyhow::Result<(usize, Vec<storage_layer::filename::LayerFileName>)> {
        let tl = self
            .get_timeline(id)
            .with_context(|| format!("timeline {id} not found in tenant {}", self.id))?;
        let l1 = tl
            .compact(true, &branch_points(&self.list_timelines(), id))
            .context("compaction failed")?;
        let images = tl
            .create_image_layers(false)
            .with_context(|| format!("{l1} L1 layers written, then image layer creation failed"))?;
        Ok((l1, images))
    }

    /// Timelines that could not be loaded, with the reason.
    pub fn broken_timelines(&self) -> Vec<(TimelineId, String)> {
        self.broken
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, r)| (*id, r.clone()))
            .collect()
    }

    /// Why timeline `id` could not be loaded, if it could not.
    pub fn broken_reason(&self, id: TimelineId) -> Option<String> {
        self.broken
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn list_timelines(&self) -> Vec<Arc<Timeline>> {
        let mut v: Vec<_> = self
            .timelines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|t| t.timeline_id.to_string());
        v
    }

    /// Reserve `id` for a creation: refused if the timeline exists or is
    /// being created.
    pub(crate) fn reserve(&self, id: TimelineId) -> anyhow::Result<Creating<'_>> {
        let mut creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
        if self.get_timeline(id).is_some() || self.broken_reason(id).is_some() {
            bail!("timeline {id} already exists in tenant {}", self.id);
        }
        if !creating.insert(id) {
            bail!(
                "timeline {id} already exists in tenant {} (it is being created)",
                self.id
            );
        }
        Ok(Creating { tenant: self, id })
    }

    /// Branch `ancestor` at `lsn` (default: its last record LSN). O(1).
    pub fn branch_timeline(
        &self,
        id: TimelineId,
        ancestor_id: TimelineId,
        lsn: Option<Lsn>,
    ) -> anyhow::Result<Arc<Timeline>> {
        let _reserved = self.reserve(id)?;
        let _gc = self.gc_lock.lock().unwrap_or_else(|e| e.into_inner());
        let ancestor = self.get_timeline(ancestor_id).with_context(|| {
            format!(
                "ancestor timeline {ancestor_id} not found in tenant {}",
                self.id
            )
        })?;
        let last = ancestor.record_lsn();
        let lsn = lsn.unwrap_or(last.last);
        if lsn > last.last {
            bail!(
                "branch LSN {lsn} is above the ancestor's last record LSN {}",
                last.last
            );
        }
        let cutoff = ancestor.gc_cutoff_lsn();
        if lsn < cutoff {
            bail!("branch LSN {lsn} is below the ancestor's GC cutoff {cutoff}");
        }
        // Reads below the branch point go to the ancestor: its data up to
        // there must be in layer files before the branch exists, or a crash
        // would lose it whenever the ancestor's WAL source does not come back.
        if ancestor.disk_consistent_lsn() < lsn {
            ancestor
                .freeze_and_flush()
                .context("flushing the ancestor up to the branch point")?;
        }
        let prev = if lsn == last.last { last.prev } else { Lsn(0) };
        let tmp = self
            .timelines_dir()
            .join(format!("{id}{}", crashsafe::TEMP_FILE_SUFFIX));
        let _ = std::fs::remove_dir_all(&tmp);
        let md = ancestor.metadata();
        drop(Timeline::create(
            &tmp,
            self.id,
            id,
            self.conf.tenant_config.clone(),
            Some((Arc::clone(&ancestor), lsn)),
            RecordLsn { last: lsn, prev },
            md.initdb_lsn,
            Arc::clone(&self.walredo),
        )?);
        fail::fail_point!("branch-create-before-rename");
        let tl = self.install_timeline(&tmp, id, Some(ancestor))?;
        info!(tenant_id = %self.id, timeline_id = %id, %ancestor_id, %lsn, "created branch");
        Ok(tl)
    }

    /// Load every timeline on disk, ancestors first; remove half-created
    /// ones. A timeline that cannot be loaded is recorded as broken (with
    /// its descendants) and the others load as usual; only a timelines
    /// directory that cannot be read fails the tenant.
    pub(crate) fn load(&self) -> anyhow::Result<()> {
        let dir = self.timelines_dir();
        crashsafe::create_dir_all_durable(&dir)?;
        let mut metas: HashMap<TimelineId, TimelineMetadata> = HashMap::new();
        let mut broken = BTreeMap::new();
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if crashsafe::is_temp_file(e.path()) {
                info!(tenant_id = %self.id, "removing half-created timeline {name}");
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    tracing::error!(tenant_id = %self.id, "removing {name}: {err}");
                }
                continue;
            }
            let Ok(id) = name.parse::<TimelineId>() else {
                continue;
            };
            match TimelineMetadata::load(&e.path().join(METADATA_FILE_NAME)) {
                Ok(m) => {
                    metas.insert(id, m);
                }
                Err(err) => {
                    broken.insert(id, format!("cannot load its metadata: {err}"));
                }
            }
        }
        while !metas.is_empty() {
            let ready: Vec<TimelineId> = metas
                .iter()
                .filter(|(_, m)| {
                    m.ancestor_timeline
                        .is_none_or(|a| self.get_timeline(a).is_some() || broken.contains_key(&a))
                })
                .map(|(id, _)| *id)
                .collect();
            if ready.is_empty() {
                // The rest have ancestors that are not on disk.
                for (id, m) in metas.drain() {
                    let a = m.ancestor_timeline.unwrap_or_else(|| unreachable!());
                    broken.insert(id, format!("its ancestor {a} is missing"));
                }
                break;
            }
            for id in ready {
                let m = metas.remove(&id).unwrap_or_else(|| unreachable!());
                if let Some(a) = m.ancestor_timeline.filter(|a| broken.contains_key(a)) {
                    broken.insert(id, format!("its ancestor {a} is broken"));
                    continue;
                }
                let ancestor = m.ancestor_timeline.and_then(|a| self.get_timeline(a));
                match self.load_timeline(id, ancestor) {
                    Ok(tl) => self.register(id, tl),
                    Err(err) => {
                        broken.insert(id, format!("cannot load it: {err}"));
                    }
                }
            }
        }
        for (id, reason) in &broken {
            tracing::error!(tenant_id = %self.id, timeline_id = %id, "timeline is broken: {reason}");
        }
        *self.broken.write().unwrap_or_else(|e| e.into_inner()) = broken;
        Ok(())
    }

    /// Run GC on one timeline (see [`Tenant::gc_iteration`]).
    pub fn gc_timeline(
        &self,
        id: TimelineId,
        horizon: u64,
        pitr: std::time::Duration,
    ) -> anyhow::Result<timeline::GcResult> {
        let _gc = self.gc_lock.lock().unwrap_or_else(|e| e.into_inner());
        let tl = self
            .get_timeline(id)
            .with_context(|| format!("timeline {id} not found in tenant {}", self.id))?;
        Ok(tl.gc(horizon, pitr, &branch_points(&self.list_timelines(), id))?)
    }

    /// Run GC on every timeline, keeping `horizon` bytes and `pitr` of WAL
    /// history and whatever the branches need. Returns the number of layer
    /// files removed.
    pub fn gc_iteration(&self, horizon: u64, pitr: std::time::Duration) -> anyhow::Result<usize> {
        let _gc = self.gc_lock.lock().unwrap_or_else(|e| e.into_inner());
        let timelines = self.list_timelines();
        let mut removed = 0;
        for tl in &timelines {
            removed += tl
                .gc(horizon, pitr, &branch_points(&timelines, tl.timeline_id))?
                .layers_removed;
        }
        Ok(removed)
    }

    /// Flush every timeline's in-memory data (at shutdown).
    pub fn flush_all(&self) -> anyhow::Result<()> {
        for tl in self.list_timelines() {
            tl.freeze_and_flush()?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Timeline removal, used by the HTTP API's `DELETE .../timeline/<id>`
// (pageserver/src/http). Added by the HTTP API work; kept separate on purpose.
// ---------------------------------------------------------------------------
impl Tenant {
    /// Forget timeline `id` and delete its directory. Refused when another
    /// timeline has it as ancestor. The caller stops its WAL receiver first.
    /// The timeline's writers are stopped for good before its directory goes
    /// ([`Timeline::shutdown_for_deletion`]), so a timeline created later
    /// with the same id never receives a file or metadata of this one.
    ///
    /// Crash safety: the directory is first renamed to `<id>.deleting.___temp`,
    /// which [`Tenant::load`] removes like a half-created timeline, and then
    /// deleted;
    /// a crash at any point leaves either the whole timeline or nothing.
    pub fn remove_timeline(&self, id: TimelineId) -> anyhow::Result<()> {
        let removed = {
            let mut timelines = self.timelines.write().unwrap_or_else(|e| e.into_inner());
            let was_broken = self
                .broken
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id)
                .is_some();
            if !timelines.contains_key(&id) && !was_broken {
                bail!("timeline {id} not found in tenant {}", self.id);
            }
            let children: Vec<String> = timelines
                .values()
                .filter(|t| t.ancestor().is_some_and(|(a, _)| a.timeline_id == id))
                .map(|t| t.timeline_id.to_string())
                .collect();
            if !children.is_empty() {
                bail!(
                    "timeline {id} is the ancestor of timelines {}",
                    children.join(", ")
                );
            }
            timelines.remove(&id)
        };
        if let Some(tl) = removed {
            tl.shutdown_for_deletion();
        }
        let dir = self.timelines_dir().join(id.to_string());
        let doomed = self
            .timelines_dir()
            .join(format!("{id}.deleting{}", crashsafe::TEMP_FILE_SUFFIX));
        let _ = std::fs::remove_dir_all(&doomed);
        crashsafe::rename_durable(&dir, &doomed)
            .with_context(|| format!("removing timeline directory {}", dir.display()))?;
        std::fs::remove_dir_all(&doomed)
            .with_context(|| format!("removing {}", doomed.display()))?;
        info!(tenant_id = %self.id, timeline_id = %id, "removed timeline");
        Ok(())
    }
}

/// The LSNs at which timelines among `timelines` branch off `parent`.
pub(crate) fn branch_points(timelines: &[Arc<Timeline>], parent: TimelineId) -> Vec<Lsn> {
    timelines
        .iter()
        .filter_map(|c| c.ancestor())
        .filter(|(a, _)| a.timeline_id == parent)
        .map(|(_, lsn)| lsn)
        .collect()
}
