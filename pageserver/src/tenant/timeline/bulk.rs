//! Records too large to hold in memory: a database copied by
//! `CREATE DATABASE ... STRATEGY FILE_COPY`, or a data-directory import.
//!
//! Their changes all belong to one LSN and become visible together, like any
//! record's, but they are streamed into a layer file of their own
//! (`Key::MIN..Key::MAX` × `[lsn, lsn + 1)`, an ordinary level-0 delta layer)
//! instead of the in-memory layer, so memory does not grow with the size of
//! the template database or the imported directory:
//!
//! 1. everything ingested before is frozen and flushed, so that no in-memory
//!    layer lies below the new file (reads consult memory first, then files);
//! 2. the small changes (directories, sizes, ...) and the pages, both in key
//!    order, are merged into the file, which is made durable;
//! 3. the file joins the layer map, the next in-memory layer starts above it,
//!    `disk_consistent_lsn` moves to the record, and `last_record_lsn` last,
//!    which makes the record visible.
//!
//! A crash before step 3 leaves a layer above `disk_consistent_lsn`, which
//! the next start removes (the record is ingested again).

use std::collections::BTreeMap;

use bytes::Bytes;
use tracing::info;
use zenith_utils::lsn::Lsn;

use super::{LayerChange, Timeline, TimelineError, TimelineWriter};
use crate::key::Key;
use crate::tenant::storage_layer::filename::LayerFileName;
use crate::tenant::storage_layer::layer_file::LayerWriter;
use crate::value::Value;

impl Timeline {
    /// File one record whose changes are `small` (any keys) and `pages`
    /// (page images in ascending key order, none of them a key of `small`)
    /// at `lsn`, the end of the record that starts at `prev`, through a layer
    /// file of its own. Returns the number of values written.
    pub fn put_bulk_record(
        &self,
        writer: &TimelineWriter,
        prev: Lsn,
        lsn: Lsn,
        small: BTreeMap<Key, Value>,
        pages: &mut dyn Iterator<Item = Result<(Key, Bytes), TimelineError>>,
    ) -> Result<u64, TimelineError> {
        let invalid = |m: String| TimelineError::Invalid(self.timeline_id, m);
        if lsn <= self.last_record_lsn() {
            return Err(invalid(format!(
                "bulk record at {lsn} is not above last_record_lsn {}",
                self.last_record_lsn()
            )));
        }
        self.freeze();
        let guard = self.lock_flush();
        self.flush_frozen_locked(&guard)?;
        {
            let layers = self.layers.read().unwrap_or_else(|e| e.into_inner());
            if layers.open.as_ref().is_some_and(|l| !l.is_empty()) || !layers.frozen.is_empty() {
                return Err(invalid(format!(
                    "values above last_record_lsn are in memory: cannot file the record at {lsn} as a layer"
                )));
            }
        }
        self.check_not_deleted()?;
        let name = LayerFileName::Delta {
            key_range: Key::MIN..Key::MAX,
            lsn_range: lsn..lsn + 1,
        };
        let mut w = LayerWriter::new(&self.path, self.tenant_id, self.timeline_id, &name)?;
        let mut small = small.into_iter().peekable();
        let mut count = 0u64;
        let mut last: Option<Key> = None;
        for page in pages {
            let (key, img) = page?;
            if last.is_some_and(|l| key <= l) {
                return Err(invalid(format!("bulk pages out of order at {key}")));
            }
            last = Some(key);
            while let Some((k, v)) = small.next_if(|(k, _)| *k <= key) {
                if k == key {
                    return Err(invalid(format!(
                        "{key} is both a page and a change of the record"
                    )));
                }
                w.put(k, lsn, &v)?;
                count += 1;
            }
            w.put(key, lsn, &Value::Image(img))?;
            count += 1;
        }
        for (k, v) in small {
            w.put(k, lsn, &v)?;
            count += 1;
        }
        let path = w.finish()?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        self.apply_layer_change(
            &guard,
            LayerChange {
                add: vec![(name, path)],
                next_open_start: Some(lsn + 1),
                ..LayerChange::default()
            },
        );
        self.advance_disk_consistent_lsn(&guard, lsn, Some(prev))?;
        drop(guard);
        writer.finish_write(prev, lsn);
        info!(tenant_id = %self.tenant_id, timeline_id = %self.timeline_id, %lsn, values = count, bytes = size,
              "filed a large record as its own layer");
        Ok(count)
    }
}
