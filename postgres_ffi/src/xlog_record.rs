//! The inside of a WAL record: `XLogRecord` header, block references, main data.
//!
//! [`DecodedWALRecord::decode`] follows `DecodeXLogRecord` of PostgreSQL 15's
//! `xlogreader.c`, with the same validity checks. Block images can be restored
//! to full pages with [`DecodedBkpBlock::restore_image`], decompressing pglz,
//! lz4 or zstd images. All slices of the record share its [`Bytes`] buffer.

use bytes::{Buf, Bytes};
use smallvec::SmallVec;
use zenith_utils::lsn::Lsn;

use crate::pg_constants::*;
use crate::relfile::RelFileNode;
use crate::wal_decode_error::WalDecodeError;

/// `XLogRecord`: the fixed 24-byte header of every WAL record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XLogRecordHeader {
    pub xl_tot_len: u32,
    pub xl_xid: u32,
    pub xl_prev: Lsn,
    pub xl_info: u8,
    pub xl_rmid: u8,
    pub xl_crc: u32,
}

impl XLogRecordHeader {
    /// Parse the header at the start of `buf`; `None` if it is too short.
    pub fn parse(buf: &[u8]) -> Option<XLogRecordHeader> {
        if buf.len() < XLOG_SIZE_OF_XLOG_RECORD {
            return None;
        }
        let mut b = buf;
        let xl_tot_len = b.get_u32_le();
        let xl_xid = b.get_u32_le();
        let xl_prev = Lsn(b.get_u64_le());
        let xl_info = b.get_u8();
        let xl_rmid = b.get_u8();
        b.advance(2);
        let xl_crc = b.get_u32_le();
        Some(XLogRecordHeader {
            xl_tot_len,
            xl_xid,
            xl_prev,
            xl_info,
            xl_rmid,
            xl_crc,
        })
    }

    /// Serialize the header (24 bytes).
    pub fn encode(&self) -> [u8; XLOG_SIZE_OF_XLOG_RECORD] {
        let mut out = [0u8; XLOG_SIZE_OF_XLOG_RECORD];
        out[0..4].copy_from_slice(&self.xl_tot_len.to_le_bytes());
        out[4..8].copy_from_slice(&self.xl_xid.to_le_bytes());
        out[8..16].copy_from_slice(&self.xl_prev.0.to_le_bytes());
        out[16] = self.xl_info;
        out[17] = self.xl_rmid;
        out[20..24].copy_from_slice(&self.xl_crc.to_le_bytes());
        out
    }

    /// The resource manager's part of `xl_info`.
    pub fn rmgr_info(&self) -> u8 {
        self.xl_info & XLR_RMGR_INFO_MASK
    }
}

/// CRC32C of a record as PostgreSQL computes it: the data after the header,
/// then the header up to `xl_crc`.
pub fn record_crc(rec: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&rec[XLOG_SIZE_OF_XLOG_RECORD..]);
    crc32c::crc32c_append(crc, &rec[..XLOG_RECORD_CRC_OFFS])
}

/// True if `rec` (a whole record, header included) carries a correct CRC.
pub fn record_crc_ok(rec: &[u8]) -> bool {
    if rec.len() < XLOG_SIZE_OF_XLOG_RECORD {
        return false;
    }
    let stored = u32::from_le_bytes([rec[20], rec[21], rec[22], rec[23]]);
    record_crc(rec) == stored
}

/// How a block image is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageCompression {
    Pglz,
    Lz4,
    Zstd,
}

impl ImageCompression {
    pub fn name(self) -> &'static str {
        match self {
            ImageCompression::Pglz => "pglz",
            ImageCompression::Lz4 => "lz4",
            ImageCompression::Zstd => "zstd",
        }
    }
}

/// One block reference of a record (`DecodedBkpBlock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBkpBlock {
    pub block_id: u8,
    pub rnode: RelFileNode,
    pub forknum: u8,
    pub blkno: u32,
    /// The `fork_flags` byte (`BKPBLOCK_*`).
    pub flags: u8,
    pub has_image: bool,
    /// The image must be restored during redo (not only for consistency checks).
    pub apply_image: bool,
    pub will_init: bool,
    pub hole_offset: u16,
    pub hole_length: u16,
    pub bimg_len: u16,
    pub bimg_info: u8,
    /// The stored image bytes (possibly compressed, hole removed).
    pub image: Bytes,
    /// Length of the block's rmgr data.
    pub data_len: u16,
    /// The block's rmgr data.
    pub data: Bytes,
}

