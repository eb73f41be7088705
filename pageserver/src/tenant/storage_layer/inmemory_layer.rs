//! The in-memory layer: where a timeline's newest WAL lands.
//!
//! Values are kept per key in LSN order. The layer covers `[start_lsn,
//! end_lsn)`; while open, `end_lsn` is unbounded and ingest appends to it.
//! When its size passes `checkpoint_distance` (or it has been open too long)
//! it is frozen at the current LSN and written out as a delta layer file
//! ([`InMemoryLayer::write_delta_layer`]); only then is it dropped, so its data
//! always has a copy on disk or in memory.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use super::filename::LayerFileName;
use super::layer_file::{LayerError, LayerWriter};
use crate::key::Key;
use crate::value::Value;

/// Values of the newest WAL, in memory.
#[derive(Debug)]
pub struct InMemoryLayer {
    start_lsn: Lsn,
    end_lsn: Option<Lsn>,
    index: BTreeMap<Key, Vec<(Lsn, Value)>>,
    /// Approximate bytes held.
    size: u64,
    /// The highest LSN of any value (`None` while empty).
    max_lsn: Option<Lsn>,
    /// Once frozen: the start LSN of the last record the layer holds (the
    /// `prev_record_lsn` a restart from the layer's end needs).
    end_prev_record: Option<Lsn>,
}

impl InMemoryLayer {
    pub fn new(start_lsn: Lsn) -> InMemoryLayer {
        InMemoryLayer {
            start_lsn,
            end_lsn: None,
            index: BTreeMap::new(),
            size: 0,
            max_lsn: None,
            end_prev_record: None,
        }
    }

    /// LSN range covered (`end` = `Lsn::MAX` while open).
    pub fn lsn_range(&self) -> Range<Lsn> {
        self.start_lsn..self.end_lsn.unwrap_or(Lsn::MAX)
    }

    pub fn is_frozen(&self) -> bool {
        self.end_lsn.is_some()
    }

    /// Approximate memory held by values.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Add a value. `lsn` must not be below the layer's start or (per key)
    /// below the last value's LSN; a second value at the same LSN replaces the
    /// first (one WAL record that references a block twice stores it once).
    pub fn put(&mut self, key: Key, lsn: Lsn, value: Value) -> Result<(), String> {
        if self.end_lsn.is_some() {
            return Err(format!("put {key} at {lsn} into a frozen in-memory layer"));
        }
        if lsn < self.start_lsn {
            return Err(format!(
                "put {key} at {lsn} below the in-memory layer's start {}",
                self.start_lsn
            ));
        }
        let size = value_size(&value);
        let vals = self.index.entry(key).or_default();
        match vals.last_mut() {
            Some((last, _)) if *last > lsn => {
                return Err(format!("put {key} at {lsn} after a value at {last}"));
            }
            Some((last, v)) if *last == lsn => {
                self.size = self.size - value_size(v) + size;
                *v = value;
            }
            _ => {
                vals.push((lsn, value));
                self.size += size + ENTRY_OVERHEAD;
            }
        }
        self.max_lsn = self.max_lsn.max(Some(lsn));
        Ok(())
    }

    /// Moves the values above `lsn` into a new open layer that starts at
    /// `lsn + 1` (`None` if there are none). Freezing at a record boundary
    /// uses it: values of a record still being filed belong to the next
    /// layer.
    pub fn split_above(&mut self, lsn: Lsn) -> Option<InMemoryLayer> {
        if self.max_lsn.is_none_or(|m| m <= lsn) {
            return None;
        }
        let mut rest = InMemoryLayer::new(lsn + 1);
        for (key, vals) in self.index.iter_mut() {
            let at = vals.partition_point(|(l, _)| *l <= lsn);
            if at == vals.len() {
                continue;
            }
            let moved = vals.split_off(at);
            for (l, v) in &moved {
                let s = value_size(v) + ENTRY_OVERHEAD;
                self.size -= s.min(self.size);
                rest.size += s;
                rest.max_lsn = rest.max_lsn.max(Some(*l));
            }
            rest.index.insert(*key, moved);
        }
        self.index.retain(|_, vals| !vals.is_empty());
        self.max_lsn = if self.index.is_empty() {
            None
        } else {
            Some(lsn)
        };
        Some(rest)
    }

    /// Values of `key` with LSN in `lsn_range`, ascending.
    pub fn get_values(&self, key: Key, lsn_range: Range<Lsn>) -> &[(Lsn, Value)] {
        match self.index.get(&key) {
            None => &[],
            Some(vals) => {
                let lo = vals.partition_point(|(l, _)| *l < lsn_range.start);
                let hi = vals.partition_point(|(l, _)| *l < lsn_range.end);
                &vals[lo..hi.max(lo)]
            }
        }
    }

