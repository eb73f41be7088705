//! Basebackup (docs/architecture.md §8): a tar of a data directory at an LSN.
//!
//! Contents: the standard directory skeleton, `PG_VERSION` files, relmapper
//! files, SLRU segments (pg_xact, pg_multixact), two-phase state files, a
//! `pg_control` rewritten to a clean shutdown checkpoint at the LSN (CRC
//! recomputed), minimal `postgresql.conf`/`pg_hba.conf`/`pg_ident.conf` so the
//! directory starts as is, and one WAL segment.
//!
//! - **Full** (`--full`): every relation fork materialized at the LSN, and the
//!   WAL segment holds a real `XLOG_CHECKPOINT_SHUTDOWN` record at the LSN
//!   (valid `xl_prev`, CRC), which `pg_control` points to: a stock PostgreSQL
//!   15 starts from it without replaying anything. Whoever streams WAL from
//!   that node afterwards sends this checkpoint record first.
//! - **Slim** (default): no files of permanent relations (a compute reads
//!   their pages with GetPage@LSN; unlogged relations get their init fork
//!   and its copy as main fork, as after a reset); the WAL segment holds only a page header positioned at the
//!   LSN, and `zenith.signal` carries the previous record's LSN for the
//!   patched startup (docs/architecture.md §3.3).
//!
//! The LSN must be a record boundary the timeline has reached (the caller
//! checks `last_record_lsn` and the GC cutoff).

use std::io::{Read, Write};
use std::time::SystemTime;

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use postgres_ffi::controlfile::{CheckPoint, ControlFileData, DB_SHUTDOWNED};
use postgres_ffi::pg_constants::*;
use postgres_ffi::relfile::{database_dir, relation_segment_path, RelTag};
use postgres_ffi::slru::{slru_segment_filename, SlruKind};
use postgres_ffi::xlog_record::{record_crc, XLogRecordHeader};
use postgres_ffi::xlog_utils::{generate_wal_segment, xlog_file_name, PG_TLI};
use zenith_utils::lsn::Lsn;

use crate::pgdatadir_mapping::DatadirReader;
use crate::tenant::timeline::Timeline;

/// Directories of a PostgreSQL 15 data directory.
const PGDATA_SUBDIRS: &[&str] = &[
    "global",
    "base",
    "pg_commit_ts",
    "pg_dynshmem",
    "pg_logical",
    "pg_logical/mappings",
    "pg_logical/snapshots",
    "pg_multixact",
    "pg_multixact/members",
    "pg_multixact/offsets",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat",
    "pg_stat_tmp",
    "pg_subtrans",
    "pg_tblspc",
    "pg_twophase",
    "pg_wal",
    "pg_wal/archive_status",
    "pg_xact",
];

/// Written so the directory starts as is; computes get their own config.
const PG_HBA: &str = "# Written by the Zenith basebackup: trust local and loopback connections.\n\
                      local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n\
                      local replication all trust\nhost replication all 127.0.0.1/32 trust\n";

struct TarOut<W: Write> {
    ar: tar::Builder<W>,
    mtime: u64,
}

impl<W: Write> TarOut<W> {
    fn dir(&mut self, path: &str) -> anyhow::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o700);
        h.set_size(0);
        h.set_mtime(self.mtime);
        self.ar.append_data(&mut h, path, std::io::empty())?;
        Ok(())
    }

    fn file(&mut self, path: &str, data: &[u8]) -> anyhow::Result<()> {
        self.file_from(path, data.len() as u64, data)
    }

    /// A file of `size` bytes read from `data` as the tar is written.
    fn file_from(&mut self, path: &str, size: u64, data: impl Read) -> anyhow::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o600);
        h.set_size(size);
        h.set_mtime(self.mtime);
        self.ar.append_data(&mut h, path, data)?;
        Ok(())
    }
}

