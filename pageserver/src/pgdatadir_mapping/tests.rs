//! Directories, relations and SLRUs through a modification and a reader;
//! bulk runs of pages.

use std::sync::Arc;

use bytes::Bytes;
use postgres_ffi::relfile::RelTag;
use postgres_ffi::slru::SlruKind;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use super::*;
use crate::config::TenantConf;
use crate::key::rel_block_key;
use crate::tenant::timeline::{RecordLsn, Timeline};
use crate::walredo::NativeOnlyRedoManager;

fn tl(dir: &std::path::Path) -> Arc<Timeline> {
    Timeline::create(
        &dir.join("tl"),
        TenantId::generate(),
        TimelineId::generate(),
        TenantConf::default(),
        None,
        RecordLsn {
            last: Lsn(0),
            prev: Lsn(0),
        },
        Lsn(0x100),
        Arc::new(NativeOnlyRedoManager),
    )
    .unwrap()
}

#[test]
fn relations_databases_and_slrus() {
    let dir = tempfile::tempdir().unwrap();
    let tl = tl(dir.path());
    let w = tl.writer();
    let rel = RelTag {
        spcnode: 1663,
        dbnode: 5,
        relnode: 16384,
        forknum: 0,
    };

    let mut m = DatadirModification::new(&tl);
    m.put_rel_creation(rel, 0).unwrap();
    m.put_rel_extend_to(rel, 2).unwrap();
    m.put_image(rel_block_key(rel, 2), Bytes::from(vec![2u8; 8192]));
    m.put_slru_extend_to(SlruKind::Clog, 0, 0).unwrap();
    m.put_twophase_file(777, Bytes::from_static(b"state"))
        .unwrap();
    m.commit(&w, Lsn(0), Lsn(0x100)).unwrap();

    let r = DatadirReader::new(&tl, Lsn(0x100));
    assert_eq!(r.list_dbs().unwrap().get(&(1663, 5)), Some(&false));
    assert_eq!(r.rel_size(rel).unwrap(), Some(3));
    assert_eq!(r.rel_page(rel, 0).unwrap(), zero_page());
    assert_eq!(r.rel_page(rel, 2).unwrap()[0], 2);
    assert_eq!(r.db_size(1663, 5).unwrap(), 3 * 8192);
    assert_eq!(r.list_slru_segments(SlruKind::Clog).unwrap(), vec![0]);
    assert_eq!(r.slru_segment_size(SlruKind::Clog, 0).unwrap(), 1);
    assert_eq!(r.list_twophase_files().unwrap(), vec![777]);

    // A later record truncates and drops; the old state stays readable.
    let mut m = DatadirModification::new(&tl);
    m.put_rel_truncation(rel, 1).unwrap();
    m.drop_twophase_file(777).unwrap();
    m.commit(&w, Lsn(0x100), Lsn(0x200)).unwrap();
    let mut m = DatadirModification::new(&tl);
    m.put_rel_drop(rel).unwrap();
    m.drop_db(1663, 5).unwrap();
    m.commit(&w, Lsn(0x200), Lsn(0x300)).unwrap();

    let at = |lsn| DatadirReader::new(&tl, Lsn(lsn));
    assert_eq!(at(0x200).rel_size(rel).unwrap(), Some(1));
    assert!(at(0x200).list_twophase_files().unwrap().is_empty());
    assert_eq!(at(0x300).rel_size(rel).unwrap(), None);
    assert!(at(0x300).list_dbs().unwrap().is_empty());
    assert_eq!(at(0x100).rel_size(rel).unwrap(), Some(3));
}

/// Defect: every gap block of a relation extended by a far block got a
/// fresh 8 KiB zero page (20,000 blocks: 160 MiB). They now share one.
#[test]
fn a_far_extension_costs_no_page_per_gap_block() {
    let dir = tempfile::tempdir().unwrap();
    let tl = tl(dir.path());
    let w = tl.writer();
    let rel = RelTag {
        spcnode: 1663,
        dbnode: 5,
        relnode: 16384,
        forknum: 0,
    };
    let mut m = DatadirModification::new(&tl);
    m.put_rel_creation(rel, 0).unwrap();
    m.put_rel_extend_to(rel, 20_000).unwrap();
    m.commit(&w, Lsn(0), Lsn(0x100)).unwrap();
    assert!(
        tl.open_layer_size() < 4 << 20,
        "in-memory layer holds {} bytes",
        tl.open_layer_size()
    );
    let r = DatadirReader::new(&tl, Lsn(0x100));
    assert_eq!(r.rel_size(rel).unwrap(), Some(20_001));
    assert_eq!(r.rel_page(rel, 12_345).unwrap()[..], [0u8; 8192][..]);
    tl.freeze_and_flush().unwrap();
    assert_eq!(r.rel_page(rel, 19_999).unwrap()[..], [0u8; 8192][..]);
}
