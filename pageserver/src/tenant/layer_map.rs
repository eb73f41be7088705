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

/// The layer files of one timeline.
#[derive(Debug, Default, Clone)]
pub struct LayerMap {
    layers: Vec<Arc<PersistentLayer>>,
}

impl LayerMap {
    pub fn insert(&mut self, layer: Arc<PersistentLayer>) {
        self.layers.push(layer);
    }

    /// Remove a layer (by identity); returns whether it was present.
    pub fn remove(&mut self, layer: &Arc<PersistentLayer>) -> bool {
        let before = self.layers.len();
        self.layers.retain(|l| !Arc::ptr_eq(l, layer));
        self.layers.len() != before
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<PersistentLayer>> {
        self.layers.iter()
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layer holding the newest values of `key` below `cont_lsn`.
    pub fn search(&self, key: Key, cont_lsn: Lsn) -> Option<SearchResult> {
        let mut best_delta: Option<(&Arc<PersistentLayer>, Lsn)> = None;
        let mut best_image: Option<(&Arc<PersistentLayer>, Lsn)> = None;
        for l in &self.layers {
            if !l.key_range().contains(&key) {
                continue;
            }
            let r = l.lsn_range();
            if r.start >= cont_lsn {
                continue;
            }
            if l.is_delta() {
                let end = r.end.min(cont_lsn);
                if best_delta.is_none_or(|(_, e)| end > e) {
                    best_delta = Some((l, end));
                }
            } else if best_image.is_none_or(|(_, lsn)| r.start > lsn) {
                best_image = Some((l, r.start));
            }
        }
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
        self.layers
            .iter()
            .filter(|l| l.is_delta() && *l.key_range() == (Key::MIN..Key::MAX))
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
