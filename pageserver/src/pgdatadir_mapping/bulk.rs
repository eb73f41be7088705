//! Whole runs of pages written by one record (a relation copied, a file
//! imported): where they come from, and reading them one at a time.

use bytes::{Bytes, BytesMut};
use postgres_ffi::relfile::RelTag;
use postgres_ffi::BLCKSZ;
use zenith_utils::lsn::Lsn;

use super::reader::get_opt;
use crate::key::*;
use crate::tenant::timeline::{Timeline, TimelineError};
use crate::value::zero_page;

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
pub(super) struct BulkPages {
    pub(super) rel: RelTag,
    pub(super) first: u32,
    pub(super) count: u32,
    pub(super) source: PageSource,
}

/// The pages of one bulk run, read one at a time.
pub(super) struct BulkIter<'a> {
    tl: &'a Timeline,
    base_lsn: Lsn,
    run: BulkPages,
    next: u32,
    file: Option<std::io::BufReader<std::fs::File>>,
    failed: bool,
}

impl<'a> BulkIter<'a> {
    pub(super) fn new(tl: &'a Timeline, base_lsn: Lsn, run: BulkPages) -> BulkIter<'a> {
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
