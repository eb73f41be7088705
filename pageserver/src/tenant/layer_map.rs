//! The layer map: which layer files a timeline has, and which one holds the
//! newest version of a key below an LSN.
//!
//! In-memory layers are always newer than every layer file, so the read path
//! consults them first and uses [`LayerMap::search`] only for what lies below.
//!
//! Search rule for (key, `cont_lsn`), where values at LSNs `< cont_lsn` are
//! wanted: among the layers covering `key`, take the delta layer `D` with the
//! highest end (clamped to `cont_lsn`) that starts below `cont_lsn`, and the
//! image layer `I` with the highest LSN below `cont_lsn`. If `I` is at least as
//! new as everything `D` holds below `cont_lsn`, the answer is `I`. Otherwise
//! it is `D`, read from `max(D.start, I.lsn + 1)`; the caller continues below
//! that LSN. Linear in the number of layers, which is fine for the hundreds a
//! timeline has between compactions.

use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use zenith_utils::lsn::Lsn;

use super::storage_layer::filename::LayerFileName;
use super::storage_layer::layer_file::{LayerError, LayerReader};
use super::storage_layer::reader_cache;
use crate::key::Key;

/// A layer file of a timeline. It is opened (and its index read) on first
/// use, through the process-wide bounded cache of open layers
/// ([`reader_cache`]).
///
/// Removing a layer (GC, compaction) takes it out of the layer map and marks
/// it [`doomed`](PersistentLayer::doom); the file is deleted when the last
/// reference goes, so a read that took its snapshot before the removal
/// still finds every file of that snapshot. A crash before the deletion
/// leaves the file, which the next GC removes again.
#[derive(Debug)]
pub struct PersistentLayer {
    pub name: LayerFileName,
    pub path: PathBuf,
    pub file_size: u64,
    /// Its key in the reader cache.
    id: u64,
    doomed: AtomicBool,
    /// The file's inode when this object was made: a doomed layer deletes
    /// its path only if it still names that file (a new layer of the same
    /// name may have replaced it).
    inode: Option<u64>,
}

impl Drop for PersistentLayer {
    fn drop(&mut self) {
        reader_cache::get().forget(self.id);
        if !self.doomed.load(Ordering::Acquire) {
            return;
        }
        match std::fs::metadata(&self.path) {
            Ok(m) if Some(m.ino()) == self.inode => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!("removing layer file {}: {e}", self.path.display());
                }
            }
            _ => {}
        }
    }
}

impl std::fmt::Debug for LayerReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LayerReader({})", self.path().display())
    }
}

impl PersistentLayer {
    pub fn new(name: LayerFileName, path: PathBuf, file_size: u64) -> PersistentLayer {
        let inode = std::fs::metadata(&path).ok().map(|m| m.ino());
        PersistentLayer {
            name,
            path,
            file_size,
            id: reader_cache::new_layer_id(),
            doomed: AtomicBool::new(false),
            inode,
        }
    }

    /// Delete the file once nothing references this layer any more (the
    /// caller has taken it out of the layer map).
    pub fn doom(&self) {
        self.doomed.store(true, Ordering::Release);
    }

    /// The opened, verified file (hold it only while reading: the cache
    /// closes files nobody holds when it needs room).
    pub fn reader(&self) -> Result<Arc<LayerReader>, LayerError> {
        reader_cache::get().reader(self.id, &self.path)
    }

    /// The reader if the file is open now; never opens it (for async code).
    pub fn cached_reader(&self) -> Option<Arc<LayerReader>> {
        reader_cache::get().peek(self.id)
    }

    pub fn key_range(&self) -> &Range<Key> {
        self.name.key_range()
    }

    pub fn lsn_range(&self) -> Range<Lsn> {
        self.name.lsn_range()
    }

    pub fn is_delta(&self) -> bool {
        self.name.is_delta()
    }
}

/// What [`LayerMap::search`] found.
#[derive(Debug, Clone)]
pub struct SearchResult {
    pub layer: Arc<PersistentLayer>,
    /// LSNs of the layer to read for this step; continue below `start`.
    pub lsn_range: Range<Lsn>,
}

