//! WAL file naming and synthetic WAL segments.
//!
//! Segment files are named `TTTTTTTTXXXXXXXXYYYYYYYY` (timeline, then the
//! segment number split into "log id" and segment within it, `XLogFileName`).

use zenith_utils::lsn::Lsn;

use crate::pg_constants::*;
use crate::waldecoder::XLogPageHeader;

/// Timeline id used by every Zenith compute (timelines are ours, not PostgreSQL's).
pub const PG_TLI: u32 = 1;

/// Segments per 4 GiB "log id" (`XLogSegmentsPerXLogId`).
pub fn segments_per_xlog_id(seg_size: usize) -> u64 {
    0x1_0000_0000u64 / seg_size as u64
}

/// `XLogFileName`.
pub fn xlog_file_name(tli: u32, segno: u64, seg_size: usize) -> String {
    let per = segments_per_xlog_id(seg_size);
    format!("{:08X}{:08X}{:08X}", tli, segno / per, segno % per)
}

/// Parse a WAL segment file name into (segment number, timeline);
/// `None` if it is not one (`IsXLogFileName`).
pub fn parse_xlog_file_name(name: &str, seg_size: usize) -> Option<(u64, u32)> {
    if name.len() != 24 || !name.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    let per = segments_per_xlog_id(seg_size);
    if seg >= per {
        return None;
    }
    Some((log * per + seg, tli))
}

/// A WAL segment of `seg_size` bytes that holds no records, only page headers
/// arranged so that a reader starting at the beginning of the page containing
/// `lsn` finds the first record exactly at `lsn`:
///
/// - a long page header at the start of the segment;
/// - a page header on the page containing `lsn`; if `lsn` is not directly
///   after that header, the header says the page starts with the tail of a
///   record (`XLP_FIRST_IS_CONTRECORD`) whose length reaches `lsn`.
///
/// This is what a compute started from a basebackup at `lsn` needs in
/// `pg_wal/` to begin writing WAL there. `lsn` must be 8-byte aligned.
pub fn generate_wal_segment(lsn: Lsn, system_id: u64, seg_size: usize) -> Vec<u8> {
    let segno = lsn.segment_number(seg_size);
    let seg_start = Lsn(segno * seg_size as u64);
    let page_start = lsn.page_lsn_in(XLOG_BLCKSZ);
    let mut seg = vec![0u8; seg_size];

    let header_for = |page: Lsn| -> XLogPageHeader {
        let long = page == seg_start;
        let hdr_size = if long {
            XLOG_SIZE_OF_XLOG_LONG_PHD
        } else {
            XLOG_SIZE_OF_XLOG_SHORT_PHD
        } as u64;
        let mut info = if long { XLP_LONG_HEADER } else { 0 };
        let mut rem_len = 0;
        if page == page_start && lsn.0 > page.0 + hdr_size {
            info |= XLP_FIRST_IS_CONTRECORD;
            rem_len = (lsn.0 - page.0 - hdr_size) as u32;
        }
        XLogPageHeader {
            xlp_magic: XLOG_PAGE_MAGIC,
            xlp_info: info,
            xlp_tli: PG_TLI,
            xlp_pageaddr: page,
            xlp_rem_len: rem_len,
            long: long.then_some((system_id, seg_size as u32, XLOG_BLCKSZ as u32)),
        }
    };
    let first = header_for(seg_start).encode();
    seg[..first.len()].copy_from_slice(&first);
    if page_start != seg_start {
        let off = (page_start.0 - seg_start.0) as usize;
        let h = header_for(page_start).encode();
        seg[off..off + h.len()].copy_from_slice(&h);
    }
    seg
}

/// Microseconds since the Postgres epoch (2000-01-01) for a Unix time.
pub fn to_pg_timestamp(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64 - POSTGRES_EPOCH_UNIX_SECS * 1_000_000,
        Err(e) => -(e.duration().as_micros() as i64) - POSTGRES_EPOCH_UNIX_SECS * 1_000_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waldecoder::WalStreamDecoder;

    #[test]
    fn file_names() {
        let seg = WAL_SEGMENT_SIZE;
        assert_eq!(xlog_file_name(1, 1, seg), "000000010000000000000001");
        assert_eq!(xlog_file_name(1, 0x1FF, seg), "0000000100000001000000FF");
        assert_eq!(
            parse_xlog_file_name("0000000100000001000000FF", seg),
            Some((0x1FF, 1))
        );
        assert_eq!(parse_xlog_file_name("000000010000000100000100", seg), None);
        assert_eq!(parse_xlog_file_name("00000001000000010000000", seg), None);
        assert_eq!(parse_xlog_file_name("00000001000000010000000G", seg), None);
    }

    /// A reader starting at the page boundary must arrive exactly at `lsn`
    /// and then find end-of-WAL (zeros), for several positions of `lsn`.
    #[test]
    fn generated_segment_positions_reader_at_lsn() {
        let seg = WAL_SEGMENT_SIZE;
        for lsn in [
            Lsn(0x0100_0028),
            Lsn(0x0100_0100),
            Lsn(0x0100_2018),
            Lsn(0x0100_2400),
            Lsn(0x0100_2000 + 24),
        ] {
            let buf = generate_wal_segment(lsn, 42, seg);
            let page_start = lsn.page_lsn_in(XLOG_BLCKSZ);
            let off = (page_start.0 % seg as u64) as usize;
            let mut dec = WalStreamDecoder::new(page_start, seg);
            dec.feed_bytes(&buf[off..off + XLOG_BLCKSZ]);
            let err = dec.poll_decode().unwrap_err();
            assert_eq!(err.lsn(), lsn, "{err}");
            assert!(err.is_end_of_wal());
        }
    }
}
