//! WAL ingest (docs/architecture.md §7): turn each decoded WAL record into the
//! values it changes, atomically per record.
//!
//! - Every block reference files a value under the block's key: the restored
//!   page (with its LSN set, as redo would) when the record carries an image to
//!   apply, else the record itself (with its `will_init` flag). Blocks past the
//!   end of a relation extend it, filling gaps with zero pages.
//! - Non-block effects: relation create/truncate/drop (drops also from commit
//!   and abort records), database create (FILE_COPY copies the template's keys
//!   at this LSN; WAL_LOG creates an empty database) and drop, CLOG status
//!   (Rust-native records with the commit time), multixact offsets/members,
//!   relmapper files, two-phase state files, visibility-map bit clears, and the
//!   checkpoint fields (nextXid, nextOid, nextMulti, oldestXid...).
//! - The changes of a record are committed together at the record's end LSN,
//!   then `last_record_lsn` advances.
//!
//! Simplifications (documented, conservative): FSM truncation drops whole FSM
//! pages past the new end and zeroes the boundary page; VM truncation resets
//! the boundary page to an empty VM page (clearing bits is always safe); SLRU
//! truncation ignores xid wraparound.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use postgres_ffi::controlfile::CheckPoint;
use postgres_ffi::page::{page_init, page_set_lsn, PageHeader};
use postgres_ffi::pg_constants::*;
use postgres_ffi::relfile::RelTag;
use postgres_ffi::slru::{self, SlruKind};
use postgres_ffi::walrecord::*;
use postgres_ffi::{DecodedWALRecord, RawRecord};
use zenith_utils::lsn::Lsn;

use crate::key::*;
use crate::pgdatadir_mapping::{zero_page, DatadirModification, DatadirReader, PageSource};
use crate::tenant::timeline::{Timeline, TimelineWriter};
use crate::value::ZenithWalRecord;

/// `pageserver_wal_ingest_records_total`: WAL records filed by [`WalIngest::ingest_record`].
static INGEST_RECORDS: std::sync::LazyLock<zenith_metrics::IntCounter> =
    std::sync::LazyLock::new(|| {
        zenith_metrics::register_int_counter!(
            "pageserver_wal_ingest_records_total",
            "WAL records ingested (filed into a timeline)"
        )
        .expect("registering pageserver_wal_ingest_records_total")
    });

/// `pageserver_wal_ingest_bytes_total`: the WAL those records span
/// (end LSN minus start LSN: headers and page headers included).
static INGEST_BYTES: std::sync::LazyLock<zenith_metrics::IntCounter> =
    std::sync::LazyLock::new(|| {
        zenith_metrics::register_int_counter!(
            "pageserver_wal_ingest_bytes_total",
            "Bytes of WAL ingested (the LSN span of the records filed)"
        )
        .expect("registering pageserver_wal_ingest_bytes_total")
    });

/// Registers the ingest counters (see [`crate::register_metrics`]).
pub fn register_metrics() {
    std::sync::LazyLock::force(&INGEST_RECORDS);
    std::sync::LazyLock::force(&INGEST_BYTES);
}

/// Heap blocks (up to two) and bits to clear on one VM page.
type VmClears = (Option<u32>, Option<u32>, u8);

/// FSM geometry (`freespace.c`).
const SLOTS_PER_FSM_PAGE: u32 = 4069;
const FSM_TREE_DEPTH: u32 = 3;

/// Physical FSM block of the leaf page for logical page `logpageno`.
fn fsm_logical_to_physical(logpageno: u32) -> u32 {
    let mut pages = 0u32;
    let mut leafno = logpageno;
    for _ in 0..FSM_TREE_DEPTH {
        pages += leafno + 1;
        leafno /= SLOTS_PER_FSM_PAGE;
    }
    pages - 1
}

/// Ingest state of one timeline: the checkpoint as WAL changes it, and a
/// cache of relation sizes.
pub struct WalIngest {
    checkpoint: CheckPoint,
    checkpoint_modified: bool,
    rel_sizes: HashMap<RelTag, Option<u32>>,
}

impl WalIngest {
    /// Start ingesting into `tl` after its `last_record_lsn`.
    pub fn new(tl: &Timeline) -> anyhow::Result<WalIngest> {
        let r = DatadirReader::new(tl, tl.last_record_lsn());
        let cp = r
            .checkpoint()
            .context("reading the checkpoint to start WAL ingest")?;
        Ok(WalIngest {
            checkpoint: CheckPoint::decode(&cp)?,
            checkpoint_modified: false,
            rel_sizes: HashMap::new(),
        })
    }

