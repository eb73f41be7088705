//! Writing: [`DatadirModification`], the changes of one WAL record (or of
//! an import), filed at one LSN.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use postgres_ffi::relfile::RelTag;
use postgres_ffi::slru::SlruKind;
use zenith_utils::lsn::Lsn;

use super::bulk::{BulkIter, BulkPages, PageSource};
use super::encoding::*;
use super::reader::get_opt;
use crate::key::*;
use crate::tenant::timeline::{Timeline, TimelineError, TimelineWriter};
use crate::value::{zero_page, Value};

/// The changes of one WAL record (or an import), applied atomically.
pub struct DatadirModification<'a> {
    tl: &'a Arc<Timeline>,
    /// State the changes apply to (the timeline's last record LSN).
    base_lsn: Lsn,
    pending: HashMap<Key, Bytes>,
    /// Values in the order they were added (several records per key allowed).
    puts: Vec<(Key, Value)>,
    /// Whole runs of pages, read only while they are written: a record with
    /// any is filed as a layer of its own ([`Timeline::put_bulk_record`]).
    bulk: Vec<BulkPages>,
}

impl<'a> DatadirModification<'a> {
    pub fn new(tl: &'a Arc<Timeline>) -> DatadirModification<'a> {
        DatadirModification {
            base_lsn: tl.last_record_lsn(),
            tl,
            pending: HashMap::new(),
            puts: Vec::new(),
            bulk: Vec::new(),
        }
    }

    /// Blocks `first..first + count` of `rel` are copied from `source` when
    /// the modification is committed (the pages are never all in memory).
    /// The fork's size is the caller's to set.
    pub fn put_bulk_pages(&mut self, rel: RelTag, first: u32, count: u32, source: PageSource) {
        if count > 0 {
            self.bulk.push(BulkPages {
                rel,
                first,
                count,
                source,
            });
        }
    }

    /// The timeline and LSN this modification reads its base state at (its
    /// own pending changes are not visible through it).
    pub fn reader_state(&self) -> (&'a Timeline, Lsn) {
        (self.tl, self.base_lsn)
    }

    /// The current value of `key` including this modification's changes.
    fn current(&self, key: Key) -> Result<Option<Bytes>, TimelineError> {
        if let Some(v) = self.pending.get(&key) {
            return Ok(Some(v.clone()));
        }
        if self.tl.last_record_lsn() == Lsn(0) {
            return Ok(None);
        }
        get_opt(self.tl, key, self.base_lsn)
    }

    /// Put a whole value (image).
    pub fn put_image(&mut self, key: Key, img: Bytes) {
        self.pending.insert(key, img.clone());
        self.puts.push((key, Value::Image(img)));
    }

    /// Put a change record.
    pub fn put_record(&mut self, key: Key, rec: crate::value::ZenithWalRecord) {
        self.pending.remove(&key);
        self.puts.push((key, Value::WalRecord(rec)));
    }

    pub fn dbdir(&self) -> Result<DbDirectory, TimelineError> {
        match self.current(DBDIR_KEY)? {
            Some(b) => des_dbdir(&b),
            None => Ok(DbDirectory::new()),
        }
    }

    fn reldir(&self, spc: u32, db: u32) -> Result<RelDirectory, TimelineError> {
        let key = rel_dir_key(spc, db);
        match self.current(key)? {
            Some(b) => des_reldir(&b, key),
            None => Ok(RelDirectory::new()),
        }
    }

    /// Register a database (with an empty relation directory if new).
    pub fn put_db(&mut self, spc: u32, db: u32, has_relmap: bool) -> Result<(), TimelineError> {
        let mut d = self.dbdir()?;
        let prev = d.insert((spc, db), has_relmap);
        self.put_image(DBDIR_KEY, ser_dbdir(&d));
        if prev.is_none() {
            self.put_image(rel_dir_key(spc, db), ser_reldir(&RelDirectory::new()));
        }
        Ok(())
    }

    pub fn drop_db(&mut self, spc: u32, db: u32) -> Result<(), TimelineError> {
        let mut d = self.dbdir()?;
        if d.remove(&(spc, db)).is_some() {
            self.put_image(DBDIR_KEY, ser_dbdir(&d));
            self.put_image(rel_dir_key(spc, db), ser_reldir(&RelDirectory::new()));
        }
        Ok(())
    }

    /// `DROP TABLESPACE`: the database directories in it (PostgreSQL drops
    /// only an empty tablespace; what an entry still lists goes too).
    pub fn drop_tablespace(&mut self, spc: u32) -> Result<(), TimelineError> {
        let dbs: Vec<u32> = self
            .dbdir()?
            .keys()
            .filter(|(s, _)| *s == spc)
            .map(|(_, db)| *db)
            .collect();
        for db in dbs {
            self.drop_db(spc, db)?;
        }
        Ok(())
    }

    pub fn put_relmap_file(&mut self, spc: u32, db: u32, data: Bytes) -> Result<(), TimelineError> {
        self.put_db(spc, db, true)?;
        self.put_image(relmap_file_key(spc, db), data);
        Ok(())
    }

    /// Current size of a relation fork, `None` if it does not exist.
    pub fn rel_size(&self, rel: RelTag) -> Result<Option<u32>, TimelineError> {
        if !self
            .reldir(rel.spcnode, rel.dbnode)?
            .contains(&(rel.relnode, rel.forknum))
        {
            return Ok(None);
        }
        let key = rel_size_key(rel);
        match self.current(key)? {
            Some(b) => des_size(&b, key).map(Some),
            None => Ok(Some(0)),
        }
    }

    /// Create a relation fork of `nblocks` blocks (no-op if it exists).
    pub fn put_rel_creation(&mut self, rel: RelTag, nblocks: u32) -> Result<(), TimelineError> {
        if !self.dbdir()?.contains_key(&(rel.spcnode, rel.dbnode)) {
            self.put_db(rel.spcnode, rel.dbnode, false)?;
        }
        let mut d = self.reldir(rel.spcnode, rel.dbnode)?;
        if d.insert((rel.relnode, rel.forknum)) {
            self.put_image(rel_dir_key(rel.spcnode, rel.dbnode), ser_reldir(&d));
            self.put_image(rel_size_key(rel), ser_size(nblocks));
        }
        Ok(())
    }

    /// Set a relation fork's size (truncate or extend without data).
    pub fn put_rel_truncation(&mut self, rel: RelTag, nblocks: u32) -> Result<(), TimelineError> {
        self.put_rel_creation(rel, 0)?;
        self.put_image(rel_size_key(rel), ser_size(nblocks));
        Ok(())
    }

    /// Make sure block `blkno` exists: extend the fork (creating it if needed),
    /// filling blocks between the old end and `blkno` with zero pages.
    pub fn put_rel_extend_to(&mut self, rel: RelTag, blkno: u32) -> Result<(), TimelineError> {
        let size = self.rel_size(rel)?;
        self.put_rel_extend_from(rel, size, blkno)
    }

    /// [`put_rel_extend_to`](Self::put_rel_extend_to) for a caller that
    /// knows the fork's current size (`None`: it does not exist), so that
    /// extending a relation block by block does not read the directory and
    /// the size at every block.
    pub fn put_rel_extend_from(
        &mut self,
        rel: RelTag,
        current: Option<u32>,
        blkno: u32,
    ) -> Result<(), TimelineError> {
        let size = match current {
            Some(s) => s,
            None => {
                self.put_rel_creation(rel, 0)?;
                0
            }
        };
        if blkno >= size {
            for gap in size..blkno {
                self.put_image(rel_block_key(rel, gap), zero_page());
            }
            self.put_image(rel_size_key(rel), ser_size(blkno + 1));
        }
        Ok(())
    }

    pub fn put_rel_drop(&mut self, rel: RelTag) -> Result<(), TimelineError> {
        let mut d = self.reldir(rel.spcnode, rel.dbnode)?;
        if d.remove(&(rel.relnode, rel.forknum)) {
            self.put_image(rel_dir_key(rel.spcnode, rel.dbnode), ser_reldir(&d));
            self.put_image(rel_size_key(rel), ser_size(0));
        }
        Ok(())
    }

    fn slru_dir(&self, kind: SlruKind) -> Result<BTreeSet<u32>, TimelineError> {
        let key = slru_dir_key(kind);
        Ok(match self.current(key)? {
            Some(b) => des_u32s(&b, key, "SLRU directory")?.into_iter().collect(),
            None => BTreeSet::new(),
        })
    }

    pub fn slru_segment_size(&self, kind: SlruKind, segno: u32) -> Result<u32, TimelineError> {
        let key = slru_segment_size_key(kind, segno);
        match self.current(key)? {
            Some(b) => des_size(&b, key),
            None => Ok(0),
        }
    }

    /// Make sure page `blkno` of SLRU segment `segno` exists.
    pub fn put_slru_extend_to(
        &mut self,
        kind: SlruKind,
        segno: u32,
        blkno: u32,
    ) -> Result<(), TimelineError> {
        let mut d = self.slru_dir(kind)?;
        if d.insert(segno) {
            self.put_image(
                slru_dir_key(kind),
                ser_u32s(d.iter().copied().collect::<Vec<_>>().into_iter()),
            );
        }
        let size = self.slru_segment_size(kind, segno)?;
        if blkno >= size {
            for gap in size..blkno {
                self.put_image(slru_block_key(kind, segno, gap), zero_page());
            }
            self.put_image(slru_segment_size_key(kind, segno), ser_size(blkno + 1));
        }
        Ok(())
    }

    pub fn drop_slru_segment(&mut self, kind: SlruKind, segno: u32) -> Result<(), TimelineError> {
        let mut d = self.slru_dir(kind)?;
        if d.remove(&segno) {
            self.put_image(
                slru_dir_key(kind),
                ser_u32s(d.iter().copied().collect::<Vec<_>>().into_iter()),
            );
            self.put_image(slru_segment_size_key(kind, segno), ser_size(0));
        }
        Ok(())
    }

    fn twophase_dir(&self) -> Result<BTreeSet<u32>, TimelineError> {
        Ok(match self.current(TWOPHASEDIR_KEY)? {
            Some(b) => des_u32s(&b, TWOPHASEDIR_KEY, "two-phase directory")?
                .into_iter()
                .collect(),
            None => BTreeSet::new(),
        })
    }

    pub fn put_twophase_file(&mut self, xid: u32, data: Bytes) -> Result<(), TimelineError> {
        let mut d = self.twophase_dir()?;
        d.insert(xid);
        self.put_image(
            TWOPHASEDIR_KEY,
            ser_u32s(d.iter().copied().collect::<Vec<_>>().into_iter()),
        );
        self.put_image(twophase_file_key(xid), data);
        Ok(())
    }

    pub fn drop_twophase_file(&mut self, xid: u32) -> Result<(), TimelineError> {
        let mut d = self.twophase_dir()?;
        if d.remove(&xid) {
            self.put_image(
                TWOPHASEDIR_KEY,
                ser_u32s(d.iter().copied().collect::<Vec<_>>().into_iter()),
            );
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.bulk.is_empty()
    }

    /// File every change at `lsn` (the record's end LSN) and make them
    /// visible: `last_record_lsn` becomes `lsn`, `prev` its start.
    pub fn commit(self, writer: &TimelineWriter, prev: Lsn, lsn: Lsn) -> Result<(), TimelineError> {
        if !self.bulk.is_empty() {
            return self.commit_bulk(writer, prev, lsn);
        }
        for (key, value) in self.puts {
            writer.put(key, lsn, value)?;
        }
        writer.finish_write(prev, lsn);
        Ok(())
    }

    /// Commit a modification with bulk pages: its other changes (at most one
    /// image per key survives: the last) and the pages, streamed in key
    /// order into a layer of their own.
    fn commit_bulk(
        mut self,
        writer: &TimelineWriter,
        prev: Lsn,
        lsn: Lsn,
    ) -> Result<(), TimelineError> {
        let tl = self.tl;
        let mut small = std::collections::BTreeMap::new();
        for (key, value) in self.puts {
            if !matches!(value, Value::Image(_)) {
                return Err(TimelineError::Invalid(
                    tl.timeline_id,
                    format!("a record with bulk pages also has a change record for {key}"),
                ));
            }
            small.insert(key, value);
        }
        self.bulk.sort_by_key(|b| (b.rel, b.first));
        let base_lsn = self.base_lsn;
        let mut pages = self
            .bulk
            .into_iter()
            .flat_map(move |b| BulkIter::new(tl, base_lsn, b));
        tl.put_bulk_record(writer, prev, lsn, small, &mut pages)?;
        Ok(())
    }
}
