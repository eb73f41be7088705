//! A timeline's layer set, its metadata file, and the order of its locks.
//!
//! **Lock order**, outermost first. A thread that holds one of them never
//! waits for one above it:
//!
//! 1. *maintenance* ([`MaintenanceGuard`]): compaction, image creation and
//!    GC exclude each other, but not flushes, so ingest never waits for them;
//! 2. *flush* ([`FlushGuard`]): writing frozen layers, bulk records, and
//!    every write of the metadata file;
//! 3. *layers* (the `RwLock<Layers>`): the in-memory layers, the layer map
//!    and the GC cutoff; held for in-memory work only, never across I/O;
//! 4. *metadata* (the in-memory copy of the metadata file): held only to
//!    copy it in or out, never across I/O.
//!
//! The first two are taken through guard types, and every function that
//! needs one takes the guard as an argument, so it cannot be called without
//! the lock. Maintenance code that also needs the flush lock gets it from its
//! [`MaintenanceGuard`] (order 1 → 2); taking the maintenance lock while this
//! thread holds the flush lock panics in debug builds.
//!
//! This module is the one place that installs and removes layer files
//! ([`Timeline::apply_layer_change`]) and saves the metadata file
//! ([`Timeline::save_metadata`]); both hand their changes to the timeline's
//! upload queue when it has remote storage
//! ([`crate::tenant::remote_timeline::upload`]).

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::{Arc, MutexGuard};

use zenith_utils::lsn::Lsn;

use super::{Timeline, TimelineError, METADATA_FILE_NAME};
use crate::tenant::layer_map::{LayerMap, PersistentLayer};
use crate::tenant::metadata::TimelineMetadata;
use crate::tenant::remote_timeline::upload::{layer_file_meta, RemoteTimeline};
use crate::tenant::storage_layer::filename::LayerFileName;
use crate::tenant::storage_layer::inmemory_layer::InMemoryLayer;

/// The in-memory layers, the layer files and the GC cutoff of a timeline
/// (behind the timeline's `layers` lock).
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
    pub(super) next_open_start: Lsn,
    /// Reads below this LSN are refused. Kept with the layer map, so that a
    /// read checks the cutoff against the very layers it then walks: GC
    /// raises it (after persisting it) in the same critical section that
    /// takes layers out of the map.
    pub(crate) gc_cutoff: Lsn,
}

impl Layers {
    pub(super) fn new(map: LayerMap, next_open_start: Lsn, gc_cutoff: Lsn) -> Layers {
        Layers {
            open: None,
            frozen: Vec::new(),
            map: Arc::new(map),
            next_open_start,
            gc_cutoff,
        }
    }
}

thread_local! {
    /// Flush guards this thread holds (for the lock-order check).
    static FLUSH_HELD: Cell<u32> = const { Cell::new(0) };
}

/// Proof that this thread holds the timeline's maintenance lock.
pub(crate) struct MaintenanceGuard<'a> {
    tl: &'a Timeline,
    _guard: MutexGuard<'a, ()>,
}

impl<'a> MaintenanceGuard<'a> {
    /// Take the flush lock too (the allowed order: maintenance, then flush).
    pub(crate) fn lock_flush(&self) -> FlushGuard<'a> {
        self.tl.lock_flush()
    }
}

/// Proof that this thread holds the timeline's flush lock.
pub(crate) struct FlushGuard<'a> {
    _guard: MutexGuard<'a, ()>,
}

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        FLUSH_HELD.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// A guard that allows changing the layer set.
pub(crate) trait LayerChangeRight {}
impl LayerChangeRight for MaintenanceGuard<'_> {}
impl LayerChangeRight for FlushGuard<'_> {}

/// One change of the layer set, applied atomically for readers.
#[derive(Default)]
pub(crate) struct LayerChange {
    /// New, durable layer files (name, path).
    pub add: Vec<(LayerFileName, PathBuf)>,
    /// Layers to take out; their files are deleted once no read holds them.
    pub remove: Vec<Arc<PersistentLayer>>,
    /// The oldest frozen in-memory layer is now in `add`.
    pub drop_oldest_frozen: bool,
    /// Refuse reads below this LSN from now on (GC, after saving it).
    pub raise_gc_cutoff: Option<Lsn>,
    /// The next open in-memory layer starts at or above this LSN.
    pub next_open_start: Option<Lsn>,
}

