//! A tenant's timelines made from a PostgreSQL data directory: imported
//! from one, or bootstrapped with initdb. This sits above the storage
//! (`crate::tenant` does not know of data directories); like a branch, the
//! new timeline is built in a temporary directory and renamed into place
//! once complete.

use std::path::Path;
use std::sync::Arc;

use tracing::info;
use zenith_utils::crashsafe;
use zenith_utils::id::TimelineId;
use zenith_utils::lsn::Lsn;

use super::import_datadir;
use crate::tenant::timeline::{RecordLsn, Timeline, METADATA_FILE_NAME};
use crate::tenant::Tenant;

impl Tenant {
    /// Create a timeline by importing `pgdata` (a cleanly stopped PostgreSQL 15
    /// data directory).
    pub fn import_timeline(&self, id: TimelineId, pgdata: &Path) -> anyhow::Result<Arc<Timeline>> {
        let _reserved = self.reserve(id)?;
        self.import_reserved(id, pgdata)
    }

    fn import_reserved(&self, id: TimelineId, pgdata: &Path) -> anyhow::Result<Arc<Timeline>> {
        let tmp = self
            .timelines_dir()
            .join(format!("{id}{}", crashsafe::TEMP_FILE_SUFFIX));
        let _ = std::fs::remove_dir_all(&tmp);
        let tl = Timeline::create(
            &tmp,
            self.id,
            id,
            self.conf.tenant_config.clone(),
            None,
            RecordLsn {
                last: Lsn(0),
                prev: Lsn(0),
            },
            Lsn(0),
            Arc::clone(&self.walredo),
        )?;
        let point = import_datadir(&tl, pgdata)?;
        // Record the import LSN as the initdb LSN and GC floor.
        let mut md = tl.metadata();
        md.initdb_lsn = point.end_lsn;
        md.latest_gc_cutoff_lsn = point.end_lsn;
        md.save(&tmp.join(METADATA_FILE_NAME))?;
        drop(tl);
        fail::fail_point!("timeline-create-before-rename");
        let tl = self.install_timeline(&tmp, id, None)?;
        info!(tenant_id = %self.id, timeline_id = %id, lsn = %point.end_lsn, "imported timeline");
        Ok(tl)
    }

    /// Bootstrap a timeline: run initdb into a temporary directory and import it.
    pub fn bootstrap_timeline(&self, id: TimelineId) -> anyhow::Result<Arc<Timeline>> {
        let _reserved = self.reserve(id)?;
        let pgdata = self
            .path
            .join(format!("initdb-{id}{}", crashsafe::TEMP_FILE_SUFFIX));
        let _ = std::fs::remove_dir_all(&pgdata);
        if let Err(e) = crate::walredo::process::run_initdb(&self.conf.pg_distrib_dir, &pgdata) {
            let _ = std::fs::remove_dir_all(&pgdata);
            return Err(e.into());
        }
        let res = self.import_reserved(id, &pgdata);
        // The same initdb output is what `postgres --wal-redo` runs in: a
        // tenant's first redo (a compute's first query) then does not wait
        // for an initdb of its own (about a second).
        if res.is_err() || !self.walredo.adopt_datadir(&pgdata) {
            let _ = std::fs::remove_dir_all(&pgdata);
        }
        res
    }
}
