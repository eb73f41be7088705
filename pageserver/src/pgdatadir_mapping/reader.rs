//! Reading PostgreSQL's data directory at an LSN: [`DatadirReader`].

use bytes::Bytes;
use postgres_ffi::relfile::RelTag;
use postgres_ffi::slru::SlruKind;
use postgres_ffi::BLCKSZ;
use zenith_utils::lsn::Lsn;

use super::encoding::*;
use crate::key::*;
use crate::tenant::timeline::{Timeline, TimelineError};
use crate::value::zero_page;

/// Read the value of `key`, or `None` if it was never written.
pub(super) fn get_opt(tl: &Timeline, key: Key, lsn: Lsn) -> Result<Option<Bytes>, TimelineError> {
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
    /// holds (`tenant/timeline/images.rs`).
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
