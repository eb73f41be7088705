//! The segment store against real PostgreSQL 15 WAL (what initdb wrote).

use super::*;
use postgres_ffi::waldecoder::RawRecord;
use rand::{Rng, SeedableRng};
use zenith_utils::id::{TenantId, TimelineId};

const SEG: usize = 16 << 20;
const SEG_START: Lsn = Lsn(0x0100_0000);

fn wal() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../postgres_ffi/testdata/initdb_wal_head.zst"
    );
    zstd::decode_all(&std::fs::read(path).unwrap()[..]).unwrap()
}

fn records(input: &[u8]) -> Vec<RawRecord> {
    let mut dec = WalStreamDecoder::new(SEG_START, SEG);
    dec.feed_bytes(input);
    let mut recs = Vec::new();
    while let Ok(Some(r)) = dec.poll_decode() {
        recs.push(r);
    }
    recs
}

fn state(start: Lsn, commit: Lsn) -> AcceptorState {
    let mut s = AcceptorState::new(
        TenantId::from_array([1; 16]),
        TimelineId::from_array([2; 16]),
    );
    s.local_start_lsn = start;
    s.commit_lsn = commit;
    s
}

/// Write `input` from SEG_START in random chunks; returns the store.
fn write_chunked(dir: &Path, input: &[u8], seed: u64) -> DiskStore {
    let (mut store, st) = DiskStore::open(dir, SEG).unwrap();
    assert!(st.is_none());
    store.truncate_wal(SEG_START).unwrap();
    store.persist(&state(SEG_START, Lsn(0))).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pos = 0;
    while pos < input.len() {
        let n = rng.gen_range(1..70_000).min(input.len() - pos);
        store
            .write_wal(Lsn(SEG_START.0 + pos as u64), &input[pos..pos + n])
            .unwrap();
        pos += n;
    }
    store
}

#[test]
fn the_end_of_wal_is_found_again_after_a_restart() {
    let input = wal();
    let recs = records(&input);
    for (seed, cut_rec) in [(1, 10), (2, 700), (3, recs.len() - 1)] {
        let dir = tempfile::tempdir().unwrap();
        // Everything up to the end of record `cut_rec`, plus half of the next.
        let end = recs[cut_rec].end_lsn;
        let upto = (end.0 - SEG_START.0) as usize + 20;
        let upto = upto.min(input.len());
        let store = write_chunked(dir.path(), &input[..upto], seed);
        assert_eq!(store.flush_lsn(), Lsn(SEG_START.0 + upto as u64));
        drop(store);
        let (store, st) = DiskStore::open(dir.path(), SEG).unwrap();
        assert_eq!(st.unwrap().local_start_lsn, SEG_START);
        let want = if cut_rec + 1 < recs.len()
            && recs[cut_rec + 1].end_lsn.0 <= SEG_START.0 + upto as u64
        {
            recs[cut_rec + 1].end_lsn
        } else {
            end
        };
        assert_eq!(store.flush_lsn(), want, "seed {seed}");
        // And the bytes read back are the bytes written.
        let mut buf = vec![0; (want.0 - SEG_START.0) as usize];
        let mut got = 0;
        while got < buf.len() {
            let n = store
                .read_wal(Lsn(SEG_START.0 + got as u64), &mut buf[got..])
                .unwrap();
            assert!(n > 0);
            got += n;
        }
        assert_eq!(&buf[..], &input[..buf.len()]);
    }
}

#[test]
fn the_scan_starts_at_the_segment_of_the_persisted_commit_lsn() {
    let input = wal();
    let recs = records(&input);
    let dir = tempfile::tempdir().unwrap();
    let mut store = write_chunked(dir.path(), &input, 9);
    // A commit LSN in the middle of a record: the scan starts at the
    // segment's start (a page boundary) and still finds the end.
    store
        .persist(&state(SEG_START, Lsn(recs[400].start_lsn.0 + 3)))
        .unwrap();
    drop(store);
    let (store, _) = DiskStore::open(dir.path(), SEG).unwrap();
    assert_eq!(store.flush_lsn(), recs.last().unwrap().end_lsn);
}

