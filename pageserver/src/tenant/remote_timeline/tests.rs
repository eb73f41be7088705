//! The upload queue over the local directory backend: what reaches remote
//! storage, in which order, and what a restart uploads again.

use std::sync::Arc;

use bytes::Bytes;
use zenith_utils::lsn::Lsn;
use zenith_utils::remote_storage::{RemotePath, RemoteStorage, RemoteStorageConfig};

use super::index::{newest_index, parse_index_name, timeline_prefix, Generation, IndexPart};
use super::TenantRemote;
use crate::config::TenantConf;
use crate::key::rel_block_key;
use crate::tenant::timeline::{test_timeline, Timeline};
use crate::value::Value;
use postgres_ffi::relfile::RelTag;

const REL: RelTag = RelTag {
    spcnode: 1663,
    dbnode: 5,
    relnode: 16384,
    forknum: 0,
};

fn put(tl: &Arc<Timeline>, lsn: &mut u64, blkno: u32, b: u8) {
    let w = tl.writer();
    let prev = Lsn(*lsn);
    *lsn += 0x100;
    w.put(
        rel_block_key(REL, blkno),
        Lsn(*lsn),
        Value::Image(Bytes::from(vec![b; 8192])),
    )
    .unwrap();
    w.finish_write(prev, Lsn(*lsn));
}

fn remote(rt: &tokio::runtime::Runtime, dir: &std::path::Path, generation: u32) -> TenantRemote {
    TenantRemote {
        storage: RemoteStorage::new(&RemoteStorageConfig::local(dir.join("remote"))).unwrap(),
        runtime: rt.handle().clone(),
        generation: Generation(generation),
    }
}

/// The objects under the timeline's prefix, by file name.
fn objects(rt: &tokio::runtime::Runtime, r: &TenantRemote, tl: &Timeline) -> Vec<RemotePath> {
    let prefix = timeline_prefix(tl.tenant_id, tl.timeline_id).unwrap();
    rt.block_on(r.storage.list(Some(&prefix)))
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect()
}

fn newest(rt: &tokio::runtime::Runtime, r: &TenantRemote, paths: &[RemotePath]) -> IndexPart {
    let (key, _, _) = newest_index(paths, r.generation).expect("an index");
    IndexPart::from_json(key.as_str(), &rt.block_on(r.storage.get(key)).unwrap()).unwrap()
}

#[test]
fn layers_are_uploaded_before_the_indexes_that_list_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tl = test_timeline(dir.path(), TenantConf::default(), Lsn(0x1000));
    let r = remote(&rt, dir.path(), 1);
    let queue = r.start_timeline(tl.tenant_id, &tl).unwrap();
    let _ = tl.remote.set(Arc::clone(&queue));
    let mut lsn = 0x1000;
    for gen in 0..3u8 {
        for blk in 0..4 {
            put(&tl, &mut lsn, blk, gen);
        }
        tl.freeze_and_flush().unwrap();
    }
    rt.block_on(queue.wait_uploaded());
    assert_eq!(queue.remote_consistent_lsn(), tl.disk_consistent_lsn());
    assert_eq!(tl.disk_consistent_lsn(), Lsn(lsn));

    let paths = objects(&rt, &r, &tl);
    let index = newest(&rt, &r, &paths);
    assert_eq!(index.disk_consistent_lsn, Lsn(lsn));
    assert_eq!(index.metadata, tl.metadata());
    let local: Vec<String> = tl
        .layer_files()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(local.len(), 3);
    assert_eq!(
        index
            .layers
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        local.iter().cloned().collect(),
        "the index lists exactly the local layers"
    );
    for (name, meta) in &index.layers {
        let key = format!("{name}-{}", meta.generation);
        assert!(paths.iter().any(|p| p.file_name() == key), "{key} uploaded");
        let bytes = std::fs::read(tl.path.join(name)).unwrap();
        assert_eq!(
            (meta.file_size, meta.crc32c),
            (bytes.len() as u64, crc32c::crc32c(&bytes))
        );
    }
    // Indexes: each its own object, in increasing sequence.
    let seqs: Vec<u64> = paths
        .iter()
        .filter_map(|p| parse_index_name(p.file_name()))
        .map(|(g, s)| {
            assert_eq!(g, Generation(1));
            s
        })
        .collect();
    assert!(
        !seqs.is_empty() && seqs.windows(2).all(|w| w[0] < w[1]),
        "{seqs:?}"
    );
}

