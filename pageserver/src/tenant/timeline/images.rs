//! Image layer creation (docs/architecture.md §7).
//!
//! An image layer holds every key of a key range at one LSN, so reads of
//! that range stop there instead of replaying the deltas below. Images are
//! made at `disk_consistent_lsn` from the timeline's *live* keyspace at that
//! LSN ([`DatadirReader::keyspace`]: relations, SLRU segments, directories,
//! ... that exist then; keys of dropped relations are not carried forward).
//! The keyspace is cut into partitions of about `checkpoint_distance`
//! bytes of pages that tile the whole key space, and a partition gets a new
//! image only when `image_creation_threshold` or more delta layers that
//! overlap it lie above its newest image: a table that is written gets
//! images, one that is not costs nothing.
//!
//! An image is authoritative for its key range: a key it does not hold does
//! not exist at its LSN (the read path stops there).

use std::ops::Range;

use tracing::info;
use zenith_utils::lsn::Lsn;

use super::{LayerChange, Timeline, TimelineError};
use crate::key::Key;
use crate::pgdatadir_mapping::DatadirReader;
use crate::tenant::layer_map::LayerMap;
use crate::tenant::storage_layer::filename::LayerFileName;
use crate::tenant::storage_layer::layer_file::LayerWriter;
use crate::value::Value;

/// One partition of the keyspace: the key range its image covers (the
/// partitions tile `Key::MIN..Key::MAX`) and the live keys in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub bounds: Range<Key>,
    pub keys: Vec<Range<Key>>,
}

/// Keys in a range (the ranges of a keyspace are contiguous key runs, at
/// most a relation's 2^32 blocks).
fn range_len(r: &Range<Key>) -> u64 {
    if r.start.field1 == r.end.field1
        && r.start.field2 == r.end.field2
        && r.start.field3 == r.end.field3
        && r.start.field4 == r.end.field4
        && r.start.field5 == r.end.field5
    {
        u64::from(r.end.field6 - r.start.field6)
    } else {
        1
    }
}

/// Cuts a sorted keyspace into partitions of about `target` keys that tile
/// the whole key space (a run of one relation's blocks is split too).
pub fn partition(keyspace: &[Range<Key>], target: u64) -> Vec<Partition> {
    let target = target.max(1);
    let mut parts: Vec<Partition> = Vec::new();
    let mut cur: Vec<Range<Key>> = Vec::new();
    let mut count = 0u64;
    for r in keyspace {
        let mut r = r.clone();
        loop {
            let room = target - count;
            let n = range_len(&r);
            if n <= room {
                count += n;
                cur.push(r);
                break;
            }
            // Split the run: the first `room` keys fill this partition.
            let mid = r.start.add(room as u32);
            cur.push(r.start..mid);
            parts.push(Partition {
                bounds: Key::MIN..Key::MIN,
                keys: std::mem::take(&mut cur),
            });
            count = 0;
            r = mid..r.end;
        }
        if count >= target {
            parts.push(Partition {
                bounds: Key::MIN..Key::MIN,
                keys: std::mem::take(&mut cur),
            });
            count = 0;
        }
    }
    if !cur.is_empty() {
        parts.push(Partition {
            bounds: Key::MIN..Key::MIN,
            keys: cur,
        });
    }
    // Bounds: from the first key of each partition to the first of the next;
    // the first starts at Key::MIN and the last ends at Key::MAX.
    let starts: Vec<Key> = parts.iter().map(|p| p.keys[0].start).collect();
    for (i, p) in parts.iter_mut().enumerate() {
        let start = if i == 0 { Key::MIN } else { starts[i] };
        let end = starts.get(i + 1).copied().unwrap_or(Key::MAX);
        p.bounds = start..end;
    }
    parts
}

/// The LSN of the newest image layer that covers all of `bounds`.
fn last_image(map: &LayerMap, bounds: &Range<Key>) -> Option<Lsn> {
    map.iter()
        .filter(|l| {
            !l.is_delta() && l.key_range().start <= bounds.start && l.key_range().end >= bounds.end
        })
        .map(|l| l.lsn_range().start)
        .max()
}

