//! `get_lsn_by_timestamp`: the LSN of the last commit at or before a time.
//!
//! Commit times are in the CLOG records ingest files for every commit
//! (`ClogSetCommitted { timestamp }`, the commit record's `xact_time`). The
//! search reads them from the timeline's in-memory layers and layer files
//! (not its ancestor's) and answers with the end LSN of the last commit at or
//! before the time: everything committed by then is visible at that LSN.

use std::sync::Arc;

use postgres_ffi::slru::SlruKind;
use zenith_utils::lsn::Lsn;

use super::{Timeline, TimelineError};
use crate::key::{slru_block_key, slru_dir_key};
use crate::value::{Value, ZenithWalRecord};

/// Where a time falls in the timeline's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LsnForTimestamp {
    /// The end of the last commit at or before the time.
    Present(Lsn),
    /// After every commit: the last record LSN.
    Future(Lsn),
    /// Before every commit of this timeline: its start.
    Past(Lsn),
    /// The timeline has no commits to go by.
    NoData(Lsn),
}

impl Timeline {
    /// (commit end LSN, commit time in microseconds since 2000-01-01), sorted by LSN.
    pub fn commit_timestamps(&self) -> Result<Vec<(Lsn, i64)>, TimelineError> {
        let range = slru_block_key(SlruKind::Clog, 0, 0)..slru_dir_key(SlruKind::MultiXactOffsets);
        let mut out = Vec::new();
        let push = |out: &mut Vec<(Lsn, i64)>, lsn: Lsn, v: &Value| {
            if let Value::WalRecord(ZenithWalRecord::ClogSetCommitted { timestamp, .. }) = v {
                out.push((lsn, *timestamp));
            }
        };
        let layers = {
            let l = self.layers.read().unwrap_or_else(|e| e.into_inner());
            for mem in l.open.iter().chain(l.frozen.iter().map(|f| f.as_ref())) {
                for key in mem.keys_in(range.clone()) {
                    for (lsn, v) in mem.get_values(*key, Lsn(0)..Lsn::MAX) {
                        push(&mut out, *lsn, v);
                    }
                }
            }
            Arc::clone(&l.map)
        };
        for layer in layers.iter() {
            if !layer.is_delta() {
                continue; // images hold pages, not commit records
            }
            let reader = layer.reader()?;
            for e in reader.index().iter().filter(|e| range.contains(&e.key)) {
                push(&mut out, e.lsn, &reader.read_value(e)?);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// See the module documentation. `ts` is microseconds since 2000-01-01.
    pub fn find_lsn_for_timestamp(&self, ts: i64) -> Result<LsnForTimestamp, TimelineError> {
        let commits = self.commit_timestamps()?;
        let start = self
            .ancestor()
            .map(|(_, l)| l)
            .unwrap_or(self.metadata().initdb_lsn);
        let last = self.last_record_lsn();
        if commits.is_empty() {
            return Ok(LsnForTimestamp::NoData(last));
        }
        // Commit times follow LSN order closely but not exactly (commits of
        // concurrent sessions): take the last commit at or before `ts`.
        match commits.iter().rev().find(|(_, t)| *t <= ts) {
            None => Ok(LsnForTimestamp::Past(start)),
            Some((lsn, _)) if commits.iter().all(|(_, t)| *t <= ts) => {
                let _ = lsn;
                Ok(LsnForTimestamp::Future(last))
            }
            Some((lsn, _)) => Ok(LsnForTimestamp::Present(*lsn)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantConf;

    #[test]
    fn finds_the_last_commit_before_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let tl = super::super::test_timeline(dir.path(), TenantConf::default(), Lsn(0x100));
        let w = tl.writer();
        let clog = slru_block_key(SlruKind::Clog, 0, 0);
        assert_eq!(
            tl.find_lsn_for_timestamp(5).unwrap(),
            LsnForTimestamp::NoData(Lsn(0x100))
        );
        for (i, ts) in [1000i64, 2000, 3000, 4000].iter().enumerate() {
            let lsn = Lsn(0x200 + i as u64 * 0x100);
            w.put(
                clog,
                lsn,
                Value::WalRecord(ZenithWalRecord::ClogSetCommitted {
                    xids: vec![3 + i as u32],
                    timestamp: *ts,
                }),
            )
            .unwrap();
            w.finish_write(lsn - 0x10, lsn);
            if i == 1 {
                tl.freeze_and_flush().unwrap(); // half in a layer file, half in memory
            }
        }
        assert_eq!(
            tl.find_lsn_for_timestamp(500).unwrap(),
            LsnForTimestamp::Past(Lsn(0x100))
        );
        assert_eq!(
            tl.find_lsn_for_timestamp(1000).unwrap(),
            LsnForTimestamp::Present(Lsn(0x200))
        );
        assert_eq!(
            tl.find_lsn_for_timestamp(2500).unwrap(),
            LsnForTimestamp::Present(Lsn(0x300))
        );
        assert_eq!(
            tl.find_lsn_for_timestamp(3999).unwrap(),
            LsnForTimestamp::Present(Lsn(0x400))
        );
        assert_eq!(
            tl.find_lsn_for_timestamp(9000).unwrap(),
            LsnForTimestamp::Future(Lsn(0x500))
        );
    }
}
