//! An acceptor's storage in memory (WAL and the last control file
//! written), for the acceptor's tests and the model check.

use std::hash::Hash;

use zenith_utils::lsn::Lsn;

use super::{AcceptorState, StoreError, WalStore};

/// WAL in memory; `persisted` is the last control file written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MemStore {
    pub wal_start: u64,
    pub wal: Vec<u8>,
    pub persisted: Option<AcceptorState>,
}

impl WalStore for MemStore {
    fn flush_lsn(&self) -> Lsn {
        if self.wal_start == 0 {
            Lsn(0)
        } else {
            Lsn(self.wal_start + self.wal.len() as u64)
        }
    }

    fn write_wal(&mut self, lsn: Lsn, buf: &[u8]) -> Result<(), StoreError> {
        if lsn != self.flush_lsn() || self.wal_start == 0 {
            return Err(StoreError(format!(
                "write at {lsn}, WAL ends at {}",
                self.flush_lsn()
            )));
        }
        self.wal.extend_from_slice(buf);
        Ok(())
    }

    fn truncate_wal(&mut self, lsn: Lsn) -> Result<(), StoreError> {
        if self.wal_start == 0 || lsn.0 < self.wal_start {
            self.wal_start = lsn.0;
            self.wal.clear();
        } else {
            self.wal.truncate((lsn.0 - self.wal_start) as usize);
        }
        Ok(())
    }

    fn persist(&mut self, state: &AcceptorState) -> Result<(), StoreError> {
        self.persisted = Some(state.clone());
        Ok(())
    }
}

impl MemStore {
    /// The WAL from LSN 1 (the model's start of WAL), if it starts there.
    pub(crate) fn log(&self) -> Option<&[u8]> {
        (self.wal_start == 1 || self.wal_start == 0).then_some(&self.wal[..])
    }
}
