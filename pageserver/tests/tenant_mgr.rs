//! Tenants and timelines survive a restart; branches are O(1) and refused
//! outside the ancestor's readable range; half-created timelines are cleaned up.

mod common;

use std::sync::Arc;

use pageserver::config::PageServerConf;
use pageserver::pgdatadir_mapping::DatadirReader;
use pageserver::tenant_mgr::TenantManager;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

#[test]
fn bootstrap_branch_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let conf = Arc::new(PageServerConf {
        pg_distrib_dir: common::pg_install(),
        ..PageServerConf::default()
    });
    let mgr = TenantManager::load(dir.path(), Arc::clone(&conf)).unwrap();
    let tenant_id = TenantId::generate();
    let tenant = mgr.create_tenant(tenant_id).unwrap();
    assert!(mgr.create_tenant(tenant_id).is_err());
    let main_id = TimelineId::generate();
    let main = tenant.bootstrap_timeline(main_id).unwrap();
    let lsn = main.last_record_lsn();
    assert!(lsn > Lsn(0));
    assert!(DatadirReader::new(&main, lsn).list_dbs().unwrap().len() >= 4);

    let child_id = TimelineId::generate();
    let child = tenant.branch_timeline(child_id, main_id, None).unwrap();
    assert_eq!(child.last_record_lsn(), lsn);
    assert_eq!(child.ancestor().unwrap().1, lsn);
    assert!(DatadirReader::new(&child, lsn).list_dbs().unwrap().len() >= 4);
    // Refused: above the ancestor's last LSN, below its GC cutoff, existing id, unknown ancestor.
    assert!(tenant
        .branch_timeline(TimelineId::generate(), main_id, Some(lsn + 8))
        .unwrap_err()
        .to_string()
        .contains("above"));
    assert!(tenant
        .branch_timeline(TimelineId::generate(), main_id, Some(Lsn(8)))
        .unwrap_err()
        .to_string()
        .contains("GC cutoff"));
    assert!(tenant.branch_timeline(child_id, main_id, None).is_err());
    assert!(tenant
        .branch_timeline(TimelineId::generate(), TimelineId::generate(), None)
        .is_err());

    // A half-created timeline directory is removed at load.
    let junk = tenant
        .path
        .join("timelines")
        .join(format!("{}.___temp", TimelineId::generate()));
    std::fs::create_dir_all(&junk).unwrap();
    drop((main, child, tenant));
    mgr.shutdown().unwrap();
    drop(mgr);

    let mgr = TenantManager::load(dir.path(), conf).unwrap();
    let child = mgr.get_timeline(tenant_id, child_id).unwrap();
    assert_eq!(child.ancestor().unwrap().0.timeline_id, main_id);
    assert!(DatadirReader::new(&child, lsn).list_dbs().unwrap().len() >= 4);
    assert_eq!(mgr.get(tenant_id).unwrap().list_timelines().len(), 2);
    assert!(!junk.exists());
    assert!(mgr
        .get_timeline(TenantId::generate(), child_id)
        .unwrap_err()
        .to_string()
        .contains("not found"));
}

/// Defect: a branch read its parent's data below the branch point from the
/// parent's in-memory layer; after a crash the parent restarted from its
/// `disk_consistent_lsn` and, with its WAL source gone, the branch lost it.
#[test]
fn branch_keeps_the_parents_data_across_a_crash() {
    use bytes::Bytes;
    use pageserver::key::Key;
    use pageserver::value::Value;

    let dir = tempfile::tempdir().unwrap();
    let conf = Arc::new(PageServerConf {
        pg_distrib_dir: common::pg_install(),
        ..PageServerConf::default()
    });
    let mgr = TenantManager::load(dir.path(), Arc::clone(&conf)).unwrap();
    let tenant_id = TenantId::generate();
    let tenant = mgr.create_tenant(tenant_id).unwrap();
    let main_id = TimelineId::generate();
    let main = tenant.bootstrap_timeline(main_id).unwrap();
    // WAL the parent ingested after its last flush: in memory only.
    let key = Key::MIN.add(12345);
    let start = main.last_record_lsn();
    let w = main.writer();
    w.put(
        key,
        start + 0x28,
        Value::Image(Bytes::from(vec![7u8; 8192])),
    )
    .unwrap();
    w.finish_write(start, start + 0x28);
    assert!(main.disk_consistent_lsn() < main.last_record_lsn());

    let child_id = TimelineId::generate();
    tenant.branch_timeline(child_id, main_id, None).unwrap();
    // kill -9: nothing is flushed, and the parent's WAL never comes back.
    drop((w, main, tenant));
    std::mem::forget(mgr);

    let mgr = TenantManager::load(dir.path(), conf).unwrap();
    let child = mgr.get_timeline(tenant_id, child_id).unwrap();
    let at = child.last_record_lsn();
    assert_eq!(at, start + 0x28);
    let page = child
        .get(key, at)
        .expect("the branch reads the parent's data at the branch point");
    assert_eq!(page[..], [7u8; 8192][..]);
}

