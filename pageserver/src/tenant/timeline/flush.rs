//! Ingest's side of the layers: freezing the open in-memory layer at a
//! record boundary and writing frozen layers as level-0 delta layer files,
//! on the tenant's background thread or (without one) inline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing::warn;
use zenith_utils::lsn::Lsn;

use super::layer_set::{FlushGuard, LayerChange};
use super::{RecordLsn, Timeline, TimelineError};

impl Timeline {
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
        let guard = self.lock_flush();
        self.flush_frozen_locked(&guard)
    }

    /// [`Timeline::flush_frozen`] with the flush lock held by the caller.
    pub(crate) fn flush_frozen_locked(&self, flush: &FlushGuard<'_>) -> Result<(), TimelineError> {
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
            let _timer = super::StorageOperation::Flush.start_timer();
            let end = frozen.lsn_range().end - 1;
            let prev = frozen.end_prev_record();
            self.check_not_deleted()?;
            let written = frozen.write_delta_layer(&self.path, self.tenant_id, self.timeline_id)?;
            fail::fail_point!("flush-after-layer-write");
            self.apply_layer_change(
                flush,
                LayerChange {
                    add: written
                        .map(|(path, name)| (name, path))
                        .into_iter()
                        .collect(),
                    drop_oldest_frozen: true,
                    ..LayerChange::default()
                },
            );
            self.advance_disk_consistent_lsn(flush, end, prev)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::metadata::TimelineMetadata;
    use crate::tenant::timeline::test_helpers::*;
    use crate::tenant::timeline::METADATA_FILE_NAME;

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
}
