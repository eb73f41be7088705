//! Garbage collection for a timeline (docs/architecture.md §7).
//!
//! The cutoff is `last_record_lsn - gc_horizon`, lowered to keep
//!   `pitr_interval` of history (the end of the last commit before
//!   `now - pitr_interval`, found by [`Timeline::find_lsn_for_timestamp`];
//!   all history if every commit is newer, no advance if there are no
//!   commits to go by), never below the current cutoff and never above
//!   `disk_consistent_lsn`. It is persisted in the
//!   metadata file first; then a layer file is removed only if all of it is
//!   older than the cutoff, newer image layers at or below the cutoff cover
//!   its whole key range between them (so every key it holds has a newer
//!   version; images are made per key range, [`crate::tenant::timeline::images`]), and
//!   no child branch point lies between the layer and those images (the
//!   branch still reads through it). The cutoff rises and the layers leave
//!   the map in one critical section of the layers lock; a removed layer's
//!   file is deleted when the last read that holds it is done.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use postgres_ffi::xlog_utils::to_pg_timestamp;

use tracing::info;
use zenith_utils::lsn::Lsn;

use super::{LayerChange, Timeline, TimelineError};
use crate::key::Key;
use crate::tenant::layer_map::{LayerMap, PersistentLayer};

/// If image layers newer than `layer` (other than itself, at or above its
/// last LSN) and at or below `cutoff` cover its whole key range between them, the newest LSN
/// among the images used (a branch point below it still needs `layer`).
fn covering_images(map: &LayerMap, layer: &PersistentLayer, cutoff: Lsn) -> Option<Lsn> {
    let end = layer.lsn_range().end;
    let want = layer.key_range().clone();
    let mut images: Vec<(&std::ops::Range<Key>, Lsn)> = map
        .iter()
        .filter(|i| {
            !i.is_delta()
                && !std::ptr::eq(i.as_ref(), layer)
                && i.lsn_range().start <= cutoff
                && i.lsn_range().start + 1 >= end
                && i.key_range().start < want.end
                && i.key_range().end > want.start
        })
        .map(|i| (i.key_range(), i.lsn_range().start))
        .collect();
    images.sort_by_key(|(r, _)| r.start);
    // Sweep from the start of the wanted range; each step takes, among the
    // images starting at or before the covered point, the one reaching
    // farthest.
    let mut covered = want.start;
    let mut newest = Lsn(0);
    let mut i = 0;
    while covered < want.end {
        let mut best: Option<(Key, Lsn)> = None;
        while i < images.len() && images[i].0.start <= covered {
            let (r, lsn) = images[i];
            if r.end > covered && best.is_none_or(|(e, _)| r.end > e) {
                best = Some((r.end, lsn));
            }
            i += 1;
        }
        let (reach, lsn) = best?;
        covered = reach;
        newest = newest.max(lsn);
    }
    Some(newest)
}

/// What one GC run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcResult {
    pub cutoff: Lsn,
    pub layers_total: usize,
    pub layers_removed: usize,
    pub bytes_removed: u64,
}

impl Timeline {
    /// The highest cutoff that keeps `pitr` of history (`None`: no limit).
    fn pitr_cutoff(&self, pitr: Duration) -> Result<Option<Lsn>, TimelineError> {
        if pitr.is_zero() {
            return Ok(None);
        }
        let since = SystemTime::now()
            .checked_sub(pitr)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        use super::lsn_by_time::LsnForTimestamp::*;
        Ok(match self.find_lsn_for_timestamp(to_pg_timestamp(since))? {
            // Everything committed by then is visible at the commit's end.
            Present(l) => Some(l),
            // Every commit is newer than the window's start: keep it all.
            Past(l) => Some(l),
            // Every commit is older: the window does not limit GC.
            Future(_) => None,
            // No commit times to go by: do not advance on the window's account.
            NoData(_) => Some(Lsn(0)),
        })
    }

