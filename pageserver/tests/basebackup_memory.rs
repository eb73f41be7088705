//! Defect: a full basebackup held a whole relation segment (up to 1 GiB)
//! in memory, twice. It now streams each segment in batches of blocks.
//! (Alone in its test binary: it counts the process's allocations.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pageserver::basebackup::send_basebackup;
use pageserver::config::TenantConf;
use pageserver::import_datadir::import_datadir;
use pageserver::pgdatadir_mapping::DatadirModification;
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

#[test]
fn a_full_basebackup_streams_large_relations() {
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
