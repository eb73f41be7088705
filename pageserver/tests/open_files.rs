//! Defect: every layer file ever read kept its file descriptor and whole
//! index for life (EMFILE at `ulimit -n` 1024 with a week of PITR layers).
//! Open layers are now a bounded, process-wide set. (Alone in its test
//! binary: it counts the process's file descriptors.)

mod common;

use std::sync::Arc;

use bytes::Bytes;
use pageserver::config::TenantConf;
use pageserver::key::Key;
use pageserver::tenant::storage_layer::reader_cache;
use pageserver::value::Value;
use pageserver::walredo::NativeOnlyRedoManager;
use zenith_utils::lsn::Lsn;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn reading_many_layers_keeps_few_files_open() {
    reader_cache::init(32);
    let dir = tempfile::tempdir().unwrap();
    let tl = common::empty_timeline(
        dir.path(),
        TenantConf {
            // Keep every layer: no compaction during the test.
            compaction_threshold: 10_000,
            ..TenantConf::default()
        },
        Arc::new(NativeOnlyRedoManager),
    );
    let w = tl.writer();
    let layers = 300u32;
    for i in 0..layers {
        let lsn = Lsn(0x1000 + u64::from(i) * 0x10);
        w.put(
            Key::MIN.add(i),
            lsn,
            Value::Image(Bytes::from(vec![i as u8; 8192])),
        )
        .unwrap();
        w.finish_write(lsn - 0x10, lsn);
        tl.freeze_and_flush().unwrap();
    }
    assert!(tl.layer_files().len() >= layers as usize);
    let before = open_fds();
    let at = tl.last_record_lsn();
    for round in 0..2 {
        for i in 0..layers {
            let page = tl.get(Key::MIN.add(i), at).unwrap();
            assert_eq!(page[0], i as u8, "round {round}, key {i}");
        }
    }
    let after = open_fds();
    assert!(reader_cache::get().len() <= 32);
    assert!(
        after <= before + 32,
        "{before} open files before reading {layers} layers, {after} after"
    );
}