impl DecodedBkpBlock {
    /// Compression of the image, if any.
    pub fn compression(&self) -> Option<ImageCompression> {
        if self.bimg_info & BKPIMAGE_COMPRESS_PGLZ != 0 {
            Some(ImageCompression::Pglz)
        } else if self.bimg_info & BKPIMAGE_COMPRESS_LZ4 != 0 {
            Some(ImageCompression::Lz4)
        } else if self.bimg_info & BKPIMAGE_COMPRESS_ZSTD != 0 {
            Some(ImageCompression::Zstd)
        } else {
            None
        }
    }

    /// Rebuild the full 8 KiB page from the image (`RestoreBlockImage`).
    pub fn restore_image(&self, lsn: Lsn) -> Result<Bytes, WalDecodeError> {
        let err = |reason: String| WalDecodeError::InvalidRecord { lsn, reason };
        if !self.has_image {
            return Err(err(format!("block {} has no image", self.block_id)));
        }
        let blcksz = BLCKSZ as usize;
        let want = blcksz - self.hole_length as usize;
        let decompressed;
        let body: &[u8] = match self.compression() {
            None => &self.image,
            Some(method) => {
                let mut out = vec![0u8; want];
                let n = match method {
                    ImageCompression::Pglz => crate::pglz::decompress(&self.image, &mut out)
                        .map_err(|e| err(format!("pglz: {e}")))?,
                    ImageCompression::Lz4 => {
                        lz4_flex::block::decompress_into(&self.image, &mut out)
                            .map_err(|e| err(format!("lz4: {e}")))?
                    }
                    ImageCompression::Zstd => {
                        zstd::bulk::decompress_to_buffer(&self.image, &mut out[..])
                            .map_err(|e| err(format!("zstd: {e}")))?
                    }
                };
                if n != want {
                    return Err(err(format!(
                        "compressed image of block {} decompressed to {n} bytes, expected {want}",
                        self.block_id
                    )));
                }
                decompressed = out;
                &decompressed
            }
        };
        if body.len() != want {
            return Err(err(format!(
                "image of block {} is {} bytes, expected {want}",
                self.block_id,
                body.len()
            )));
        }
        let hole_off = self.hole_offset as usize;
        let hole_end = hole_off + self.hole_length as usize;
        if hole_end > blcksz {
            return Err(err("image hole extends past the page".into()));
        }
        let mut page = Vec::with_capacity(blcksz);
        page.extend_from_slice(&body[..hole_off]);
        page.resize(hole_end, 0);
        page.extend_from_slice(&body[hole_off..]);
        Ok(Bytes::from(page))
    }
}

/// A WAL record split into its parts (`DecodedXLogRecord`).
#[derive(Debug, Clone)]
pub struct DecodedWALRecord {
    pub lsn: Lsn,
    pub header: XLogRecordHeader,
    /// Block references in increasing `block_id` order (unused ids omitted).
    pub blocks: SmallVec<[DecodedBkpBlock; 2]>,
    pub main_data: Bytes,
    pub origin: Option<u16>,
    pub toplevel_xid: Option<u32>,
    /// The complete record, header included.
    pub record: Bytes,
}

impl DecodedWALRecord {
    /// Resource manager id.
    pub fn rmid(&self) -> u8 {
        self.header.xl_rmid
    }

    /// `xl_info`.
    pub fn info(&self) -> u8 {
        self.header.xl_info
    }

    /// `xl_xid`.
    pub fn xid(&self) -> u32 {
        self.header.xl_xid
    }

    /// Total length of block images (`fpi_len` as pg_waldump reports it).
    pub fn fpi_len(&self) -> u32 {
        self.blocks
            .iter()
            .filter(|b| b.has_image)
            .map(|b| b.bimg_len as u32)
            .sum()
    }

    /// The block reference with this id.
    pub fn block(&self, block_id: u8) -> Option<&DecodedBkpBlock> {
        self.blocks.iter().find(|b| b.block_id == block_id)
    }

