//! The read path: a key's value at an LSN, from one consistent snapshot of
//! the timeline's layers, through the page cache and WAL redo.

use std::sync::Arc;

use bytes::Bytes;
use zenith_utils::lsn::Lsn;

use super::{Timeline, TimelineError};
use crate::key::Key;
use crate::page_cache::CacheKey;
use crate::tenant::storage_layer::inmemory_layer::InMemoryLayer;
use crate::tenant::storage_layer::layer_file::{IndexEntry, LayerReader};
use crate::tenant::storage_layer::reader_cache;
use crate::value::{Value, ZenithWalRecord};

/// Versions of one key in one layer, ascending by LSN
/// ([`Timeline::walk_versions`]).
enum VersionSource<'a> {
    Memory(&'a [(Lsn, Value)]),
    File(&'a LayerReader, &'a [IndexEntry]),
}

/// How [`Timeline::get`]'s walk ended.
enum Reconstruct {
    /// The page cache had the page for the newest version.
    Cached(Bytes),
    /// The base image (`None`: a record initializes the page) under the
    /// collected records.
    Base(Option<(Lsn, Bytes)>),
}

/// Where the newest version of a key is ([`Timeline::get_cached`]).
enum Newest {
    /// An image in an in-memory layer: the value itself.
    MemoryImage(Bytes),
    /// A WAL record in an in-memory layer.
    Memory,
    /// In a layer file, at this LSN.
    File(Lsn),
}

impl Timeline {
    /// The value of `key` at `lsn` (at or below `last_record_lsn`).
    ///
    /// One walk over one snapshot of the layers (with the GC cutoff it was
    /// taken with) collects the key's versions, newest first, down to an
    /// image or a record that initializes the page. A page read from a
    /// layer file or rebuilt by redo is cached under the newest version's
    /// LSN: the value depends only on the versions up to it, so a hit costs
    /// no value read, no decompression and no redo. (Versions still in
    /// memory are cheap to read.)
    pub fn get(&self, key: Key, lsn: Lsn) -> Result<Bytes, TimelineError> {
        let cache = crate::page_cache::get();
        let mut records: Vec<(Lsn, ZenithWalRecord)> = Vec::new();
        // The cache key of the newest version, when it is in a layer file.
        let mut file_newest: Option<CacheKey> = None;
        let mut seen_any = false;
        let found = self.walk_versions(key, lsn, true, false, &mut |src| {
            // Some(base) ends the walk: nothing older is needed.
            let mut take = |l: Lsn, v: Value| match v {
                Value::Image(img) => Some(Reconstruct::Base(Some((l, img)))),
                Value::WalRecord(r) => {
                    let init = r.will_init();
                    records.push((l, r));
                    init.then_some(Reconstruct::Base(None))
                }
            };
            match src {
                VersionSource::Memory(vals) => {
                    for (l, v) in vals.iter().rev() {
                        seen_any = true;
                        if let Some(done) = take(*l, v.clone()) {
                            return Ok(Some(done));
                        }
                    }
                }
                VersionSource::File(reader, entries) => {
                    if !seen_any {
                        if let Some(newest) = entries.last() {
                            let ck = (self.incarnation, key, newest.lsn);
                            if let Some(page) = cache.lookup(&ck) {
                                return Ok(Some(Reconstruct::Cached(page)));
                            }
                            file_newest = Some(ck);
                        }
                    }
                    for e in entries.iter().rev() {
                        seen_any = true;
                        if let Some(done) = take(e.lsn, reader.read_value(e)?) {
                            return Ok(Some(done));
                        }
                    }
                }
            }
            Ok(None)
        })?;
        let base = match found {
            Some(Reconstruct::Cached(page)) => return Ok(page),
            Some(Reconstruct::Base(base)) => base,
            None => None,
        };
        records.reverse();
        let page = match base {
            Some((_, img)) if records.is_empty() => img,
            None if records.is_empty() => return Err(TimelineError::MissingKey { key, lsn }),
            base => {
                let newest = records.last().map(|(l, _)| *l).unwrap_or(lsn);
                let ck = (self.incarnation, key, newest);
                if let Some(page) = cache.lookup(&ck) {
                    return Ok(page);
                }
                let page =
                    crate::walredo::timed_redo(self.walredo.as_ref(), key, lsn, base, records)?;
                cache.insert(ck, page.clone());
                return Ok(page);
            }
        };
        if let Some(ck) = file_newest {
            cache.insert(ck, page.clone());
        }
        Ok(page)
    }