impl Timeline {
    /// Take the maintenance lock (compaction, images, GC).
    pub(crate) fn lock_maintenance(&self) -> MaintenanceGuard<'_> {
        debug_assert_eq!(
            FLUSH_HELD.with(|c| c.get()),
            0,
            "lock order: the maintenance lock taken while holding the flush lock"
        );
        MaintenanceGuard {
            tl: self,
            _guard: self
                .maintenance_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Take the flush lock (flushes, bulk records, metadata writes).
    pub(crate) fn lock_flush(&self) -> FlushGuard<'_> {
        let guard = self.flush_lock.lock().unwrap_or_else(|e| e.into_inner());
        FLUSH_HELD.with(|c| c.set(c.get() + 1));
        FlushGuard { _guard: guard }
    }

    /// Install and remove layer files in one step for readers. Removed
    /// layers are doomed: each file goes when the last read holding it lets
    /// go. Returns the removed layers.
    pub(crate) fn apply_layer_change(
        &self,
        _right: &dyn LayerChangeRight,
        change: LayerChange,
    ) -> Vec<Arc<PersistentLayer>> {
        if let Some(remote) = self.remote.get() {
            self.schedule_uploads(remote, &change);
        }
        let added: Vec<Arc<PersistentLayer>> = change
            .add
            .into_iter()
            .map(|(name, path)| {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                Arc::new(PersistentLayer::new(name, path, size))
            })
            .collect();
        let mut layers = self.layers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(cutoff) = change.raise_gc_cutoff {
            layers.gc_cutoff = layers.gc_cutoff.max(cutoff);
        }
        if let Some(start) = change.next_open_start {
            layers.next_open_start = layers.next_open_start.max(start);
        }
        if change.drop_oldest_frozen && !layers.frozen.is_empty() {
            layers.frozen.remove(0);
        }
        if !added.is_empty() || !change.remove.is_empty() {
            let map = Arc::make_mut(&mut layers.map);
            for l in added {
                map.insert(l);
            }
            if !change.remove.is_empty() {
                let gone: std::collections::HashSet<*const PersistentLayer> =
                    change.remove.iter().map(Arc::as_ptr).collect();
                map.remove_where(|l| gone.contains(&Arc::as_ptr(l)));
            }
        }
        drop(layers);
        for l in &change.remove {
            l.doom();
        }
        change.remove
    }

    /// Write the metadata file (durably), then the in-memory copy. Under the
    /// flush lock, not the metadata mutex: readers of the metadata never
    /// wait for the fsync.
    pub(crate) fn save_metadata(
        &self,
        _flush: &FlushGuard<'_>,
        md: TimelineMetadata,
    ) -> Result<(), TimelineError> {
        self.check_not_deleted()?;
        md.save(&self.path.join(METADATA_FILE_NAME))?;
        if let Some(remote) = self.remote.get() {
            remote.schedule_metadata(&md);
        }
        *self.metadata.lock().unwrap_or_else(|e| e.into_inner()) = md;
        Ok(())
    }

    /// Hands a layer change to the upload queue: the new files (with their
    /// size and checksum, read here) and the names of the removed ones.
    fn schedule_uploads(&self, remote: &RemoteTimeline, change: &LayerChange) {
        let mut added = Vec::with_capacity(change.add.len());
        for (name, path) in &change.add {
            match layer_file_meta(path, remote.generation()) {
                Ok(meta) => added.push((name.clone(), path.clone(), meta)),
                // Not uploaded, so in no index: the next start uploads it.
                Err(e) => {
                    tracing::error!(tenant_id = %self.tenant_id, timeline_id = %self.timeline_id,
                    "reading new layer {} for upload: {e}", path.display())
                }
            }
        }
        let removed: Vec<LayerFileName> = change.remove.iter().map(|l| l.name.clone()).collect();
        remote.schedule_layer_change(added, &removed, &self.metadata());
    }

    /// Record `lsn` (the end of the record that starts at `prev`) as
    /// durable: every value up to it is in layer files.
    pub(crate) fn advance_disk_consistent_lsn(
        &self,
        flush: &FlushGuard<'_>,
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
        self.save_metadata(flush, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantConf;

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "lock order")]
    fn maintenance_after_flush_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tl = super::super::test_timeline(dir.path(), TenantConf::default(), Lsn(0x100));
        let _flush = tl.lock_flush();
        let _maintenance = tl.lock_maintenance();
    }

    #[test]
    fn maintenance_then_flush_is_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let tl = super::super::test_timeline(dir.path(), TenantConf::default(), Lsn(0x100));
        {
            let m = tl.lock_maintenance();
            let _flush = m.lock_flush();
        }
        // Released: both can be taken again.
        let _m = tl.lock_maintenance();
    }
}
