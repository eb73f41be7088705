//! One timeline's WAL on disk: segment files named like `pg_wal`'s.
//!
//! - Segments are `wal_seg_size` bytes (16 MiB by default) and named
//!   `TTTTTTTTXXXXXXXXYYYYYYYY` (timeline 1); the one WAL is being written to
//!   ends in `.partial`. A finished segment is fsynced and renamed.
//! - [`WalStore::write_wal`] writes at the end and fsyncs before it returns:
//!   the flush LSN it reports is durable.
//! - [`WalStore::truncate_wal`] removes later segments and zeroes the rest of
//!   the segment holding the new end, so that nothing past the end can look
//!   like WAL when the end is searched for after a restart.
//! - The flush LSN is not stored anywhere: on start it is found by decoding
//!   records forward from a known record boundary (see [`find_end_of_wal`]),
//!   like PostgreSQL finds the end of its own WAL. Every acknowledged commit
//!   ends on a record boundary below the bytes that were fsynced, so the end
//!   found is never below an acknowledged commit.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use postgres_ffi::waldecoder::WalStreamDecoder;
use postgres_ffi::xlog_utils::{parse_xlog_file_name, xlog_file_name};
use zenith_utils::crashsafe;
use zenith_utils::lsn::Lsn;

use crate::acceptor::{AcceptorState, StoreError, WalStore};
use crate::control_file;

/// `walkeeper_write_wal_seconds`: writing one batch of WAL into segment
/// files (page cache; the fsync is timed apart).
static WRITE_WAL_SECONDS: std::sync::LazyLock<zenith_metrics::Histogram> =
    std::sync::LazyLock::new(|| {
        zenith_metrics::register_histogram!(
            "walkeeper_write_wal_seconds",
            "Time to write received WAL into segment files (without fsync)",
            zenith_metrics::LATENCY_BUCKETS_SECONDS.to_vec()
        )
        .expect("registering walkeeper_write_wal_seconds")
    });

/// `walkeeper_flush_wal_seconds`: one fsync of written WAL.
static FLUSH_WAL_SECONDS: std::sync::LazyLock<zenith_metrics::Histogram> =
    std::sync::LazyLock::new(|| {
        zenith_metrics::register_histogram!(
            "walkeeper_flush_wal_seconds",
            "Time to fsync written WAL",
            zenith_metrics::LATENCY_BUCKETS_SECONDS.to_vec()
        )
        .expect("registering walkeeper_flush_wal_seconds")
    });

/// `walkeeper_wal_bytes_written_total`: WAL bytes written into segment files.
static WAL_BYTES_WRITTEN: std::sync::LazyLock<zenith_metrics::IntCounter> =
    std::sync::LazyLock::new(|| {
        zenith_metrics::register_int_counter!(
            "walkeeper_wal_bytes_written_total",
            "WAL bytes written into segment files"
        )
        .expect("registering walkeeper_wal_bytes_written_total")
    });

/// Registers the WAL storage metrics, so that `/metrics` lists them before
/// the first write.
pub fn register_metrics() {
    std::sync::LazyLock::force(&WRITE_WAL_SECONDS);
    std::sync::LazyLock::force(&FLUSH_WAL_SECONDS);
    std::sync::LazyLock::force(&WAL_BYTES_WRITTEN);
}

pub const PARTIAL_SUFFIX: &str = ".partial";
/// PostgreSQL's timeline of every compute's WAL.
const PG_TLI: u32 = 1;

/// A segment file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub segno: u64,
    pub partial: bool,
    pub path: PathBuf,
}

/// The segment files of `dir`, by segment number.
pub fn list_segments(dir: &Path, seg_size: usize) -> std::io::Result<Vec<Segment>> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let (base, partial) = match name.strip_suffix(PARTIAL_SUFFIX) {
            Some(b) => (b, true),
            None => (name, false),
        };
        if let Some((segno, tli)) = parse_xlog_file_name(base, seg_size) {
            if tli == PG_TLI {
                segs.push(Segment {
                    segno,
                    partial,
                    path: entry.path(),
                });
            }
        }
    }
    segs.sort_by_key(|s| (s.segno, s.partial));
    Ok(segs)
}

fn seg_name(segno: u64, seg_size: usize, partial: bool) -> String {
    let mut name = xlog_file_name(PG_TLI, segno, seg_size);
    if partial {
        name.push_str(PARTIAL_SUFFIX);
    }
    name
}

