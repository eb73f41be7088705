//! PostgreSQL's data directory in the key-value store of a timeline.
//!
//! Relations, SLRUs, relmapper files, two-phase files, pg_control and the
//! checkpoint are stored under the keys of [`crate::key`]; the "directories"
//! (databases, relations of a database, SLRU segments, prepared transactions)
//! are values of their own so that listing them is one read.
//!
//! Reading: [`DatadirReader`] answers PostgreSQL-level questions at an LSN.
//! Writing: [`DatadirModification`] collects the changes of one WAL record (or
//! of an import) against the current state plus its own pending changes, and
//! [`commit`](DatadirModification::commit) files them at one LSN, then
//! advances `last_record_lsn`: a record's effects become visible atomically.
//!
//! Directory encodings (big-endian): database directory `u32 n` then n ×
//! (`u32 spc, u32 db, u8 has_relmap`); relation directory `u32 n` then n ×
//! (`u32 relnode, u8 fork`); SLRU segment directory and two-phase directory
//! `u32 n` then n × `u32`; sizes are `u32` block counts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use postgres_ffi::relfile::RelTag;
use postgres_ffi::slru::SlruKind;
use postgres_ffi::BLCKSZ;
use zenith_utils::lsn::Lsn;

use crate::key::*;
use crate::tenant::timeline::{Timeline, TimelineError, TimelineWriter};
use crate::value::Value;

/// An all-zeros page.
pub use crate::value::zero_page;

fn ser_u32s(items: impl ExactSizeIterator<Item = u32>) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + items.len() * 4);
    b.put_u32(items.len() as u32);
    items.for_each(|v| b.put_u32(v));
    b.freeze()
}

fn corrupt(what: &str, key: Key) -> TimelineError {
    TimelineError::Invalid(
        zenith_utils::id::TimelineId::from_array([0; 16]),
        format!("stored {what} under {key} is malformed"),
    )
}

fn des_u32s(b: &[u8], key: Key, what: &str) -> Result<Vec<u32>, TimelineError> {
    let n = b
        .get(..4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize);
    match n {
        Some(n) if b.len() == 4 + n * 4 => Ok(b[4..]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        _ => Err(corrupt(what, key)),
    }
}

/// Databases: (spc, db) → has a relmapper file.
pub type DbDirectory = BTreeMap<(u32, u32), bool>;
/// Relations of one database: (relnode, fork).
pub type RelDirectory = BTreeSet<(u32, u8)>;

fn ser_dbdir(d: &DbDirectory) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32(d.len() as u32);
    for ((spc, db), m) in d {
        b.put_u32(*spc);
        b.put_u32(*db);
        b.put_u8(*m as u8);
    }
    b.freeze()
}

fn des_dbdir(b: &[u8]) -> Result<DbDirectory, TimelineError> {
    let bad = || corrupt("database directory", DBDIR_KEY);
    let n = b
        .get(..4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
        .ok_or_else(bad)?;
    if b.len() != 4 + n * 9 {
        return Err(bad());
    }
    Ok(b[4..]
        .chunks_exact(9)
        .map(|c| {
            (
                (
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                    u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                ),
                c[8] != 0,
            )
        })
        .collect())
}

fn ser_reldir(d: &RelDirectory) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32(d.len() as u32);
    for (rel, fork) in d {
        b.put_u32(*rel);
        b.put_u8(*fork);
    }
    b.freeze()
}