    /// Run GC with `horizon` bytes and `pitr` of history kept, respecting
    /// the children's `branch_points`.
    pub fn gc(
        &self,
        horizon: u64,
        pitr: Duration,
        branch_points: &[Lsn],
    ) -> Result<GcResult, TimelineError> {
        let _timer = super::StorageOperation::Gc.start_timer();
        let pitr_cutoff = self.pitr_cutoff(pitr)?;
        let maintenance = self.lock_maintenance();
        // Also against flushes: both rewrite the metadata file.
        let flush = maintenance.lock_flush();
        self.check_not_deleted()?;
        let last = self.last_record_lsn();
        let mut md = self.metadata();
        let mut cutoff = Lsn(last.0.saturating_sub(horizon)).min(md.disk_consistent_lsn);
        if let Some(p) = pitr_cutoff {
            cutoff = cutoff.min(p);
        }
        let cutoff = cutoff.max(md.latest_gc_cutoff_lsn);
        if cutoff > md.latest_gc_cutoff_lsn {
            // Persist the cutoff before removing anything it allows to remove.
            md.latest_gc_cutoff_lsn = cutoff;
            self.save_metadata(&flush, md)?;
        }
        fail::fail_point!("gc-before-remove", |_| Err(TimelineError::Invalid(
            self.timeline_id,
            "failpoint gc-before-remove".into()
        )));
        // Which layers go is decided on a snapshot, without blocking reads
        // or ingest: only flushes, compaction and image creation change the
        // layer map, and the two locks held here keep them out.
        let snapshot = Arc::clone(&self.layers.read().unwrap_or_else(|e| e.into_inner()).map);
        let mut result = GcResult {
            cutoff,
            layers_total: snapshot.len(),
            ..Default::default()
        };
        let mut doomed: Vec<Arc<PersistentLayer>> = Vec::new();
        for l in snapshot.iter() {
            let r = l.lsn_range();
            if r.end > cutoff {
                continue; // holds data at or above the cutoff
            }
            // Newer images at or below the cutoff that cover this layer's keys.
            let Some(img_lsn) = covering_images(&snapshot, l, cutoff) else {
                continue;
            };
            // A branch point between the layer and the image still needs it.
            if branch_points.iter().any(|b| *b >= r.start && *b < img_lsn) {
                continue;
            }
            doomed.push(Arc::clone(l));
        }
        drop(snapshot);
        // From here on, reads below the cutoff are refused; reads that took
        // their snapshot earlier keep the layers (and files) they hold.
        let removed = self.apply_layer_change(
            &flush,
            LayerChange {
                remove: doomed,
                raise_gc_cutoff: Some(cutoff),
                ..LayerChange::default()
            },
        );
        result.layers_removed = removed.len();
        result.bytes_removed = removed.iter().map(|l| l.file_size).sum();
        info!(tenant_id = %self.tenant_id, timeline_id = %self.timeline_id, %cutoff,
              removed = result.layers_removed, total = result.layers_total, "GC done");
        Ok(result)
    }

