//! The streaming WAL decoder against real PostgreSQL 15 WAL (what initdb wrote),
//! fed whole, in random chunks, from a page boundary, and corrupted.

use postgres_ffi::page::PageHeader;
use postgres_ffi::pg_constants::*;
use postgres_ffi::{DecodedWALRecord, RawRecord, WalDecodeError, WalStreamDecoder};
use rand::{Rng, SeedableRng};
use zenith_utils::lsn::Lsn;

const SEG_START: Lsn = Lsn(0x0100_0000);

fn wal() -> Vec<u8> {
    zstd::decode_all(&include_bytes!("../testdata/initdb_wal_head.zst")[..]).unwrap()
}

/// Decode `input` fed in the given chunk sizes; returns the records and the
/// result of the last poll.
fn decode_chunked(
    start: Lsn,
    input: &[u8],
    mut next_chunk: impl FnMut() -> usize,
) -> (Vec<RawRecord>, Result<(), WalDecodeError>) {
    let mut dec = WalStreamDecoder::new(start, WAL_SEGMENT_SIZE);
    let mut recs = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        let n = next_chunk().clamp(1, input.len() - pos);
        dec.feed_bytes(&input[pos..pos + n]);
        pos += n;
        loop {
            match dec.poll_decode() {
                Ok(Some(r)) => recs.push(r),
                Ok(None) => break,
                Err(e) => return (recs, Err(e)),
            }
        }
    }
    (recs, Ok(()))
}

fn decode_all(input: &[u8]) -> Vec<RawRecord> {
    let (recs, res) = decode_chunked(SEG_START, input, || usize::MAX);
    res.unwrap();
    recs
}

#[test]
fn decodes_initdb_wal() {
    let input = wal();
    let recs = decode_all(&input);
    assert!(recs.len() > 5000, "only {} records", recs.len());
    assert_eq!(recs[0].start_lsn, Lsn(0x0100_0028));
    let mut prev = Lsn(0);
    let mut images = 0;
    for (i, raw) in recs.iter().enumerate() {
        assert!(raw.start_lsn.is_aligned());
        assert!(raw.end_lsn.is_aligned() && raw.end_lsn > raw.start_lsn);
        if i > 0 {
            // The next record starts at the previous end, or after a page header.
            let gap = raw.start_lsn - recs[i - 1].end_lsn;
            assert!(
                gap == 0 || gap == 24 || gap == 40,
                "gap {gap} at {}",
                raw.start_lsn
            );
        }
        let rec = DecodedWALRecord::decode(raw.data.clone(), raw.start_lsn).unwrap();
        assert_eq!(rec.header.xl_prev, prev);
        prev = raw.start_lsn;
        for blk in rec.blocks.iter().filter(|b| b.has_image) {
            let page = blk.restore_image(rec.lsn).unwrap();
            assert_eq!(page.len(), 8192);
            let hdr = PageHeader::parse(&page).unwrap();
            assert!(
                hdr.pd_lsn < rec.lsn,
                "image LSN {} not before record {}",
                hdr.pd_lsn,
                rec.lsn
            );
            if !hdr.is_new() {
                assert_eq!(hdr.pd_pagesize_version, 8192 | 4);
                assert!(hdr.pd_lower <= hdr.pd_upper && hdr.pd_upper <= hdr.pd_special);
            }
            images += 1;
        }
    }
    assert!(images > 100, "only {images} images");
}

#[test]
fn random_chunk_sizes_give_the_same_records() {
    let input = wal();
    let whole = decode_all(&input);
    for seed in 0..12u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let max = [7usize, 100, 3000, 9000, 70000][seed as usize % 5];
        let (recs, res) = decode_chunked(SEG_START, &input, || rng.gen_range(1..=max));
        res.unwrap();
        assert_eq!(recs.len(), whole.len(), "seed {seed}");
        for (a, b) in recs.iter().zip(&whole) {
            assert_eq!(
                (a.start_lsn, a.end_lsn, &a.data),
                (b.start_lsn, b.end_lsn, &b.data)
            );
        }
    }
}

#[test]
fn starting_at_a_page_boundary_skips_the_continuation() {
    let input = wal();
    let whole = decode_all(&input);
    // Find pages whose first bytes continue a record, and start there.
    let mut tested = 0;
    for page in 1..(input.len() / XLOG_BLCKSZ) {
        let off = page * XLOG_BLCKSZ;
        let info = u16::from_le_bytes([input[off + 2], input[off + 3]]);
        if info & XLP_FIRST_IS_CONTRECORD == 0 {
            continue;
        }
        let start = SEG_START + off as u64;
        let (recs, res) = decode_chunked(start, &input[off..], || 5000);
        res.unwrap();
        let first = whole.iter().position(|r| r.start_lsn > start).unwrap();
        assert_eq!(recs[0].start_lsn, whole[first].start_lsn);
        assert_eq!(recs.len(), whole.len() - first);
        tested += 1;
        if tested == 20 {
            break;
        }
    }
    assert!(tested > 0);
}

