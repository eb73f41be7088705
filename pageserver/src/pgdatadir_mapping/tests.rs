//! Directories, relations and SLRUs through a modification and a reader;
//! bulk runs of pages; image layers of the live keyspace.

use std::sync::Arc;

use bytes::Bytes;
use postgres_ffi::relfile::RelTag;
use postgres_ffi::slru::SlruKind;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use super::*;
use crate::config::TenantConf;
use crate::key::rel_block_key;
use crate::tenant::timeline::{RecordLsn, Timeline, TimelineError};
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

fn rel(relnode: u32) -> RelTag {
    RelTag {
        spcnode: 1663,
        dbnode: 5,
        relnode,
        forknum: 0,
    }
}

/// A page starting with `b`, the rest incompressible (so that layer
/// sizes are what the test expects).
fn page(b: u8, seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut p: Vec<u8> = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    p[0] = b;
    Bytes::from(p)
}

/// One record: `blocks` of `rels` set to `b`.
fn write(tl: &Arc<Timeline>, lsn: &mut u64, rels: &[u32], blocks: u32, b: u8) {
    let mut m = DatadirModification::new(tl);
    m.put_db(1663, 5, false).unwrap();
    for &r in rels {
        m.put_rel_extend_to(rel(r), blocks - 1).unwrap();
        for blk in 0..blocks {
            let seed = (u64::from(r) << 40) ^ (u64::from(blk) << 8) ^ u64::from(b);
            m.put_image(rel_block_key(rel(r), blk), page(b, seed));
        }
    }
    let prev = Lsn(*lsn);
    *lsn += 0x1000;
    m.commit(&tl.writer(), prev, Lsn(*lsn)).unwrap();
}

fn image_keys(tl: &Timeline, lsn: Lsn) -> Vec<Key> {
    tl.layer_snapshot()
        .iter()
        .filter(|l| !l.is_delta() && l.lsn_range().start == lsn)
        .flat_map(|l| {
            l.reader()
                .unwrap()
                .index()
                .iter()
                .map(|e| e.key)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Defect: every image creation rebuilt every key ever seen, in one
/// image. Now only partitions with enough deltas above their last image
/// get one, and dropped relations leave no keys in new images.
#[test]
fn images_follow_the_written_partitions_and_forget_dropped_relations() {
    let dir = tempfile::tempdir().unwrap();
    let tl = crate::tenant::timeline::test_timeline(
        dir.path(),
        TenantConf {
            checkpoint_distance: 128 * 8192,
            image_creation_threshold: 2,
            ..TenantConf::default()
        },
        Lsn(0x1000),
    );
    tl.set_live_keyspace(live_keyspace);
    let mut lsn = 0x1000;
    let (a, b) = (16384, 16385);
    write(&tl, &mut lsn, &[a, b], 300, 1);
    tl.freeze_and_flush().unwrap();
    let all = tl.create_image_layers(true).unwrap().len();
    assert!(all >= 5, "{all} partitions");
    // Three generations of writes to `a` only, compacted into L1
    // layers that cover `a`'s keys.
    for gen in 2..5 {
        write(&tl, &mut lsn, &[a], 300, gen);
        tl.freeze_and_flush().unwrap();
    }
    tl.compact(true, &[]).unwrap();
    let made = tl.create_image_layers(false).unwrap();
    assert!(
        !made.is_empty() && made.len() < all,
        "{} of {all}",
        made.len()
    );
    let keys = image_keys(&tl, Lsn(lsn));
    assert!(keys.iter().any(|key| key.field4 == a));
    assert!(
        keys.iter().filter(|key| key.field4 == b).count() < 300,
        "b was not written: most of it gets no new image"
    );
    assert_eq!(tl.get(rel_block_key(rel(a), 299), Lsn(lsn)).unwrap()[0], 4);
    assert_eq!(tl.get(rel_block_key(rel(b), 299), Lsn(lsn)).unwrap()[0], 1);

    // Drop `b`: the next images hold none of its keys.
    let mut m = DatadirModification::new(&tl);
    m.put_rel_drop(rel(b)).unwrap();
    let prev = Lsn(lsn);
    lsn += 0x1000;
    m.commit(&tl.writer(), prev, Lsn(lsn)).unwrap();
    tl.freeze_and_flush().unwrap();
    tl.create_image_layers(true).unwrap();
    let keys = image_keys(&tl, Lsn(lsn));
    assert!(keys.iter().any(|key| key.field4 == a));
    assert!(
        !keys.iter().any(|key| key.field4 == b),
        "a dropped relation in an image"
    );
    // The image is authoritative: b's blocks do not exist any more.
    assert!(matches!(
        tl.get(rel_block_key(rel(b), 3), Lsn(lsn)),
        Err(TimelineError::MissingKey { .. })
    ));
}