/// The layer files of one timeline, indexed for [`LayerMap::search`].
///
/// Delta layers are kept sorted by (LSN start, LSN end, key start), image
/// layers by (LSN, key start). Layers made by one flush, compaction or image
/// run share an LSN range and have disjoint key ranges (a *run*); within a
/// run the layer holding a key is found by binary search. Runs of deltas
/// normally do not overlap in LSN (flushes are consecutive, compaction
/// replaces a consecutive group of L0 layers), but they may after a crash
/// in the middle of a compaction (the new L1 layers and the old L0 layers
/// both on disk): `delta_max_end`, the highest LSN end among the deltas up
/// to each position, keeps the search exact then too, and lets it stop as
/// soon as no older run can hold anything newer than what it found. A
/// search step costs O(log n) plus the runs it passes that do not cover the
/// key, independent of how much history lies below.
#[derive(Debug, Default)]
pub struct LayerMap {
    deltas: Vec<Arc<PersistentLayer>>,
    delta_max_end: Vec<Lsn>,
    images: Vec<Arc<PersistentLayer>>,
}

impl Clone for LayerMap {
    fn clone(&self) -> LayerMap {
        LayerMap {
            deltas: self.deltas.clone(),
            delta_max_end: self.delta_max_end.clone(),
            images: self.images.clone(),
        }
    }
}

/// Sort key of a delta layer.
fn delta_order(l: &PersistentLayer) -> (Lsn, Lsn, Key) {
    let r = l.lsn_range();
    (r.start, r.end, l.key_range().start)
}

/// Sort key of an image layer.
fn image_order(l: &PersistentLayer) -> (Lsn, Key) {
    (l.lsn_range().start, l.key_range().start)
}

/// The layer of `run` (sorted by key start) whose key range holds `key`.
/// Key ranges in a run are disjoint, except after the unusual (a layer
/// written twice with different boundaries); then every candidate is
/// checked.
fn find_in_run(run: &[Arc<PersistentLayer>], key: Key) -> Option<&Arc<PersistentLayer>> {
    let n = run.partition_point(|l| l.key_range().start <= key);
    let candidate = run[..n].last()?;
    if candidate.key_range().contains(&key) {
        return Some(candidate);
    }
    // Disjoint runs end here; otherwise an earlier, wider range may hold it.
    run[..n - 1]
        .iter()
        .rev()
        .find(|l| l.key_range().contains(&key))
}

impl LayerMap {
    /// A map of `layers` (sorted once).
    pub fn from_layers(layers: Vec<Arc<PersistentLayer>>) -> LayerMap {
        let (mut deltas, mut images): (Vec<_>, Vec<_>) =
            layers.into_iter().partition(|l| l.is_delta());
        deltas.sort_by_key(|l| delta_order(l));
        images.sort_by_key(|l| image_order(l));
        let mut map = LayerMap {
            deltas,
            delta_max_end: Vec::new(),
            images,
        };
        map.recompute_max_end(0);
        map
    }

    fn recompute_max_end(&mut self, from: usize) {
        self.delta_max_end.truncate(from);
        let mut max = from
            .checked_sub(1)
            .and_then(|i| self.delta_max_end.get(i).copied())
            .unwrap_or(Lsn(0));
        for l in &self.deltas[from..] {
            max = max.max(l.lsn_range().end);
            self.delta_max_end.push(max);
        }
    }

    pub fn insert(&mut self, layer: Arc<PersistentLayer>) {
        if layer.is_delta() {
            let k = delta_order(&layer);
            let at = self.deltas.partition_point(|l| delta_order(l) <= k);
            self.deltas.insert(at, layer);
            self.recompute_max_end(at);
        } else {
            let k = image_order(&layer);
            let at = self.images.partition_point(|l| image_order(l) <= k);
            self.images.insert(at, layer);
        }
    }

    /// Remove a layer (by identity); returns whether it was present.
    pub fn remove(&mut self, layer: &Arc<PersistentLayer>) -> bool {
        if layer.is_delta() {
            let k = delta_order(layer);
            let from = self.deltas.partition_point(|l| delta_order(l) < k);
            let Some(i) = self.deltas[from..]
                .iter()
                .take_while(|l| delta_order(l) == k)
                .position(|l| Arc::ptr_eq(l, layer))
            else {
                return false;
            };
            self.deltas.remove(from + i);
            self.recompute_max_end(from + i);
        } else {
            let k = image_order(layer);
            let from = self.images.partition_point(|l| image_order(l) < k);
            let Some(i) = self.images[from..]
                .iter()
                .take_while(|l| image_order(l) == k)
                .position(|l| Arc::ptr_eq(l, layer))
            else {
                return false;
            };
            self.images.remove(from + i);
        }
        true
    }

