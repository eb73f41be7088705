//! Memory that must not grow with the size of a relation (defects found by
//! reading the code):
//! - a full basebackup held a whole relation segment (up to 1 GiB) in memory,
//!   twice; it now streams each segment in batches of blocks;
//! - importing a data directory read each segment whole and kept every page
//!   in the in-memory layer; `CREATE DATABASE ... STRATEGY FILE_COPY` kept a
//!   copy of every page of the template in one in-memory modification. Both
//!   now stream their pages into a layer file of their own.
//!
//! The tests count the process's allocations, so they run one at a time.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pageserver::basebackup::send_basebackup;
use pageserver::config::TenantConf;
use pageserver::import_datadir::import_datadir;
use pageserver::pgdatadir_mapping::{DatadirModification, DatadirReader};
use pageserver::walredo::NativeOnlyRedoManager;
use postgres_ffi::relfile::RelTag;

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Tests of this binary measure the whole process: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Peak bytes allocated (above what was live before) while `f` runs.
fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let r = f();
    (r, PEAK.load(Ordering::Relaxed).saturating_sub(before))
}

#[test]
fn import_and_file_copy_stream_large_relations() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    pageserver::page_cache::init(16);
    let dir = tempfile::tempdir().unwrap();
    let pgdata = common::initdb(dir.path());
    // A relation of about 100 MiB in the postgres database.
    let server = common::Server::start(&pgdata, &["wal_level = replica", "max_wal_size = 1GB"]);
    server.psql(
        "postgres",
        "CREATE TABLE big AS SELECT g, repeat(md5(g::text), 6) AS v FROM generate_series(1, 450000) g",
    );
    let rel = server.rel_tag("postgres", "big");
    server.stop();
    let rel_bytes = std::fs::metadata(pgdata.join(postgres_ffi::relfile::relation_segment_path(
        rel.rnode(),
        rel.forknum,
        0,
    )))
    .unwrap()
    .len();
    assert!(rel_bytes > 90 << 20, "the relation is {rel_bytes} bytes");

    let tl = common::empty_timeline(
        dir.path(),
        TenantConf::default(),
        Arc::new(NativeOnlyRedoManager),
    );
    let (point, import_peak) = peak_during(|| import_datadir(&tl, &pgdata).unwrap());

    // CREATE DATABASE ... STRATEGY FILE_COPY with the big relation's database as template.
    let server = common::Server::start(&pgdata, &["wal_level = replica", "max_wal_size = 1GB"]);
    server.psql(
        "template1",
        "CREATE DATABASE copied STRATEGY file_copy TEMPLATE postgres",
    );
    let copied = server.rel_tag("copied", "big");
    server.stop();
    let (_records, copy_peak) =
        peak_during(|| common::ingest_wal_from(&tl, &pgdata, point.end_lsn, point.checkpoint_lsn));
    let lsn = tl.last_record_lsn();
    let r = DatadirReader::new(&tl, lsn);
    let n = r.rel_size(rel).unwrap().unwrap();
    assert_eq!(u64::from(n) * 8192, rel_bytes);
    assert_eq!(r.rel_size(copied).unwrap(), Some(n));
    for blk in [0, n / 2, n - 1] {
        assert_eq!(
            r.rel_page(copied, blk).unwrap(),
            r.rel_page(rel, blk).unwrap()
        );
    }
    eprintln!(
        "peak allocation: import {} MiB, FILE_COPY {} MiB (relation: {} MiB)",
        import_peak >> 20,
        copy_peak >> 20,
        rel_bytes >> 20
    );
    assert!(
        import_peak < 48 << 20,
        "importing a {} MiB relation allocated {} MiB at its peak",
        rel_bytes >> 20,
        import_peak >> 20
    );
    assert!(
        copy_peak < 48 << 20,
        "copying a database with a {} MiB relation allocated {} MiB at its peak",
        rel_bytes >> 20,
        copy_peak >> 20
    );
}

#[test]
fn a_full_basebackup_streams_large_relations() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The page cache is bounded memory of its own; keep it out of the count.
    pageserver::page_cache::init(16);
    let dir = tempfile::tempdir().unwrap();
    let pgdata = common::initdb(dir.path());
    let tl = common::empty_timeline(
        dir.path(),
        TenantConf::default(),
        Arc::new(NativeOnlyRedoManager),
    );
    import_datadir(&tl, &pgdata).unwrap();

    // A 160 MiB relation (20,000 blocks) in the postgres database.
    let rel = RelTag {
        spcnode: 1663,
        dbnode: 5,
        relnode: 999_999,
        forknum: 0,
    };
    let w = tl.writer();
    let start = tl.record_lsn();
    let mut m = DatadirModification::new(&tl);
    m.put_rel_creation(rel, 0).unwrap();
    m.put_rel_extend_to(rel, 19_999).unwrap();
    m.commit(&w, start.last, start.last + 8).unwrap();
    tl.freeze_and_flush().unwrap();
    let lsn = tl.last_record_lsn();

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut out = CountingSink(0);
    send_basebackup(&tl, lsn, true, &mut out).unwrap();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert!(
        out.0 > 160 << 20,
        "the tar holds the relation ({} bytes)",
        out.0
    );
    assert!(
        peak < 48 << 20,
        "a full basebackup of a 160 MiB relation allocated {} MiB at its peak",
        peak >> 20
    );
}

struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
