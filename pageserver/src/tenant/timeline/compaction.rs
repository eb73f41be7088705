//! Compaction: merge level-0 delta layers into key-partitioned level-1 ones
//! (docs/architecture.md §7).
//!
//! Every flush writes an L0 delta layer spanning the whole key space for a
//! short LSN range, so a read of one key would open every L0 layer. When
//! `compaction_threshold` of them pile up, their values are merged in (key,
//! LSN) order and rewritten as L1 delta layers that each hold a key range for
//! the L0s' whole LSN range, cut at about `checkpoint_distance` bytes. The
//! L0s are merged in groups split at image LSNs and branch points, so that
//! no L1 layer mixes history on both sides of one. The new
//! layers are durable before the old ones leave the layer map; the old files
//! are deleted once no read holds them. A crash in between leaves both,
//! which reads tolerate (the values are the same).

use std::sync::Arc;

use tracing::info;
use zenith_utils::lsn::Lsn;

use super::{LayerChange, MaintenanceGuard, Timeline, TimelineError};
use crate::tenant::layer_map::PersistentLayer;
use crate::tenant::storage_layer::filename::LayerFileName;
use crate::tenant::storage_layer::layer_file::{IndexEntry, LayerReader, LayerWriter};

impl Timeline {
    /// Compacts L0 delta layers once there are at least
    /// `compaction_threshold` of them (or `force` and at least two). The
    /// L0s are merged in groups that never span an image layer's LSN or a
    /// child's branch point (`branch_points`): an L1 layer across such an
    /// LSN would mix history GC may drop with history it must keep, and GC
    /// could never remove it. Returns the number of L1 layers written.
    pub fn compact(&self, force: bool, branch_points: &[Lsn]) -> Result<usize, TimelineError> {
        let guard = self.lock_maintenance();
        self.check_not_deleted()?;
        let (mut l0, mut boundaries): (Vec<Arc<PersistentLayer>>, Vec<Lsn>) = {
            let l = self.layers.read().unwrap_or_else(|e| e.into_inner());
            let images = l
                .map
                .iter()
                .filter(|x| !x.is_delta())
                .map(|x| x.lsn_range().start);
            (l.map.level0_deltas(), images.collect())
        };
        let threshold = if force {
            2
        } else {
            self.conf.compaction_threshold
        };
        if l0.is_empty() || l0.len() < threshold {
            return Ok(0);
        }
        let _timer = super::StorageOperation::Compact.start_timer();
        boundaries.extend_from_slice(branch_points);
        l0.sort_by_key(|l| l.lsn_range().start);
        let mut written = 0;
        for group in split_at_boundaries(&l0, &boundaries) {
            fail::fail_point!("compaction-group", |_| Err(TimelineError::Invalid(
                self.timeline_id,
                "failpoint compaction-group".into()
            )));
            written += self.compact_group(&guard, group)?;
        }
        Ok(written)
    }

    /// Merges `l0` (ascending, contiguous in LSN) into L1 layers.
    fn compact_group(
        &self,
        guard: &MaintenanceGuard<'_>,
        l0: &[Arc<PersistentLayer>],
    ) -> Result<usize, TimelineError> {
        let lsn_range = l0[0].lsn_range().start..l0[l0.len() - 1].lsn_range().end;
        let readers: Vec<Arc<LayerReader>> =
            l0.iter().map(|l| l.reader()).collect::<Result<_, _>>()?;
        // (entry, reader, stored size): values are written in index order, so a
        // value ends where the next one (or the index) starts.
        let mut entries: Vec<(IndexEntry, usize, u64)> = Vec::new();
        for (i, r) in readers.iter().enumerate() {
            let idx = r.index();
            let end = r.header().index_offset;
            for (k, e) in idx.iter().enumerate() {
                let next = idx.get(k + 1).map_or(end, |n| n.offset);
                entries.push((*e, i, next.saturating_sub(e.offset)));
            }
        }
        entries.sort_by_key(|(e, _, _)| (e.key, e.lsn));

        let target = self.conf.checkpoint_distance.max(1 << 20);
        let mut written: Vec<(LayerFileName, std::path::PathBuf)> = Vec::new();
        let mut i = 0;
        while i < entries.len() {
            // One output layer: keys from entries[i].key until the size target,
            // never splitting one key's versions.
            let start_key = entries[i].0.key;
            let mut j = i;
            let mut bytes = 0u64;
            while j < entries.len() {
                if bytes >= target && entries[j].0.key != entries[j - 1].0.key {
                    break;
                }
                bytes += entries[j].2;
                j += 1;
            }
            let end_key = if j < entries.len() {
                entries[j].0.key
            } else {
                entries[j - 1].0.key.next()
            };
            let name = LayerFileName::Delta {
                key_range: start_key..end_key,
                lsn_range: lsn_range.clone(),
            };
            let mut w = LayerWriter::new(&self.path, self.tenant_id, self.timeline_id, &name)?;
            for (e, r, _) in &entries[i..j] {
                let v = readers[*r].read_value(e)?;
                w.put(e.key, e.lsn, &v)?;
            }
            written.push((name, w.finish()?));
            i = j;
        }
        let l1 = written.len();
        self.apply_layer_change(
            guard,
            LayerChange {
                add: written,
                remove: l0.to_vec(),
                ..LayerChange::default()
            },
        );
        info!(tenant_id = %self.tenant_id, timeline_id = %self.timeline_id,
              l0 = l0.len(), l1, lsn_start = %lsn_range.start, lsn_end = %lsn_range.end, "compacted");
        Ok(l1)
    }
}