    /// Remove every layer `doomed` says to remove, in one pass.
    pub fn remove_where(&mut self, mut doomed: impl FnMut(&Arc<PersistentLayer>) -> bool) -> usize {
        let before = self.len();
        self.deltas.retain(|l| !doomed(l));
        self.images.retain(|l| !doomed(l));
        self.recompute_max_end(0);
        before - self.len()
    }

    /// Every layer: deltas by LSN, then images by LSN.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<PersistentLayer>> {
        self.deltas.iter().chain(self.images.iter())
    }

    pub fn len(&self) -> usize {
        self.deltas.len() + self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty() && self.images.is_empty()
    }

    /// The delta layer covering `key` with the highest end (clamped to
    /// `cont_lsn`) among those starting below `cont_lsn`.
    fn search_delta(&self, key: Key, cont_lsn: Lsn) -> Option<(&Arc<PersistentLayer>, Lsn)> {
        let mut best: Option<(&Arc<PersistentLayer>, Lsn)> = None;
        let mut hi = self
            .deltas
            .partition_point(|l| l.lsn_range().start < cont_lsn);
        while hi > 0 {
            // Nothing at or before hi - 1 ends above what was found.
            if best.is_some_and(|(_, e)| self.delta_max_end[hi - 1].min(cont_lsn) <= e) {
                break;
            }
            let r = self.deltas[hi - 1].lsn_range();
            let lo =
                self.deltas[..hi].partition_point(|l| delta_order(l) < (r.start, r.end, Key::MIN));
            let end = r.end.min(cont_lsn);
            if best.is_none_or(|(_, e)| end > e) {
                if let Some(l) = find_in_run(&self.deltas[lo..hi], key) {
                    best = Some((l, end));
                }
            }
            hi = lo;
        }
        best
    }

    /// The image layer covering `key` with the highest LSN in
    /// `[floor, cont_lsn)`.
    fn search_image(&self, key: Key, cont_lsn: Lsn, floor: Lsn) -> Option<&Arc<PersistentLayer>> {
        let mut hi = self
            .images
            .partition_point(|l| l.lsn_range().start < cont_lsn);
        while hi > 0 {
            let lsn = self.images[hi - 1].lsn_range().start;
            if lsn < floor {
                break;
            }
            let lo = self.images[..hi].partition_point(|l| l.lsn_range().start < lsn);
            if let Some(l) = find_in_run(&self.images[lo..hi], key) {
                return Some(l);
            }
            hi = lo;
        }
        None
    }

    /// The layer holding the newest values of `key` below `cont_lsn`.
    pub fn search(&self, key: Key, cont_lsn: Lsn) -> Option<SearchResult> {
        let best_delta = self.search_delta(key, cont_lsn);
        // Images older than the delta's start cannot shadow any of it.
        let floor = best_delta.map_or(Lsn(0), |(d, _)| d.lsn_range().start);
        let best_image = self
            .search_image(key, cont_lsn, floor)
            .map(|l| (l, l.lsn_range().start));
        match (best_delta, best_image) {
            (None, None) => None,
            (None, Some((img, lsn))) => Some(SearchResult {
                layer: Arc::clone(img),
                lsn_range: lsn..lsn + 1,
            }),
            (Some((d, end)), img) => {
                if let Some((img, lsn)) = img {
                    if lsn + 1 >= end {
                        return Some(SearchResult {
                            layer: Arc::clone(img),
                            lsn_range: lsn..lsn + 1,
                        });
                    }
                    let start = d.lsn_range().start.max(lsn + 1);
                    return Some(SearchResult {
                        layer: Arc::clone(d),
                        lsn_range: start..end,
                    });
                }
                Some(SearchResult {
                    layer: Arc::clone(d),
                    lsn_range: d.lsn_range().start..end,
                })
            }
        }
    }

    /// Delta layers that span the whole key space at level 0 (not yet compacted).
    pub fn level0_deltas(&self) -> Vec<Arc<PersistentLayer>> {
        self.deltas
            .iter()
            .filter(|l| *l.key_range() == (Key::MIN..Key::MAX))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(keys: Range<u32>, lsns: Range<u64>) -> Arc<PersistentLayer> {
        Arc::new(PersistentLayer::new(
            LayerFileName::Delta {
                key_range: Key::MIN.add(keys.start)..Key::MIN.add(keys.end),
                lsn_range: Lsn(lsns.start)..Lsn(lsns.end),
            },
            PathBuf::new(),
            0,
        ))
    }

    fn image(keys: Range<u32>, lsn: u64) -> Arc<PersistentLayer> {
        Arc::new(PersistentLayer::new(
            LayerFileName::Image {
                key_range: Key::MIN.add(keys.start)..Key::MIN.add(keys.end),
                lsn: Lsn(lsn),
            },
            PathBuf::new(),
            0,
        ))
    }

    /// Follow the search chain for `key` from `lsn` down, recording each step.
    fn chain(map: &LayerMap, key: u32, lsn: u64) -> Vec<(String, u64, u64)> {
        let mut out = Vec::new();
        let mut cont = Lsn(lsn + 1);
        while let Some(r) = map.search(Key::MIN.add(key), cont) {
            let kind = if r.layer.is_delta() { "D" } else { "I" };
            out.push((kind.to_string(), r.lsn_range.start.0, r.lsn_range.end.0));
            if !r.layer.is_delta() {
                break;
            }
            cont = r.lsn_range.start;
        }
        out
    }

    #[test]
    fn search_walks_deltas_down_to_an_image() {
        let mut m = LayerMap::default();
        m.insert(image(0..100, 0x10));
        m.insert(delta(0..100, 0x11..0x20));
        m.insert(delta(0..100, 0x20..0x30));
        m.insert(delta(0..50, 0x30..0x40));
        // Key 70 is not in the last delta.
        assert_eq!(
            chain(&m, 70, 0x45),
            vec![
                ("D".into(), 0x20, 0x30),
                ("D".into(), 0x11, 0x20),
                ("I".into(), 0x10, 0x11)
            ]
        );
        // Reading in the middle of a delta clamps its range.
        assert_eq!(
            chain(&m, 10, 0x25),
            vec![
                ("D".into(), 0x20, 0x26),
                ("D".into(), 0x11, 0x20),
                ("I".into(), 0x10, 0x11)
            ]
        );
        // Below the oldest image there is nothing.
        assert_eq!(chain(&m, 10, 0x05), vec![]);
        // Outside every key range there is nothing.
        assert!(m.search(Key::MIN.add(200), Lsn(0x100)).is_none());
    }

    #[test]
    fn newer_image_shadows_older_deltas() {
        let mut m = LayerMap::default();
        m.insert(delta(0..100, 0x11..0x20));
        m.insert(delta(0..100, 0x20..0x30));
        m.insert(image(0..100, 0x25));
        // The image at 0x25 is in the middle of the second delta: read the
        // delta above it, then stop at the image.
        assert_eq!(
            chain(&m, 5, 0x2F),
            vec![("D".into(), 0x26, 0x30), ("I".into(), 0x25, 0x26)]
        );
        // At exactly the image LSN the image wins.
        assert_eq!(chain(&m, 5, 0x25), vec![("I".into(), 0x25, 0x26)]);
        // Below the image the deltas are used.
        assert_eq!(
            chain(&m, 5, 0x24),
            vec![("D".into(), 0x20, 0x25), ("D".into(), 0x11, 0x20)]
        );
    }

    /// The search rule, by a linear scan over every layer (the definition
    /// the indexed search must agree with).
    fn search_linear(
        layers: &[Arc<PersistentLayer>],
        key: Key,
        cont: Lsn,
    ) -> Option<(String, Range<Lsn>)> {
        let mut best_delta: Option<(&Arc<PersistentLayer>, Lsn)> = None;
        let mut best_image: Option<Lsn> = None;
        for l in layers {
            let r = l.lsn_range();
            if !l.key_range().contains(&key) || r.start >= cont {
                continue;
            }
            if l.is_delta() {
                let end = r.end.min(cont);
                if best_delta.is_none_or(|(_, e)| end > e) {
                    best_delta = Some((l, end));
                }
            } else if best_image.is_none_or(|lsn| r.start > lsn) {
                best_image = Some(r.start);
            }
        }
        match (best_delta, best_image) {
            (None, None) => None,
            (None, Some(lsn)) => Some(("I".into(), lsn..lsn + 1)),
            (Some((_, end)), Some(lsn)) if lsn + 1 >= end => Some(("I".into(), lsn..lsn + 1)),
            (Some((d, end)), img) => {
                let start = img.map_or(d.lsn_range().start, |lsn| d.lsn_range().start.max(lsn + 1));
                Some(("D".into(), start..end))
            }
        }
    }

    proptest::proptest! {
        /// Random timelines of flush (L0), compaction (key-partitioned L1
        /// runs, sometimes left beside their L0 layers as after a crash)
        /// and image runs: the indexed search finds what the linear scan
        /// finds, also after removals.
        #[test]
        fn indexed_search_agrees_with_a_linear_scan(
            steps in proptest::collection::vec((0u8..4, 1u64..40, 1u32..6), 1..60),
            probes in proptest::collection::vec((0u32..100, 0u64..2000), 40),
            removals in proptest::collection::vec(0usize..1000, 0..10),
        ) {
            let mut all: Vec<Arc<PersistentLayer>> = Vec::new();
            let mut lsn = 10u64;
            let mut l0: Vec<Arc<PersistentLayer>> = Vec::new();
            for (kind, len, parts) in steps {
                match kind {
                    0 | 1 => {
                        let l = delta(0..u32::MAX - 1, lsn..lsn + len);
                        l0.push(Arc::clone(&l));
                        all.push(l);
                        lsn += len;
                    }
                    2 if !l0.is_empty() => {
                        let r = l0[0].lsn_range().start.0..l0.last().unwrap().lsn_range().end.0;
                        let w = 100 / parts;
                        for p in 0..parts {
                            all.push(delta(p * w..(p + 1) * w, r.clone()));
                        }
                        // Usually the L0 layers go; sometimes (a crash) they stay.
                        if !len.is_multiple_of(5) {
                            all.retain(|l| !l0.iter().any(|o| Arc::ptr_eq(o, l)));
                        }
                        l0.clear();
                    }
                    _ => {
                        let w = 100 / parts;
                        for p in 0..parts {
                            if !(p + len as u32).is_multiple_of(3) {
                                all.push(image(p * w..(p + 1) * w, lsn - 1));
                            }
                        }
                    }
                }
            }
            let mut map = LayerMap::default();
            for l in &all {
                map.insert(Arc::clone(l));
            }
            let bulk = LayerMap::from_layers(all.clone());
            for r in removals {
                if all.is_empty() {
                    break;
                }
                let victim = all.remove(r % all.len());
                proptest::prop_assert!(map.remove(&victim));
                proptest::prop_assert!(!map.remove(&victim));
            }
            let rebuilt = LayerMap::from_layers(all.clone());
            for (k, c) in probes {
                let (key, cont) = (Key::MIN.add(k), Lsn(c));
                let want = search_linear(&all, key, cont);
                for m in [&map, &rebuilt] {
                    let got = m.search(key, cont).map(|r| {
                        ((if r.layer.is_delta() { "D" } else { "I" }).to_string(), r.lsn_range)
                    });
                    proptest::prop_assert_eq!(&got, &want, "key {} cont {}", k, c);
                }
            }
            proptest::prop_assert!(bulk.len() >= map.len());
        }
    }

    #[test]
    fn remove_and_level0() {
        let mut m = LayerMap::default();
        let l0 = Arc::new(PersistentLayer::new(
            LayerFileName::Delta {
                key_range: Key::MIN..Key::MAX,
                lsn_range: Lsn(1)..Lsn(2),
            },
            PathBuf::new(),
            0,
        ));
        m.insert(Arc::clone(&l0));
        m.insert(delta(0..5, 2..3));
        assert_eq!(m.level0_deltas().len(), 1);
        assert!(m.remove(&l0));
        assert!(!m.remove(&l0));
        assert_eq!(m.len(), 1);
    }
}