#[test]
fn starting_at_a_record_start_with_prev_link() {
    let input = wal();
    let whole = decode_all(&input);
    let r = &whole[1000];
    let off = (r.start_lsn - SEG_START) as usize;
    let mut dec =
        WalStreamDecoder::new(r.start_lsn, WAL_SEGMENT_SIZE).with_prev_record(whole[999].start_lsn);
    dec.feed_bytes(&input[off..]);
    let got = dec.poll_decode().unwrap().unwrap();
    assert_eq!(got.data, r.data);
    // A wrong prev-link is detected.
    let mut dec =
        WalStreamDecoder::new(r.start_lsn, WAL_SEGMENT_SIZE).with_prev_record(whole[998].start_lsn);
    dec.feed_bytes(&input[off..]);
    assert!(
        matches!(dec.poll_decode(), Err(WalDecodeError::BadPrevLink { lsn, .. }) if lsn == r.start_lsn)
    );
}

#[test]
fn flipped_byte_in_a_record_is_a_crc_error() {
    let input = wal();
    let whole = decode_all(&input);
    let victim = &whole[2000];
    let mut bad = input.clone();
    let off = (victim.start_lsn - SEG_START) as usize + 30;
    bad[off] ^= 0x01;
    let (recs, res) = decode_chunked(SEG_START, &bad, || 4096);
    assert_eq!(recs.len(), 2000);
    assert_eq!(
        res,
        Err(WalDecodeError::BadCrc {
            lsn: victim.start_lsn
        })
    );
}

#[test]
fn garbage_page_header_is_a_typed_error() {
    let input = wal();
    let page = 37;
    let off = page * XLOG_BLCKSZ;
    let mut bad = input.clone();
    bad[off] = 0x42;
    let (_, res) = decode_chunked(SEG_START, &bad, || 10000);
    let lsn = SEG_START + off as u64;
    assert!(
        matches!(res, Err(WalDecodeError::BadPageMagic { lsn: l, .. }) if l == lsn),
        "{res:?}"
    );

    let mut bad = input.clone();
    bad[off + 8] ^= 0x10; // xlp_pageaddr
    let (_, res) = decode_chunked(SEG_START, &bad, || 10000);
    assert!(
        matches!(res, Err(WalDecodeError::UnexpectedPageAddr { lsn: l, .. }) if l == lsn),
        "{res:?}"
    );

    let mut bad = input.clone();
    bad[off + 2] |= 0x40; // undefined xlp_info bit
    let (_, res) = decode_chunked(SEG_START, &bad, || 10000);
    assert!(
        matches!(res, Err(WalDecodeError::BadPageInfo { lsn: l, .. }) if l == lsn),
        "{res:?}"
    );
}

#[test]
fn truncated_input_waits_for_more() {
    let input = wal();
    let whole = decode_all(&input);
    let cut = (whole[300].start_lsn - SEG_START) as usize + 10;
    let (recs, res) = decode_chunked(SEG_START, &input[..cut], || 1000);
    res.unwrap();
    assert_eq!(recs.len(), 300);
}

#[test]
fn zeroed_tail_is_end_of_wal() {
    let input = wal();
    let whole = decode_all(&input);
    let end = whole[500].end_lsn;
    let mut trunc = input[..(end - SEG_START) as usize].to_vec();
    trunc.resize(trunc.len() + 4096, 0);
    let (recs, res) = decode_chunked(SEG_START, &trunc, || 1 << 20);
    assert_eq!(recs.len(), 501);
    let err = res.unwrap_err();
    assert!(err.is_end_of_wal(), "{err}");
    assert_eq!(err.lsn(), end);
}

#[test]
fn random_corruption_never_panics() {
    let input = wal();
    let input = &input[..256 * 1024];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..300 {
        let mut bad = input.to_vec();
        for _ in 0..rng.gen_range(1..8) {
            let i = rng.gen_range(0..bad.len());
            bad[i] = rng.gen();
        }
        let (recs, _res) = decode_chunked(SEG_START, &bad, || 8000);
        for r in recs {
            if let Ok(rec) = DecodedWALRecord::decode(r.data, r.start_lsn) {
                for b in rec.blocks.iter().filter(|b| b.has_image) {
                    let _ = b.restore_image(rec.lsn);
                }
            }
        }
    }
}

#[test]
fn huge_length_fields_do_not_allocate() {
    // A record header claiming ~1 GiB on a fresh page: the decoder must only
    // buffer what it received.
    let mut page =
        postgres_ffi::xlog_utils::generate_wal_segment(Lsn(0x0100_0028), 1, WAL_SEGMENT_SIZE);
    page.truncate(XLOG_BLCKSZ);
    page[40..44].copy_from_slice(&0x3fff_0000u32.to_le_bytes());
    let mut dec = WalStreamDecoder::new(SEG_START, WAL_SEGMENT_SIZE);
    dec.feed_bytes(&page);
    // Header is incomplete garbage (rmid 0, prev 0 < lsn): waits for more data.
    assert!(matches!(dec.poll_decode(), Ok(None)));
    page[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut dec = WalStreamDecoder::new(SEG_START, WAL_SEGMENT_SIZE);
    dec.feed_bytes(&page);
    assert!(matches!(
        dec.poll_decode(),
        Err(WalDecodeError::RecordTooLong { .. })
    ));
}