    /// The checkpoint as ingest has updated it.
    pub fn checkpoint(&self) -> &CheckPoint {
        &self.checkpoint
    }

    fn rel_size(&mut self, m: &DatadirModification, rel: RelTag) -> anyhow::Result<Option<u32>> {
        if let Some(s) = self.rel_sizes.get(&rel) {
            return Ok(*s);
        }
        let s = m.rel_size(rel)?;
        self.rel_sizes.insert(rel, s);
        Ok(s)
    }

    /// Ingest one record (as the stream decoder returned it).
    pub fn ingest_record(
        &mut self,
        tl: &Arc<Timeline>,
        writer: &TimelineWriter,
        raw: RawRecord,
    ) -> anyhow::Result<()> {
        let (start, end) = (raw.start_lsn, raw.end_lsn);
        fail::fail_point!("wal-ingest-record", |_| Err(anyhow::anyhow!(
            "failpoint wal-ingest-record at {start}"
        )));
        // Own copy of the record: values must not pin the decoder's buffers.
        let rec_bytes = Bytes::copy_from_slice(&raw.data);
        let rec = DecodedWALRecord::decode(rec_bytes.clone(), start)?;
        let mut m = DatadirModification::new(tl);
        self.ingest_decoded(&mut m, &rec, rec_bytes, end)
            .with_context(|| format!("ingesting record at {start}"))?;
        if self.checkpoint_modified {
            m.put_image(
                CHECKPOINT_KEY,
                Bytes::copy_from_slice(&self.checkpoint.encode()),
            );
            self.checkpoint_modified = false;
        }
        m.commit(writer, start, end)?;
        INGEST_RECORDS.inc();
        INGEST_BYTES.inc_by(end.0.saturating_sub(start.0));
        Ok(())
    }

    fn ingest_decoded(
        &mut self,
        m: &mut DatadirModification,
        rec: &DecodedWALRecord,
        rec_bytes: Bytes,
        end: Lsn,
    ) -> anyhow::Result<()> {
        let xid = rec.xid();
        if xid != 0 && self.checkpoint.update_next_xid(xid) {
            self.checkpoint_modified = true;
        }
        let info = rec.info() & !XLR_INFO_MASK;
        match rec.rmid() {
            RM_HEAP_ID | RM_HEAP2_ID => self.ingest_vm_clears(m, rec)?,
            RM_SMGR_ID => match info {
                XLOG_SMGR_CREATE => {
                    let c = XlSmgrCreate::decode(rec)?;
                    let rel = RelTag::new(c.rnode, c.forknum);
                    m.put_rel_creation(rel, 0)?;
                    self.rel_sizes.remove(&rel);
                }
                XLOG_SMGR_TRUNCATE => self.ingest_truncate(m, XlSmgrTruncate::decode(rec)?)?,
                _ => {}
            },
            RM_XACT_ID => self.ingest_xact(m, rec)?,
            RM_DBASE_ID => self.ingest_dbase(m, XlDbase::decode(rec)?)?,
            RM_TBLSPC_ID => {
                if let XlTblspc::Drop { ts_id } = XlTblspc::decode(rec)? {
                    m.drop_tablespace(ts_id)?;
                    self.rel_sizes.retain(|r, _| r.spcnode != ts_id);
                }
            }
            RM_CLOG_ID => match XlClog::decode(rec)? {
                XlClog::ZeroPage { pageno } => put_zero_slru_page(m, SlruKind::Clog, pageno)?,
                XlClog::Truncate { pageno, .. } => truncate_slru(m, SlruKind::Clog, pageno)?,
            },
            RM_MULTIXACT_ID => self.ingest_multixact(m, XlMultiXact::decode(rec)?)?,
            RM_RELMAP_ID => {
                let r = XlRelmapUpdate::decode(rec)?;
                m.put_relmap_file(r.tsid, r.dbid, r.data)?;
            }
            RM_XLOG_ID => match XlXlog::decode(rec)? {
                XlXlog::Checkpoint {
                    shutdown,
                    checkpoint,
                } => self.ingest_checkpoint(shutdown, checkpoint),
                XlXlog::NextOid(oid) => {
                    self.checkpoint.next_oid = oid;
                    self.checkpoint_modified = true;
                }
                _ => {}
            },
            _ => {}
        }

        for blk in &rec.blocks {
            let rel = RelTag::new(blk.rnode, blk.forknum);
            let size = self.rel_size(m, rel)?;
            if size.is_none_or(|s| blk.blkno >= s) {
                m.put_rel_extend_from(rel, size, blk.blkno)?;
                self.rel_sizes
                    .insert(rel, Some(size.unwrap_or(0).max(blk.blkno + 1)));
            }
            let key = rel_block_key(rel, blk.blkno);
            if blk.has_image && blk.apply_image {
                let mut page = blk.restore_image(rec.lsn)?.to_vec();
                if !PageHeader::parse(&page).is_some_and(|h| h.is_new()) {
                    page_set_lsn(&mut page, end);
                }
                m.put_image(key, Bytes::from(page));
            } else {
                m.put_record(
                    key,
                    ZenithWalRecord::Postgres {
                        will_init: blk.will_init || blk.apply_image,
                        rec: rec_bytes.clone(),
                    },
                );
            }
        }
        Ok(())
    }

