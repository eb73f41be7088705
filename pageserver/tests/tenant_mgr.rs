//! Tenants and timelines survive a restart; branches are O(1) and refused
//! outside the ancestor's readable range; half-created timelines are cleaned up.

mod common;

use std::sync::Arc;

use pageserver::config::PageServerConf;
use pageserver::pgdatadir_mapping::DatadirReader;
use pageserver::tenant::mgr::TenantManager;
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