/// End of the WAL in `dir`: the end of the last complete record decodable
/// from `start` (a record boundary or a page boundary), or `start` itself
/// if none is.
pub fn find_end_of_wal(dir: &Path, seg_size: usize, start: Lsn) -> Result<Lsn, StoreError> {
    let segs = list_segments(dir, seg_size)?;
    let mut decoder = WalStreamDecoder::new(start, seg_size);
    let mut end = start;
    let mut segno = start.segment_number(seg_size);
    let mut offset = start.segment_offset(seg_size);
    let mut buf = vec![0u8; 1 << 20];
    while let Some(seg) = segs.iter().rev().find(|s| s.segno == segno) {
        let mut file = File::open(&seg.path)?;
        file.seek(SeekFrom::Start(offset as u64))?;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            decoder.feed_bytes(&buf[..n]);
            loop {
                match decoder.poll_decode() {
                    Ok(Some(rec)) => end = rec.end_lsn,
                    Ok(None) => break,
                    Err(_) => return Ok(end),
                }
            }
        }
        segno += 1;
        offset = 0;
    }
    Ok(end)
}

/// One timeline's directory: WAL segments and the control file.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    seg_size: usize,
    /// Where this walkeeper's WAL starts (0: none yet).
    start: Lsn,
    flush: Lsn,
    /// The `.partial` segment being written, open.
    open: Option<(u64, File)>,
    /// Batching: writes leave their bytes unsynced until `sync`.
    deferred: bool,
    /// Bytes written and not yet synced.
    dirty: bool,
}

