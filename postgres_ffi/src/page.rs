//! Relation page header (`PageHeaderData`, `bufpage.h`) and page helpers.

use crate::pg_constants::*;
use zenith_utils::lsn::Lsn;

/// `PageHeaderData` (the first 24 bytes of every relation page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageHeader {
    /// `pd_lsn`: LSN of the last change (stored as two 32-bit halves, high first).
    pub pd_lsn: Lsn,
    pub pd_checksum: u16,
    pub pd_flags: u16,
    pub pd_lower: u16,
    pub pd_upper: u16,
    pub pd_special: u16,
    pub pd_pagesize_version: u16,
    pub pd_prune_xid: u32,
}

impl PageHeader {
    /// Parse the header of `page`; `None` if it is shorter than a header.
    pub fn parse(page: &[u8]) -> Option<PageHeader> {
        if page.len() < SIZE_OF_PAGE_HEADER as usize {
            return None;
        }
        let u16at = |o: usize| u16::from_le_bytes([page[o], page[o + 1]]);
        let u32at = |o: usize| u32::from_le_bytes([page[o], page[o + 1], page[o + 2], page[o + 3]]);
        Some(PageHeader {
            pd_lsn: Lsn(((u32at(0) as u64) << 32) | u32at(4) as u64),
            pd_checksum: u16at(8),
            pd_flags: u16at(10),
            pd_lower: u16at(12),
            pd_upper: u16at(14),
            pd_special: u16at(16),
            pd_pagesize_version: u16at(18),
            pd_prune_xid: u32at(20),
        })
    }

    /// True for an all-zeros ("new") page header.
    pub fn is_new(&self) -> bool {
        self.pd_upper == 0
    }
}

/// Read `pd_lsn` of a page.
pub fn page_get_lsn(page: &[u8]) -> Option<Lsn> {
    PageHeader::parse(page).map(|h| h.pd_lsn)
}

/// Set `pd_lsn` of a page (no-op on a buffer shorter than 8 bytes).
pub fn page_set_lsn(page: &mut [u8], lsn: Lsn) {
    if page.len() >= 8 {
        page[0..4].copy_from_slice(&((lsn.0 >> 32) as u32).to_le_bytes());
        page[4..8].copy_from_slice(&(lsn.0 as u32).to_le_bytes());
    }
}

/// An empty initialized page with `special_size` bytes of special space
/// (`PageInit`).
pub fn page_init(special_size: u16) -> Vec<u8> {
    let mut p = vec![0u8; BLCKSZ as usize];
    let special = BLCKSZ - special_size;
    p[12..14].copy_from_slice(&SIZE_OF_PAGE_HEADER.to_le_bytes());
    p[14..16].copy_from_slice(&special.to_le_bytes());
    p[16..18].copy_from_slice(&special.to_le_bytes());
    p[18..20].copy_from_slice(&(BLCKSZ | PG_PAGE_LAYOUT_VERSION as u16).to_le_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_roundtrip_and_init() {
        let mut p = page_init(0);
        let h = PageHeader::parse(&p).unwrap();
        assert_eq!(h.pd_lower, 24);
        assert_eq!(h.pd_upper, 8192);
        assert_eq!(h.pd_pagesize_version, 8192 | 4);
        page_set_lsn(&mut p, Lsn(0x1_0000_2345));
        assert_eq!(page_get_lsn(&p), Some(Lsn(0x1_0000_2345)));
        assert!(PageHeader::parse(&[0u8; 10]).is_none());
    }
}
