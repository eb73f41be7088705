//! Import a PostgreSQL 15 data directory into a new timeline.
//!
//! The directory must be cleanly shut down (what initdb leaves, or a stopped
//! cluster): its state is then exactly the state after the shutdown
//! checkpoint record that `pg_control` points to. The timeline gets every
//! relation fork (all segments), SLRU (pg_xact, pg_multixact), relmapper file,
//! two-phase state file, pg_control and the checkpoint, all at the end LSN of
//! that checkpoint record, which becomes its `last_record_lsn` (with the
//! checkpoint record as the previous record). WAL streamed from a primary
//! then continues from there.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use postgres_ffi::controlfile::{ControlFileData, DB_SHUTDOWNED, DB_SHUTDOWNED_IN_RECOVERY};
use postgres_ffi::pg_constants::*;
use postgres_ffi::relfile::{parse_relfilename, RelTag};
use postgres_ffi::slru::{parse_slru_segment_filename, SlruKind};
use postgres_ffi::xlog_utils::xlog_file_name;
use postgres_ffi::WalStreamDecoder;
use tracing::info;
use zenith_utils::lsn::Lsn;

use crate::key::{slru_block_key, CHECKPOINT_KEY, CONTROLFILE_KEY};
use crate::pgdatadir_mapping::{DatadirModification, PageSource};
use crate::tenant::timeline::Timeline;

mod tenant;

/// Where the imported state is: the shutdown checkpoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportPoint {
    /// Start of the checkpoint record (`pg_control.checkPoint`).
    pub checkpoint_lsn: Lsn,
    /// End of the checkpoint record: the import LSN.
    pub end_lsn: Lsn,
}

/// Read pg_control and find the end of its checkpoint record in pg_wal.
pub fn find_import_point(pgdata: &Path) -> anyhow::Result<(ControlFileData, ImportPoint)> {
    let path = pgdata.join("global/pg_control");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let control =
        ControlFileData::decode(&bytes).with_context(|| format!("decoding {}", path.display()))?;
    if control.state != DB_SHUTDOWNED && control.state != DB_SHUTDOWNED_IN_RECOVERY {
        bail!(
            "{} was not shut down cleanly (pg_control state {}); stop the server with pg_ctl stop first",
            pgdata.display(),
            control.state
        );
    }
    let seg_size = control.xlog_seg_size as usize;
    let lsn = control.checkpoint;
    let segno = lsn.segment_number(seg_size);
    let wal = pgdata
        .join("pg_wal")
        .join(xlog_file_name(PG_TLI_IMPORT, segno, seg_size));
    let seg = std::fs::read(&wal).with_context(|| format!("reading {}", wal.display()))?;
    // Decode from the start of the checkpoint's page.
    let page = lsn.page_lsn_in(XLOG_BLCKSZ);
    let off = page.segment_offset(seg_size);
    let mut dec = WalStreamDecoder::new(page, seg_size);
    dec.feed_bytes(seg.get(off..).unwrap_or(&[]));
    loop {
        match dec.poll_decode() {
            Ok(Some(r)) if r.start_lsn == lsn => {
                return Ok((
                    control,
                    ImportPoint {
                        checkpoint_lsn: lsn,
                        end_lsn: r.end_lsn,
                    },
                ))
            }
            Ok(Some(r)) if r.start_lsn < lsn => continue,
            Ok(_) => bail!("the checkpoint record at {lsn} is not in {}", wal.display()),
            Err(e) => bail!(
                "reading the checkpoint record at {lsn} in {}: {e}",
                wal.display()
            ),
        }
    }
}

const PG_TLI_IMPORT: u32 = 1;