fn des_reldir(b: &[u8], key: Key) -> Result<RelDirectory, TimelineError> {
    let bad = || corrupt("relation directory", key);
    let n = b
        .get(..4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
        .ok_or_else(bad)?;
    if b.len() != 4 + n * 5 {
        return Err(bad());
    }
    Ok(b[4..]
        .chunks_exact(5)
        .map(|c| (u32::from_be_bytes([c[0], c[1], c[2], c[3]]), c[4]))
        .collect())
}

fn des_size(b: &[u8], key: Key) -> Result<u32, TimelineError> {
    match b {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(corrupt("size", key)),
    }
}

fn ser_size(n: u32) -> Bytes {
    Bytes::copy_from_slice(&n.to_be_bytes())
}

/// Read the value of `key`, or `None` if it was never written.
fn get_opt(tl: &Timeline, key: Key, lsn: Lsn) -> Result<Option<Bytes>, TimelineError> {
    match tl.get(key, lsn) {
        Ok(v) => Ok(Some(v)),
        Err(TimelineError::MissingKey { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// PostgreSQL-level reads of a timeline at an LSN.
pub struct DatadirReader<'a> {
    pub tl: &'a Timeline,
    pub lsn: Lsn,
    /// Answer only from memory and the page cache: a read that would need
    /// file I/O or WAL redo fails with [`TimelineError::WouldBlock`] (for
    /// async callers that try the fast path before going to a thread).
    pub cached_only: bool,
}

impl<'a> DatadirReader<'a> {
    pub fn new(tl: &'a Timeline, lsn: Lsn) -> Self {
        DatadirReader {
            tl,
            lsn,
            cached_only: false,
        }
    }

    /// A reader that never blocks (see `cached_only`).
    pub fn cached_only(tl: &'a Timeline, lsn: Lsn) -> Self {
        DatadirReader {
            tl,
            lsn,
            cached_only: true,
        }
    }
}

impl DatadirReader<'_> {
    fn get(&self, key: Key) -> Result<Option<Bytes>, TimelineError> {
        if !self.cached_only {
            return get_opt(self.tl, key, self.lsn);
        }
        match self.tl.get_cached(key, self.lsn) {
            Ok(v) => Ok(Some(v)),
            Err(TimelineError::MissingKey { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn list_dbs(&self) -> Result<DbDirectory, TimelineError> {
        match self.get(DBDIR_KEY)? {
            Some(b) => des_dbdir(&b),
            None => Ok(DbDirectory::new()),
        }
    }

    pub fn list_rels(&self, spc: u32, db: u32) -> Result<RelDirectory, TimelineError> {
        let key = rel_dir_key(spc, db);
        match self.get(key)? {
            Some(b) => des_reldir(&b, key),
            None => Ok(RelDirectory::new()),
        }
    }

    /// Whether the relation fork exists.
    pub fn rel_exists(&self, rel: RelTag) -> Result<bool, TimelineError> {
        Ok(self
            .list_rels(rel.spcnode, rel.dbnode)?
            .contains(&(rel.relnode, rel.forknum)))
    }

    /// Size of a relation fork in blocks; `None` if it does not exist.
    pub fn rel_size(&self, rel: RelTag) -> Result<Option<u32>, TimelineError> {
        if !self.rel_exists(rel)? {
            return Ok(None);
        }
        let key = rel_size_key(rel);
        match self.get(key)? {
            Some(b) => des_size(&b, key).map(Some),
            None => Ok(Some(0)),
        }
    }

    /// A block of a relation fork (blocks never written read as zeros).
    pub fn rel_page(&self, rel: RelTag, blkno: u32) -> Result<Bytes, TimelineError> {
        match self.get(rel_block_key(rel, blkno))? {
            Some(p) => Ok(p),
            None => Ok(zero_page()),
        }
    }

    pub fn relmap_file(&self, spc: u32, db: u32) -> Result<Option<Bytes>, TimelineError> {
        self.get(relmap_file_key(spc, db))
    }

    pub fn list_slru_segments(&self, kind: SlruKind) -> Result<Vec<u32>, TimelineError> {
        let key = slru_dir_key(kind);
        match self.get(key)? {
            Some(b) => des_u32s(&b, key, "SLRU directory"),
            None => Ok(Vec::new()),
        }
    }

    pub fn slru_segment_size(&self, kind: SlruKind, segno: u32) -> Result<u32, TimelineError> {
        let key = slru_segment_size_key(kind, segno);
        match self.get(key)? {
            Some(b) => des_size(&b, key),
            None => Ok(0),
        }
    }

    pub fn slru_page(
        &self,
        kind: SlruKind,
        segno: u32,
        blkno: u32,
    ) -> Result<Bytes, TimelineError> {
        Ok(self
            .get(slru_block_key(kind, segno, blkno))?
            .unwrap_or_else(zero_page))
    }

    pub fn list_twophase_files(&self) -> Result<Vec<u32>, TimelineError> {
        match self.get(TWOPHASEDIR_KEY)? {
            Some(b) => des_u32s(&b, TWOPHASEDIR_KEY, "two-phase directory"),
            None => Ok(Vec::new()),
        }
    }

    pub fn twophase_file(&self, xid: u32) -> Result<Bytes, TimelineError> {
        self.tl.get(twophase_file_key(xid), self.lsn)
    }

    pub fn control_file(&self) -> Result<Bytes, TimelineError> {
        self.tl.get(CONTROLFILE_KEY, self.lsn)
    }

    pub fn checkpoint(&self) -> Result<Bytes, TimelineError> {
        self.tl.get(CHECKPOINT_KEY, self.lsn)
    }

    /// Every key that may hold a value at this LSN, as sorted, disjoint
    /// ranges: the directories, each relation's blocks and size, the
    /// relmapper files, the SLRU segments and their sizes, the two-phase
    /// files, pg_control and the checkpoint. Keys of dropped relations,
    /// databases and segments are not in it. This is what an image layer
    /// holds ([`crate::tenant::images`]).
    pub fn keyspace(&self) -> Result<Vec<std::ops::Range<Key>>, TimelineError> {
        let one = |k: Key| k..k.next();
        let mut ranges = vec![one(DBDIR_KEY), one(TWOPHASEDIR_KEY)];
        for (&(spc, db), &has_relmap) in &self.list_dbs()? {
            if has_relmap {
                ranges.push(one(relmap_file_key(spc, db)));
            }
            ranges.push(one(rel_dir_key(spc, db)));
            for (relnode, forknum) in self.list_rels(spc, db)? {
                let rel = RelTag {
                    spcnode: spc,
                    dbnode: db,
                    relnode,
                    forknum,
                };
                let n = self.rel_size(rel)?.unwrap_or(0);
                if n > 0 {
                    ranges.push(rel_block_key(rel, 0)..rel_block_key(rel, n));
                }
                ranges.push(one(rel_size_key(rel)));
            }
        }
        for kind in [
            SlruKind::Clog,
            SlruKind::MultiXactOffsets,
            SlruKind::MultiXactMembers,
        ] {
            ranges.push(one(slru_dir_key(kind)));
            for segno in self.list_slru_segments(kind)? {
                let n = self.slru_segment_size(kind, segno)?;
                if n > 0 {
                    ranges.push(slru_block_key(kind, segno, 0)..slru_block_key(kind, segno, n));
                }
                ranges.push(one(slru_segment_size_key(kind, segno)));
            }
        }
        for xid in self.list_twophase_files()? {
            ranges.push(one(twophase_file_key(xid)));
        }
        ranges.push(one(CONTROLFILE_KEY));
        ranges.push(one(CHECKPOINT_KEY));
        ranges.sort_by_key(|r| r.start);
        Ok(ranges)
    }

    /// Total size in bytes of a database's relations (`pg_database_size`).
    pub fn db_size(&self, spc: u32, db: u32) -> Result<u64, TimelineError> {
        let mut total = 0u64;
        for (relnode, forknum) in self.list_rels(spc, db)? {
            let rel = RelTag {
                spcnode: spc,
                dbnode: db,
                relnode,
                forknum,
            };
            total += self.rel_size(rel)?.unwrap_or(0) as u64 * BLCKSZ as u64;
        }
        Ok(total)
    }
}

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

/// Where the pages of a bulk run come from.
#[derive(Debug, Clone)]
pub enum PageSource {
    /// The same blocks of another relation fork, at the modification's base LSN.
    Relation(RelTag),
    /// Consecutive pages of a file, from its start.
    File(std::path::PathBuf),
}

/// Blocks `first..first + count` of `rel`, from `source`.
#[derive(Debug, Clone)]
struct BulkPages {
    rel: RelTag,
    first: u32,
    count: u32,
    source: PageSource,
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

/// The pages of one bulk run, read one at a time.
struct BulkIter<'a> {
    tl: &'a Timeline,
    base_lsn: Lsn,
    run: BulkPages,
    next: u32,
    file: Option<std::io::BufReader<std::fs::File>>,
    failed: bool,
}

impl<'a> BulkIter<'a> {
    fn new(tl: &'a Timeline, base_lsn: Lsn, run: BulkPages) -> BulkIter<'a> {
        BulkIter {
            tl,
            base_lsn,
            next: run.first,
            run,
            file: None,
            failed: false,
        }
    }

    fn read(&mut self, blkno: u32) -> Result<Bytes, TimelineError> {
        match &self.run.source {
            PageSource::Relation(src) => {
                Ok(get_opt(self.tl, rel_block_key(*src, blkno), self.base_lsn)?
                    .unwrap_or_else(zero_page))
            }
            PageSource::File(path) => {
                use std::io::Read;
                let io = |source| TimelineError::Io {
                    what: "reading",
                    path: path.display().to_string(),
                    source,
                };
                if self.file.is_none() {
                    let f = std::fs::File::open(path).map_err(io)?;
                    self.file = Some(std::io::BufReader::with_capacity(1 << 16, f));
                }
                let mut page = BytesMut::zeroed(BLCKSZ as usize);
                if let Some(f) = self.file.as_mut() {
                    f.read_exact(&mut page).map_err(io)?;
                }
                Ok(page.freeze())
            }
        }
    }
}

impl Iterator for BulkIter<'_> {
    type Item = Result<(Key, Bytes), TimelineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next >= self.run.first + self.run.count {
            return None;
        }
        let blkno = self.next;
        self.next += 1;
        let r = self
            .read(blkno)
            .map(|p| (rel_block_key(self.run.rel, blkno), p));
        self.failed = r.is_err();
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantConf;
    use crate::tenant::timeline::RecordLsn;
    use crate::walredo::NativeOnlyRedoManager;
    use zenith_utils::id::{TenantId, TimelineId};

    fn tl(dir: &std::path::Path) -> Arc<Timeline> {
        Timeline::create(
            &dir.join("tl"),
            TenantId::generate(),
            TimelineId::generate(),
            TenantConf::default(),
            None,
            RecordLsn {
                last: Lsn(0),
                prev: Lsn(0),
            },
            Lsn(0x100),
            Arc::new(NativeOnlyRedoManager),
        )
        .unwrap()
    }

    #[test]
    fn relations_databases_and_slrus() {
        let dir = tempfile::tempdir().unwrap();
        let tl = tl(dir.path());
        let w = tl.writer();
        let rel = RelTag {
            spcnode: 1663,
            dbnode: 5,
            relnode: 16384,
            forknum: 0,
        };

        let mut m = DatadirModification::new(&tl);
        m.put_rel_creation(rel, 0).unwrap();
        m.put_rel_extend_to(rel, 2).unwrap();
        m.put_image(rel_block_key(rel, 2), Bytes::from(vec![2u8; 8192]));
        m.put_slru_extend_to(SlruKind::Clog, 0, 0).unwrap();
        m.put_twophase_file(777, Bytes::from_static(b"state"))
            .unwrap();
        m.commit(&w, Lsn(0), Lsn(0x100)).unwrap();

        let r = DatadirReader::new(&tl, Lsn(0x100));
        assert_eq!(r.list_dbs().unwrap().get(&(1663, 5)), Some(&false));
        assert_eq!(r.rel_size(rel).unwrap(), Some(3));
        assert_eq!(r.rel_page(rel, 0).unwrap(), zero_page());
        assert_eq!(r.rel_page(rel, 2).unwrap()[0], 2);
        assert_eq!(r.db_size(1663, 5).unwrap(), 3 * 8192);
        assert_eq!(r.list_slru_segments(SlruKind::Clog).unwrap(), vec![0]);
        assert_eq!(r.slru_segment_size(SlruKind::Clog, 0).unwrap(), 1);
        assert_eq!(r.list_twophase_files().unwrap(), vec![777]);

        // A later record truncates and drops; the old state stays readable.
        let mut m = DatadirModification::new(&tl);
        m.put_rel_truncation(rel, 1).unwrap();
        m.drop_twophase_file(777).unwrap();
        m.commit(&w, Lsn(0x100), Lsn(0x200)).unwrap();
        let mut m = DatadirModification::new(&tl);
        m.put_rel_drop(rel).unwrap();
        m.drop_db(1663, 5).unwrap();
        m.commit(&w, Lsn(0x200), Lsn(0x300)).unwrap();

        let at = |lsn| DatadirReader::new(&tl, Lsn(lsn));
        assert_eq!(at(0x200).rel_size(rel).unwrap(), Some(1));
        assert!(at(0x200).list_twophase_files().unwrap().is_empty());
        assert_eq!(at(0x300).rel_size(rel).unwrap(), None);
        assert!(at(0x300).list_dbs().unwrap().is_empty());
        assert_eq!(at(0x100).rel_size(rel).unwrap(), Some(3));
    }

    /// Defect: every gap block of a relation extended by a far block got a
    /// fresh 8 KiB zero page (20,000 blocks: 160 MiB). They now share one.
    #[test]
    fn a_far_extension_costs_no_page_per_gap_block() {
        let dir = tempfile::tempdir().unwrap();
        let tl = tl(dir.path());
        let w = tl.writer();
        let rel = RelTag {
            spcnode: 1663,
            dbnode: 5,
            relnode: 16384,
            forknum: 0,
        };
        let mut m = DatadirModification::new(&tl);
        m.put_rel_creation(rel, 0).unwrap();
        m.put_rel_extend_to(rel, 20_000).unwrap();
        m.commit(&w, Lsn(0), Lsn(0x100)).unwrap();
        assert!(
            tl.open_layer_size() < 4 << 20,
            "in-memory layer holds {} bytes",
            tl.open_layer_size()
        );
        let r = DatadirReader::new(&tl, Lsn(0x100));
        assert_eq!(r.rel_size(rel).unwrap(), Some(20_001));
        assert_eq!(r.rel_page(rel, 12_345).unwrap()[..], [0u8; 8192][..]);
        tl.freeze_and_flush().unwrap();
        assert_eq!(r.rel_page(rel, 19_999).unwrap()[..], [0u8; 8192][..]);
    }
}
