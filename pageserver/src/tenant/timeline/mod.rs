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
//!
//! Files: this one (the timeline, its states, writer and load), `read.rs` (the
//! read path), `layer_set.rs` (the lock order; the one place that installs and
//! removes layer files and saves the metadata), `flush.rs` (freezing and
//! flushing), `bulk.rs` (records too large for memory), `compaction.rs`,
//! `images.rs`, `gc.rs`, `lsn_by_time.rs`. The WAL intake that feeds it is
//! [`crate::walreceiver`], above the storage.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;
use tracing::info;
use zenith_utils::crashsafe;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use super::layer_map::{LayerMap, PersistentLayer};
use super::metadata::{MetadataError, TimelineMetadata};
use super::storage_layer::filename::LayerFileName;
use super::storage_layer::inmemory_layer::InMemoryLayer;
use super::storage_layer::layer_file::LayerError;
use crate::config::TenantConf;
use crate::key::Key;
use crate::value::Value;
use crate::walredo::{WalRedoError, WalRedoManager};

mod bulk;
mod compaction;
mod flush;
pub mod gc;
mod images;
pub use images::LiveKeySpace;
mod layer_set;
pub mod lsn_by_time;
mod read;
pub mod read_lsn;

pub use gc::GcResult;
pub(crate) use layer_set::{LayerChange, Layers, MaintenanceGuard};
pub use read_lsn::ReadLsnError;

/// `pageserver_wait_lsn_seconds`: how long a reader (a pagestream request,
/// a basebackup) waits in [`Timeline::wait_lsn`] for WAL to arrive.
static WAIT_LSN_SECONDS: std::sync::LazyLock<zenith_metrics::Histogram> =
    std::sync::LazyLock::new(|| {
        zenith_metrics::register_histogram!(
            "pageserver_wait_lsn_seconds",
            "Time a read waits for WAL to arrive up to its LSN (timeouts included)",
            zenith_metrics::LATENCY_BUCKETS_SECONDS.to_vec()
        )
        .expect("registering pageserver_wait_lsn_seconds")
    });

/// The layer-file work timed by `pageserver_storage_operation_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageOperation {
    /// Writing one frozen in-memory layer as a delta layer file.
    Flush,
    /// One compaction of L0 delta layers that reached its threshold.
    Compact,
    /// One GC run of a timeline.
    Gc,
}

impl StorageOperation {
    const ALL: [StorageOperation; 3] = [
        StorageOperation::Flush,
        StorageOperation::Compact,
        StorageOperation::Gc,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StorageOperation::Flush => "flush",
            StorageOperation::Compact => "compact",
            StorageOperation::Gc => "gc",
        }
    }

    /// Times the operation until the returned timer is dropped.
    pub fn start_timer(self) -> zenith_metrics::HistogramTimer {
        STORAGE_OPERATION_SECONDS[self as usize].start_timer()
    }
}

/// `pageserver_storage_operation_seconds{operation}`, one handle per
/// [`StorageOperation`] (every operation present from the start).
static STORAGE_OPERATION_SECONDS: std::sync::LazyLock<[zenith_metrics::Histogram; 3]> =
    std::sync::LazyLock::new(|| {
        let vec = zenith_metrics::register_histogram_vec!(
            "pageserver_storage_operation_seconds",
            "Time of layer-file work, by operation (flush, compact, gc)",
            &["operation"],
            zenith_metrics::LATENCY_BUCKETS_SECONDS.to_vec()
        )
        .expect("registering pageserver_storage_operation_seconds");
        StorageOperation::ALL.map(|op| vec.with_label_values(&[op.label()]))
    });

/// Registers the timeline's metrics (see [`crate::register_metrics`]).
pub fn register_metrics() {
    std::sync::LazyLock::force(&WAIT_LSN_SECONDS);
    std::sync::LazyLock::force(&STORAGE_OPERATION_SECONDS);
    crate::tenant::tasks::register_metrics();
}

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

