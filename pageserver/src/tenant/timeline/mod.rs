//! A timeline: one WAL history and the layers that store it.
//!
//! - **Write**: [`TimelineWriter`] files the values of one WAL record and then
//!   [`finish_write`](TimelineWriter::finish_write) advances `last_record_lsn`,
//!   so a reader never sees half of a record.
//! - **Read**: [`Timeline::get`] collects a key's versions newest first (open
//!   and frozen in-memory layers, then layer files via the layer map, then the
//!   ancestor below the branch point) until an image or a record that
//!   initializes the page, and reconstructs the value with the WAL redo manager.
//! - **Flush**: [`Timeline::freeze_and_flush`] writes in-memory layers as delta
//!   layer files and only then advances `disk_consistent_lsn` in the metadata
//!   file, so metadata never claims data that is not durable.
//! - **Load**: [`Timeline::load`] reads the metadata and layer files, removes
//!   temporary files and layers above `disk_consistent_lsn` (a crash between a
//!   layer's rename and the metadata update), and the WAL source resends the
//!   rest.
//!
//! Invariants: values enter in LSN order; in-memory layers are newer than every
//! layer file; `disk_consistent_lsn <= last_record_lsn`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{info, warn};
use zenith_utils::crashsafe;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use super::layer_map::{LayerMap, PersistentLayer};
use super::metadata::{MetadataError, TimelineMetadata};
use super::storage_layer::filename::LayerFileName;
use super::storage_layer::inmemory_layer::InMemoryLayer;
use super::storage_layer::layer_file::{IndexEntry, LayerError, LayerReader};
use crate::config::TenantConf;
use crate::key::Key;
use crate::page_cache::CacheKey;
use crate::value::{Value, ZenithWalRecord};
use crate::walredo::{WalRedoError, WalRedoManager};

mod bulk;
mod compaction;
pub mod gc;
mod images;
pub mod lsn_by_time;
pub mod walreceiver;

pub use gc::GcResult;


/// Name of the metadata file in a timeline directory.
pub const METADATA_FILE_NAME: &str = "metadata";

/// A read or write that failed.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("could not find data for key {key} at LSN {lsn}")]
    MissingKey { key: Key, lsn: Lsn },
    #[error("LSN {lsn} is below the GC cutoff {cutoff}")]
    BelowGcCutoff { lsn: Lsn, cutoff: Lsn },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Redo(#[from] WalRedoError),
    #[error("timeline {0}: {1}")]
    Invalid(TimelineId, String),
    /// The timeline has been deleted: nothing more is written for it.
    #[error("timeline {0} has been deleted")]
    Deleted(TimelineId),
    /// A cached-only read ([`Timeline::get_cached`]) that needs file I/O or
    /// WAL redo.
    #[error("the read needs file I/O or WAL redo")]
    WouldBlock,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Versions of one key in one layer, ascending by LSN
/// ([`Timeline::walk_versions`]).
enum VersionSource<'a> {
    Memory(&'a [(Lsn, Value)]),
    File(&'a LayerReader, &'a [IndexEntry]),
}

/// How [`Timeline::get`]'s walk ended.
enum Reconstruct {
    /// The page cache had the page for the newest version.
    Cached(Bytes),
    /// The base image (`None`: a record initializes the page) under the
    /// collected records.
    Base(Option<(Lsn, Bytes)>),
}

/// Where the newest version of a key is ([`Timeline::get_cached`]).
enum Newest {
    /// An image in an in-memory layer: the value itself.
    MemoryImage(Bytes),
    /// A WAL record in an in-memory layer.
    Memory,
    /// In a layer file, at this LSN.
    File(Lsn),
}

/// The LSNs that describe how far a timeline has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLsn {
    /// End of the last WAL record applied completely.
    pub last: Lsn,
    /// Start of that record.
    pub prev: Lsn,
}

#[derive(Debug)]
pub(crate) struct Layers {
    pub(crate) open: Option<InMemoryLayer>,
    /// Frozen in-memory layers waiting to be written, oldest first.
    pub(crate) frozen: Vec<Arc<InMemoryLayer>>,
    /// Shared with readers, copied on write ([`Arc::make_mut`]): a read
    /// takes a snapshot of it by bumping a reference count.
    pub(crate) map: Arc<LayerMap>,
    /// LSN where the next open layer starts (= end of the last frozen one,
    /// i.e. one past the last LSN it holds).
    next_open_start: Lsn,
    /// Reads below this LSN are refused. Kept with the layer map, so that a
    /// read checks the cutoff against the very layers it then walks: GC
    /// raises it (after persisting it) in the same critical section that
    /// takes layers out of the map.
    pub(crate) gc_cutoff: Lsn,
}

impl Layers {
    /// Start the next open layer at `lsn` (never moves back).
    pub(crate) fn set_next_open_start(&mut self, lsn: Lsn) {
        self.next_open_start = self.next_open_start.max(lsn);
    }
}