/// The files of fork `forknum` of `src`'s relation, with `src`'s blocks:
/// one per segment of RELSEG_SIZE blocks, at least one (empty) file.
fn write_fork<W: Write>(
    t: &mut TarOut<W>,
    r: &DatadirReader,
    src: RelTag,
    forknum: u8,
) -> anyhow::Result<()> {
    let nblocks = r.rel_size(src)?.unwrap_or(0);
    let mut segno = 0;
    loop {
        let first = segno * RELSEG_SIZE;
        let last = nblocks.min(first + RELSEG_SIZE);
        if first >= last && segno > 0 {
            break;
        }
        let blocks = BlockStream {
            r,
            rel: src,
            next: first,
            end: last,
            buf: Vec::new(),
            pos: 0,
        };
        t.file_from(
            &relation_segment_path(src.rnode(), forknum, segno),
            u64::from(last.saturating_sub(first)) * u64::from(BLCKSZ),
            blocks,
        )?;
        segno += 1;
        if last >= nblocks {
            break;
        }
    }
    Ok(())
}

/// The shutdown checkpoint record a full basebackup writes at its LSN.
pub fn shutdown_checkpoint_record(cp: &CheckPoint, prev: Lsn) -> Bytes {
    let body = cp.encode();
    let tot_len = (XLOG_SIZE_OF_XLOG_RECORD + 2 + body.len()) as u32;
    let mut rec = BytesMut::with_capacity(tot_len as usize);
    let hdr = XLogRecordHeader {
        xl_tot_len: tot_len,
        xl_xid: 0,
        xl_prev: prev,
        xl_info: XLOG_CHECKPOINT_SHUTDOWN,
        xl_rmid: RM_XLOG_ID,
        xl_crc: 0,
    };
    rec.put_slice(&hdr.encode());
    rec.put_u8(XLR_BLOCK_ID_DATA_SHORT);
    rec.put_u8(body.len() as u8);
    rec.put_slice(&body);
    let crc = record_crc(&rec);
    rec[20..24].copy_from_slice(&crc.to_le_bytes());
    rec.freeze()
}