    fn ingest_vm_clears(
        &mut self,
        m: &mut DatadirModification,
        rec: &DecodedWALRecord,
    ) -> anyhow::Result<()> {
        // (VM fork, VM block) -> (first heap block, second heap block, bits)
        let mut per_page: BTreeMap<(RelTag, u32), VmClears> = BTreeMap::new();
        for c in heap_vm_clears(rec)? {
            let vm = RelTag::new(c.rnode, VISIBILITYMAP_FORKNUM);
            let e = per_page
                .entry((vm, c.vm_blkno()))
                .or_insert((None, None, 0));
            if e.0.is_none() {
                e.0 = Some(c.heap_blkno);
            } else {
                e.1 = Some(c.heap_blkno);
            }
            e.2 |= c.flags;
        }
        for ((vm, vm_blk), (new_heap_blkno, old_heap_blkno, flags)) in per_page {
            // Bits on a VM page that does not exist are clear already.
            if self.rel_size(m, vm)?.is_some_and(|s| vm_blk < s) {
                m.put_record(
                    rel_block_key(vm, vm_blk),
                    ZenithWalRecord::ClearVisibilityMapFlags {
                        new_heap_blkno,
                        old_heap_blkno,
                        flags,
                    },
                );
            }
        }
        Ok(())
    }

    fn ingest_truncate(
        &mut self,
        m: &mut DatadirModification,
        t: XlSmgrTruncate,
    ) -> anyhow::Result<()> {
        let main = RelTag::new(t.rnode, MAIN_FORKNUM);
        if t.flags & SMGR_TRUNCATE_HEAP != 0 {
            m.put_rel_truncation(main, t.blkno)?;
            self.rel_sizes.insert(main, Some(t.blkno));
        }
        if t.flags & SMGR_TRUNCATE_FSM != 0 {
            let fsm = RelTag::new(t.rnode, FSM_FORKNUM);
            if let Some(size) = self.rel_size(m, fsm)? {
                let mut new_size = fsm_logical_to_physical(t.blkno / SLOTS_PER_FSM_PAGE);
                if !t.blkno.is_multiple_of(SLOTS_PER_FSM_PAGE) {
                    if new_size < size {
                        m.put_image(rel_block_key(fsm, new_size), zero_page());
                    }
                    new_size += 1;
                }
                if new_size < size {
                    m.put_rel_truncation(fsm, new_size)?;
                    self.rel_sizes.insert(fsm, Some(new_size));
                }
            }
        }
        if t.flags & SMGR_TRUNCATE_VM != 0 {
            let vm = RelTag::new(t.rnode, VISIBILITYMAP_FORKNUM);
            if let Some(size) = self.rel_size(m, vm)? {
                let mut new_size = t.blkno / HEAPBLOCKS_PER_VM_PAGE;
                if !t.blkno.is_multiple_of(HEAPBLOCKS_PER_VM_PAGE) {
                    if new_size < size {
                        m.put_image(rel_block_key(vm, new_size), Bytes::from(page_init(0)));
                    }
                    new_size += 1;
                }
                if new_size < size {
                    m.put_rel_truncation(vm, new_size)?;
                    self.rel_sizes.insert(vm, Some(new_size));
                }
            }
        }
        Ok(())
    }