    /// Split a whole record (as returned by the stream decoder) into its parts.
    pub fn decode(record: Bytes, lsn: Lsn) -> Result<DecodedWALRecord, WalDecodeError> {
        let short = || WalDecodeError::InvalidRecord {
            lsn,
            reason: "record with invalid length".into(),
        };
        let bad = |reason: String| WalDecodeError::InvalidRecord { lsn, reason };
        let header = XLogRecordHeader::parse(&record).ok_or_else(short)?;
        if header.xl_tot_len as usize != record.len() {
            return Err(bad(format!(
                "xl_tot_len {} does not match record size {}",
                header.xl_tot_len,
                record.len()
            )));
        }
        let mut p = &record[XLOG_SIZE_OF_XLOG_RECORD..];
        let mut remaining = p.len();
        let mut datatotal: usize = 0;
        let mut blocks: SmallVec<[DecodedBkpBlock; 2]> = SmallVec::new();
        let mut main_data_len: usize = 0;
        let mut origin = None;
        let mut toplevel_xid = None;
        let mut last_rnode: Option<RelFileNode> = None;
        let mut max_block_id: i32 = -1;

        macro_rules! need {
            ($n:expr) => {
                if remaining < $n {
                    return Err(short());
                }
                remaining -= $n;
            };
        }

        while remaining > datatotal {
            need!(1);
            let block_id = p.get_u8();
            match block_id {
                XLR_BLOCK_ID_DATA_SHORT => {
                    need!(1);
                    main_data_len = p.get_u8() as usize;
                    datatotal += main_data_len;
                    break; // main data is always last in the headers
                }
                XLR_BLOCK_ID_DATA_LONG => {
                    need!(4);
                    main_data_len = p.get_u32_le() as usize;
                    datatotal += main_data_len;
                    break;
                }
                XLR_BLOCK_ID_ORIGIN => {
                    need!(2);
                    origin = Some(p.get_u16_le());
                }
                XLR_BLOCK_ID_TOPLEVEL_XID => {
                    need!(4);
                    toplevel_xid = Some(p.get_u32_le());
                }
                id if id <= XLR_MAX_BLOCK_ID => {
                    if (id as i32) <= max_block_id {
                        return Err(bad(format!("out-of-order block_id {id}")));
                    }
                    max_block_id = id as i32;
                    need!(3);
                    let fork_flags = p.get_u8();
                    let data_len = p.get_u16_le();
                    let has_image = fork_flags & BKPBLOCK_HAS_IMAGE != 0;
                    let has_data = fork_flags & BKPBLOCK_HAS_DATA != 0;
                    if has_data && data_len == 0 {
                        return Err(bad("BKPBLOCK_HAS_DATA set, but no data included".into()));
                    }
                    if !has_data && data_len != 0 {
                        return Err(bad(format!(
                            "BKPBLOCK_HAS_DATA not set, but data length is {data_len}"
                        )));
                    }
                    datatotal += data_len as usize;
                    let mut blk = DecodedBkpBlock {
                        block_id: id,
                        rnode: RelFileNode::default(),
                        forknum: fork_flags & BKPBLOCK_FORK_MASK,
                        blkno: 0,
                        flags: fork_flags,
                        has_image,
                        apply_image: false,
                        will_init: fork_flags & BKPBLOCK_WILL_INIT != 0,
                        hole_offset: 0,
                        hole_length: 0,
                        bimg_len: 0,
                        bimg_info: 0,
                        image: Bytes::new(),
                        data_len,
                        data: Bytes::new(),
                    };
                    if has_image {
                        need!(5);
                        blk.bimg_len = p.get_u16_le();
                        blk.hole_offset = p.get_u16_le();
                        blk.bimg_info = p.get_u8();
                        blk.apply_image = blk.bimg_info & BKPIMAGE_APPLY != 0;
                        let compressed = blk.bimg_info & BKPIMAGE_COMPRESSED_MASK != 0;
                        let has_hole = blk.bimg_info & BKPIMAGE_HAS_HOLE != 0;
                        if compressed {
                            if has_hole {
                                need!(2);
                                blk.hole_length = p.get_u16_le();
                            }
                        } else {
                            blk.hole_length = BLCKSZ.wrapping_sub(blk.bimg_len);
                        }
                        datatotal += blk.bimg_len as usize;
                        if has_hole
                            && (blk.hole_offset == 0
                                || blk.hole_length == 0
                                || blk.bimg_len == BLCKSZ)
                        {
                            return Err(bad(format!(
                                "BKPIMAGE_HAS_HOLE set, but hole offset {} length {} block image length {}",
                                blk.hole_offset, blk.hole_length, blk.bimg_len
                            )));
                        }
                        if !has_hole && (blk.hole_offset != 0 || blk.hole_length != 0) {
                            return Err(bad(format!(
                                "BKPIMAGE_HAS_HOLE not set, but hole offset {} length {}",
                                blk.hole_offset, blk.hole_length
                            )));
                        }
                        if compressed && blk.bimg_len == BLCKSZ {
                            return Err(bad(format!(
                                "BKPIMAGE_COMPRESSED set, but block image length {}",
                                blk.bimg_len
                            )));
                        }
                        if !has_hole && !compressed && blk.bimg_len != BLCKSZ {
                            return Err(bad(format!(
                                "neither BKPIMAGE_HAS_HOLE nor BKPIMAGE_COMPRESSED set, but block image length is {}",
                                blk.bimg_len
                            )));
                        }
                        if blk.hole_offset as u32 + blk.hole_length as u32 > BLCKSZ as u32 {
                            return Err(bad("block image hole extends past the page".into()));
                        }
                    }
                    if fork_flags & BKPBLOCK_SAME_REL == 0 {
                        need!(12);
                        let rnode = RelFileNode {
                            spcnode: p.get_u32_le(),
                            dbnode: p.get_u32_le(),
                            relnode: p.get_u32_le(),
                        };
                        blk.rnode = rnode;
                        last_rnode = Some(rnode);
                    } else {
                        blk.rnode = last_rnode.ok_or_else(|| {
                            bad("BKPBLOCK_SAME_REL set but no previous rel".into())
                        })?;
                    }
                    need!(4);
                    blk.blkno = p.get_u32_le();
                    // PostgreSQL never registers InvalidBlockNumber; a
                    // reader that trusted it would compute `blkno + 1`
                    // (a relation size) with an overflow.
                    if blk.blkno == INVALID_BLOCK_NUMBER {
                        return Err(bad(format!(
                            "block {id} references InvalidBlockNumber ({INVALID_BLOCK_NUMBER:#X})"
                        )));
                    }
                    blocks.push(blk);
                }
                other => return Err(bad(format!("invalid block_id {other}"))),
            }
        }
        if remaining != datatotal {
            return Err(short());
        }

        // Block images and data follow the headers, then the main data.
        let mut off = record.len() - remaining;
        for blk in blocks.iter_mut() {
            if blk.has_image {
                let n = blk.bimg_len as usize;
                blk.image = record.slice(off..off + n);
                off += n;
            }
            let n = blk.data_len as usize;
            if n > 0 {
                blk.data = record.slice(off..off + n);
                off += n;
            }
        }
        let main_data = record.slice(off..off + main_data_len);
        off += main_data_len;
        debug_assert_eq!(off, record.len());

        Ok(DecodedWALRecord {
            lsn,
            header,
            blocks,
            main_data,
            origin,
            toplevel_xid,
            record,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record with one block reference (no image, no data) and no main
    /// data, as XLogRecordAssemble lays it out.
    fn record_with_block(blkno: u32) -> Bytes {
        let mut body = vec![
            0u8, /* block id */
            0,   /* fork, no flags */
            0, 0, /* data len */
        ];
        for v in [1663u32, 5, 16384, blkno] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let hdr = XLogRecordHeader {
            xl_tot_len: (XLOG_SIZE_OF_XLOG_RECORD + body.len()) as u32,
            xl_xid: 0,
            xl_prev: Lsn(0),
            xl_info: 0,
            xl_rmid: 10,
            xl_crc: 0,
        };
        let mut rec = hdr.encode().to_vec();
        rec.extend_from_slice(&body);
        let crc = record_crc(&rec);
        rec[20..24].copy_from_slice(&crc.to_le_bytes());
        Bytes::from(rec)
    }

    #[test]
    fn invalid_block_number_is_refused() {
        let ok = DecodedWALRecord::decode(record_with_block(0xFFFF_FFFE), Lsn(0x100)).unwrap();
        assert_eq!(ok.blocks[0].blkno, 0xFFFF_FFFE);
        let e = DecodedWALRecord::decode(record_with_block(u32::MAX), Lsn(0x100)).unwrap_err();
        assert!(e.to_string().contains("InvalidBlockNumber"), "{e}");
    }
}