impl DiskStore {
    /// Open the timeline directory `dir` (created if missing): its control
    /// file, if any, and the end of its WAL.
    pub fn open(
        dir: &Path,
        seg_size: usize,
    ) -> Result<(DiskStore, Option<AcceptorState>), StoreError> {
        crashsafe::create_dir_all_durable(dir)?;
        crashsafe::remove_stale_temp_files(dir)?;
        let state = control_file::load(dir).map_err(|e| StoreError(e.to_string()))?;
        let mut store = DiskStore {
            dir: dir.to_path_buf(),
            seg_size,
            start: Lsn(0),
            flush: Lsn(0),
            open: None,
            deferred: false,
            dirty: false,
        };
        if let Some(st) = &state {
            if st.local_start_lsn != Lsn(0) {
                store.start = st.local_start_lsn;
                // Decode from a record boundary: the start of our WAL, or the
                // start of the segment holding the persisted commit LSN (it
                // lags by at most a segment, and a decoder started on a page
                // boundary skips the record continued into it).
                let commit_seg_start = st.commit_lsn.segment_lsn(seg_size);
                let scan_from = if commit_seg_start > st.local_start_lsn {
                    commit_seg_start
                } else {
                    st.local_start_lsn
                };
                let end = find_end_of_wal(dir, seg_size, scan_from)?;
                store.flush = end.max(st.commit_lsn).max(st.local_start_lsn);
            }
        }
        Ok((store, state))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn start_lsn(&self) -> Lsn {
        self.start
    }

    pub fn seg_size(&self) -> usize {
        self.seg_size
    }

    /// Change the segment size of a store that holds no WAL yet.
    pub fn set_seg_size(&mut self, seg_size: usize) -> Result<(), StoreError> {
        if self.flush != Lsn(0) && seg_size != self.seg_size {
            return Err(StoreError(format!(
                "WAL segment size {seg_size} does not match the stored WAL's {}",
                self.seg_size
            )));
        }
        self.seg_size = seg_size;
        Ok(())
    }

    fn seg_path(&self, segno: u64, partial: bool) -> PathBuf {
        self.dir.join(seg_name(segno, self.seg_size, partial))
    }

    /// The `.partial` file of `segno`, created full size if missing.
    fn open_partial(&mut self, segno: u64) -> Result<&File, StoreError> {
        if self.open.as_ref().map(|(s, _)| *s) != Some(segno) {
            if let Some((old, f)) = self.open.take() {
                f.sync_all()?;
                if old < segno {
                    crashsafe::rename_durable(self.seg_path(old, true), self.seg_path(old, false))?;
                }
            }
            let path = self.seg_path(segno, true);
            let existed = path.exists();
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            if !existed {
                file.set_len(self.seg_size as u64)?;
                file.sync_all()?;
                crashsafe::fsync_dir(&self.dir)?;
            }
            self.open = Some((segno, file));
        }
        Ok(&self.open.as_ref().expect("just opened").1)
    }

    /// Remove segments that end at or below `lsn` (WAL everyone has).
    pub fn remove_segments_below(&mut self, lsn: Lsn) -> Result<usize, StoreError> {
        let below = lsn.segment_number(self.seg_size);
        let mut removed = 0;
        for seg in list_segments(&self.dir, self.seg_size)? {
            if seg.segno < below && !seg.partial {
                fs::remove_file(&seg.path)?;
                removed += 1;
            }
        }
        if removed > 0 {
            crashsafe::fsync_dir(&self.dir)?;
            let first = Lsn(below * self.seg_size as u64);
            if self.start < first {
                self.start = first;
            }
        }
        Ok(removed)
    }

    /// Read WAL at `lsn` into `buf`, up to the flush LSN; bytes read.
    pub fn read_wal(&self, lsn: Lsn, buf: &mut [u8]) -> Result<usize, StoreError> {
        if lsn >= self.flush || lsn < self.start {
            return Ok(0);
        }
        let n = buf.len().min((self.flush.0 - lsn.0) as usize);
        read_segment(&self.dir, self.seg_size, lsn, &mut buf[..n])
    }
}

/// Read WAL at `lsn` from its segment file into `buf`, up to the end of the
/// segment; bytes read. The segment may be renamed from `.partial` while
/// this runs (it fills up), so both names are tried, the finished one
/// again last. WAL below the commit LSN never changes, so replication reads
/// it this way without the acceptor's lock.
pub fn read_segment(
    dir: &Path,
    seg_size: usize,
    lsn: Lsn,
    buf: &mut [u8],
) -> Result<usize, StoreError> {
    let segno = lsn.segment_number(seg_size);
    let off = lsn.segment_offset(seg_size);
    let n = buf.len().min(seg_size - off);
    for partial in [false, true, false] {
        match File::open(dir.join(seg_name(segno, seg_size, partial))) {
            Ok(f) => {
                f.read_exact_at(&mut buf[..n], off as u64)?;
                return Ok(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError(format!(
        "the WAL segment holding {lsn} is gone (removed below the horizon?)"
    )))
}

impl WalStore for DiskStore {
    fn flush_lsn(&self) -> Lsn {
        self.flush
    }

    fn write_wal(&mut self, lsn: Lsn, buf: &[u8]) -> Result<(), StoreError> {
        if lsn != self.flush || self.flush == Lsn(0) {
            return Err(StoreError(format!(
                "write at {lsn}, but the WAL ends at {}",
                self.flush
            )));
        }
        let timer = WRITE_WAL_SECONDS.start_timer();
        let mut pos = lsn;
        let mut rest = buf;
        while !rest.is_empty() {
            let segno = pos.segment_number(self.seg_size);
            let off = pos.segment_offset(self.seg_size);
            let n = rest.len().min(self.seg_size - off);
            let file = self.open_partial(segno)?;
            file.write_all_at(&rest[..n], off as u64)?;
            rest = &rest[n..];
            pos = Lsn(pos.0 + n as u64);
            WAL_BYTES_WRITTEN.inc_by(n as u64);
        }
        timer.observe_duration();
        self.dirty = true;
        if !self.deferred {
            self.sync()?;
        }
        self.flush = pos;
        Ok(())
    }

    fn defer_sync(&mut self, on: bool) {
        self.deferred = on;
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if self.dirty {
            if let Some((_, f)) = &self.open {
                let _timer = FLUSH_WAL_SECONDS.start_timer();
                // Testing builds: `sleep(ms)` stalls the fsync, `return` fails it.
                fail::fail_point!("walkeeper-fsync", |_| Err(StoreError(
                    "failpoint walkeeper-fsync".into()
                )));
                f.sync_data()?;
            }
            self.dirty = false;
        }
        Ok(())
    }

    fn truncate_wal(&mut self, lsn: Lsn) -> Result<(), StoreError> {
        let segno = lsn.segment_number(self.seg_size);
        if self.flush == Lsn(0) || lsn < self.start {
            // A new start: nothing of the old WAL is kept.
            self.open = None;
            for seg in list_segments(&self.dir, self.seg_size)? {
                fs::remove_file(&seg.path)?;
            }
            crashsafe::fsync_dir(&self.dir)?;
            self.start = lsn;
        } else {
            self.open = None;
            for seg in list_segments(&self.dir, self.seg_size)? {
                if seg.segno > segno || (seg.segno == segno && !seg.partial) {
                    if seg.segno == segno {
                        fs::rename(&seg.path, self.seg_path(segno, true))?;
                    } else {
                        fs::remove_file(&seg.path)?;
                    }
                }
            }
            crashsafe::fsync_dir(&self.dir)?;
        }
        let (off, size) = (
            lsn.segment_offset(self.seg_size) as u64,
            self.seg_size as u64,
        );
        let file = self.open_partial(segno)?;
        // Zero from the new end to the end of the segment.
        file.set_len(off)?;
        file.set_len(size)?;
        file.sync_all()?;
        self.flush = lsn;
        Ok(())
    }

    fn persist(&mut self, state: &AcceptorState) -> Result<(), StoreError> {
        control_file::store(&self.dir, state).map_err(|e| StoreError(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
