//! Image layer creation and garbage collection for a timeline
//! (ARCHITECTURE.md §7).
//!
//! - **Images**: when `image_creation_threshold` or more delta layers lie
//!   above the newest image layer, every key the timeline's layer files hold
//!   is reconstructed at `disk_consistent_lsn` and written into one image
//!   layer covering the whole key space. Reads then stop at the image instead
//!   of replaying the deltas below it.
//! - **GC**: the cutoff is `last_record_lsn - gc_horizon` (never below the
//!   current cutoff, never above `disk_consistent_lsn`). It is persisted in the
//!   metadata file first; then a layer file is removed only if all of it is
//!   older than the cutoff, a newer image layer at or below the cutoff covers
//!   its key range (so every key it holds has a newer version), and no child
//!   branch point lies between the layer and that image (the branch still
//!   reads through it).

use std::collections::BTreeSet;
use std::sync::Arc;

use tracing::info;
use zenith_utils::crashsafe;
use zenith_utils::lsn::Lsn;

use super::layer_map::PersistentLayer;
use super::storage_layer::filename::LayerFileName;
use super::storage_layer::layer_file::LayerWriter;
use super::timeline::{Timeline, TimelineError, METADATA_FILE_NAME};
use crate::key::Key;
use crate::value::Value;

/// What one GC run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcResult {
    pub cutoff: Lsn,
    pub layers_total: usize,
    pub layers_removed: usize,
    pub bytes_removed: u64,
}

impl Timeline {
    /// Delta layers above the newest image layer.
    pub fn deltas_above_last_image(&self) -> usize {
        let layers = self.layers.read().unwrap_or_else(|e| e.into_inner());
        let last_image = layers
            .map
            .iter()
            .filter(|l| !l.is_delta() && *l.key_range() == (Key::MIN..Key::MAX))
            .map(|l| l.lsn_range().start)
            .max();
        layers
            .map
            .iter()
            .filter(|l| l.is_delta() && last_image.is_none_or(|img| l.lsn_range().start > img))
            .count()
    }

    /// Create an image layer at `disk_consistent_lsn` if enough deltas piled
    /// up (or `force`). Returns the new layer's name.
    pub fn create_image_layer(&self, force: bool) -> Result<Option<LayerFileName>, TimelineError> {
        let _guard = self.flush_lock.lock().unwrap_or_else(|e| e.into_inner());
        if !force && self.deltas_above_last_image() < self.conf.image_creation_threshold {
            return Ok(None);
        }
        let lsn = self.disk_consistent_lsn();
        let layers = self.layer_snapshot();
        if layers
            .iter()
            .any(|l| !l.is_delta() && l.lsn_range().start == lsn)
        {
            return Ok(None);
        }
        let mut keys = BTreeSet::new();
        for l in layers.iter() {
            for e in l.reader()?.index() {
                if e.lsn <= lsn {
                    keys.insert(e.key);
                }
            }
        }
        if keys.is_empty() {
            return Ok(None);
        }
        let name = LayerFileName::Image {
            key_range: Key::MIN..Key::MAX,
            lsn,
        };
        let mut w = LayerWriter::new(&self.path, self.tenant_id, self.timeline_id, &name)?;
        for key in keys {
            let img = self.get(key, lsn)?;
            w.put(key, lsn, &Value::Image(img))?;
        }
        let path = w.finish()?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let mut l = self.layers.write().unwrap_or_else(|e| e.into_inner());
        l.map
            .insert(Arc::new(PersistentLayer::new(name.clone(), path, size)));
        info!(tenant_id = %self.tenant_id, timeline_id = %self.timeline_id, %lsn, "created image layer");
        Ok(Some(name))
    }

    /// Run GC with `horizon` bytes of history kept, respecting the children's
    /// `branch_points`.
    pub fn gc(&self, horizon: u64, branch_points: &[Lsn]) -> Result<GcResult, TimelineError> {
        let _guard = self.flush_lock.lock().unwrap_or_else(|e| e.into_inner());
        let last = self.last_record_lsn();
        let mut md = self.metadata();
        let cutoff = Lsn(last.0.saturating_sub(horizon))
            .min(md.disk_consistent_lsn)
            .max(md.latest_gc_cutoff_lsn);
        if cutoff > md.latest_gc_cutoff_lsn {
            // Persist the cutoff before removing anything it allows to remove.
            md.latest_gc_cutoff_lsn = cutoff;
            md.save(&self.path.join(METADATA_FILE_NAME))?;
            *self.metadata.lock().unwrap_or_else(|e| e.into_inner()) = md;
        }
        let layers = self.layer_snapshot();
        let mut result = GcResult {
            cutoff,
            layers_total: layers.len(),
            ..Default::default()
        };
        for l in layers.iter() {
            let r = l.lsn_range();
            if r.end > cutoff {
                continue; // holds data at or above the cutoff
            }
            // A newer image at or below the cutoff that covers this layer's keys.
            let covering = layers.iter().filter(|i| {
                !i.is_delta()
                    && !Arc::ptr_eq(i, l)
                    && i.lsn_range().start <= cutoff
                    && i.lsn_range().start + 1 >= r.end
                    && i.key_range().start <= l.key_range().start
                    && i.key_range().end >= l.key_range().end
            });
            let Some(img_lsn) = covering.map(|i| i.lsn_range().start).min() else {
                continue;
            };
            // A branch point between the layer and the image still needs it.
            if branch_points.iter().any(|b| *b >= r.start && *b < img_lsn) {
                continue;
            }
            {
                let mut lm = self.layers.write().unwrap_or_else(|e| e.into_inner());
                lm.map.remove(l);
            }
            crashsafe::remove_file_durable(&l.path).map_err(|source| TimelineError::Io {
                what: "removing layer file",
                path: l.path.display().to_string(),
                source,
            })?;
            result.layers_removed += 1;
            result.bytes_removed += l.file_size;
        }
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
    use crate::config::TenantConf;

    use bytes::Bytes;

    fn page(b: u8) -> Value {
        Value::Image(Bytes::from(vec![b; 8192]))
    }

    #[test]
    fn images_then_gc_removes_old_layers_but_keeps_reads_correct() {
        let dir = tempfile::tempdir().unwrap();
        let tl = crate::tenant::timeline::test_timeline(
            dir.path(),
            TenantConf {
                image_creation_threshold: 2,
                ..TenantConf::default()
            },
            Lsn(0x100),
        );
        let w = tl.writer();
        let key = |n: u32| Key::MIN.add(n);
        let mut lsn = 0x100u64;
        // Four generations of 10 keys, each flushed to its own delta layer.
        for gen in 1..=4u8 {
            for k in 0..10 {
                lsn += 0x10;
                w.put(key(k), Lsn(lsn), page(gen)).unwrap();
                w.finish_write(Lsn(lsn - 0x10), Lsn(lsn));
            }
            tl.freeze_and_flush().unwrap();
            if gen == 2 {
                assert!(tl.create_image_layer(false).unwrap().is_some());
            }
        }
        let gen2_end = Lsn(0x100 + 20 * 0x10);
        assert_eq!(tl.layer_files().len(), 5);
        let before = tl.physical_size();

        // GC keeping everything: nothing removed.
        let r = tl.gc(u64::MAX, &[]).unwrap();
        assert_eq!(r.layers_removed, 0);
        // A branch point inside generation 1 keeps its layer.
        let r = tl.gc(0x10, &[Lsn(0x150)]).unwrap();
        assert_eq!(r.layers_removed, 1, "{r:?}");
        // Without branches the first generation's delta goes too.
        let r = tl.gc(0x10, &[]).unwrap();
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
}