    fn ingest_xact(
        &mut self,
        m: &mut DatadirModification,
        rec: &DecodedWALRecord,
    ) -> anyhow::Result<()> {
        let op = rec.info() & XLOG_XACT_OPMASK;
        match op {
            XLOG_XACT_COMMIT
            | XLOG_XACT_ABORT
            | XLOG_XACT_COMMIT_PREPARED
            | XLOG_XACT_ABORT_PREPARED => {
                let p = XlXactParsedRecord::decode(rec)?;
                // CLOG: the transaction and its subtransactions, per page.
                let mut by_page: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
                for x in std::iter::once(p.xid).chain(p.subxacts.iter().copied()) {
                    by_page.entry(slru::clog_page(x)).or_default().push(x);
                    if self.checkpoint.update_next_xid(x) {
                        self.checkpoint_modified = true;
                    }
                }
                for (pageno, xids) in by_page {
                    let (segno, blk) = slru::slru_page_location(pageno);
                    let r = if p.is_commit() {
                        ZenithWalRecord::ClogSetCommitted {
                            xids,
                            timestamp: p.xact_time,
                        }
                    } else {
                        ZenithWalRecord::ClogSetAborted { xids }
                    };
                    m.put_record(slru_block_key(SlruKind::Clog, segno, blk), r);
                }
                for rnode in &p.xnodes {
                    for fork in 0..=MAX_FORKNUM {
                        let rel = RelTag::new(*rnode, fork);
                        if self.rel_size(m, rel)?.is_some() {
                            m.put_rel_drop(rel)?;
                        }
                        self.rel_sizes.insert(rel, None);
                    }
                }
                if op == XLOG_XACT_COMMIT_PREPARED || op == XLOG_XACT_ABORT_PREPARED {
                    m.drop_twophase_file(p.twophase_xid)?;
                }
            }
            XLOG_XACT_PREPARE => {
                let p = XlXactPrepare::decode(rec)?;
                // The state file is the record data followed by its CRC-32C
                // (RecreateTwoPhaseFile), as import reads it from pg_twophase/.
                let mut file = p.state.to_vec();
                file.extend_from_slice(&crc32c::crc32c(&p.state).to_le_bytes());
                m.put_twophase_file(rec.xid(), Bytes::from(file))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn ingest_dbase(&mut self, m: &mut DatadirModification, d: XlDbase) -> anyhow::Result<()> {
        match d {
            XlDbase::CreateFileCopy {
                db_id,
                tablespace_id,
                src_db_id,
                src_tablespace_id,
            } => {
                let src = m.reader_state();
                let (tl, lsn) = (src.0, src.1);
                let r = DatadirReader::new(tl, lsn);
                let relmap = r.relmap_file(src_tablespace_id, src_db_id)?;
                m.put_db(tablespace_id, db_id, relmap.is_some())?;
                if let Some(map) = relmap {
                    m.put_relmap_file(tablespace_id, db_id, map)?;
                }
                for (relnode, forknum) in r.list_rels(src_tablespace_id, src_db_id)? {
                    let src_rel = RelTag {
                        spcnode: src_tablespace_id,
                        dbnode: src_db_id,
                        relnode,
                        forknum,
                    };
                    let dst = RelTag {
                        spcnode: tablespace_id,
                        dbnode: db_id,
                        relnode,
                        forknum,
                    };
                    let n = r.rel_size(src_rel)?.unwrap_or(0);
                    m.put_rel_creation(dst, n)?;
                    // Streamed when the record is filed, never all in memory.
                    m.put_bulk_pages(dst, 0, n, PageSource::Relation(src_rel));
                    self.rel_sizes.insert(dst, Some(n));
                }
            }
            XlDbase::CreateWalLog {
                db_id,
                tablespace_id,
            } => m.put_db(tablespace_id, db_id, false)?,
            XlDbase::Drop {
                db_id,
                tablespace_ids,
            } => {
                for spc in tablespace_ids {
                    m.drop_db(spc, db_id)?;
                }
                self.rel_sizes.retain(|r, _| r.dbnode != db_id);
            }
        }
        Ok(())
    }

    fn ingest_multixact(
        &mut self,
        m: &mut DatadirModification,
        x: XlMultiXact,
    ) -> anyhow::Result<()> {
        match x {
            XlMultiXact::ZeroOffPage { pageno } => {
                put_zero_slru_page(m, SlruKind::MultiXactOffsets, pageno)?
            }
            XlMultiXact::ZeroMemPage { pageno } => {
                put_zero_slru_page(m, SlruKind::MultiXactMembers, pageno)?
            }
            XlMultiXact::Create { mid, moff, members } => {
                let (pageno, _) = slru::multixact_offset_location(mid);
                let (segno, blk) = slru::slru_page_location(pageno);
                m.put_record(
                    slru_block_key(SlruKind::MultiXactOffsets, segno, blk),
                    ZenithWalRecord::MultixactOffsetCreate { mid, moff },
                );
                let mut by_page: BTreeMap<u32, (u32, Vec<(u32, u32)>)> = BTreeMap::new();
                for (i, mem) in members.iter().enumerate() {
                    let off = moff.wrapping_add(i as u32);
                    let (pageno, ..) = slru::multixact_member_location(off);
                    by_page
                        .entry(pageno)
                        .or_insert((off, Vec::new()))
                        .1
                        .push((mem.xid, mem.status));
                    if self.checkpoint.update_next_xid(mem.xid) {
                        self.checkpoint_modified = true;
                    }
                }
                for (pageno, (first, mems)) in by_page {
                    let (segno, blk) = slru::slru_page_location(pageno);
                    m.put_record(
                        slru_block_key(SlruKind::MultiXactMembers, segno, blk),
                        ZenithWalRecord::MultixactMembersCreate {
                            moff: first,
                            members: mems,
                        },
                    );
                }
                let next_multi = mid.wrapping_add(1).max(1);
                if (next_multi.wrapping_sub(self.checkpoint.next_multi) as i32) > 0 {
                    self.checkpoint.next_multi = next_multi;
                    self.checkpoint_modified = true;
                }
                let next_off = moff.wrapping_add(members.len() as u32);
                if (next_off.wrapping_sub(self.checkpoint.next_multi_offset) as i32) > 0 {
                    self.checkpoint.next_multi_offset = next_off;
                    self.checkpoint_modified = true;
                }
            }
            XlMultiXact::Truncate {
                end_trunc_off,
                end_trunc_memb,
                oldest_multi_db,
                ..
            } => {
                truncate_slru(
                    m,
                    SlruKind::MultiXactOffsets,
                    end_trunc_off / MULTIXACT_OFFSETS_PER_PAGE,
                )?;
                truncate_slru(
                    m,
                    SlruKind::MultiXactMembers,
                    end_trunc_memb / MULTIXACT_MEMBERS_PER_PAGE,
                )?;
                self.checkpoint.oldest_multi = end_trunc_off;
                self.checkpoint.oldest_multi_db = oldest_multi_db;
                self.checkpoint_modified = true;
            }
        }
        Ok(())
    }

    fn ingest_checkpoint(&mut self, shutdown: bool, cp: CheckPoint) {
        let c = &mut self.checkpoint;
        if (cp.next_xid as i64).wrapping_sub(c.next_xid as i64) > 0 {
            c.next_xid = cp.next_xid;
        }
        if shutdown || (cp.next_oid.wrapping_sub(c.next_oid) as i32) > 0 {
            c.next_oid = cp.next_oid;
        }
        if (cp.next_multi.wrapping_sub(c.next_multi) as i32) > 0 {
            c.next_multi = cp.next_multi;
        }
        if (cp.next_multi_offset.wrapping_sub(c.next_multi_offset) as i32) > 0 {
            c.next_multi_offset = cp.next_multi_offset;
        }
        c.oldest_xid = cp.oldest_xid;
        c.oldest_xid_db = cp.oldest_xid_db;
        c.oldest_multi = cp.oldest_multi;
        c.oldest_multi_db = cp.oldest_multi_db;
        c.oldest_commit_ts_xid = cp.oldest_commit_ts_xid;
        c.newest_commit_ts_xid = cp.newest_commit_ts_xid;
        c.full_page_writes = cp.full_page_writes;
        c.time = cp.time;
        c.this_timeline_id = cp.this_timeline_id;
        c.prev_timeline_id = cp.prev_timeline_id;
        c.redo = cp.redo;
        self.checkpoint_modified = true;
    }
}

fn put_zero_slru_page(
    m: &mut DatadirModification,
    kind: SlruKind,
    pageno: u32,
) -> anyhow::Result<()> {
    let (segno, blk) = slru::slru_page_location(pageno);
    m.put_slru_extend_to(kind, segno, blk)?;
    m.put_image(slru_block_key(kind, segno, blk), zero_page());
    Ok(())
}

/// Remove SLRU segments that lie wholly before `cutoff_page`.
fn truncate_slru(
    m: &mut DatadirModification,
    kind: SlruKind,
    cutoff_page: u32,
) -> anyhow::Result<()> {
    let cutoff_seg = cutoff_page / SLRU_PAGES_PER_SEGMENT;
    let r = m.reader_state();
    let segs = DatadirReader::new(r.0, r.1).list_slru_segments(kind)?;
    for segno in segs {
        if segno < cutoff_seg {
            m.drop_slru_segment(kind, segno)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsm_geometry() {
        // Logical page 0 is physical block 2 (root, middle, leaf).
        assert_eq!(fsm_logical_to_physical(0), 2);
        assert_eq!(fsm_logical_to_physical(1), 3);
        assert_eq!(
            fsm_logical_to_physical(SLOTS_PER_FSM_PAGE),
            SLOTS_PER_FSM_PAGE + 3
        );
    }
}