/// Import `pgdata` into the empty timeline `tl`. Returns the import point.
pub fn import_datadir(tl: &Arc<Timeline>, pgdata: &Path) -> anyhow::Result<ImportPoint> {
    let (control, point) = find_import_point(pgdata)?;
    if tl.last_record_lsn() != Lsn(0) {
        bail!("timeline {} is not empty", tl.timeline_id);
    }
    let writer = tl.writer();
    let lsn = point.end_lsn;
    let mut m = DatadirModification::new(tl);
    let mut pages: u64 = 0;

    // Relations: global/, base/<db>/, pg_tblspc/<spc>/PG_15_<catver>/<db>/.
    let mut db_dirs = vec![(GLOBALTABLESPACE_OID, 0u32, pgdata.join("global"))];
    for e in read_dir(&pgdata.join("base"))? {
        if let Ok(db) = e.file_name().to_string_lossy().parse::<u32>() {
            db_dirs.push((DEFAULTTABLESPACE_OID, db, e.path()));
        }
    }
    let tblspc = pgdata.join("pg_tblspc");
    if tblspc.exists() {
        for spc in read_dir(&tblspc)? {
            let Ok(spcoid) = spc.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let versioned = spc
                .path()
                .join(format!("PG_{PG_MAJORVERSION}_{CATALOG_VERSION_NO}"));
            for e in read_dir(&versioned)? {
                if let Ok(db) = e.file_name().to_string_lossy().parse::<u32>() {
                    db_dirs.push((spcoid, db, e.path()));
                }
            }
        }
    }
    for (spc, db, dir) in db_dirs {
        let relmap = dir.join("pg_filenode.map");
        if relmap.exists() {
            let data =
                std::fs::read(&relmap).with_context(|| format!("reading {}", relmap.display()))?;
            m.put_relmap_file(spc, db, Bytes::from(data))?;
        } else {
            m.put_db(spc, db, false)?;
        }
        // Collect segments per fork so that sizes are known before pages.
        let mut forks: std::collections::BTreeMap<(u32, u8), Vec<(u32, std::path::PathBuf)>> =
            Default::default();
        for e in read_dir(&dir)? {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some((relnode, fork, segno)) = parse_relfilename(&name) {
                forks
                    .entry((relnode, fork))
                    .or_default()
                    .push((segno, e.path()));
            }
        }
        for ((relnode, forknum), mut segs) in forks {
            segs.sort();
            let rel = RelTag {
                spcnode: spc,
                dbnode: db,
                relnode,
                forknum,
            };
            let mut nblocks = 0u32;
            for (segno, path) in &segs {
                let len = std::fs::metadata(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .len();
                if len % u64::from(BLCKSZ) != 0 {
                    bail!(
                        "{} is not a whole number of pages ({len} bytes)",
                        path.display()
                    );
                }
                let first = segno * RELSEG_SIZE;
                if first != nblocks {
                    bail!("{} follows a missing or short segment", path.display());
                }
                let count = (len / u64::from(BLCKSZ)) as u32;
                // Read page by page when the import is filed.
                m.put_bulk_pages(rel, first, count, PageSource::File(path.clone()));
                pages += u64::from(count);
                nblocks = first + count;
            }
            m.put_rel_creation(rel, nblocks)?;
        }
    }

    // SLRUs.
    for kind in [
        SlruKind::Clog,
        SlruKind::MultiXactOffsets,
        SlruKind::MultiXactMembers,
    ] {
        let dir = pgdata.join(kind.dir());
        for e in read_dir(&dir)? {
            let Some(segno) = parse_slru_segment_filename(&e.file_name().to_string_lossy()) else {
                continue;
            };
            let data = std::fs::read(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?;
            if data.is_empty() || data.len() % BLCKSZ as usize != 0 {
                bail!("{} is not a whole number of pages", e.path().display());
            }
            let n = (data.len() / BLCKSZ as usize) as u32;
            m.put_slru_extend_to(kind, segno, n - 1)?;
            for (i, page) in data.chunks_exact(BLCKSZ as usize).enumerate() {
                m.put_image(
                    slru_block_key(kind, segno, i as u32),
                    Bytes::copy_from_slice(page),
                );
            }
        }
    }

    // Two-phase state files (pg_twophase/XXXXXXXX).
    let twophase = pgdata.join("pg_twophase");
    if twophase.exists() {
        for e in read_dir(&twophase)? {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() == 8 {
                if let Ok(xid) = u32::from_str_radix(&name, 16) {
                    let data = std::fs::read(e.path())?;
                    m.put_twophase_file(xid, Bytes::from(data))?;
                }
            }
        }
    }

    m.put_image(CONTROLFILE_KEY, Bytes::from(control.encode()));
    m.put_image(
        CHECKPOINT_KEY,
        Bytes::copy_from_slice(&control.checkpoint_copy.encode()),
    );
    m.commit(&writer, point.checkpoint_lsn, lsn)?;
    tl.freeze_and_flush()?;
    info!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id, %lsn, pages, "imported data directory");
    Ok(point)
}

fn read_dir(dir: &Path) -> anyhow::Result<Vec<std::fs::DirEntry>> {
    let mut v = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading directory {}", dir.display()))?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}