    /// Total size of the timeline's layer files.
    pub fn physical_size(&self) -> u64 {
        self.layer_files().iter().map(|(_, s)| s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Set by the one thread whose reads stop at the failpoint.
        static STOP_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    use crate::key::rel_block_key;
    use crate::value::Value;
    use postgres_ffi::relfile::RelTag;

    const REL: RelTag = RelTag {
        spcnode: 1663,
        dbnode: 5,
        relnode: 16384,
        forknum: 0,
    };

    /// The live keys of the first test: block 7 of [`REL`].
    fn block_7(_: &Timeline, _: Lsn) -> Result<Vec<std::ops::Range<Key>>, TimelineError> {
        let k = rel_block_key(REL, 7);
        Ok(vec![k..k.next()])
    }

    /// The live keys of the second test: blocks 0 to 9 of [`REL`].
    fn blocks_0_to_9(_: &Timeline, _: Lsn) -> Result<Vec<std::ops::Range<Key>>, TimelineError> {
        Ok(vec![rel_block_key(REL, 0)..rel_block_key(REL, 10)])
    }

    /// Files `page(b)` as block `blkno` of [`REL`] in a record ending at
    /// `lsn`.
    fn put_block(tl: &Arc<Timeline>, prev: Lsn, lsn: Lsn, blkno: u32, b: u8) {
        let w = tl.writer();
        w.put(
            rel_block_key(REL, blkno),
            lsn,
            Value::Image(Bytes::from(vec![b; 8192])),
        )
        .unwrap();
        w.finish_write(prev, lsn);
    }

    /// Defect: a read checked the GC cutoff, then took its layer snapshot;
    /// GC raising the cutoff and deleting layers in between made the read
    /// miss versions (an error or an older page). A read now works on one
    /// snapshot (layers and cutoff) and the files it holds outlive GC.
    #[test]
    fn gc_between_a_reads_cutoff_check_and_its_walk_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tl = super::super::test_timeline(dir.path(), TenantConf::default(), Lsn(0x100));
        tl.set_live_keyspace(block_7);
        let k = rel_block_key(REL, 7);
        put_block(&tl, Lsn(0x100), Lsn(0x110), 7, 1);
        tl.freeze_and_flush().unwrap();
        put_block(&tl, Lsn(0x110), Lsn(0x210), 7, 2);
        tl.freeze_and_flush().unwrap();
        assert!(
            !tl.create_image_layers(true).unwrap().is_empty(),
            "an image at 0x210"
        );

        let barrier = Arc::new(std::sync::Barrier::new(2));
        let b = Arc::clone(&barrier);
        fail::cfg_callback("read-after-snapshot", move || {
            if STOP_HERE.with(|s| s.get()) {
                b.wait(); // the read has passed its cutoff check
                b.wait(); // GC is done
            }
        })
        .unwrap();
        let t2 = Arc::clone(&tl);
        let reader = std::thread::spawn(move || {
            STOP_HERE.with(|s| s.set(true));
            t2.get(k, Lsn(0x150)).map(|p| p[0])
        });
        let files = |tl: &Timeline| {
            std::fs::read_dir(&tl.path)
                .unwrap()
                .filter(|e| {
                    LayerFileName::parse(&e.as_ref().unwrap().file_name().to_string_lossy())
                        .is_some()
                })
                .count()
        };
        barrier.wait();
        let before = files(&tl);
        let r = tl.gc(0, Duration::ZERO, &[]).unwrap();
        assert_eq!(r.cutoff, Lsn(0x210));
        assert!(r.layers_removed >= 1, "{r:?}");
        assert_eq!(files(&tl), before, "files the read holds are still there");
        barrier.wait();
        let got = reader.join().unwrap();
        fail::remove("read-after-snapshot");
        assert_eq!(
            got.unwrap(),
            1,
            "the read at 0x150 sees the version of 0x110"
        );
        assert_eq!(
            files(&tl),
            before - r.layers_removed,
            "deleted once released"
        );
        // Reads that start after GC see the new cutoff.
        assert!(matches!(
            tl.get(k, Lsn(0x150)),
            Err(TimelineError::BelowGcCutoff { .. })
        ));
        assert_eq!(tl.get(k, Lsn(0x210)).unwrap()[0], 2);
    }
    use crate::config::TenantConf;
    use crate::tenant::storage_layer::filename::LayerFileName;
    use bytes::Bytes;

    #[test]
    fn images_then_gc_removes_old_layers_but_keeps_reads_correct() {
        let dir = tempfile::tempdir().unwrap();
        let tl = super::super::test_timeline(
            dir.path(),
            TenantConf {
                image_creation_threshold: 2,
                ..TenantConf::default()
            },
            Lsn(0x100),
        );
        tl.set_live_keyspace(blocks_0_to_9);
        let key = |n: u32| rel_block_key(REL, n);
        let mut lsn = 0x100u64;
        // Four generations of 10 blocks, each flushed to its own delta layer.
        for gen in 1..=4u8 {
            for k in 0..10 {
                lsn += 0x10;
                put_block(&tl, Lsn(lsn - 0x10), Lsn(lsn), k, gen);
            }
            tl.freeze_and_flush().unwrap();
            if gen == 2 {
                assert_eq!(tl.create_image_layers(false).unwrap().len(), 1);
            }
        }
        let gen2_end = Lsn(0x100 + 20 * 0x10);
        assert_eq!(tl.layer_files().len(), 5);
        let before = tl.physical_size();

        // GC keeping everything: nothing removed.
        let r = tl.gc(u64::MAX, Duration::ZERO, &[]).unwrap();
        assert_eq!(r.layers_removed, 0);
        // A branch point inside generation 1 keeps its layer.
        let r = tl.gc(0x10, Duration::ZERO, &[Lsn(0x150)]).unwrap();
        assert_eq!(r.layers_removed, 1, "{r:?}");
        // Without branches the first generation's delta goes too.
        let r = tl.gc(0x10, Duration::ZERO, &[]).unwrap();
        assert_eq!(r.layers_removed, 1, "{r:?}");
        assert!(tl.physical_size() < before);
        // Reads at and above the image are intact; below the cutoff is an error.
        assert_eq!(r.cutoff, Lsn(lsn - 0x10));
        assert_eq!(tl.get(key(3), r.cutoff).unwrap()[0], 4);
        assert_eq!(tl.get(key(9), r.cutoff).unwrap()[0], 3);
        assert_eq!(tl.get(key(9), Lsn(lsn)).unwrap()[0], 4);
        assert!(matches!(
            tl.get(key(3), gen2_end),
            Err(TimelineError::BelowGcCutoff { .. })
        ));
        assert!(matches!(
            tl.get(key(3), Lsn(0x150)),
            Err(TimelineError::BelowGcCutoff { .. })
        ));
    }

    #[test]
    fn pitr_interval_keeps_recent_history() {
        use crate::key::slru_block_key;
        use crate::value::ZenithWalRecord;
        use postgres_ffi::slru::SlruKind;

        let dir = tempfile::tempdir().unwrap();
        let tl = super::super::test_timeline(dir.path(), TenantConf::default(), Lsn(0x100));
        let w = tl.writer();
        let now = to_pg_timestamp(SystemTime::now());
        let hour = 3_600_000_000i64;
        // Commits two days, two hours and one minute ago.
        for (i, age) in [48 * hour, 2 * hour, hour / 60].iter().enumerate() {
            let lsn = Lsn(0x200 + i as u64 * 0x100);
            w.put(
                slru_block_key(SlruKind::Clog, 0, 0),
                lsn,
                Value::WalRecord(ZenithWalRecord::ClogSetCommitted {
                    xids: vec![3 + i as u32],
                    timestamp: now - age,
                }),
            )
            .unwrap();
            w.finish_write(lsn - 0x10, lsn);
        }
        tl.freeze_and_flush().unwrap();
        let h = Duration::from_secs(3600);
        // 1 h: keep from the end of the commit two hours ago.
        assert_eq!(tl.gc(0, h, &[]).unwrap().cutoff, Lsn(0x300));
        // The cutoff never moves back, even for a longer window.
        assert_eq!(tl.gc(0, 100 * h, &[]).unwrap().cutoff, Lsn(0x300));
        // No window: the byte horizon alone decides.
        assert_eq!(tl.gc(0, Duration::ZERO, &[]).unwrap().cutoff, Lsn(0x400));

        // A timeline whose every commit is newer than the window keeps it all.
        let dir2 = tempfile::tempdir().unwrap();
        let tl2 = super::super::test_timeline(dir2.path(), TenantConf::default(), Lsn(0x100));
        let w2 = tl2.writer();
        w2.put(
            slru_block_key(SlruKind::Clog, 0, 0),
            Lsn(0x200),
            Value::WalRecord(ZenithWalRecord::ClogSetCommitted {
                xids: vec![3],
                timestamp: now,
            }),
        )
        .unwrap();
        w2.finish_write(Lsn(0x1f0), Lsn(0x200));
        tl2.freeze_and_flush().unwrap();
        assert_eq!(tl2.gc(0, h, &[]).unwrap().cutoff, Lsn(0x100));
    }
}