/// Groups of consecutive layers (ascending in LSN) such that no boundary
/// LSN `b` falls inside a group: a group's values are either all at or
/// below `b` or all above it, except where one layer alone straddles `b`.
fn split_at_boundaries<'a>(
    layers: &'a [Arc<PersistentLayer>],
    boundaries: &[Lsn],
) -> Vec<&'a [Arc<PersistentLayer>]> {
    let mut groups = Vec::new();
    let mut start = 0;
    for k in 1..layers.len() {
        // Values of the group so far end at `prev_last`; layer k holds
        // values up to `last`. A boundary in between separates them.
        let prev_last = layers[k - 1].lsn_range().end - 1;
        let last = layers[k].lsn_range().end - 1;
        if boundaries.iter().any(|b| *b >= prev_last && *b < last) {
            groups.push(&layers[start..k]);
            start = k;
        }
    }
    if start < layers.len() {
        groups.push(&layers[start..]);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    /// Whether a layer name covers (key, lsn).
    fn covers(name: &LayerFileName, key: Key, lsn: Lsn) -> bool {
        name.key_range().contains(&key) && name.lsn_range().contains(&lsn)
    }
    use crate::config::TenantConf;

    use crate::value::Value;

    use bytes::Bytes;

    /// Defect (found when maintenance first moved off the WAL receiver):
    /// compaction merged L0 layers across image LSNs and branch points into
    /// L1 layers GC could never remove. L1 layers now never span one.
    #[test]
    fn compaction_does_not_merge_across_images_or_branch_points() {
        let dir = tempfile::tempdir().unwrap();
        let tl = super::super::test_timeline(
            dir.path(),
            TenantConf {
                compaction_threshold: 2,
                ..TenantConf::default()
            },
            Lsn(0x100),
        );
        let w = tl.writer();
        let mut lsn = 0x100u64;
        let mut flush_gen = |n: u8| {
            for k in 0..20u32 {
                lsn += 8;
                w.put(
                    Key::MIN.add(k),
                    Lsn(lsn),
                    Value::Image(Bytes::from(vec![n; 8192])),
                )
                .unwrap();
                w.finish_write(Lsn(lsn - 8), Lsn(lsn));
            }
            tl.freeze_and_flush().unwrap();
            Lsn(lsn)
        };
        let _g1 = flush_gen(1);
        let g2 = flush_gen(2);
        let g3 = flush_gen(3);
        let _g4 = flush_gen(4);
        // An image at the end of generation 2 (as image creation would make
        // it; written here directly), a branch point at the end of 3.
        {
            let name = LayerFileName::Image {
                key_range: Key::MIN..Key::MAX,
                lsn: g2,
            };
            let mut iw = LayerWriter::new(&tl.path, tl.tenant_id, tl.timeline_id, &name).unwrap();
            for k in 0..20u32 {
                iw.put(
                    Key::MIN.add(k),
                    g2,
                    &Value::Image(Bytes::from(vec![2u8; 8192])),
                )
                .unwrap();
            }
            let path = iw.finish().unwrap();
            let m = tl.lock_maintenance();
            tl.apply_layer_change(
                &m,
                LayerChange {
                    add: vec![(name, path)],
                    ..LayerChange::default()
                },
            );
        }
        assert!(tl.compact(false, &[g3]).unwrap() >= 3);
        for (name, _) in tl.layer_files() {
            if !name.is_delta() {
                continue;
            }
            let r = name.lsn_range();
            for b in [g2, g3] {
                assert!(
                    !(r.start <= b && b < r.end - 1),
                    "{name:?} spans the boundary {b}"
                );
            }
        }
        for (k, at, v) in [(3u32, g2, 2u8), (3, g3, 3), (19, Lsn(lsn), 4)] {
            assert_eq!(tl.get(Key::MIN.add(k), at).unwrap()[0], v);
        }
    }

    #[test]
    fn compaction_merges_l0_into_l1_and_reads_stay_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let tl = super::super::test_timeline(
            dir.path(),
            TenantConf {
                compaction_threshold: 3,
                checkpoint_distance: 1 << 20,
                ..TenantConf::default()
            },
            Lsn(0x100),
        );
        let w = tl.writer();
        let mut lsn = 0x100u64;
        let mut expected = Vec::new();
        for gen in 0..4u8 {
            for k in 0..300u32 {
                lsn += 8;
                // Incompressible pages, so the stored size reaches the
                // layer size target; byte 0 identifies the version.
                let mut x = (u64::from(gen) << 32 | u64::from(k)) | 1;
                let mut v: Vec<u8> = (0..8192)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                v[0] = gen.wrapping_mul(31).wrapping_add(k as u8);
                w.put(Key::MIN.add(k * 2), Lsn(lsn), Value::Image(Bytes::from(v)))
                    .unwrap();
                w.finish_write(Lsn(lsn - 8), Lsn(lsn));
                expected.push((k, Lsn(lsn), gen));
            }
            tl.freeze_and_flush().unwrap();
        }
        assert_eq!(tl.layer_files().len(), 4);
        let n = tl.compact(false, &[]).unwrap();
        assert!(n >= 2, "expected several L1 layers, got {n}");
        let files = tl.layer_files();
        assert!(
            files
                .iter()
                .all(|(name, _)| *name.key_range() != (Key::MIN..Key::MAX)),
            "{files:?}"
        );
        for (k, at, gen) in expected.iter().step_by(7) {
            let page = tl.get(Key::MIN.add(k * 2), *at).unwrap();
            assert_eq!(
                page[0],
                gen.wrapping_mul(31).wrapping_add(*k as u8),
                "key {k} at {at}"
            );
        }
        assert!(files.iter().any(|(n, _)| covers(n, Key::MIN, Lsn(0x108))));
        // Nothing left to compact.
        assert_eq!(tl.compact(false, &[]).unwrap(), 0);
    }
}
