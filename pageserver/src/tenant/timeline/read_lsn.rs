//! The LSN a read is served at (docs/architecture.md §5): the one policy for
//! the page service's cached and blocking paths and for basebackups.
//!
//! A read names `request_lsn` (the version it wants; `Lsn::MAX` for the
//! latest) and `not_modified_since` (the client knows of no change to the
//! page after it). It is served at the requested version capped at what the
//! timeline has ingested, but never below `not_modified_since`; if the
//! timeline has not ingested `not_modified_since` yet, the read first waits
//! for that WAL (bounded by `wait_lsn_timeout`). The LSN must not be below
//! the GC cutoff, where that history is gone. The read itself checks the
//! cutoff again against the layer snapshot it reads
//! ([`Timeline::get`](super::Timeline::get)).

use std::time::Duration;

use zenith_utils::lsn::Lsn;

use super::Timeline;

/// Why a read cannot be served at the LSN it asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadLsnError {
    /// The WAL up to `not_modified_since` did not arrive in time.
    #[error(
        "timed out after {} waiting for WAL up to not_modified_since {not_modified_since} (request LSN {}): the timeline has reached {reached}",
        humantime::format_duration(*waited),
        show_request_lsn(*request_lsn)
    )]
    WaitTimeout {
        waited: Duration,
        request_lsn: Lsn,
        not_modified_since: Lsn,
        reached: Lsn,
    },
    #[error("LSN {lsn} is beyond the timeline's last record {last}")]
    BeyondLastRecord { lsn: Lsn, last: Lsn },
    #[error("requested LSN {lsn} is below the GC cutoff {cutoff}: that history is gone")]
    BelowGcCutoff { lsn: Lsn, cutoff: Lsn },
}

fn show_request_lsn(lsn: Lsn) -> String {
    if lsn == Lsn::MAX {
        "latest".to_string()
    } else {
        lsn.to_string()
    }
}

/// The LSN to read at: the requested version, capped at what the timeline
/// has ingested (`last_record_lsn`), but never below `not_modified_since`.
/// If `not_modified_since` is beyond `last_record_lsn`, the result is
/// `not_modified_since`: WAL the timeline does not have.
pub fn effective_lsn(request_lsn: Lsn, not_modified_since: Lsn, last_record_lsn: Lsn) -> Lsn {
    request_lsn.min(last_record_lsn).max(not_modified_since)
}

impl Timeline {
    /// Whether a read must wait for WAL before it is served: the client
    /// knows of changes up to `not_modified_since`, which the timeline has
    /// not ingested yet.
    pub fn read_needs_wait(&self, not_modified_since: Lsn) -> bool {
        not_modified_since > self.last_record_lsn()
    }

    /// The LSN a read is served at now, without waiting (see the module
    /// documentation).
    pub fn read_lsn(&self, request_lsn: Lsn, not_modified_since: Lsn) -> Result<Lsn, ReadLsnError> {
        let last = self.last_record_lsn();
        let lsn = effective_lsn(request_lsn, not_modified_since, last);
        if lsn > last {
            return Err(ReadLsnError::BeyondLastRecord { lsn, last });
        }
        let cutoff = self.gc_cutoff_lsn();
        if lsn < cutoff {
            return Err(ReadLsnError::BelowGcCutoff { lsn, cutoff });
        }
        Ok(lsn)
    }

    /// [`read_lsn`](Self::read_lsn) after waiting, at most `timeout`, for
    /// the WAL up to `not_modified_since` if the timeline lacks it.
    pub async fn wait_read_lsn(
        &self,
        request_lsn: Lsn,
        not_modified_since: Lsn,
        timeout: Duration,
    ) -> Result<Lsn, ReadLsnError> {
        if self.read_needs_wait(not_modified_since)
            && self.wait_lsn(not_modified_since, timeout).await.is_err()
        {
            return Err(ReadLsnError::WaitTimeout {
                waited: timeout,
                request_lsn,
                not_modified_since,
                reached: self.last_record_lsn(),
            });
        }
        self.read_lsn(request_lsn, not_modified_since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::timeline::test_helpers::*;

    #[test]
    fn effective_lsn_caps_at_last_record_but_not_below_not_modified_since() {
        let l = Lsn;
        // Latest: whatever the timeline has.
        assert_eq!(effective_lsn(Lsn::MAX, l(0x10), l(0x50)), l(0x50));
        // An older version.
        assert_eq!(effective_lsn(l(0x30), l(0x10), l(0x50)), l(0x30));
        // Newer than ingested: capped.
        assert_eq!(effective_lsn(l(0x60), l(0x10), l(0x50)), l(0x50));
        // The client knows of changes the timeline lacks: not below them.
        assert_eq!(effective_lsn(l(0x80), l(0x70), l(0x50)), l(0x70));
    }

    #[tokio::test]
    async fn reads_wait_for_not_modified_since_and_respect_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let tl = new_tl(dir.path(), Lsn(0x100));
        let w = tl.writer();
        w.finish_write(Lsn(0x100), Lsn(0x200));
        assert!(!tl.read_needs_wait(Lsn(0x200)));
        assert!(tl.read_needs_wait(Lsn(0x201)));
        assert_eq!(tl.read_lsn(Lsn::MAX, Lsn(0x100)), Ok(Lsn(0x200)));
        assert_eq!(tl.read_lsn(Lsn(0x150), Lsn(0x100)), Ok(Lsn(0x150)));
        assert_eq!(
            tl.read_lsn(Lsn::MAX, Lsn(0x300)),
            Err(ReadLsnError::BeyondLastRecord {
                lsn: Lsn(0x300),
                last: Lsn(0x200)
            })
        );
        let e = tl
            .wait_read_lsn(Lsn::MAX, Lsn(0x300), Duration::from_millis(10))
            .await
            .unwrap_err();
        assert!(matches!(e, ReadLsnError::WaitTimeout { reached, .. } if reached == Lsn(0x200)));
        assert!(e.to_string().contains("request LSN latest"), "{e}");
        // Below the GC cutoff: pageserver/tests/page_service.rs.
    }
}