/// The LSNs that describe how far a timeline has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLsn {
    /// End of the last WAL record applied completely.
    pub last: Lsn,
    /// Start of that record.
    pub prev: Lsn,
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
    /// Taken only through [`Timeline::lock_flush`] and
    /// [`Timeline::lock_maintenance`]; the lock order is in `layer_set.rs`.
    flush_lock: Mutex<()>,
    maintenance_lock: Mutex<()>,
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
    /// Which keys are live at an LSN (what image layers hold), once the
    /// tenant owns this timeline; until then no images are made.
    live_keyspace: std::sync::OnceLock<LiveKeySpace>,
    /// The upload queue to remote storage, once the tenant owns this
    /// timeline and the pageserver has remote storage.
    pub(crate) remote:
        std::sync::OnceLock<Arc<crate::tenant::remote_timeline::upload::RemoteTimeline>>,
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
            layers: RwLock::new(Layers::new(
                map,
                metadata.disk_consistent_lsn + 1,
                metadata.latest_gc_cutoff_lsn,
            )),
            record_lsn_tx,
            metadata: Mutex::new(metadata),
            flush_lock: Mutex::new(()),
            maintenance_lock: Mutex::new(()),
            walredo,
            incarnation: crate::page_cache::new_incarnation(),
            broken: Mutex::new(None),
            wakeup: std::sync::OnceLock::new(),
            live_keyspace: std::sync::OnceLock::new(),
            remote: std::sync::OnceLock::new(),
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
        let maintenance = self.lock_maintenance();
        let _flush = maintenance.lock_flush();
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
        let started = std::time::Instant::now();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|r| r.last >= lsn)).await;
        WAIT_LSN_SECONDS.observe(started.elapsed().as_secs_f64());
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
    /// Every layer file, with its path.
    pub fn layer_paths(&self) -> Vec<(LayerFileName, PathBuf)> {
        let layers = self.layers.read().unwrap_or_else(|e| e.into_inner());
        layers
            .map
            .iter()
            .map(|l| (l.name.clone(), l.path.clone()))
            .collect()
    }

    /// The upload queue, if the timeline's tenant has remote storage.
    pub fn remote(&self) -> Option<&Arc<crate::tenant::remote_timeline::upload::RemoteTimeline>> {
        self.remote.get()
    }

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
pub(crate) mod test_helpers {
    use super::*;
    use bytes::Bytes;

    pub fn page(b: u8) -> Value {
        Value::Image(Bytes::from(vec![b; 8192]))
    }

    pub fn new_tl(dir: &Path, start: Lsn) -> Arc<Timeline> {
        test_timeline(dir, TenantConf::default(), start)
    }

    pub fn key(n: u32) -> Key {
        Key::MIN.add(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::timeline::test_helpers::*;
    use crate::walredo::NativeOnlyRedoManager;

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

    #[tokio::test]
    async fn wait_lsn_waits_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let tl = new_tl(dir.path(), Lsn(0x100));
        let (count, sum) = (
            WAIT_LSN_SECONDS.get_sample_count(),
            WAIT_LSN_SECONDS.get_sample_sum(),
        );
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
        // Both waits are in pageserver_wait_lsn_seconds, the timeout with its 50 ms.
        assert!(WAIT_LSN_SECONDS.get_sample_count() >= count + 2);
        assert!(WAIT_LSN_SECONDS.get_sample_sum() >= sum + 0.05);
    }

    #[test]
    fn storage_operations_have_their_own_histogram() {
        for op in StorageOperation::ALL {
            let h = &STORAGE_OPERATION_SECONDS[op as usize];
            let before = h.get_sample_count();
            drop(op.start_timer());
            assert!(h.get_sample_count() > before, "{op:?}");
        }
        let text = zenith_metrics::gather_text().unwrap();
        for label in ["flush", "compact", "gc"] {
            let series =
                format!("pageserver_storage_operation_seconds_count{{operation=\"{label}\"}}");
            assert!(text.contains(&series), "{text}");
        }
    }
}