fn new_manager(dir: &std::path::Path) -> (Arc<PageServerConf>, TenantManager) {
    let conf = Arc::new(PageServerConf {
        pg_distrib_dir: common::pg_install(),
        ..PageServerConf::default()
    });
    let mgr = TenantManager::load(dir, Arc::clone(&conf)).unwrap();
    (conf, mgr)
}

/// Defect: deleting a timeline did not stop writers holding the old
/// object; a flush that ran after the deletion (the WAL receiver's last
/// flush, a checkpoint) wrote its layer and metadata into the directory of
/// a new timeline created with the same id.
#[test]
fn a_deleted_timeline_never_writes_into_its_successor() {
    use bytes::Bytes;
    use pageserver::key::Key;
    use pageserver::value::Value;

    let dir = tempfile::tempdir().unwrap();
    let (conf, mgr) = new_manager(dir.path());
    let tenant_id = TenantId::generate();
    let tenant = mgr.create_tenant(tenant_id).unwrap();
    let id = TimelineId::generate();
    let old = tenant.bootstrap_timeline(id).unwrap();
    let start = old.last_record_lsn();
    let w = old.writer();
    w.put(
        Key::MIN.add(1),
        start + 0x1000,
        Value::Image(Bytes::from(vec![1u8; 8192])),
    )
    .unwrap();
    w.finish_write(start, start + 0x1000);

    tenant.remove_timeline(id).unwrap();
    let new = tenant.bootstrap_timeline(id).unwrap();
    let new_lsn = new.last_record_lsn();
    let files = |p: &std::path::Path| std::fs::read_dir(p).unwrap().count();
    let before = files(&new.path);
    // The old object's flush after the deletion: refused, nothing written.
    assert!(old.freeze_and_flush().is_err());
    assert!(old.is_deleted());
    assert_eq!(files(&new.path), before);
    drop((w, old, new, tenant));
    mgr.shutdown().unwrap();
    drop(mgr);

    let mgr = TenantManager::load(dir.path(), conf).unwrap();
    let tl = mgr.get_timeline(tenant_id, id).unwrap();
    assert_eq!(
        tl.last_record_lsn(),
        new_lsn,
        "the new timeline's own metadata"
    );
    assert!(tl.get(Key::MIN.add(1), new_lsn).is_err());
}

thread_local! {
    static STOP_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Deletion waits for a flush in progress; the flush, seeing the deletion,
/// stops before it records anything.
#[test]
fn deletion_waits_for_a_flush_in_progress() {
    use bytes::Bytes;
    use pageserver::key::Key;
    use pageserver::value::Value;

    let dir = tempfile::tempdir().unwrap();
    let (_conf, mgr) = new_manager(dir.path());
    let tenant = mgr.create_tenant(TenantId::generate()).unwrap();
    let id = TimelineId::generate();
    let tl = tenant.bootstrap_timeline(id).unwrap();
    let start = tl.last_record_lsn();
    let w = tl.writer();
    w.put(
        Key::MIN.add(1),
        start + 8,
        Value::Image(Bytes::from(vec![1u8; 8192])),
    )
    .unwrap();
    w.finish_write(start, start + 8);

    let barrier = Arc::new(std::sync::Barrier::new(2));
    let b = Arc::clone(&barrier);
    fail::cfg_callback("flush-after-layer-write", move || {
        if STOP_HERE.with(|s| s.get()) {
            b.wait();
            b.wait();
        }
    })
    .unwrap();
    let t2 = Arc::clone(&tl);
    let flusher = std::thread::spawn(move || {
        STOP_HERE.with(|s| s.set(true));
        t2.freeze_and_flush()
    });
    barrier.wait(); // the flush has written its layer file
    let t3 = Arc::clone(&tenant);
    let deleter = std::thread::spawn(move || t3.remove_timeline(id));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !tl.is_deleted() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::yield_now();
    }
    assert!(!deleter.is_finished(), "deletion waits for the flush");
    barrier.wait();
    let flushed = flusher.join().unwrap();
    fail::remove("flush-after-layer-write");
    assert!(flushed.is_err(), "the flush stopped: {flushed:?}");
    deleter.join().unwrap().unwrap();
    assert!(tenant.get_timeline(id).is_none());
    assert!(!tl.path.exists());
}