/// A timeline of a tenant.
pub struct Timeline {
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub path: PathBuf,
    pub(crate) conf: TenantConf,
    ancestor: Option<(Arc<Timeline>, Lsn)>,
    pub(crate) layers: RwLock<Layers>,
    record_lsn_tx: watch::Sender<RecordLsn>,
    pub(crate) metadata: Mutex<TimelineMetadata>,
    pub(crate) flush_lock: Mutex<()>,
    /// Held by compaction, image layer creation and GC (in that order before
    /// `flush_lock`, which GC also takes for the metadata): they exclude each
    /// other but not flushes, so ingest does not wait for them.
    pub(crate) maintenance_lock: Mutex<()>,
    walredo: Arc<dyn WalRedoManager>,
    /// This object's key space in the page cache
    /// ([`crate::page_cache::new_incarnation`]).
    incarnation: u64,
    /// Why the timeline stopped taking WAL (an ingest or flush error), if
    /// it did: shown by the API, counted by the metrics. Reads go on.
    broken: Mutex<Option<String>>,
    /// The tenant's background thread ([`super::tasks`]), once the tenant
    /// owns this timeline: ingest leaves flushing and layer maintenance to
    /// it. A timeline without one (tests) flushes inline.
    wakeup: std::sync::OnceLock<Arc<crate::tenant::tasks::Wakeup>>,
    /// Set once deletion starts: flush, compaction, image creation and GC
    /// check it under their locks before they write anything, so nothing
    /// of this object lands in a directory that a new timeline with the
    /// same id may own by then.
    deleted: AtomicBool,
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Timeline({}/{})", self.tenant_id, self.timeline_id)
    }
}

