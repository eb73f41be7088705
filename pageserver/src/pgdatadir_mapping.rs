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
//! [`live_keyspace`] is what the storage's image layers hold.
//!
//! Directory encodings (big-endian): database directory `u32 n` then n ×
//! (`u32 spc, u32 db, u8 has_relmap`); relation directory `u32 n` then n ×
//! (`u32 relnode, u8 fork`); SLRU segment directory and two-phase directory
//! `u32 n` then n × `u32`; sizes are `u32` block counts.

mod bulk;
mod encoding;
mod modification;
mod reader;
#[cfg(test)]
mod tests;

pub use bulk::PageSource;
pub use encoding::{DbDirectory, RelDirectory};
pub use modification::DatadirModification;
pub use reader::DatadirReader;

/// An all-zeros page.
pub use crate::value::zero_page;

use std::ops::Range;

use zenith_utils::lsn::Lsn;

use crate::key::Key;
use crate::tenant::timeline::{LiveKeySpace, Timeline, TimelineError};

/// The keys of `tl` live at `lsn` ([`DatadirReader::keyspace`]): the
/// [`LiveKeySpace`] every tenant hands its timelines for image layers.
pub fn live_keyspace(tl: &Timeline, lsn: Lsn) -> Result<Vec<Range<Key>>, TimelineError> {
    DatadirReader::new(tl, lsn).keyspace()
}

const _: LiveKeySpace = live_keyspace;