/// Defect: two creations of one timeline id shared a temporary directory
/// and clobbered each other. The second is now refused while the first
/// runs.
#[test]
fn a_second_creation_of_the_same_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_conf, mgr) = new_manager(dir.path());
    let tenant = mgr.create_tenant(TenantId::generate()).unwrap();
    let id = TimelineId::generate();

    let barrier = Arc::new(std::sync::Barrier::new(2));
    let b = Arc::clone(&barrier);
    fail::cfg_callback("timeline-create-before-rename", move || {
        if STOP_HERE.with(|s| s.get()) {
            b.wait();
            b.wait();
        }
    })
    .unwrap();
    let t2 = Arc::clone(&tenant);
    let first = std::thread::spawn(move || {
        STOP_HERE.with(|s| s.set(true));
        t2.bootstrap_timeline(id).map(|_| ())
    });
    barrier.wait(); // the first creation is about to rename its directory
    let second = tenant.bootstrap_timeline(id);
    barrier.wait();
    first.join().unwrap().unwrap();
    fail::remove("timeline-create-before-rename");
    let e = match second {
        Ok(_) => panic!("the second creation is not refused"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("already exists"), "{e}");
    assert!(tenant.get_timeline(id).is_some());
    // And two tenants of one id: one wins.
    let tid = TenantId::generate();
    let wins = std::thread::scope(|s| {
        let threads: Vec<_> = (0..4)
            .map(|_| s.spawn(|| mgr.create_tenant(tid).is_ok()))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|ok| *ok)
            .count()
    });
    assert_eq!(wins, 1);
}

/// Defect: one timeline with corrupt metadata stopped the whole pageserver
/// from starting. It is now recorded as broken (with its descendants) and
/// every other timeline and tenant loads.
#[test]
fn a_timeline_with_corrupt_metadata_is_broken_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, mgr) = new_manager(dir.path());
    let tenant_id = TenantId::generate();
    let tenant = mgr.create_tenant(tenant_id).unwrap();
    let good = TimelineId::generate();
    let bad = TimelineId::generate();
    let child = TimelineId::generate();
    tenant.bootstrap_timeline(good).unwrap();
    tenant.bootstrap_timeline(bad).unwrap();
    tenant.branch_timeline(child, bad, None).unwrap();
    let other_tenant = mgr.create_tenant(TenantId::generate()).unwrap();
    let other_tl = TimelineId::generate();
    other_tenant.bootstrap_timeline(other_tl).unwrap();
    let md = tenant
        .path
        .join("timelines")
        .join(bad.to_string())
        .join("metadata");
    drop((tenant, other_tenant));
    mgr.shutdown().unwrap();
    drop(mgr);
    let mut bytes = std::fs::read(&md).unwrap();
    bytes[10] ^= 0xFF;
    std::fs::write(&md, bytes).unwrap();

    let mgr = TenantManager::load(dir.path(), conf).expect("the pageserver loads");
    let tenant = mgr.get(tenant_id).unwrap();
    let g = mgr.get_timeline(tenant_id, good).unwrap();
    assert!(
        DatadirReader::new(&g, g.last_record_lsn())
            .list_dbs()
            .unwrap()
            .len()
            >= 4
    );
    let broken: std::collections::HashMap<_, _> = tenant.broken_timelines().into_iter().collect();
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(broken[&bad].contains("metadata"), "{}", broken[&bad]);
    assert!(broken[&child].contains("ancestor"), "{}", broken[&child]);
    assert!(tenant.get_timeline(bad).is_none());
    assert!(mgr
        .get(other_tenant_id(&mgr, tenant_id))
        .unwrap()
        .get_timeline(other_tl)
        .is_some());
    // A broken timeline can be deleted (descendants first).
    tenant.remove_timeline(child).unwrap();
    tenant.remove_timeline(bad).unwrap();
    assert!(tenant.broken_timelines().is_empty());
}

