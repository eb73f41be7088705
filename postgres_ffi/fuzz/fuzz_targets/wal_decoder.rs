//! Fuzz the WAL stream decoder, record decoding and image restoration.
//!
//! The input's first byte picks a chunk size; the rest is fed as WAL starting
//! at a segment boundary. With a seed corpus of real WAL (scripts/fuzz.sh)
//! the fuzzer mutates valid pages and records. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postgres_ffi::controlfile::ControlFileData;
use postgres_ffi::{DecodedWALRecord, WalStreamDecoder, WAL_SEGMENT_SIZE};
use zenith_utils::lsn::Lsn;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let chunk = (data[0] as usize + 1) * 37;
    let wal = &data[1..];
    let mut dec = WalStreamDecoder::new(Lsn(0x0100_0000), WAL_SEGMENT_SIZE);
    for piece in wal.chunks(chunk) {
        dec.feed_bytes(piece);
        loop {
            match dec.poll_decode() {
                Ok(Some(raw)) => {
                    if let Ok(rec) = DecodedWALRecord::decode(raw.data, raw.start_lsn) {
                        for b in rec.blocks.iter().filter(|b| b.has_image) {
                            let _ = b.restore_image(rec.lsn);
                        }
                        let _ = postgres_ffi::walrecord::heap_vm_clears(&rec);
                        let _ = postgres_ffi::walrecord::XlTblspc::decode(&rec);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = ControlFileData::decode(wal);
});
