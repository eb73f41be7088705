//! Redo of the pseudo-records the pageserver applies itself
//! (docs/architecture.md §6): CLOG status bits, visibility-map bit clears,
//! multixact offsets and members. Everything else goes to `postgres --wal-redo`.

use postgres_ffi::pg_constants::*;
use postgres_ffi::slru;

use crate::value::ZenithWalRecord;

/// A native record that cannot be applied to this page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot apply {what} to a {len}-byte page: {reason}")]
pub struct ApplyError {
    pub what: &'static str,
    pub len: usize,
    pub reason: String,
}

/// Apply a Rust-native record to `page` (8192 bytes) in place. `blkno` is the
/// page's block (or SLRU page) number, needed to place xids and multixacts.
pub fn apply_native(page: &mut [u8], blkno: u32, rec: &ZenithWalRecord) -> Result<(), ApplyError> {
    let len = page.len();
    let err = |what, reason: String| ApplyError { what, len, reason };
    if len != BLCKSZ as usize {
        return Err(err("record", "wrong page size".into()));
    }
    match rec {
        ZenithWalRecord::Postgres { .. } => {
            return Err(err(
                "a PostgreSQL record",
                "it needs postgres --wal-redo".into(),
            ));
        }
        ZenithWalRecord::ClogSetCommitted { xids, .. }
        | ZenithWalRecord::ClogSetAborted { xids } => {
            let status = if matches!(rec, ZenithWalRecord::ClogSetCommitted { .. }) {
                TRANSACTION_STATUS_COMMITTED
            } else {
                TRANSACTION_STATUS_ABORTED
            };
            // The pageno within the whole CLOG is segno*32 + blkno; we only
            // need the xid's position within its page, which blkno does not
            // change, but we check the xid belongs to a page with this offset.
            for &xid in xids {
                if slru::clog_page(xid) % SLRU_PAGES_PER_SEGMENT != blkno {
                    return Err(err(
                        "CLOG update",
                        format!("xid {xid} is not on page {blkno} of its segment"),
                    ));
                }
                slru::clog_set_status(page, xid, status);
            }
        }
        ZenithWalRecord::ClearVisibilityMapFlags {
            new_heap_blkno,
            old_heap_blkno,
            flags,
        } => {
            for heap_blkno in [new_heap_blkno, old_heap_blkno].into_iter().flatten() {
                if heap_blkno / HEAPBLOCKS_PER_VM_PAGE != blkno {
                    continue; // the other block's bits live on another VM page
                }
                let in_page = heap_blkno % HEAPBLOCKS_PER_VM_PAGE;
                let byte = SIZE_OF_PAGE_HEADER as usize + (in_page / 4) as usize;
                let shift = (in_page % 4) * 2;
                page[byte] &= !((flags & VISIBILITYMAP_VALID_BITS) << shift);
            }
        }
        ZenithWalRecord::MultixactOffsetCreate { mid, moff } => {
            let (pageno, off) = slru::multixact_offset_location(*mid);
            if pageno % SLRU_PAGES_PER_SEGMENT != blkno {
                return Err(err(
                    "multixact offset",
                    format!("multixact {mid} is not on page {blkno}"),
                ));
            }
            page[off..off + 4].copy_from_slice(&moff.to_le_bytes());
        }
        ZenithWalRecord::MultixactMembersCreate { moff, members } => {
            for (i, (xid, status)) in members.iter().enumerate() {
                let offset = moff.wrapping_add(i as u32);
                let (pageno, flags_off, shift, xid_off) = slru::multixact_member_location(offset);
                if pageno % SLRU_PAGES_PER_SEGMENT != blkno {
                    continue; // this member is on another page
                }
                let mut flagsval = u32::from_le_bytes([
                    page[flags_off],
                    page[flags_off + 1],
                    page[flags_off + 2],
                    page[flags_off + 3],
                ]);
                flagsval &= !(0xff << shift);
                flagsval |= (status & 0xff) << shift;
                page[flags_off..flags_off + 4].copy_from_slice(&flagsval.to_le_bytes());
                page[xid_off..xid_off + 4].copy_from_slice(&xid.to_le_bytes());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clog_bits() {
        let mut page = vec![0u8; 8192];
        apply_native(
            &mut page,
            0,
            &ZenithWalRecord::ClogSetCommitted {
                xids: vec![3, 4],
                timestamp: 0,
            },
        )
        .unwrap();
        apply_native(
            &mut page,
            0,
            &ZenithWalRecord::ClogSetAborted { xids: vec![5] },
        )
        .unwrap();
        assert_eq!(
            slru::clog_get_status(&page, 3),
            TRANSACTION_STATUS_COMMITTED
        );
        assert_eq!(
            slru::clog_get_status(&page, 4),
            TRANSACTION_STATUS_COMMITTED
        );
        assert_eq!(slru::clog_get_status(&page, 5), TRANSACTION_STATUS_ABORTED);
        assert_eq!(
            slru::clog_get_status(&page, 6),
            TRANSACTION_STATUS_IN_PROGRESS
        );
        // An xid of another page is refused.
        assert!(apply_native(
            &mut page,
            0,
            &ZenithWalRecord::ClogSetAborted { xids: vec![40000] }
        )
        .is_err());
        apply_native(
            &mut page,
            1,
            &ZenithWalRecord::ClogSetAborted { xids: vec![40000] },
        )
        .unwrap();
    }

    #[test]
    fn vm_bits() {
        let mut page = vec![0u8; 8192];
        page[24] = 0xff; // heap blocks 0..4 all-visible and all-frozen
        let rec = ZenithWalRecord::ClearVisibilityMapFlags {
            new_heap_blkno: Some(1),
            old_heap_blkno: Some(HEAPBLOCKS_PER_VM_PAGE + 1),
            flags: VISIBILITYMAP_VALID_BITS,
        };
        apply_native(&mut page, 0, &rec).unwrap();
        assert_eq!(page[24], 0b1111_0011);
        let rec = ZenithWalRecord::ClearVisibilityMapFlags {
            new_heap_blkno: Some(2),
            old_heap_blkno: None,
            flags: VISIBILITYMAP_ALL_FROZEN,
        };
        apply_native(&mut page, 0, &rec).unwrap();
        assert_eq!(page[24], 0b1101_0011);
    }

    #[test]
    fn multixact() {
        let mut page = vec![0u8; 8192];
        apply_native(
            &mut page,
            0,
            &ZenithWalRecord::MultixactOffsetCreate { mid: 3, moff: 77 },
        )
        .unwrap();
        assert_eq!(&page[12..16], &77u32.to_le_bytes());
        let rec = ZenithWalRecord::MultixactMembersCreate {
            moff: 3,
            members: vec![(1000, 1), (1001, 4)],
        };
        apply_native(&mut page, 0, &rec).unwrap();
        // member 3: group 0, shift 24, xid at 4 + 12; member 4: group 1 (offset 20), shift 0, xid at 24.
        assert_eq!(page[3], 1);
        assert_eq!(&page[16..20], &1000u32.to_le_bytes());
        assert_eq!(page[20], 4);
        assert_eq!(&page[24..28], &1001u32.to_le_bytes());
    }
}