    /// [`get`](Self::get) without blocking, for async workers: answers from
    /// in-memory layers, open layer files' in-memory indexes and the page
    /// cache only; `WouldBlock` if a layer file must be opened or read, or
    /// WAL redo run. No file is opened, read or verified here
    /// ([`reader_cache::forbid_file_io`] counts any that would be).
    pub fn get_cached(&self, key: Key, lsn: Lsn) -> Result<Bytes, TimelineError> {
        let _no_io = reader_cache::forbid_file_io();
        let newest = self.walk_versions(key, lsn, true, true, &mut |src| {
            Ok(match src {
                VersionSource::Memory(vals) => vals.last().map(|(_, v)| match v {
                    Value::Image(img) => Newest::MemoryImage(img.clone()),
                    Value::WalRecord(_) => Newest::Memory,
                }),
                VersionSource::File(_, entries) => entries.last().map(|e| Newest::File(e.lsn)),
            })
        })?;
        match newest {
            None => Err(TimelineError::MissingKey { key, lsn }),
            Some(Newest::MemoryImage(img)) => Ok(img),
            Some(Newest::Memory) => Err(TimelineError::WouldBlock),
            Some(Newest::File(l)) => crate::page_cache::get()
                .lookup(&(self.incarnation, key, l))
                .ok_or(TimelineError::WouldBlock),
        }
    }