/// Delta layers overlapping `bounds` with versions newer than its newest
/// image.
pub fn deltas_above_image(map: &LayerMap, bounds: &Range<Key>) -> usize {
    let img = last_image(map, bounds);
    map.iter()
        .filter(|l| {
            l.is_delta()
                && l.key_range().start < bounds.end
                && l.key_range().end > bounds.start
                && img.is_none_or(|i| l.lsn_range().end > i + 1)
        })
        .count()
}

impl Timeline {
    /// Keys per image partition: `checkpoint_distance` bytes of pages.
    fn image_partition_keys(&self) -> u64 {
        (self.conf.checkpoint_distance / u64::from(postgres_ffi::BLCKSZ)).max(128)
    }

    /// Creates image layers at `disk_consistent_lsn` for the partitions of
    /// the live keyspace with enough deltas above their last image (every
    /// partition if `force`). Returns the new layers' names.
    pub fn create_image_layers(&self, force: bool) -> Result<Vec<LayerFileName>, TimelineError> {
        let guard = self.lock_maintenance();
        self.check_not_deleted()?;
        let lsn = self.disk_consistent_lsn();
        let map = self.layer_snapshot();
        let keyspace = DatadirReader::new(self, lsn).keyspace()?;
        if keyspace.is_empty() {
            return Ok(Vec::new());
        }
        let mut created = Vec::new();
        for part in partition(&keyspace, self.image_partition_keys()) {
            if !force && deltas_above_image(&map, &part.bounds) < self.conf.image_creation_threshold
            {
                continue;
            }
            if last_image(&map, &part.bounds) == Some(lsn) {
                continue;
            }
            fail::fail_point!("image-layer-write", |_| Err(TimelineError::Invalid(
                self.timeline_id,
                "failpoint image-layer-write".into()
            )));
            let name = LayerFileName::Image {
                key_range: part.bounds.clone(),
                lsn,
            };
            let mut w = LayerWriter::new(&self.path, self.tenant_id, self.timeline_id, &name)?;
            for r in &part.keys {
                let mut key = r.start;
                while key < r.end {
                    match self.get(key, lsn) {
                        Ok(img) => w.put(key, lsn, &Value::Image(img))?,
                        Err(TimelineError::MissingKey { .. }) => {}
                        Err(e) => return Err(e),
                    }
                    key = key.next();
                }
            }
            let path = w.finish()?;
            self.apply_layer_change(
                &guard,
                LayerChange {
                    add: vec![(name.clone(), path)],
                    ..LayerChange::default()
                },
            );
            created.push(name);
        }
        if !created.is_empty() {
            info!(tenant_id = %self.tenant_id, timeline_id = %self.timeline_id, %lsn,
                  images = created.len(), "created image layers");
        }
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantConf;
    use crate::key::rel_block_key;
    use crate::pgdatadir_mapping::DatadirModification;
    use bytes::Bytes;
    use postgres_ffi::relfile::RelTag;
    use std::sync::Arc;

    fn k(n: u32) -> Key {
        Key::MIN.add(n)
    }

    fn rel(relnode: u32) -> RelTag {
        RelTag {
            spcnode: 1663,
            dbnode: 5,
            relnode,
            forknum: 0,
        }
    }

    /// A page starting with `b`, the rest incompressible (so that layer
    /// sizes are what the test expects).
    fn page(b: u8, seed: u64) -> Bytes {
        let mut x = seed | 1;
        let mut p: Vec<u8> = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        p[0] = b;
        Bytes::from(p)
    }

    /// One record: `blocks` of `rels` set to `b`.
    fn write(tl: &Arc<Timeline>, lsn: &mut u64, rels: &[u32], blocks: u32, b: u8) {
        let mut m = DatadirModification::new(tl);
        m.put_db(1663, 5, false).unwrap();
        for &r in rels {
            m.put_rel_extend_to(rel(r), blocks - 1).unwrap();
            for blk in 0..blocks {
                let seed = (u64::from(r) << 40) ^ (u64::from(blk) << 8) ^ u64::from(b);
                m.put_image(rel_block_key(rel(r), blk), page(b, seed));
            }
        }
        let prev = Lsn(*lsn);
        *lsn += 0x1000;
        m.commit(&tl.writer(), prev, Lsn(*lsn)).unwrap();
    }

    fn image_keys(tl: &Timeline, lsn: Lsn) -> Vec<Key> {
        tl.layer_snapshot()
            .iter()
            .filter(|l| !l.is_delta() && l.lsn_range().start == lsn)
            .flat_map(|l| {
                l.reader()
                    .unwrap()
                    .index()
                    .iter()
                    .map(|e| e.key)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Defect: every image creation rebuilt every key ever seen, in one
    /// image. Now only partitions with enough deltas above their last image
    /// get one, and dropped relations leave no keys in new images.
    #[test]
    fn images_follow_the_written_partitions_and_forget_dropped_relations() {
        let dir = tempfile::tempdir().unwrap();
        let tl = super::super::test_timeline(
            dir.path(),
            TenantConf {
                checkpoint_distance: 128 * 8192,
                image_creation_threshold: 2,
                ..TenantConf::default()
            },
            Lsn(0x1000),
        );
        let mut lsn = 0x1000;
        let (a, b) = (16384, 16385);
        write(&tl, &mut lsn, &[a, b], 300, 1);
        tl.freeze_and_flush().unwrap();
        let all = tl.create_image_layers(true).unwrap().len();
        assert!(all >= 5, "{all} partitions");
        // Three generations of writes to `a` only, compacted into L1
        // layers that cover `a`'s keys.
        for gen in 2..5 {
            write(&tl, &mut lsn, &[a], 300, gen);
            tl.freeze_and_flush().unwrap();
        }
        tl.compact(true, &[]).unwrap();
        let made = tl.create_image_layers(false).unwrap();
        assert!(
            !made.is_empty() && made.len() < all,
            "{} of {all}",
            made.len()
        );
        let keys = image_keys(&tl, Lsn(lsn));
        assert!(keys.iter().any(|key| key.field4 == a));
        assert!(
            keys.iter().filter(|key| key.field4 == b).count() < 300,
            "b was not written: most of it gets no new image"
        );
        assert_eq!(tl.get(rel_block_key(rel(a), 299), Lsn(lsn)).unwrap()[0], 4);
        assert_eq!(tl.get(rel_block_key(rel(b), 299), Lsn(lsn)).unwrap()[0], 1);

        // Drop `b`: the next images hold none of its keys.
        let mut m = DatadirModification::new(&tl);
        m.put_rel_drop(rel(b)).unwrap();
        let prev = Lsn(lsn);
        lsn += 0x1000;
        m.commit(&tl.writer(), prev, Lsn(lsn)).unwrap();
        tl.freeze_and_flush().unwrap();
        tl.create_image_layers(true).unwrap();
        let keys = image_keys(&tl, Lsn(lsn));
        assert!(keys.iter().any(|key| key.field4 == a));
        assert!(
            !keys.iter().any(|key| key.field4 == b),
            "a dropped relation in an image"
        );
        // The image is authoritative: b's blocks do not exist any more.
        assert!(matches!(
            tl.get(rel_block_key(rel(b), 3), Lsn(lsn)),
            Err(TimelineError::MissingKey { .. })
        ));
    }

    #[test]
    fn partitions_tile_the_key_space_and_split_long_runs() {
        let keyspace = vec![k(10)..k(11), k(20)..k(70), k(100)..k(101)];
        let parts = partition(&keyspace, 20);
        assert_eq!(parts.first().unwrap().bounds.start, Key::MIN);
        assert_eq!(parts.last().unwrap().bounds.end, Key::MAX);
        for w in parts.windows(2) {
            assert_eq!(w[0].bounds.end, w[1].bounds.start);
        }
        let total: u64 = parts.iter().flat_map(|p| &p.keys).map(range_len).sum();
        assert_eq!(total, 52);
        assert!(parts
            .iter()
            .all(|p| p.keys.iter().map(range_len).sum::<u64>() <= 20));
        for p in &parts {
            for r in &p.keys {
                assert!(p.bounds.start <= r.start && r.end <= p.bounds.end);
            }
        }
        assert!(partition(&[], 10).is_empty());
    }
}