#[test]
fn a_restart_uploads_only_what_remote_storage_lacks() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tl = test_timeline(dir.path(), TenantConf::default(), Lsn(0x1000));
    let r1 = remote(&rt, dir.path(), 1);
    let q1 = r1.start_timeline(tl.tenant_id, &tl).unwrap();
    let _ = tl.remote.set(Arc::clone(&q1));
    let mut lsn = 0x1000;
    put(&tl, &mut lsn, 0, 1);
    tl.freeze_and_flush().unwrap();
    rt.block_on(q1.wait_uploaded());
    q1.stop();
    let before = objects(&rt, &r1, &tl);

    // The next start (generation 2) finds the layer in the index: only a
    // new index is uploaded, listing the layer under its first generation.
    let r2 = remote(&rt, dir.path(), 2);
    let q2 = r2.start_timeline(tl.tenant_id, &tl).unwrap();
    rt.block_on(q2.wait_uploaded());
    let after = objects(&rt, &r2, &tl);
    let new: Vec<&RemotePath> = after.iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(
        parse_index_name(new[0].file_name()).map(|(g, _)| g),
        Some(Generation(2))
    );
    let index = newest(&rt, &r2, &after);
    assert!(index.layers.values().all(|m| m.generation == Generation(1)));
    assert_eq!(q2.remote_consistent_lsn(), Lsn(lsn));

    // An older generation never reads the newer index.
    assert_eq!(
        newest_index(&after, Generation(1)).map(|(_, g, _)| g),
        Some(Generation(1))
    );
}

/// A layer removed (compaction, GC) before its upload started is not
/// uploaded, and no index that lists it reaches remote storage.
#[test]
fn a_layer_removed_before_its_upload_is_in_no_uploaded_index() {
    use super::index::LayerFileMeta;
    use super::upload::RemoteTimeline;
    use crate::tenant::storage_layer::filename::LayerFileName;

    // A runtime nobody drives yet: the worker runs only in block_on below,
    // after every change is queued.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tl = test_timeline(dir.path(), TenantConf::default(), Lsn(0x1000));
    let r = remote(&rt, dir.path(), 1);
    let md = tl.metadata();
    let queue = RemoteTimeline::start(
        r.storage.clone(),
        rt.handle(),
        tl.tenant_id,
        tl.timeline_id,
        r.generation,
        None,
        Vec::new(),
        md.clone(),
    )
    .unwrap();
    let name = |s: &str| LayerFileName::parse(s).unwrap();
    let a = name("000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000000001000-0000000000002000");
    let b = name("000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000000002000-0000000000003000");
    let b_path = dir.path().join("b");
    std::fs::write(&b_path, b"layer b").unwrap();
    let meta = |size| LayerFileMeta {
        file_size: size,
        crc32c: 0,
        generation: r.generation,
    };
    // A (its file already gone), then B, then A's removal.
    queue.schedule_layer_change(
        vec![(a.clone(), dir.path().join("gone"), meta(9))],
        &[],
        &md,
    );
    queue.schedule_layer_change(vec![(b.clone(), b_path, meta(7))], &[], &md);
    queue.schedule_layer_change(Vec::new(), std::slice::from_ref(&a), &md);
    rt.block_on(queue.wait_uploaded());

    let paths = objects(&rt, &r, &tl);
    assert!(
        !paths
            .iter()
            .any(|p| p.file_name().starts_with(&a.to_string())),
        "{paths:?}"
    );
    assert!(paths
        .iter()
        .any(|p| p.file_name() == format!("{b}-00000001")));
    for p in paths
        .iter()
        .filter(|p| parse_index_name(p.file_name()).is_some())
    {
        let index =
            IndexPart::from_json(p.as_str(), &rt.block_on(r.storage.get(p)).unwrap()).unwrap();
        assert!(
            !index.layers.contains_key(&a.to_string()),
            "{p} lists the removed layer"
        );
    }
    assert_eq!(newest(&rt, &r, &paths).layers.len(), 1);
}