    /// Visit the places holding versions of `key` at or below `lsn`, newest
    /// first: the open layer, frozen layers newest to oldest (under the
    /// layers lock), layer files as the layer map's search rule finds them
    /// (the map as of that same lock hold), then the ancestor below the
    /// branch point. With `check_cutoff`, an `lsn` below the GC cutoff of
    /// that same snapshot is refused. With `cached_only`, a layer file that
    /// is not open ends the walk with `WouldBlock` instead of being opened.
    /// `visit` returns `Some` to stop the walk with that result.
    fn walk_versions<R>(
        &self,
        key: Key,
        lsn: Lsn,
        check_cutoff: bool,
        cached_only: bool,
        visit: &mut dyn FnMut(VersionSource<'_>) -> Result<Option<R>, TimelineError>,
    ) -> Result<Option<R>, TimelineError> {
        let mut cont = lsn + 1;
        let map = {
            let layers = self.layers.read().unwrap_or_else(|e| e.into_inner());
            if check_cutoff && lsn < layers.gc_cutoff {
                return Err(TimelineError::BelowGcCutoff {
                    lsn,
                    cutoff: layers.gc_cutoff,
                });
            }
            let open = layers.open.iter().map(|l| l as &InMemoryLayer);
            let frozen = layers.frozen.iter().rev().map(|l| l.as_ref());
            let mut floor = cont;
            for l in open.chain(frozen) {
                let r = l.lsn_range();
                if r.start >= cont {
                    continue;
                }
                if let Some(done) = visit(VersionSource::Memory(l.get_values(key, r.start..cont)))?
                {
                    return Ok(Some(done));
                }
                floor = floor.min(r.start);
            }
            cont = floor;
            Arc::clone(&layers.map)
        };
        fail::fail_point!("read-after-snapshot");
        while let Some(found) = map.search(key, cont) {
            let reader = match cached_only {
                true => found
                    .layer
                    .cached_reader()
                    .ok_or(TimelineError::WouldBlock)?,
                false => found.layer.reader()?,
            };
            let entries = reader.entries_for(key, found.lsn_range.clone());
            if let Some(done) = visit(VersionSource::File(&reader, entries))? {
                return Ok(Some(done));
            }
            if !found.layer.is_delta() {
                // An image holds every key of its range that exists at its
                // LSN: this one did not exist then.
                return Ok(None);
            }
            cont = found.lsn_range.start;
        }
        match &self.ancestor {
            Some((anc, branch_lsn)) => {
                // The ancestor's GC keeps what this branch point needs.
                let below = Lsn(cont.0.saturating_sub(1)).min(*branch_lsn);
                anc.walk_versions(key, below, false, cached_only, visit)
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::timeline::test_helpers::*;

    #[test]
    fn native_records_are_applied_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let tl = new_tl(dir.path(), Lsn(0x100));
        let w = tl.writer();
        let clog = Key {
            field6: 0,
            ..key(0)
        };
        w.put(clog, Lsn(0x110), Value::Image(Bytes::from(vec![0u8; 8192])))
            .unwrap();
        w.finish_write(Lsn(0x100), Lsn(0x110));
        w.put(
            clog,
            Lsn(0x120),
            Value::WalRecord(ZenithWalRecord::ClogSetCommitted {
                xids: vec![5],
                timestamp: 0,
            }),
        )
        .unwrap();
        w.finish_write(Lsn(0x110), Lsn(0x120));
        tl.freeze_and_flush().unwrap();
        let p = tl.get(clog, Lsn(0x120)).unwrap();
        assert_eq!(postgres_ffi::slru::clog_get_status(&p, 5), 1);
        assert_eq!(
            postgres_ffi::slru::clog_get_status(&tl.get(clog, Lsn(0x110)).unwrap(), 5),
            0
        );
    }

    #[test]
    fn cached_reads_never_touch_files_and_agree_with_get() {
        let dir = tempfile::tempdir().unwrap();
        let tl = new_tl(dir.path(), Lsn(0x100));
        let w = tl.writer();
        // key 1: an image on disk; key 2: an image in memory.
        w.put(key(1), Lsn(0x110), page(1)).unwrap();
        w.finish_write(Lsn(0x100), Lsn(0x110));
        tl.freeze_and_flush().unwrap();
        w.put(key(2), Lsn(0x210), page(2)).unwrap();
        w.finish_write(Lsn(0x110), Lsn(0x210));

        let cached = |k, l| tl.get_cached(key(k), Lsn(l));
        assert_eq!(cached(2, 0x300).unwrap()[0], 2);
        // On disk, the layer file not open: a cached-only read would block,
        // even for a key the file lacks (its index is not in memory).
        assert!(matches!(cached(1, 0x300), Err(TimelineError::WouldBlock)));
        assert!(matches!(cached(3, 0x300), Err(TimelineError::WouldBlock)));
        // A real read opens the file and caches the page under its
        // version's LSN ...
        assert_eq!(tl.get(key(1), Lsn(0x300)).unwrap()[0], 1);
        assert!(matches!(
            cached(3, 0x300),
            Err(TimelineError::MissingKey { .. })
        ));
        // ... which serves every later LSN until a newer version arrives.
        assert_eq!(cached(1, 0x200).unwrap()[0], 1);
        assert_eq!(cached(1, 0x300).unwrap()[0], 1);
        w.put(key(1), Lsn(0x310), page(7)).unwrap();
        w.finish_write(Lsn(0x210), Lsn(0x310));
        assert_eq!(cached(1, 0x310).unwrap()[0], 7);
        assert_eq!(cached(1, 0x300).unwrap()[0], 1);
        tl.freeze_and_flush().unwrap();
        assert!(matches!(cached(1, 0x310), Err(TimelineError::WouldBlock)));
        assert_eq!(tl.get(key(1), Lsn(0x310)).unwrap()[0], 7);
        assert_eq!(cached(1, 0x310).unwrap()[0], 7);
    }

    /// After a restart (or past the open-file limit) the reader cache is
    /// cold: the cached path must hand such reads to the blocking pool
    /// rather than open and verify the layer file itself.
    #[test]
    fn a_cold_reader_cache_sends_cached_reads_to_the_blocking_path() {
        let dir = tempfile::tempdir().unwrap();
        let tl = new_tl(dir.path(), Lsn(0x100));
        let w = tl.writer();
        for k in 1..=4 {
            w.put(key(k), Lsn(0x110), page(k as u8)).unwrap();
        }
        w.finish_write(Lsn(0x100), Lsn(0x110));
        tl.freeze_and_flush().unwrap();
        // Page cache warm for keys 1 and 2, reader cache cold.
        assert_eq!(tl.get(key(1), Lsn(0x110)).unwrap()[0], 1);
        assert_eq!(tl.get(key(2), Lsn(0x110)).unwrap()[0], 2);
        reader_cache::get().clear();
        let before = reader_cache::file_io_while_forbidden();
        // The page is cached, but which version is newest is in the layer's
        // index, which is not in memory: WouldBlock, without opening it.
        assert!(matches!(
            tl.get_cached(key(1), Lsn(0x110)),
            Err(TimelineError::WouldBlock)
        ));
        assert_eq!(reader_cache::file_io_while_forbidden(), before);
        // The blocking path opens it; then the cached path finds the index
        // in memory and the pages in the page cache.
        assert_eq!(tl.get(key(1), Lsn(0x110)).unwrap()[0], 1);
        assert_eq!(tl.get_cached(key(1), Lsn(0x110)).unwrap()[0], 1);
        assert_eq!(tl.get_cached(key(2), Lsn(0x110)).unwrap()[0], 2);
        // Open reader, page not cached: WouldBlock (a value read is I/O).
        assert!(matches!(
            tl.get_cached(key(3), Lsn(0x110)),
            Err(TimelineError::WouldBlock)
        ));
        assert_eq!(reader_cache::file_io_while_forbidden(), before);
        // The counter does count I/O where it is forbidden.
        {
            let _no_io = reader_cache::forbid_file_io();
            tl.get(key(4), Lsn(0x110)).unwrap();
        }
        assert!(reader_cache::file_io_while_forbidden() > before);
    }
}