fn other_tenant_id(mgr: &TenantManager, not: TenantId) -> TenantId {
    mgr.list()
        .into_iter()
        .map(|t| t.id)
        .find(|id| *id != not)
        .unwrap()
}

/// Defect: image layer creation ran inline on the WAL receiver's thread,
/// so ingest (and reads waiting for new WAL) stalled for the whole rewrite.
/// Layer maintenance now runs on the tenant's background threads: while an
/// image layer is being written, ingest goes on and frozen layers are
/// flushed.
#[test]
fn ingest_and_flushes_go_on_while_an_image_is_written() {
    use bytes::Bytes;
    use pageserver::key::rel_block_key;
    use pageserver::pgdatadir_mapping::DatadirModification;
    use postgres_ffi::relfile::RelTag;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let conf = Arc::new(PageServerConf {
        pg_distrib_dir: common::pg_install(),
        tenant_config: pageserver::config::TenantConf {
            checkpoint_distance: 64 * 1024,
            image_creation_threshold: 1,
            compaction_threshold: 1000,
            gc_period: Duration::ZERO,
            ..Default::default()
        },
        ..PageServerConf::default()
    });
    let mgr = TenantManager::load(dir.path(), Arc::clone(&conf)).unwrap();
    let tenant = mgr.create_tenant(TenantId::generate()).unwrap();
    let tl = tenant.bootstrap_timeline(TimelineId::generate()).unwrap();

    // The first image creation blocks until released.
    let gate = Arc::new((
        std::sync::Mutex::new((false, false)),
        std::sync::Condvar::new(),
    ));
    let g = Arc::clone(&gate);
    fail::cfg_callback("image-layer-write", move || {
        let (m, cv) = &*g;
        let mut s = m.lock().unwrap();
        if s.1 {
            return; // released
        }
        s.0 = true; // reached
        cv.notify_all();
        while !s.1 {
            s = cv.wait(s).unwrap();
        }
    })
    .unwrap();

    let rel = RelTag {
        spcnode: 1663,
        dbnode: 5,
        relnode: 777_777,
        forknum: 0,
    };
    let stop = AtomicBool::new(false);
    let mut blk = 0u32;
    let mut put_and_checkpoint = |tl: &Arc<pageserver::tenant::timeline::Timeline>| {
        let mut m = DatadirModification::new(tl);
        m.put_rel_extend_to(rel, blk).unwrap();
        m.put_image(rel_block_key(rel, blk), Bytes::from(vec![blk as u8; 8192]));
        let prev = tl.last_record_lsn();
        m.commit(&tl.writer(), prev, prev + 0x100).unwrap();
        blk += 1;
        if tl.needs_checkpoint() {
            tl.checkpoint_from_ingest(&stop).unwrap();
        }
    };
    // Until image creation starts (and is held).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !gate.0.lock().unwrap().0 {
        assert!(Instant::now() < deadline, "no image creation started");
        put_and_checkpoint(&tl);
    }
    // Ingest and flushing keep going meanwhile.
    let flushed_before = tl.disk_consistent_lsn();
    let started = Instant::now();
    for _ in 0..100 {
        put_and_checkpoint(&tl);
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "ingest waited for the image"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while tl.disk_consistent_lsn() == flushed_before {
        assert!(Instant::now() < deadline, "nothing was flushed meanwhile");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Release the image; everything is readable.
    {
        let (m, cv) = &*gate;
        m.lock().unwrap().1 = true;
        cv.notify_all();
    }
    fail::remove("image-layer-write");
    let at = tl.last_record_lsn();
    {
        let r = DatadirReader::new(&tl, at);
        assert_eq!(r.rel_size(rel).unwrap(), Some(blk));
        assert_eq!(r.rel_page(rel, blk - 1).unwrap()[0], (blk - 1) as u8);
    }
    drop((tl, tenant));
    mgr.shutdown().unwrap();
}