impl Timeline {
    /// Create a new, empty timeline directory with its metadata. The caller
    /// fills it (import) or it reads through to its ancestor (branch).
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        path: &Path,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        conf: TenantConf,
        ancestor: Option<(Arc<Timeline>, Lsn)>,
        start: RecordLsn,
        initdb_lsn: Lsn,
        walredo: Arc<dyn WalRedoManager>,
    ) -> Result<Arc<Timeline>, TimelineError> {
        crashsafe::create_dir_all_durable(path).map_err(|source| TimelineError::Io {
            what: "creating timeline directory",
            path: path.display().to_string(),
            source,
        })?;
        let metadata = TimelineMetadata {
            disk_consistent_lsn: start.last,
            prev_record_lsn: Some(start.prev),
            ancestor_timeline: ancestor.as_ref().map(|(t, _)| t.timeline_id),
            ancestor_lsn: ancestor.as_ref().map(|(_, l)| *l).unwrap_or(Lsn(0)),
            latest_gc_cutoff_lsn: ancestor
                .as_ref()
                .map(|(_, l)| *l)
                .unwrap_or(initdb_lsn)
                .min(start.last),
            initdb_lsn,
            pg_version: postgres_ffi::pg_constants::PG_MAJORVERSION,
        };
        metadata.save(&path.join(METADATA_FILE_NAME))?;
        Ok(Self::new(
            path,
            tenant_id,
            timeline_id,
            conf,
            ancestor,
            metadata,
            LayerMap::default(),
            walredo,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        path: &Path,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        conf: TenantConf,
        ancestor: Option<(Arc<Timeline>, Lsn)>,
        metadata: TimelineMetadata,
        map: LayerMap,
        walredo: Arc<dyn WalRedoManager>,
    ) -> Arc<Timeline> {
        let rl = RecordLsn {
            last: metadata.disk_consistent_lsn,
            prev: metadata.prev_record_lsn.unwrap_or(Lsn(0)),
        };
        let (record_lsn_tx, _) = watch::channel(rl);
        Arc::new(Timeline {
            tenant_id,
            timeline_id,
            path: path.to_path_buf(),
            conf,
            ancestor,
            layers: RwLock::new(Layers {
                open: None,
                frozen: Vec::new(),
                map: Arc::new(map),
                next_open_start: metadata.disk_consistent_lsn + 1,
                gc_cutoff: metadata.latest_gc_cutoff_lsn,
            }),
            record_lsn_tx,
            metadata: Mutex::new(metadata),
            flush_lock: Mutex::new(()),
            maintenance_lock: Mutex::new(()),
            walredo,
            incarnation: crate::page_cache::new_incarnation(),
            broken: Mutex::new(None),
            wakeup: std::sync::OnceLock::new(),
            deleted: AtomicBool::new(false),
        })
    }

    /// Load a timeline from its directory. `ancestor` must be given when the
    /// metadata names one (the tenant loads ancestors first).
    pub fn load(
        path: &Path,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        conf: TenantConf,
        ancestor: Option<Arc<Timeline>>,
        walredo: Arc<dyn WalRedoManager>,
    ) -> Result<Arc<Timeline>, TimelineError> {
        let metadata = TimelineMetadata::load(&path.join(METADATA_FILE_NAME))?;
        let ancestor = match (metadata.ancestor_timeline, ancestor) {
            (None, _) => None,
            (Some(id), Some(a)) if a.timeline_id == id => Some((a, metadata.ancestor_lsn)),
            (Some(id), _) => {
                return Err(TimelineError::Invalid(
                    timeline_id,
                    format!("its ancestor {id} is not loaded"),
                ))
            }
        };
        let io = |what, source| TimelineError::Io {
            what,
            path: path.display().to_string(),
            source,
        };
        let removed = crashsafe::remove_stale_temp_files(path).map_err(|e| io("cleaning", e))?;
        if removed > 0 {
            info!(%tenant_id, %timeline_id, removed, "removed temporary files of interrupted writes");
        }
        let mut layers = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| io("reading", e))? {
            let entry = entry.map_err(|e| io("reading", e))?;
            let fname = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = LayerFileName::parse(&fname) else {
                continue;
            };
            if name.lsn_range().end > metadata.disk_consistent_lsn + 1 && name.is_delta()
                || !name.is_delta() && name.lsn_range().start > metadata.disk_consistent_lsn
            {
                // Written after the last metadata update: its WAL will be re-ingested.
                info!(%tenant_id, %timeline_id, layer = %fname, "removing layer above disk_consistent_lsn");
                crashsafe::remove_file_durable(entry.path()).map_err(|e| io("removing", e))?;
                continue;
            }
            let size = entry.metadata().map_err(|e| io("reading", e))?.len();
            layers.push(Arc::new(PersistentLayer::new(name, entry.path(), size)));
        }
        let map = LayerMap::from_layers(layers);
        info!(%tenant_id, %timeline_id, layers = map.len(), disk_consistent_lsn = %metadata.disk_consistent_lsn, "loaded timeline");
        Ok(Self::new(
            path,
            tenant_id,
            timeline_id,
            conf,
            ancestor,
            metadata,
            map,
            walredo,
        ))
    }

    /// Stops every writer of this timeline for good: marks it deleted,
    /// then waits for a flush, compaction, image creation or GC in
    /// progress to end (each sees the mark at its next write and stops).
    /// Afterwards this object never writes a file again; its directory is
    /// the caller's to remove.
    pub fn shutdown_for_deletion(&self) {
        self.deleted.store(true, Ordering::Release);
        let _maintenance = self
            .maintenance_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let _flush = self.flush_lock.lock().unwrap_or_else(|e| e.into_inner());
    }

    /// Marks the timeline broken: it takes no more WAL until the
    /// pageserver restarts. The first reason is kept.
    pub fn set_broken(&self, reason: String) {
        let mut b = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        if b.is_none() {
            tracing::error!(tenant_id = %self.tenant_id, timeline_id = %self.timeline_id,
                            "timeline is broken: {reason}");
            *b = Some(reason);
        }
    }

    /// Why the timeline is broken, if it is.
    pub fn broken_reason(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// `Err(Deleted)` once deletion has started (see
    /// [`shutdown_for_deletion`](Self::shutdown_for_deletion)).
    pub(crate) fn check_not_deleted(&self) -> Result<(), TimelineError> {
        if self.is_deleted() {
            Err(TimelineError::Deleted(self.timeline_id))
        } else {
            Ok(())
        }
    }

    /// The branch point, if this timeline has an ancestor.
    pub fn ancestor(&self) -> Option<(&Arc<Timeline>, Lsn)> {
        self.ancestor.as_ref().map(|(t, l)| (t, *l))
    }

    pub fn record_lsn(&self) -> RecordLsn {
        *self.record_lsn_tx.borrow()
    }

    pub fn last_record_lsn(&self) -> Lsn {
        self.record_lsn().last
    }

    /// A receiver that sees every advance of `last_record_lsn`.
    pub fn subscribe_record_lsn(&self) -> watch::Receiver<RecordLsn> {
        self.record_lsn_tx.subscribe()
    }

    /// Wait until `last_record_lsn >= lsn`, at most `timeout`.
    pub async fn wait_lsn(
        &self,
        lsn: Lsn,
        timeout: std::time::Duration,
    ) -> Result<(), TimelineError> {
        let mut rx = self.subscribe_record_lsn();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|r| r.last >= lsn)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => Err(TimelineError::Invalid(
                self.timeline_id,
                format!(
                    "timed out after {timeout:?} waiting for WAL up to {lsn}; last record LSN is {}",
                    self.last_record_lsn()
                ),
            )),
        }
    }

    pub fn metadata(&self) -> TimelineMetadata {
        self.metadata
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn disk_consistent_lsn(&self) -> Lsn {
        self.metadata().disk_consistent_lsn
    }

    pub fn gc_cutoff_lsn(&self) -> Lsn {
        self.layers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .gc_cutoff
    }

    /// Bytes held by the open in-memory layer.
    pub fn open_layer_size(&self) -> u64 {
        let layers = self.layers.read().unwrap_or_else(|e| e.into_inner());
        layers.open.as_ref().map(|l| l.size()).unwrap_or(0)
    }

    /// The layer files as of now (cheap: a reference count).
    pub(crate) fn layer_snapshot(&self) -> Arc<LayerMap> {
        Arc::clone(&self.layers.read().unwrap_or_else(|e| e.into_inner()).map)
    }

    /// Layer files of this timeline (name, size).
    pub fn layer_files(&self) -> Vec<(LayerFileName, u64)> {
        let layers = self.layers.read().unwrap_or_else(|e| e.into_inner());
        layers
            .map
            .iter()
            .map(|l| (l.name.clone(), l.file_size))
            .collect()
    }

    /// A writer for WAL ingest. Only one writer should be used at a time.
    pub fn writer(self: &Arc<Timeline>) -> TimelineWriter {
        TimelineWriter {
            tl: Arc::clone(self),
        }
    }

    /// The value of `key` at `lsn` (at or below `last_record_lsn`).
    ///
    /// One walk over one snapshot of the layers (with the GC cutoff it was
    /// taken with) collects the key's versions, newest first, down to an
    /// image or a record that initializes the page. A page read from a
    /// layer file or rebuilt by redo is cached under the newest version's
    /// LSN: the value depends only on the versions up to it, so a hit costs
    /// no value read, no decompression and no redo. (Versions still in
    /// memory are cheap to read.)
    pub fn get(&self, key: Key, lsn: Lsn) -> Result<Bytes, TimelineError> {
        let cache = crate::page_cache::get();
        let mut records: Vec<(Lsn, ZenithWalRecord)> = Vec::new();
        // The cache key of the newest version, when it is in a layer file.
        let mut file_newest: Option<CacheKey> = None;
        let mut seen_any = false;
        let found = self.walk_versions(key, lsn, true, &mut |src| {
            // Some(base) ends the walk: nothing older is needed.
            let mut take = |l: Lsn, v: Value| match v {
                Value::Image(img) => Some(Reconstruct::Base(Some((l, img)))),
                Value::WalRecord(r) => {
                    let init = r.will_init();
                    records.push((l, r));
                    init.then_some(Reconstruct::Base(None))
                }
            };
            match src {
                VersionSource::Memory(vals) => {
                    for (l, v) in vals.iter().rev() {
                        seen_any = true;
                        if let Some(done) = take(*l, v.clone()) {
                            return Ok(Some(done));
                        }
                    }
                }
                VersionSource::File(reader, entries) => {
                    if !seen_any {
                        if let Some(newest) = entries.last() {
                            let ck = (self.incarnation, key, newest.lsn);
                            if let Some(page) = cache.lookup(&ck) {
                                return Ok(Some(Reconstruct::Cached(page)));
                            }
                            file_newest = Some(ck);
                        }
                    }
                    for e in entries.iter().rev() {
                        seen_any = true;
                        if let Some(done) = take(e.lsn, reader.read_value(e)?) {
                            return Ok(Some(done));
                        }
                    }
                }
            }
            Ok(None)
        })?;
        let base = match found {
            Some(Reconstruct::Cached(page)) => return Ok(page),
            Some(Reconstruct::Base(base)) => base,
            None => None,
        };
        records.reverse();
        let page = match base {
            Some((_, img)) if records.is_empty() => img,
            None if records.is_empty() => return Err(TimelineError::MissingKey { key, lsn }),
            base => {
                let newest = records.last().map(|(l, _)| *l).unwrap_or(lsn);
                let ck = (self.incarnation, key, newest);
                if let Some(page) = cache.lookup(&ck) {
                    return Ok(page);
                }
                let page = self.walredo.request_redo(key, lsn, base, records)?;
                cache.insert(ck, page.clone());
                return Ok(page);
            }
        };
        if let Some(ck) = file_newest {
            cache.insert(ck, page.clone());
        }
        Ok(page)
    }

    /// [`get`](Self::get) without blocking: answers from in-memory layers
    /// and the page cache only; `WouldBlock` if a layer file must be read or
    /// WAL redo run.
    pub fn get_cached(&self, key: Key, lsn: Lsn) -> Result<Bytes, TimelineError> {
        let newest = self.walk_versions(key, lsn, true, &mut |src| {
            Ok(match src {
                VersionSource::Memory(vals) => vals.last().map(|(_, v)| match v {
                    Value::Image(img) => Newest::MemoryImage(img.clone()),
                    Value::WalRecord(_) => Newest::Memory,
                }),
                VersionSource::File(_, entries) => entries.last().map(|e| Newest::File(e.lsn)),
            })
        })?;
        match newest {
            None => Err(TimelineError::MissingKey { key, lsn }),
            Some(Newest::MemoryImage(img)) => Ok(img),
            Some(Newest::Memory) => Err(TimelineError::WouldBlock),
            Some(Newest::File(l)) => crate::page_cache::get()
                .lookup(&(self.incarnation, key, l))
                .ok_or(TimelineError::WouldBlock),
        }
    }

    /// Visit the places holding versions of `key` at or below `lsn`, newest
    /// first: the open layer, frozen layers newest to oldest (under the
    /// layers lock), layer files as the layer map's search rule finds them
    /// (the map as of that same lock hold), then the ancestor below the
    /// branch point. With `check_cutoff`, an `lsn` below the GC cutoff of
    /// that same snapshot is refused. `visit` returns `Some` to stop the
    /// walk with that result.
    fn walk_versions<R>(
        &self,
        key: Key,
        lsn: Lsn,
        check_cutoff: bool,
        visit: &mut dyn FnMut(VersionSource<'_>) -> Result<Option<R>, TimelineError>,
    ) -> Result<Option<R>, TimelineError> {
        let mut cont = lsn + 1;
        let map = {
            let layers = self.layers.read().unwrap_or_else(|e| e.into_inner());
            if check_cutoff && lsn < layers.gc_cutoff {
                return Err(TimelineError::BelowGcCutoff {
                    lsn,
                    cutoff: layers.gc_cutoff,
                });
            }
            let open = layers.open.iter().map(|l| l as &InMemoryLayer);
            let frozen = layers.frozen.iter().rev().map(|l| l.as_ref());
            let mut floor = cont;
            for l in open.chain(frozen) {
                let r = l.lsn_range();
                if r.start >= cont {
                    continue;
                }
                if let Some(done) = visit(VersionSource::Memory(l.get_values(key, r.start..cont)))?
                {
                    return Ok(Some(done));
                }
                floor = floor.min(r.start);
            }
            cont = floor;
            Arc::clone(&layers.map)
        };
        fail::fail_point!("read-after-snapshot");
        while let Some(found) = map.search(key, cont) {
            let reader = found.layer.reader()?;
            let entries = reader.entries_for(key, found.lsn_range.clone());
            if let Some(done) = visit(VersionSource::File(&reader, entries))? {
                return Ok(Some(done));
            }
            if !found.layer.is_delta() {
                // An image holds every key of its range that exists at its
                // LSN: this one did not exist then.
                return Ok(None);
            }
            cont = found.lsn_range.start;
        }
        match &self.ancestor {
            Some((anc, branch_lsn)) => {
                // The ancestor's GC keeps what this branch point needs.
                let below = Lsn(cont.0.saturating_sub(1)).min(*branch_lsn);
                anc.walk_versions(key, below, false, visit)
            }
            None => Ok(None),
        }
    }

    /// Compact, then create image layers, when their thresholds are
    /// reached. `branch_points` are the LSNs where children branch off
    /// (compaction does not merge across them). Errors are logged.
    pub fn maintain_layers(&self, branch_points: &[Lsn]) {
        if let Err(e) = self.compact(false, branch_points) {
            warn!(tenant_id = %self.tenant_id, timeline_id = %self.timeline_id, "compaction failed: {e}");
        }
        if let Err(e) = self.create_image_layers(false) {
            warn!(tenant_id = %self.tenant_id, timeline_id = %self.timeline_id, "image layer creation failed: {e}");
        }
    }

    /// Freeze the open layer (if it holds any complete record) at
    /// `last_record_lsn`. Values of a record still being filed (above
    /// `last_record_lsn`: its `finish_write` has not happened yet) move to
    /// the next open layer, so a frozen layer always ends at a record
    /// boundary and holds only complete records.
    pub fn freeze(&self) {
        let mut layers = self.layers.write().unwrap_or_else(|e| e.into_inner());
        // Read under the layers lock: every value at or below `last` is in
        // the open layer already (puts take the lock), and no value of a
        // record ending at or below `last` can arrive later. `prev` is read
        // with it: a restart from the layer's end needs it.
        let RecordLsn { last, prev } = self.record_lsn();
        let Some(mut open) = layers.open.take() else {
            return;
        };
        let in_progress = open.split_above(last);
        if open.is_empty() {
            // Nothing complete to freeze: the in-progress values stay open
            // (from `last + 1`, which is not below `next_open_start`).
            layers.open = in_progress;
            return;
        }
        // Values are filed at their record's end LSN, so the layer holds
        // LSNs up to and including `last`.
        open.freeze(last + 1, prev);
        layers.next_open_start = last + 1;
        layers.frozen.push(Arc::new(open));
        layers.open = in_progress;
    }

    /// Hands this timeline's flushing and layer maintenance to its
    /// tenant's background thread.
    pub fn set_wakeup(&self, wakeup: Arc<crate::tenant::tasks::Wakeup>) {
        let _ = self.wakeup.set(wakeup);
    }

    /// Frozen in-memory layers waiting to be written.
    pub fn frozen_layer_count(&self) -> usize {
        self.layers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .frozen
            .len()
    }

    /// What ingest does when the open layer is full (or old): freeze it,
    /// and have the tenant's background thread write it, waiting only
    /// while more than [`crate::tenant::tasks::MAX_FROZEN_LAYERS`] are pending (or
    /// until `stop`). Without a background thread, flush and maintain here.
    pub fn checkpoint_from_ingest(&self, stop: &AtomicBool) -> Result<(), TimelineError> {
        self.freeze();
        match self.wakeup.get() {
            Some(w) => {
                w.wake();
                while self.frozen_layer_count() > crate::tenant::tasks::MAX_FROZEN_LAYERS
                    && !stop.load(Ordering::Relaxed)
                    && !self.is_deleted()
                {
                    w.wake();
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Ok(())
            }
            None => {
                self.flush_frozen()?;
                self.maintain_layers(&[]);
                Ok(())
            }
        }
    }

    /// Freeze the open layer and write every frozen layer to disk, advancing
    /// `disk_consistent_lsn` after each one is durable.
    pub fn freeze_and_flush(&self) -> Result<(), TimelineError> {
        self.freeze();
        self.flush_frozen()
    }

    /// Write every frozen layer to disk, oldest first, advancing
    /// `disk_consistent_lsn` after each one is durable. A failure leaves
    /// the layer frozen, to be written by the next call.
    pub fn flush_frozen(&self) -> Result<(), TimelineError> {
        let guard = self.flush_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.flush_frozen_locked(&guard)
    }

    /// [`Timeline::flush_frozen`] with `flush_lock` held by the caller.
    pub(crate) fn flush_frozen_locked(
        &self,
        _flush_lock: &std::sync::MutexGuard<'_, ()>,
    ) -> Result<(), TimelineError> {
        fail::fail_point!("flush-frozen", |_| Err(TimelineError::Invalid(
            self.timeline_id,
            "failpoint flush-frozen".into()
        )));
        loop {
            let frozen = {
                let layers = self.layers.read().unwrap_or_else(|e| e.into_inner());
                match layers.frozen.first() {
                    Some(f) => Arc::clone(f),
                    None => break,
                }
            };
            let end = frozen.lsn_range().end - 1;
            let prev = frozen.end_prev_record();
            self.check_not_deleted()?;
            let written = frozen.write_delta_layer(&self.path, self.tenant_id, self.timeline_id)?;
            fail::fail_point!("flush-after-layer-write");
            {
                let mut layers = self.layers.write().unwrap_or_else(|e| e.into_inner());
                if let Some((path, name)) = written {
                    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    Arc::make_mut(&mut layers.map)
                        .insert(Arc::new(PersistentLayer::new(name, path, size)));
                }
                layers.frozen.remove(0);
            }
            self.advance_disk_consistent_lsn(end, prev)?;
        }
        Ok(())
    }

    /// Records `lsn` as durable in the metadata file. The caller holds
    /// `flush_lock` (the only other writer of the file, GC, takes it too),
    /// so the file is written without holding the `metadata` mutex: readers
    /// of the metadata never wait for the fsync.
    pub(crate) fn advance_disk_consistent_lsn(
        &self,
        lsn: Lsn,
        prev: Option<Lsn>,
    ) -> Result<(), TimelineError> {
        self.check_not_deleted()?;
        let mut new = self.metadata();
        if lsn <= new.disk_consistent_lsn {
            return Ok(());
        }
        new.disk_consistent_lsn = lsn;
        // The start of the record ending at `lsn`, taken when its layer
        // was frozen: the WAL receiver restarts from here after a crash.
        new.prev_record_lsn = prev;
        fail::fail_point!("metadata-save", |_| Err(TimelineError::Invalid(
            self.timeline_id,
            "failpoint metadata-save".into()
        )));
        new.save(&self.path.join(METADATA_FILE_NAME))?;
        *self.metadata.lock().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    fn put(&self, key: Key, lsn: Lsn, value: Value) -> Result<(), TimelineError> {
        let mut layers = self.layers.write().unwrap_or_else(|e| e.into_inner());
        let start = layers.next_open_start;
        let open = layers.open.get_or_insert_with(|| InMemoryLayer::new(start));
        open.put(key, lsn, value)
            .map_err(|m| TimelineError::Invalid(self.timeline_id, m))
    }

    /// How long an in-memory layer may stay open.
    pub fn checkpoint_timeout(&self) -> std::time::Duration {
        self.conf.checkpoint_timeout
    }

    /// True when the open layer has passed `checkpoint_distance`.
    pub fn needs_checkpoint(&self) -> bool {
        self.open_layer_size() >= self.conf.checkpoint_distance
    }
}

/// For unit tests: an empty timeline in `<dir>/tl` that starts at `start`,
/// with Rust-native redo only.
#[cfg(test)]
pub(crate) fn test_timeline(dir: &Path, conf: TenantConf, start: Lsn) -> Arc<Timeline> {
    Timeline::create(
        &dir.join("tl"),
        TenantId::generate(),
        TimelineId::generate(),
        conf,
        None,
        RecordLsn {
            last: start,
            prev: Lsn(0),
        },
        start,
        Arc::new(crate::walredo::NativeOnlyRedoManager),
    )
    .expect("creating a test timeline")
}

/// Files the values of WAL records into a timeline.
pub struct TimelineWriter {
    tl: Arc<Timeline>,
}

impl TimelineWriter {
    /// File `value` under `key` at `lsn` (the end LSN of its record).
    pub fn put(&self, key: Key, lsn: Lsn, value: Value) -> Result<(), TimelineError> {
        if lsn <= self.tl.last_record_lsn() {
            return Err(TimelineError::Invalid(
                self.tl.timeline_id,
                format!(
                    "put at {lsn}, not above last_record_lsn {}",
                    self.tl.last_record_lsn()
                ),
            ));
        }
        self.tl.put(key, lsn, value)
    }

    /// The record that ends at `end` (and started at `start`) is complete.
    pub fn finish_write(&self, start: Lsn, end: Lsn) {
        self.tl.record_lsn_tx.send_modify(|r| {
            if end > r.last {
                *r = RecordLsn {
                    last: end,
                    prev: start,
                };
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walredo::NativeOnlyRedoManager;

    fn page(b: u8) -> Value {
        Value::Image(Bytes::from(vec![b; 8192]))
    }

    fn new_tl(dir: &Path, start: Lsn) -> Arc<Timeline> {
        test_timeline(dir, TenantConf::default(), start)
    }

    fn key(n: u32) -> Key {
        Key::MIN.add(n)
    }

    #[test]
    fn reads_see_versions_by_lsn_across_flushes_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let tl = new_tl(dir.path(), Lsn(0x100));
        let w = tl.writer();
        // Versions of key 1 at 0x110, 0x210 (after a flush), 0x310 (in memory).
        w.put(key(1), Lsn(0x110), page(1)).unwrap();
        w.put(key(2), Lsn(0x110), page(9)).unwrap();
        w.finish_write(Lsn(0x100), Lsn(0x110));
        tl.freeze_and_flush().unwrap();
        assert_eq!(tl.disk_consistent_lsn(), Lsn(0x110));
        w.put(key(1), Lsn(0x210), page(2)).unwrap();
        w.finish_write(Lsn(0x110), Lsn(0x210));
        tl.freeze_and_flush().unwrap();
        w.put(key(1), Lsn(0x310), page(3)).unwrap();
        w.finish_write(Lsn(0x210), Lsn(0x310));
        // A put not above last_record_lsn is refused.
        assert!(w.put(key(1), Lsn(0x300), page(4)).is_err());

        let at = |tl: &Timeline, k, l| tl.get(key(k), Lsn(l)).map(|b| b[0]);
        assert_eq!(at(&tl, 1, 0x110).unwrap(), 1);
        assert_eq!(at(&tl, 1, 0x200).unwrap(), 1);
        assert_eq!(at(&tl, 1, 0x210).unwrap(), 2);
        assert_eq!(at(&tl, 1, 0x400).unwrap(), 3);
        assert_eq!(at(&tl, 2, 0x400).unwrap(), 9);
        assert!(matches!(
            tl.get(key(1), Lsn(0x10F)),
            Err(TimelineError::BelowGcCutoff { .. }) | Err(TimelineError::MissingKey { .. })
        ));
        assert!(matches!(
            tl.get(key(3), Lsn(0x400)),
            Err(TimelineError::MissingKey { .. })
        ));
        assert_eq!(tl.layer_files().len(), 2);

        // Restart: the in-memory version at 0x310 is gone until re-ingested.
        let (path, t, id) = (tl.path.clone(), tl.tenant_id, tl.timeline_id);
        drop(w);
        drop(tl);
        let tl = Timeline::load(
            &path,
            t,
            id,
            TenantConf::default(),
            None,
            Arc::new(NativeOnlyRedoManager),
        )
        .unwrap();
        assert_eq!(tl.last_record_lsn(), Lsn(0x210));
        assert_eq!(at(&tl, 1, 0x400).unwrap(), 2);
        assert_eq!(at(&tl, 1, 0x150).unwrap(), 1);
    }

    #[test]
    fn layers_above_disk_consistent_lsn_are_removed_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let tl = new_tl(dir.path(), Lsn(0x100));
        let w = tl.writer();
        w.put(key(1), Lsn(0x110), page(1)).unwrap();
        w.finish_write(Lsn(0x100), Lsn(0x110));
        tl.freeze_and_flush().unwrap();
        // Simulate a crash after a layer's rename but before the metadata update.
        let md = tl.metadata();
        w.put(key(1), Lsn(0x210), page(2)).unwrap();
        w.finish_write(Lsn(0x110), Lsn(0x210));
        tl.freeze_and_flush().unwrap();
        md.save(&tl.path.join(METADATA_FILE_NAME)).unwrap();
        std::fs::write(tl.path.join("junk.___temp"), b"x").unwrap();
        let (path, t, id) = (tl.path.clone(), tl.tenant_id, tl.timeline_id);
        drop(w);
        drop(tl);
        let tl = Timeline::load(
            &path,
            t,
            id,
            TenantConf::default(),
            None,
            Arc::new(NativeOnlyRedoManager),
        )
        .unwrap();
        assert_eq!(tl.layer_files().len(), 1);
        assert_eq!(tl.get(key(1), Lsn(0x300)).unwrap()[0], 1);
        assert!(!path.join("junk.___temp").exists());
    }

    #[test]
    fn branch_reads_parent_below_branch_point() {
        let dir = tempfile::tempdir().unwrap();
        let parent = new_tl(dir.path(), Lsn(0x100));
        let w = parent.writer();
        w.put(key(1), Lsn(0x110), page(1)).unwrap();
        w.finish_write(Lsn(0x100), Lsn(0x110));
        w.put(key(1), Lsn(0x210), page(2)).unwrap();
        w.finish_write(Lsn(0x110), Lsn(0x210));
        let child = Timeline::create(
            &dir.path().join("child"),
            parent.tenant_id,
            TimelineId::generate(),
            TenantConf::default(),
            Some((Arc::clone(&parent), Lsn(0x110))),
            RecordLsn {
                last: Lsn(0x110),
                prev: Lsn(0x100),
            },
            Lsn(0x100),
            Arc::new(NativeOnlyRedoManager),
        )
        .unwrap();
        // Writes on the parent after the branch point are invisible on the branch.
        assert_eq!(child.get(key(1), Lsn(0x500)).unwrap()[0], 1);
        let cw = child.writer();
        cw.put(key(1), Lsn(0x300), page(7)).unwrap();
        cw.finish_write(Lsn(0x110), Lsn(0x300));
        assert_eq!(child.get(key(1), Lsn(0x300)).unwrap()[0], 7);
        assert_eq!(child.get(key(1), Lsn(0x2FF)).unwrap()[0], 1);
        assert_eq!(parent.get(key(1), Lsn(0x300)).unwrap()[0], 2);
    }

    #[test]
    fn native_records_are_applied_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let tl = new_tl(dir.path(), Lsn(0x100));
        let w = tl.writer();
        let clog = Key {
            field6: 0,
            ..key(0)
        };
        w.put(clog, Lsn(0x110), Value::Image(Bytes::from(vec![0u8; 8192])))
            .unwrap();
        w.finish_write(Lsn(0x100), Lsn(0x110));
        w.put(
            clog,
            Lsn(0x120),
            Value::WalRecord(ZenithWalRecord::ClogSetCommitted {
                xids: vec![5],
                timestamp: 0,
            }),
        )
        .unwrap();
        w.finish_write(Lsn(0x110), Lsn(0x120));
        tl.freeze_and_flush().unwrap();
        let p = tl.get(clog, Lsn(0x120)).unwrap();
        assert_eq!(postgres_ffi::slru::clog_get_status(&p, 5), 1);
        assert_eq!(
            postgres_ffi::slru::clog_get_status(&tl.get(clog, Lsn(0x110)).unwrap(), 5),
            0
        );
    }

    #[tokio::test]
    async fn wait_lsn_waits_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let tl = new_tl(dir.path(), Lsn(0x100));
        let t2 = Arc::clone(&tl);
        let waiter = tokio::spawn(async move {
            t2.wait_lsn(Lsn(0x200), std::time::Duration::from_secs(10))
                .await
        });
        tl.writer().finish_write(Lsn(0x100), Lsn(0x200));
        waiter.await.unwrap().unwrap();
        let e = tl
            .wait_lsn(Lsn(0x300), std::time::Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("0/300"), "{e}");
    }

    /// Defect: a checkpoint (freeze) between the puts of one record and its
    /// `finish_write` cut the open layer at the previous record, leaving the
    /// record's values above the frozen layer's end: every later flush
    /// failed, and `disk_consistent_lsn` never advanced again.
    #[test]
    fn freeze_in_the_middle_of_a_record_keeps_flushing() {
        let dir = tempfile::tempdir().unwrap();
        let tl = new_tl(dir.path(), Lsn(0x100));
        let w = tl.writer();
        w.put(key(1), Lsn(0x110), page(1)).unwrap();
        w.finish_write(Lsn(0x100), Lsn(0x110));
        // The record ending at 0x180 is half filed when a checkpoint comes.
        w.put(key(2), Lsn(0x180), page(2)).unwrap();
        tl.freeze_and_flush().unwrap();
        assert_eq!(tl.disk_consistent_lsn(), Lsn(0x110));
        w.put(key(3), Lsn(0x180), page(3)).unwrap();
        w.finish_write(Lsn(0x110), Lsn(0x180));
        tl.freeze_and_flush().unwrap();
        assert_eq!(tl.disk_consistent_lsn(), Lsn(0x180));
        for (k, v) in [(1, 1), (2, 2), (3, 3)] {
            assert_eq!(tl.get(key(k), Lsn(0x180)).unwrap()[0], v);
        }
        // The half-filed record is invisible below its end.
        assert!(tl.get(key(2), Lsn(0x17F)).is_err());
        // More records flush as usual.
        w.put(key(1), Lsn(0x200), page(9)).unwrap();
        w.finish_write(Lsn(0x180), Lsn(0x200));
        tl.freeze_and_flush().unwrap();
        assert_eq!(tl.disk_consistent_lsn(), Lsn(0x200));
    }

    /// Defect (found by the crash tests): a layer frozen at one record and
    /// flushed after ingest had moved on saved `prev_record_lsn: None`; after
    /// a crash the WAL receiver restarted at `disk_consistent_lsn` expecting
    /// a previous record at 0/0 and the timeline broke on the first record
    /// ("record with incorrect prev-link"). The flush point's previous record
    /// is taken when the layer is frozen.
    #[test]
    fn a_flush_after_ingest_moved_on_keeps_the_prev_record_lsn() {
        let dir = tempfile::tempdir().unwrap();
        let tl = new_tl(dir.path(), Lsn(0x100));
        let w = tl.writer();
        w.put(key(1), Lsn(0x110), page(1)).unwrap();
        w.finish_write(Lsn(0x100), Lsn(0x110));
        tl.freeze();
        w.put(key(2), Lsn(0x180), page(2)).unwrap();
        w.finish_write(Lsn(0x110), Lsn(0x180));
        tl.flush_frozen().unwrap();
        let md = tl.metadata();
        assert_eq!(md.disk_consistent_lsn, Lsn(0x110));
        assert_eq!(md.prev_record_lsn, Some(Lsn(0x100)));
        let on_disk = TimelineMetadata::load(&tl.path.join(METADATA_FILE_NAME)).unwrap();
        assert_eq!(on_disk.prev_record_lsn, Some(Lsn(0x100)));
    }

    #[test]
    fn cached_reads_never_touch_files_and_agree_with_get() {
        let dir = tempfile::tempdir().unwrap();
        let tl = new_tl(dir.path(), Lsn(0x100));
        let w = tl.writer();
        // key 1: an image on disk; key 2: an image in memory.
        w.put(key(1), Lsn(0x110), page(1)).unwrap();
        w.finish_write(Lsn(0x100), Lsn(0x110));
        tl.freeze_and_flush().unwrap();
        w.put(key(2), Lsn(0x210), page(2)).unwrap();
        w.finish_write(Lsn(0x110), Lsn(0x210));

        let cached = |k, l| tl.get_cached(key(k), Lsn(l));
        assert_eq!(cached(2, 0x300).unwrap()[0], 2);
        assert!(matches!(
            cached(3, 0x300),
            Err(TimelineError::MissingKey { .. })
        ));
        // On disk and not yet cached: a cached-only read would block.
        assert!(matches!(cached(1, 0x300), Err(TimelineError::WouldBlock)));
        // A real read caches it under its version's LSN ...
        assert_eq!(tl.get(key(1), Lsn(0x300)).unwrap()[0], 1);
        // ... which serves every later LSN until a newer version arrives.
        assert_eq!(cached(1, 0x200).unwrap()[0], 1);
        assert_eq!(cached(1, 0x300).unwrap()[0], 1);
        w.put(key(1), Lsn(0x310), page(7)).unwrap();
        w.finish_write(Lsn(0x210), Lsn(0x310));
        assert_eq!(cached(1, 0x310).unwrap()[0], 7);
        assert_eq!(cached(1, 0x300).unwrap()[0], 1);
        tl.freeze_and_flush().unwrap();
        assert!(matches!(cached(1, 0x310), Err(TimelineError::WouldBlock)));
        assert_eq!(tl.get(key(1), Lsn(0x310)).unwrap()[0], 7);
        assert_eq!(cached(1, 0x310).unwrap()[0], 7);
    }
}