#[test]
fn truncation_zeroes_the_rest_and_survives_a_restart() {
    let input = wal();
    let recs = records(&input);
    let dir = tempfile::tempdir().unwrap();
    let mut store = write_chunked(dir.path(), &input, 4);
    let cut = recs[1000].end_lsn;
    store.truncate_wal(cut).unwrap();
    assert_eq!(store.flush_lsn(), cut);
    drop(store);
    let (mut store, _) = DiskStore::open(dir.path(), SEG).unwrap();
    assert_eq!(store.flush_lsn(), cut);
    let seg = std::fs::read(dir.path().join(seg_name(1, SEG, true))).unwrap();
    assert_eq!(seg.len(), SEG);
    let off = (cut.0 - SEG_START.0) as usize;
    assert_eq!(&seg[..off], &input[..off]);
    assert!(seg[off..].iter().all(|b| *b == 0));
    // Writing on from the cut gives back the original WAL.
    store.write_wal(cut, &input[off..]).unwrap();
    drop(store);
    let (store, _) = DiskStore::open(dir.path(), SEG).unwrap();
    assert_eq!(store.flush_lsn(), recs.last().unwrap().end_lsn);
}

#[test]
fn segments_are_renamed_when_full_and_removed_below_a_horizon() {
    // Plain bytes: this test is about files, not records.
    const SMALL: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = DiskStore::open(dir.path(), SMALL).unwrap();
    let start = Lsn(3 * SMALL as u64 + 4096);
    store.truncate_wal(start).unwrap();
    let data: Vec<u8> = (0..(2 * SMALL + 500)).map(|i| (i % 251) as u8).collect();
    store.write_wal(start, &data).unwrap();
    let names = |d: &Path| -> Vec<String> {
        list_segments(d, SMALL)
            .unwrap()
            .into_iter()
            .map(|s| s.path.file_name().unwrap().to_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(dir.path()),
        vec![
            seg_name(3, SMALL, false),
            seg_name(4, SMALL, false),
            seg_name(5, SMALL, true)
        ]
    );
    let mut buf = vec![0; data.len()];
    let mut got = 0;
    while got < buf.len() {
        got += store
            .read_wal(Lsn(start.0 + got as u64), &mut buf[got..])
            .unwrap();
    }
    assert_eq!(buf, data);
    // Truncating back into segment 4 removes 5 and makes 4 the open one.
    store.truncate_wal(Lsn(4 * SMALL as u64 + 10)).unwrap();
    assert_eq!(
        names(dir.path()),
        vec![seg_name(3, SMALL, false), seg_name(4, SMALL, true)]
    );
    assert_eq!(
        store
            .remove_segments_below(Lsn(4 * SMALL as u64 + 5))
            .unwrap(),
        1
    );
    assert_eq!(names(dir.path()), vec![seg_name(4, SMALL, true)]);
    assert_eq!(store.start_lsn(), Lsn(4 * SMALL as u64));
    // Reading below the start gives nothing, not an error.
    assert_eq!(store.read_wal(start, &mut buf).unwrap(), 0);
    // A write anywhere but the end is refused.
    assert!(store.write_wal(Lsn(4 * SMALL as u64), b"x").is_err());
}

#[test]
fn garbage_after_the_end_is_not_taken_for_wal() {
    let input = wal();
    let recs = records(&input);
    let dir = tempfile::tempdir().unwrap();
    let end = recs[50].end_lsn;
    let upto = (end.0 - SEG_START.0) as usize;
    let mut store = write_chunked(dir.path(), &input[..upto], 5);
    // A torn write past the end: random bytes that were never acknowledged.
    let junk: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    store.write_wal(end, &junk).unwrap();
    drop(store);
    let (store, _) = DiskStore::open(dir.path(), SEG).unwrap();
    assert_eq!(store.flush_lsn(), end);
}

#[test]
fn writes_and_fsyncs_are_measured() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, writes, flushes) = (
        WAL_BYTES_WRITTEN.get(),
        WRITE_WAL_SECONDS.get_sample_count(),
        FLUSH_WAL_SECONDS.get_sample_count(),
    );
    let input = wal();
    let n = input.len().min(100_000);
    let _store = write_chunked(dir.path(), &input[..n], 7);
    // Other tests write concurrently: at least ours are counted.
    assert!(WAL_BYTES_WRITTEN.get() >= bytes + n as u64);
    assert!(WRITE_WAL_SECONDS.get_sample_count() > writes);
    assert!(FLUSH_WAL_SECONDS.get_sample_count() > flushes);
    let text = zenith_metrics::gather_text().unwrap();
    for name in [
        "walkeeper_wal_bytes_written_total",
        "walkeeper_write_wal_seconds_count",
        "walkeeper_flush_wal_seconds_count",
    ] {
        assert!(text.contains(name), "{name} not in {text}");
    }
}
