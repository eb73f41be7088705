//! SLRU geometry (`slru.c`, `clog.c`, `multixact.c`, `commit_ts.c`): which
//! page and segment file hold a transaction's status or a multixact's data.
//!
//! SLRU pages are 8 KiB; 32 pages make a segment file named with (at least)
//! four upper-case hex digits of the segment number (`0000`, `000A`).

use crate::pg_constants::*;

/// The SLRUs the pageserver stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlruKind {
    Clog,
    MultiXactOffsets,
    MultiXactMembers,
}

impl SlruKind {
    /// Directory under PGDATA.
    pub fn dir(self) -> &'static str {
        match self {
            SlruKind::Clog => "pg_xact",
            SlruKind::MultiXactOffsets => "pg_multixact/offsets",
            SlruKind::MultiXactMembers => "pg_multixact/members",
        }
    }

    /// Wire/storage tag.
    pub fn to_u8(self) -> u8 {
        match self {
            SlruKind::Clog => 0,
            SlruKind::MultiXactOffsets => 1,
            SlruKind::MultiXactMembers => 2,
        }
    }

    pub fn from_u8(v: u8) -> Option<SlruKind> {
        match v {
            0 => Some(SlruKind::Clog),
            1 => Some(SlruKind::MultiXactOffsets),
            2 => Some(SlruKind::MultiXactMembers),
            _ => None,
        }
    }
}

/// Segment file name for `segno` (`SlruFileName`: `%04X`).
pub fn slru_segment_filename(segno: u32) -> String {
    format!("{segno:04X}")
}

/// Parse an SLRU segment file name (4 to 6 upper-case hex digits).
pub fn parse_slru_segment_filename(name: &str) -> Option<u32> {
    if !(4..=6).contains(&name.len())
        || !name
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
    {
        return None;
    }
    u32::from_str_radix(name, 16).ok()
}

/// (segment number, page within the segment) of an SLRU page number.
pub fn slru_page_location(pageno: u32) -> (u32, u32) {
    (
        pageno / SLRU_PAGES_PER_SEGMENT,
        pageno % SLRU_PAGES_PER_SEGMENT,
    )
}

/// CLOG page holding `xid`'s status.
pub fn clog_page(xid: u32) -> u32 {
    xid / CLOG_XACTS_PER_PAGE
}

/// Byte within its CLOG page and bit shift within that byte for `xid`.
pub fn clog_byte_and_shift(xid: u32) -> (usize, u8) {
    let in_page = xid % CLOG_XACTS_PER_PAGE;
    (
        (in_page / CLOG_XACTS_PER_BYTE) as usize,
        ((in_page % CLOG_XACTS_PER_BYTE) as u8) * CLOG_BITS_PER_XACT,
    )
}

/// Set the 2-bit status of `xid` on its CLOG page.
pub fn clog_set_status(page: &mut [u8], xid: u32, status: u8) {
    let (byte, shift) = clog_byte_and_shift(xid);
    if let Some(b) = page.get_mut(byte) {
        *b = (*b & !(0x03 << shift)) | ((status & 0x03) << shift);
    }
}

/// The 2-bit status of `xid` on its CLOG page.
pub fn clog_get_status(page: &[u8], xid: u32) -> u8 {
    let (byte, shift) = clog_byte_and_shift(xid);
    page.get(byte).map(|b| (b >> shift) & 0x03).unwrap_or(0)
}

/// MultiXact offsets page and byte offset of `multi`'s entry.
pub fn multixact_offset_location(multi: u32) -> (u32, usize) {
    (
        multi / MULTIXACT_OFFSETS_PER_PAGE,
        ((multi % MULTIXACT_OFFSETS_PER_PAGE) * 4) as usize,
    )
}

/// Location of member `offset` in pg_multixact/members: (page, byte offset of
/// its group's 32-bit flags word, bit shift of its flags in that word, byte
/// offset of its xid) — `MXOffsetToFlagsOffset` and friends.
pub fn multixact_member_location(offset: u32) -> (u32, usize, u32, usize) {
    let pageno = offset / MULTIXACT_MEMBERS_PER_PAGE;
    let group_in_page =
        (offset / MULTIXACT_MEMBERS_PER_MEMBERGROUP) % MULTIXACT_MEMBERGROUPS_PER_PAGE;
    let group_off = (group_in_page * MULTIXACT_MEMBERGROUP_SIZE) as usize;
    let member_in_group = offset % MULTIXACT_MEMBERS_PER_MEMBERGROUP;
    let flags_off = group_off;
    let bitshift = member_in_group * MXACT_MEMBER_BITS_PER_XACT;
    let xid_off =
        group_off + MULTIXACT_MEMBERS_PER_MEMBERGROUP as usize + (member_in_group * 4) as usize;
    (pageno, flags_off, bitshift, xid_off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clog_geometry() {
        assert_eq!(CLOG_XACTS_PER_PAGE, 32768);
        assert_eq!(clog_page(32767), 0);
        assert_eq!(clog_page(32768), 1);
        assert_eq!(clog_byte_and_shift(5), (1, 2));
        let mut page = vec![0u8; 8192];
        clog_set_status(&mut page, 5, TRANSACTION_STATUS_COMMITTED);
        clog_set_status(&mut page, 6, TRANSACTION_STATUS_ABORTED);
        assert_eq!(clog_get_status(&page, 5), TRANSACTION_STATUS_COMMITTED);
        assert_eq!(clog_get_status(&page, 6), TRANSACTION_STATUS_ABORTED);
        assert_eq!(page[1], 0b0010_0100);
    }

    #[test]
    fn segment_names() {
        assert_eq!(slru_segment_filename(0), "0000");
        assert_eq!(slru_segment_filename(0x1A), "001A");
        assert_eq!(parse_slru_segment_filename("001A"), Some(0x1A));
        assert_eq!(parse_slru_segment_filename("001a"), None);
        assert_eq!(parse_slru_segment_filename("01"), None);
        assert_eq!(slru_page_location(33), (1, 1));
    }

    #[test]
    fn multixact_geometry() {
        assert_eq!(MULTIXACT_MEMBERGROUPS_PER_PAGE, 409);
        assert_eq!(MULTIXACT_MEMBERS_PER_PAGE, 1636);
        assert_eq!(multixact_offset_location(2049), (1, 4));
        // member 5: group 1 (offset 20), second member: shift 8, xid at 20+4+4.
        assert_eq!(multixact_member_location(5), (0, 20, 8, 28));
    }
}