/// Copy `rec` into the segment at `lsn`, skipping page headers and marking
/// continuation pages. Returns the LSN after the record.
fn place_record(seg: &mut [u8], seg_start: Lsn, lsn: Lsn, rec: &[u8]) -> anyhow::Result<Lsn> {
    let mut pos = lsn;
    let mut rest = rec;
    while !rest.is_empty() {
        if pos.page_offset_in(XLOG_BLCKSZ) == 0 {
            // A new page: header with the continuation flag.
            let hdr = postgres_ffi::waldecoder::XLogPageHeader {
                xlp_magic: XLOG_PAGE_MAGIC,
                xlp_info: XLP_FIRST_IS_CONTRECORD,
                xlp_tli: PG_TLI,
                xlp_pageaddr: pos,
                xlp_rem_len: rest.len() as u32,
                long: None,
            }
            .encode();
            let off = (pos - seg_start) as usize;
            if off + hdr.len() > seg.len() {
                bail!("the checkpoint record at {lsn} does not fit in its segment");
            }
            seg[off..off + hdr.len()].copy_from_slice(&hdr);
            pos += hdr.len() as u64;
        }
        let page_left = XLOG_BLCKSZ - pos.page_offset_in(XLOG_BLCKSZ) as usize;
        let n = page_left.min(rest.len());
        let off = (pos - seg_start) as usize;
        if off + n > seg.len() {
            bail!("the checkpoint record at {lsn} does not fit in its segment");
        }
        seg[off..off + n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        pos += n as u64;
    }
    Ok(pos)
}

/// Blocks of a relation segment reconstructed in batches of
/// [`BATCH_BLOCKS`] as the tar writer reads them: a full basebackup holds
/// one batch of a segment in memory, not the segment (1 GiB at most).
const BATCH_BLOCKS: u32 = 256;

/// The blocks `next..end` of `rel` as a byte stream.
struct BlockStream<'a, 'r> {
    r: &'a DatadirReader<'r>,
    rel: RelTag,
    next: u32,
    end: u32,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for BlockStream<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.next >= self.end {
                return Ok(0);
            }
            let hi = self.end.min(self.next.saturating_add(BATCH_BLOCKS));
            self.buf = read_blocks(self.r, self.rel, self.next..hi)
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
            self.pos = 0;
            self.next = hi;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Blocks `range` of `rel`, concatenated. Large ranges are read by one
/// thread per CPU (each reconstruction may wait for WAL redo, and the redo
/// process pool replays in parallel).
fn read_blocks(
    r: &DatadirReader,
    rel: RelTag,
    range: std::ops::Range<u32>,
) -> anyhow::Result<Vec<u8>> {
    let read = |blocks: std::ops::Range<u32>| -> anyhow::Result<Vec<u8>> {
        let mut data = Vec::with_capacity(blocks.len() * BLCKSZ as usize);
        for blk in blocks {
            let page = r
                .rel_page(rel, blk)
                .with_context(|| format!("reconstructing {rel} block {blk} at {}", r.lsn))?;
            data.extend_from_slice(&page);
        }
        Ok(data)
    };
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(crate::walredo::MAX_REDO_PROCESSES) as u32;
    let n = range.end - range.start;
    if workers < 2 || n < 64 {
        return read(range);
    }
    let chunk = n.div_ceil(workers);
    let parts: Vec<anyhow::Result<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|i| {
                let lo = range.start + i * chunk;
                let hi = (lo + chunk).min(range.end);
                s.spawn(move || read(lo..hi.max(lo)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a basebackup reader panicked")))
            })
            .collect()
    });
    let mut data = Vec::with_capacity(n as usize * BLCKSZ as usize);
    for p in parts {
        data.extend_from_slice(&p?);
    }
    Ok(data)
}

/// Write a basebackup of `tl` at `lsn` as a tar to `out`.
pub fn send_basebackup<W: Write>(tl: &Timeline, lsn: Lsn, full: bool, out: W) -> anyhow::Result<W> {
    let r = DatadirReader::new(tl, lsn);
    let mtime = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut t = TarOut {
        ar: tar::Builder::new(out),
        mtime,
    };
    for d in PGDATA_SUBDIRS {
        t.dir(d)?;
    }
    t.file("PG_VERSION", format!("{PG_MAJORVERSION}\n").as_bytes())?;
    t.file("postgresql.conf", b"# Written by the Zenith basebackup.\n")?;
    t.file("pg_hba.conf", PG_HBA.as_bytes())?;
    t.file("pg_ident.conf", b"")?;

    // Databases: directory, PG_VERSION, relmapper file, relations.
    for (&(spc, db), &has_relmap) in &r.list_dbs()? {
        if spc != GLOBALTABLESPACE_OID && spc != DEFAULTTABLESPACE_OID {
            bail!("tablespace {spc} is not supported by basebackup yet");
        }
        let dir = database_dir(spc, db);
        if spc == DEFAULTTABLESPACE_OID {
            t.dir(&dir)?;
            t.file(
                &format!("{dir}/PG_VERSION"),
                format!("{PG_MAJORVERSION}\n").as_bytes(),
            )?;
        }
        if has_relmap {
            if let Some(map) = r.relmap_file(spc, db)? {
                t.file(&format!("{dir}/pg_filenode.map"), &map)?;
            }
        }
        let tag = |relnode, forknum| RelTag {
            spcnode: spc,
            dbnode: db,
            relnode,
            forknum,
        };
        if full {
            let rels = r.list_rels(spc, db)?;
            for &(relnode, forknum) in &rels {
                let rel = tag(relnode, forknum);
                write_fork(&mut t, &r, rel, forknum)?;
                // An unlogged relation: WAL has only its init fork, and a
                // server that starts from a clean shutdown (as this one
                // does) does not reset unlogged relations, so the main fork
                // is written as PostgreSQL's reset would make it: a copy of
                // the init fork.
                if forknum == INIT_FORKNUM && !rels.contains(&(relnode, MAIN_FORKNUM)) {
                    write_fork(&mut t, &r, rel, MAIN_FORKNUM)?;
                }
            }
        } else {
            // A compute keeps unlogged relations on local disk: they start
            // empty, as after PostgreSQL's reset (init fork and its copy).
            for (relnode, forknum) in r.list_rels(spc, db)? {
                if forknum != INIT_FORKNUM {
                    continue;
                }
                let rel = tag(relnode, forknum);
                write_fork(&mut t, &r, rel, INIT_FORKNUM)?;
                write_fork(&mut t, &r, rel, MAIN_FORKNUM)?;
            }
        }
    }

    // SLRUs.
    for kind in [
        SlruKind::Clog,
        SlruKind::MultiXactOffsets,
        SlruKind::MultiXactMembers,
    ] {
        for segno in r.list_slru_segments(kind)? {
            let n = r.slru_segment_size(kind, segno)?;
            let mut data = Vec::with_capacity(n as usize * BLCKSZ as usize);
            for blk in 0..n {
                data.extend_from_slice(&r.slru_page(kind, segno, blk)?);
            }
            t.file(
                &format!("{}/{}", kind.dir(), slru_segment_filename(segno)),
                &data,
            )?;
        }
    }

    // Two-phase state files.
    for xid in r.list_twophase_files()? {
        t.file(&format!("pg_twophase/{xid:08X}"), &r.twophase_file(xid)?)?;
    }

    // pg_control and WAL.
    let mut control = ControlFileData::decode(&r.control_file()?).context("stored pg_control")?;
    let mut cp = CheckPoint::decode(&r.checkpoint()?).context("stored checkpoint")?;
    let seg_size = control.xlog_seg_size as usize;
    // A record cannot start inside a page header.
    let mut ckpt_lsn = lsn;
    if ckpt_lsn.page_offset_in(XLOG_BLCKSZ) == 0 {
        ckpt_lsn += if ckpt_lsn.segment_offset(seg_size) == 0 {
            XLOG_SIZE_OF_XLOG_LONG_PHD
        } else {
            XLOG_SIZE_OF_XLOG_SHORT_PHD
        } as u64;
    }
    cp.redo = ckpt_lsn;
    cp.this_timeline_id = PG_TLI;
    cp.prev_timeline_id = PG_TLI;
    cp.time = mtime as i64;
    let mut seg = generate_wal_segment(ckpt_lsn, control.system_identifier, seg_size);
    let seg_start = ckpt_lsn.segment_lsn(seg_size);
    if full {
        let prev = if tl.record_lsn().last == lsn {
            tl.record_lsn().prev
        } else {
            Lsn(0)
        };
        let prev = if prev < ckpt_lsn { prev } else { Lsn(0) };
        let rec = shutdown_checkpoint_record(&cp, prev);
        place_record(&mut seg, seg_start, ckpt_lsn, &rec)?;
        control.checkpoint = ckpt_lsn;
    } else {
        control.checkpoint = ckpt_lsn;
        let prev = if tl.record_lsn().last == lsn {
            tl.record_lsn().prev
        } else {
            Lsn(0)
        };
        t.file("zenith.signal", format!("PREV LSN: {prev}\n").as_bytes())?;
    }
    control.checkpoint_copy = cp;
    control.state = DB_SHUTDOWNED;
    control.time = mtime as i64;
    control.min_recovery_point = Lsn(0);
    control.min_recovery_point_tli = 0;
    control.backup_start_point = Lsn(0);
    control.backup_end_point = Lsn(0);
    control.backup_end_required = false;
    t.file("global/pg_control", &control.encode())?;
    let segno = ckpt_lsn.segment_number(seg_size);
    t.file(
        &format!("pg_wal/{}", xlog_file_name(PG_TLI, segno, seg_size)),
        &seg,
    )?;
    seg.clear();

    Ok(t.ar.into_inner()?)
}