    /// Keys present in `range`.
    pub fn keys_in(&self, range: Range<Key>) -> impl Iterator<Item = &Key> {
        self.index.range(range).map(|(k, _)| k)
    }

    /// Stop accepting values; the layer now covers `[start, end_lsn)`, and
    /// `prev_record` is the start of the record ending at `end_lsn - 1`.
    pub fn freeze(&mut self, end_lsn: Lsn, prev_record: Lsn) {
        debug_assert!(end_lsn >= self.start_lsn);
        self.end_lsn = Some(end_lsn);
        self.end_prev_record = Some(prev_record);
    }

    /// The start of the last record in a frozen layer.
    pub fn end_prev_record(&self) -> Option<Lsn> {
        self.end_prev_record
    }

    /// Write a frozen layer as a delta layer file in `dir`. Returns its path
    /// and name, or `None` if the layer holds nothing.
    pub fn write_delta_layer(
        &self,
        dir: &Path,
        tenant_id: TenantId,
        timeline_id: TimelineId,
    ) -> Result<Option<(PathBuf, LayerFileName)>, LayerError> {
        let end_lsn = self.end_lsn.ok_or_else(|| LayerError::Misuse {
            path: dir.display().to_string(),
            reason: "writing an in-memory layer that is not frozen".into(),
        })?;
        if self.index.is_empty() {
            return Ok(None);
        }
        // Level-0 layers span the whole key space (compaction recognizes them so).
        let name = LayerFileName::Delta {
            key_range: Key::MIN..Key::MAX,
            lsn_range: self.start_lsn..end_lsn.max(self.start_lsn + 1),
        };
        let mut w = LayerWriter::new(dir, tenant_id, timeline_id, &name)?;
        for (key, vals) in &self.index {
            for (lsn, v) in vals {
                w.put(*key, *lsn, v)?;
            }
        }
        Ok(Some((w.finish()?, name)))
    }
}

/// Bookkeeping bytes counted per stored value besides the value itself.
const ENTRY_OVERHEAD: u64 = 48;

fn value_size(v: &Value) -> u64 {
    if v.is_shared_zero_page() {
        return 0;
    }
    match v {
        Value::Image(b) => b.len() as u64,
        Value::WalRecord(crate::value::ZenithWalRecord::Postgres { rec, .. }) => rec.len() as u64,
        Value::WalRecord(_) => 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::storage_layer::layer_file::LayerReader;
    use bytes::Bytes;

    fn img(b: u8) -> Value {
        Value::Image(Bytes::from(vec![b; 100]))
    }

    #[test]
    fn put_get_freeze_write() {
        let mut l = InMemoryLayer::new(Lsn(0x100));
        let k1 = Key::MIN.add(10);
        let k2 = Key::MIN.add(20);
        l.put(k1, Lsn(0x100), img(1)).unwrap();
        l.put(k1, Lsn(0x180), img(2)).unwrap();
        l.put(k2, Lsn(0x140), img(3)).unwrap();
        // Same LSN replaces; older LSN and below-start are refused.
        l.put(k1, Lsn(0x180), img(4)).unwrap();
        assert!(l.put(k1, Lsn(0x150), img(5)).is_err());
        assert!(l.put(k2, Lsn(0x50), img(5)).is_err());
        assert_eq!(l.get_values(k1, Lsn(0)..Lsn(0x181)).len(), 2);
        assert_eq!(l.get_values(k1, Lsn(0)..Lsn(0x180)).len(), 1);
        assert_eq!(l.get_values(k1, Lsn(0x180)..Lsn(0x181))[0].1, img(4));
        assert!(l.get_values(Key::MIN, Lsn(0)..Lsn::MAX).is_empty());

        let dir = tempfile::tempdir().unwrap();
        assert!(l
            .write_delta_layer(dir.path(), TenantId::generate(), TimelineId::generate())
            .is_err());
        l.freeze(Lsn(0x200), Lsn(0x180));
        assert!(l.put(k1, Lsn(0x300), img(6)).is_err());
        let (path, name) = l
            .write_delta_layer(dir.path(), TenantId::generate(), TimelineId::generate())
            .unwrap()
            .unwrap();
        assert_eq!(name.lsn_range(), Lsn(0x100)..Lsn(0x200));
        assert_eq!(name.key_range(), &(Key::MIN..Key::MAX));
        let r = LayerReader::open(&path).unwrap();
        assert_eq!(
            r.get_values(k1, Lsn(0)..Lsn::MAX).unwrap(),
            vec![(Lsn(0x100), img(1)), (Lsn(0x180), img(4))]
        );
    }
}
