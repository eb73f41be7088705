//! Image layer creation (docs/architecture.md §7).
//!
//! An image layer holds every key of a key range at one LSN, so reads of
//! that range stop there instead of replaying the deltas below. Images are
//! made at `disk_consistent_lsn` from the timeline's *live* keyspace at that
//! LSN ([`LiveKeySpace`]: relations, SLRU segments, directories, ... that
//! exist then; keys of dropped relations are not carried forward). What is
//! live is the data model's knowledge (`crate::pgdatadir_mapping`, above the
//! storage), handed to each timeline by its tenant.
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
use crate::tenant::layer_map::LayerMap;
use crate::tenant::storage_layer::filename::LayerFileName;
use crate::tenant::storage_layer::layer_file::LayerWriter;
use crate::value::Value;

/// Every key that may hold a value in a timeline at an LSN, as sorted,
/// disjoint ranges: what an image layer at that LSN holds.
pub type LiveKeySpace = fn(&Timeline, Lsn) -> Result<Vec<Range<Key>>, TimelineError>;

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
    /// Sets how this timeline finds its live keyspace (once; the tenant
    /// does it when it takes the timeline).
    pub fn set_live_keyspace(&self, keyspace: LiveKeySpace) {
        let _ = self.live_keyspace.set(keyspace);
    }

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
        let Some(live_keyspace) = self.live_keyspace.get() else {
            return Ok(Vec::new());
        };
        let keyspace = live_keyspace(self, lsn)?;
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

    fn k(n: u32) -> Key {
        Key::MIN.add(n)
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
