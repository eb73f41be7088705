//! Streaming WAL decoder: turns a WAL byte stream into whole records.
//!
//! [`WalStreamDecoder`] accepts WAL bytes in chunks of any size (as they
//! arrive over a replication connection or are read from segment files),
//! starting at a known LSN, and yields complete records with their start LSN
//! and end LSN. It follows PostgreSQL 15's `xlogreader.c`:
//!
//! - every WAL page starts with a page header (long on the first page of a
//!   segment); its magic, flags and page address are checked;
//! - records start on 8-byte boundaries and may span pages and segments; the
//!   pages that carry the rest of a record have `XLP_FIRST_IS_CONTRECORD` set
//!   and `xlp_rem_len` equal to the number of bytes still missing;
//! - each record's header (length, resource manager, prev-link) is validated
//!   as soon as it is complete, and its CRC32C when the record is;
//! - a decoder started at a page boundary skips the tail of a record that
//!   began before it (like `XLogFindNextRecord`).
//!
//! The end LSN of a record follows PostgreSQL's convention: the 8-byte aligned
//! position after it (`EndRecPtr`), which may be a page boundary; for an
//! `XLOG_SWITCH` record it is the start of the next segment, and the rest of
//! the segment is skipped. A page flagged `XLP_FIRST_IS_OVERWRITE_CONTRECORD`
//! while a record is being assembled means that record was never completed:
//! it is dropped and decoding resumes after that page's header.
//!
//! Invariants: no allocation is sized from a length field (record buffers grow
//! with the bytes actually received); every inconsistency is a
//! [`WalDecodeError`] naming the LSN, never a panic. After an error the decoder
//! must be discarded. The format is described in `docs/postgres_ffi.md`.

use bytes::{Buf, Bytes, BytesMut};
use zenith_utils::lsn::Lsn;

use crate::pg_constants::*;
pub use crate::wal_decode_error::WalDecodeError;
use crate::xlog_record::XLogRecordHeader;

/// Largest record this decoder accepts (`MaxAllocSize`, as PostgreSQL's reader).
pub const MAX_RECORD_SIZE: u32 = 0x3fff_ffff;

/// A decoded WAL page header (`XLogPageHeaderData`, plus the long fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XLogPageHeader {
    pub xlp_magic: u16,
    pub xlp_info: u16,
    pub xlp_tli: u32,
    pub xlp_pageaddr: Lsn,
    pub xlp_rem_len: u32,
    /// `xlp_sysid`, `xlp_seg_size`, `xlp_xlog_blcksz` of a long header.
    pub long: Option<(u64, u32, u32)>,
}

impl XLogPageHeader {
    /// Parse the header at the start of `buf` (which must hold at least
    /// [`XLOG_SIZE_OF_XLOG_SHORT_PHD`] bytes, and the long size if the long
    /// flag is set). Returns `None` if `buf` is too short.
    pub fn parse(buf: &[u8]) -> Option<XLogPageHeader> {
        if buf.len() < XLOG_SIZE_OF_XLOG_SHORT_PHD {
            return None;
        }
        let mut b = buf;
        let xlp_magic = b.get_u16_le();
        let xlp_info = b.get_u16_le();
        let xlp_tli = b.get_u32_le();
        let xlp_pageaddr = Lsn(b.get_u64_le());
        let xlp_rem_len = b.get_u32_le();
        let long = if xlp_info & XLP_LONG_HEADER != 0 {
            if buf.len() < XLOG_SIZE_OF_XLOG_LONG_PHD {
                return None;
            }
            let mut l = &buf[XLOG_SIZE_OF_XLOG_SHORT_PHD..];
            Some((l.get_u64_le(), l.get_u32_le(), l.get_u32_le()))
        } else {
            None
        };
        Some(XLogPageHeader {
            xlp_magic,
            xlp_info,
            xlp_tli,
            xlp_pageaddr,
            xlp_rem_len,
            long,
        })
    }

    /// Size of this header on the page.
    pub fn size(&self) -> usize {
        if self.long.is_some() {
            XLOG_SIZE_OF_XLOG_LONG_PHD
        } else {
            XLOG_SIZE_OF_XLOG_SHORT_PHD
        }
    }

    /// Serialize (short or long, according to `long`).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(XLOG_SIZE_OF_XLOG_LONG_PHD);
        v.extend_from_slice(&self.xlp_magic.to_le_bytes());
        v.extend_from_slice(&self.xlp_info.to_le_bytes());
        v.extend_from_slice(&self.xlp_tli.to_le_bytes());
        v.extend_from_slice(&self.xlp_pageaddr.0.to_le_bytes());
        v.extend_from_slice(&self.xlp_rem_len.to_le_bytes());
        v.extend_from_slice(&[0u8; 4]);
        if let Some((sysid, seg_size, blcksz)) = self.long {
            v.extend_from_slice(&sysid.to_le_bytes());
            v.extend_from_slice(&seg_size.to_le_bytes());
            v.extend_from_slice(&blcksz.to_le_bytes());
        }
        v
    }
}

/// A complete WAL record as it appeared in the stream.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// LSN of the record's first byte (`ReadRecPtr`).
    pub start_lsn: Lsn,
    /// 8-byte aligned LSN after the record (`EndRecPtr`).
    pub end_lsn: Lsn,
    /// The record bytes, header included, with page headers removed.
    pub data: Bytes,
}

enum State {
    /// Positioned at the start of a record (or at a page boundary).
    WaitingForRecord,
    /// Collecting the bytes of a record that spans pages.
    Reassembling {
        start_lsn: Lsn,
        total_len: u32,
        /// Bytes still missing.
        remaining: u32,
        buf: BytesMut,
        header_checked: bool,
        /// Skipping the tail of a record that began before our start.
        discard: bool,
    },
}

/// Decodes a WAL byte stream into records. See the module documentation.
pub struct WalStreamDecoder {
    /// LSN of `inputbuf[0]`.
    lsn: Lsn,
    seg_size: usize,
    inputbuf: BytesMut,
    state: State,
    /// Padding bytes still to skip before the next record.
    padding: usize,
    /// Start LSN of the last record returned, for the prev-link check.
    prev_record: Option<Lsn>,
    /// System identifier from the first long page header seen (or given).
    system_id: Option<u64>,
    /// True until the first page header has been processed.
    first_page: bool,
    failed: bool,
}

impl WalStreamDecoder {
    /// A decoder whose first input byte is at `start`, which must be a record
    /// start (8-byte aligned) or a page boundary.
    pub fn new(start: Lsn, seg_size: usize) -> WalStreamDecoder {
        WalStreamDecoder {
            lsn: start,
            seg_size,
            inputbuf: BytesMut::new(),
            state: State::WaitingForRecord,
            padding: 0,
            prev_record: None,
            system_id: None,
            first_page: true,
            failed: false,
        }
    }

    /// Also check `xl_prev` of the first record against `prev` (the start of
    /// the record before `start`).
    pub fn with_prev_record(mut self, prev: Lsn) -> WalStreamDecoder {
        self.prev_record = Some(prev);
        self
    }

    /// Require long page headers to carry this system identifier.
    pub fn with_system_id(mut self, sysid: u64) -> WalStreamDecoder {
        self.system_id = Some(sysid);
        self
    }

    /// LSN of the next byte the decoder expects to receive.
    pub fn available(&self) -> Lsn {
        self.lsn + self.inputbuf.len() as u64
    }

    /// LSN the decoder has consumed up to.
    pub fn position(&self) -> Lsn {
        self.lsn
    }

    /// True if the decoder is in the middle of a record.
    pub fn in_record(&self) -> bool {
        matches!(self.state, State::Reassembling { discard: false, .. })
    }

    /// Append WAL bytes; they must directly follow those fed before.
    pub fn feed_bytes(&mut self, buf: &[u8]) {
        self.inputbuf.extend_from_slice(buf);
    }

    /// Read up to `max` bytes of WAL from `r` straight into the decoder's
    /// buffer (saving the copy [`feed_bytes`](Self::feed_bytes) makes).
    /// Returns the number of bytes read; 0 at end of input.
    pub fn feed_from(&mut self, r: &mut impl std::io::Read, max: usize) -> std::io::Result<usize> {
        let old_len = self.inputbuf.len();
        self.inputbuf.resize(old_len + max, 0);
        let mut n = 0;
        let res = loop {
            if n == max {
                break Ok(n);
            }
            match r.read(&mut self.inputbuf[old_len + n..]) {
                Ok(0) => break Ok(n),
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.inputbuf.truncate(old_len + n);
        res
    }

    /// Return the next complete record, `Ok(None)` if more input is needed,
    /// or an error describing why the stream cannot be decoded further.
    pub fn poll_decode(&mut self) -> Result<Option<RawRecord>, WalDecodeError> {
        if self.failed {
            return Err(WalDecodeError::InvalidRecord {
                lsn: self.lsn,
                reason: "decoder used after an error".into(),
            });
        }
        let res = self.poll_decode_inner();
        if res.is_err() {
            self.failed = true;
        }
        res
    }

    fn poll_decode_inner(&mut self) -> Result<Option<RawRecord>, WalDecodeError> {
        if self.first_page && !self.lsn.is_aligned() {
            return Err(WalDecodeError::BadStartLsn { lsn: self.lsn });
        }
        loop {
            if self.padding > 0 {
                let n = self.padding.min(self.inputbuf.len());
                if n == 0 {
                    return Ok(None);
                }
                self.inputbuf.advance(n);
                self.lsn += n as u64;
                self.padding -= n;
                continue;
            }

            if self.lsn.page_offset_in(XLOG_BLCKSZ) == 0 {
                if !self.consume_page_header()? {
                    return Ok(None);
                }
                continue;
            }
            if self.first_page {
                // Started in the middle of a page, at a record start.
                if self.lsn.page_offset_in(XLOG_BLCKSZ) < XLOG_SIZE_OF_XLOG_SHORT_PHD as u64 {
                    return Err(WalDecodeError::BadStartLsn { lsn: self.lsn });
                }
                self.first_page = false;
            }

            match &mut self.state {
                State::WaitingForRecord => {
                    if self.inputbuf.len() < 4 {
                        return Ok(None);
                    }
                    let total_len = u32::from_le_bytes([
                        self.inputbuf[0],
                        self.inputbuf[1],
                        self.inputbuf[2],
                        self.inputbuf[3],
                    ]);
                    let start_lsn = self.lsn;
                    if (total_len as usize) < XLOG_SIZE_OF_XLOG_RECORD {
                        return Err(WalDecodeError::InvalidRecordLength {
                            lsn: start_lsn,
                            wanted: XLOG_SIZE_OF_XLOG_RECORD as u32,
                            got: total_len,
                        });
                    }
                    if total_len > MAX_RECORD_SIZE {
                        return Err(WalDecodeError::RecordTooLong {
                            lsn: start_lsn,
                            len: total_len,
                        });
                    }
                    let page_left = XLOG_BLCKSZ - start_lsn.page_offset_in(XLOG_BLCKSZ) as usize;
                    if total_len as usize <= page_left && self.inputbuf.len() >= total_len as usize
                    {
                        // Fast path: the whole record is on this page and in the buffer.
                        let data = self.inputbuf.split_to(total_len as usize).freeze();
                        self.lsn += total_len as u64;
                        return self.finish_record(start_lsn, data).map(Some);
                    }
                    self.state = State::Reassembling {
                        start_lsn,
                        total_len,
                        remaining: total_len,
                        buf: BytesMut::with_capacity((total_len as usize).min(XLOG_BLCKSZ)),
                        header_checked: false,
                        discard: false,
                    };
                }
                State::Reassembling {
                    start_lsn,
                    total_len,
                    remaining,
                    buf,
                    header_checked,
                    discard,
                } => {
                    let page_left = XLOG_BLCKSZ - self.lsn.page_offset_in(XLOG_BLCKSZ) as usize;
                    let n = (*remaining as usize)
                        .min(page_left)
                        .min(self.inputbuf.len());
                    if n == 0 {
                        return Ok(None);
                    }
                    if !*discard {
                        buf.extend_from_slice(&self.inputbuf[..n]);
                    }
                    self.inputbuf.advance(n);
                    self.lsn += n as u64;
                    *remaining -= n as u32;
                    let start_lsn = *start_lsn;
                    if !*discard && !*header_checked && buf.len() >= XLOG_SIZE_OF_XLOG_RECORD {
                        *header_checked = true;
                        let hdr = XLogRecordHeader::parse(buf).ok_or_else(|| {
                            WalDecodeError::InvalidRecord {
                                lsn: start_lsn,
                                reason: "short header".into(),
                            }
                        })?;
                        Self::check_header(&hdr, start_lsn, self.prev_record)?;
                    }
                    if *remaining == 0 {
                        let discard = *discard;
                        let total_len = *total_len;
                        let data = std::mem::take(buf).freeze();
                        self.state = State::WaitingForRecord;
                        if discard {
                            self.padding = (self.lsn.align() - self.lsn) as usize;
                            continue;
                        }
                        debug_assert_eq!(data.len(), total_len as usize);
                        return self.finish_record(start_lsn, data).map(Some);
                    }
                }
            }
        }
    }

    /// Validate and consume the page header at `self.lsn` (a page boundary).
    /// Returns `Ok(false)` if more input is needed.
    fn consume_page_header(&mut self) -> Result<bool, WalDecodeError> {
        let page_lsn = self.lsn;
        if self.inputbuf.len() < XLOG_SIZE_OF_XLOG_SHORT_PHD {
            return Ok(false);
        }
        let info = u16::from_le_bytes([self.inputbuf[2], self.inputbuf[3]]);
        if info & XLP_LONG_HEADER != 0 && self.inputbuf.len() < XLOG_SIZE_OF_XLOG_LONG_PHD {
            return Ok(false);
        }
        let hdr = XLogPageHeader::parse(&self.inputbuf).ok_or(WalDecodeError::InvalidRecord {
            lsn: page_lsn,
            reason: "short page header".into(),
        })?;
        if hdr.xlp_magic != XLOG_PAGE_MAGIC {
            return Err(WalDecodeError::BadPageMagic {
                lsn: page_lsn,
                magic: hdr.xlp_magic,
            });
        }
        if hdr.xlp_info & !XLP_ALL_FLAGS != 0 {
            return Err(WalDecodeError::BadPageInfo {
                lsn: page_lsn,
                info: hdr.xlp_info,
            });
        }
        if let Some((sysid, seg_size, blcksz)) = hdr.long {
            if seg_size as usize != self.seg_size {
                return Err(WalDecodeError::ForeignSystem {
                    lsn: page_lsn,
                    reason: format!("segment size {seg_size} instead of {}", self.seg_size),
                });
            }
            if blcksz as usize != XLOG_BLCKSZ {
                return Err(WalDecodeError::ForeignSystem {
                    lsn: page_lsn,
                    reason: format!("XLOG_BLCKSZ {blcksz} instead of {XLOG_BLCKSZ}"),
                });
            }
            match self.system_id {
                Some(expected) if expected != sysid => {
                    return Err(WalDecodeError::ForeignSystem {
                        lsn: page_lsn,
                        reason: format!("system identifier {sysid} instead of {expected}"),
                    })
                }
                _ => self.system_id = Some(sysid),
            }
        } else if page_lsn.segment_offset(self.seg_size) == 0 {
            return Err(WalDecodeError::BadPageInfo {
                lsn: page_lsn,
                info: hdr.xlp_info,
            });
        }
        if hdr.xlp_pageaddr != page_lsn {
            return Err(WalDecodeError::UnexpectedPageAddr {
                lsn: page_lsn,
                found: hdr.xlp_pageaddr,
            });
        }
        let is_cont = hdr.xlp_info & XLP_FIRST_IS_CONTRECORD != 0;
        if hdr.xlp_info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0
            && matches!(self.state, State::Reassembling { .. })
        {
            // The rest of the record we were assembling was never written: a
            // crashed server overwrote it after recovery (and logged
            // XLOG_OVERWRITE_CONTRECORD here). Drop it and read the next record
            // after this page header, as xlogreader.c does.
            self.state = State::WaitingForRecord;
        }
        match &self.state {
            State::Reassembling { remaining, .. } => {
                if !is_cont {
                    return Err(WalDecodeError::MissingContrecord { lsn: page_lsn });
                }
                if hdr.xlp_rem_len != *remaining {
                    return Err(WalDecodeError::BadContrecordLength {
                        lsn: page_lsn,
                        found: hdr.xlp_rem_len,
                        expected: *remaining,
                    });
                }
            }
            State::WaitingForRecord => {
                if is_cont {
                    if !self.first_page {
                        return Err(WalDecodeError::UnexpectedContrecord { lsn: page_lsn });
                    }
                    // We started in the middle of a record: skip its tail.
                    self.state = State::Reassembling {
                        start_lsn: page_lsn,
                        total_len: hdr.xlp_rem_len,
                        remaining: hdr.xlp_rem_len,
                        buf: BytesMut::new(),
                        header_checked: true,
                        discard: true,
                    };
                }
            }
        }
        self.first_page = false;
        let size = hdr.size();
        self.inputbuf.advance(size);
        self.lsn += size as u64;
        Ok(true)
    }

    fn check_header(
        hdr: &XLogRecordHeader,
        lsn: Lsn,
        prev_record: Option<Lsn>,
    ) -> Result<(), WalDecodeError> {
        if !rmgr_id_is_valid(hdr.xl_rmid) {
            return Err(WalDecodeError::InvalidRmgr {
                lsn,
                rmid: hdr.xl_rmid,
            });
        }
        let prev_ok = match prev_record {
            Some(p) => hdr.xl_prev == p,
            None => hdr.xl_prev < lsn,
        };
        if !prev_ok {
            return Err(WalDecodeError::BadPrevLink {
                lsn,
                prev: hdr.xl_prev,
            });
        }
        Ok(())
    }

    fn finish_record(&mut self, start_lsn: Lsn, data: Bytes) -> Result<RawRecord, WalDecodeError> {
        let hdr = XLogRecordHeader::parse(&data).ok_or_else(|| WalDecodeError::InvalidRecord {
            lsn: start_lsn,
            reason: "short header".into(),
        })?;
        Self::check_header(&hdr, start_lsn, self.prev_record)?;
        if !crate::xlog_record::record_crc_ok(&data) {
            return Err(WalDecodeError::BadCrc { lsn: start_lsn });
        }
        let mut end_lsn = self.lsn.align();
        if hdr.xl_rmid == RM_XLOG_ID && hdr.xl_info & !XLR_INFO_MASK == XLOG_SWITCH {
            // The rest of the segment is unused: the record "extends" to the
            // start of the next segment, where the next record is.
            end_lsn = Lsn(self.lsn.0.div_ceil(self.seg_size as u64) * self.seg_size as u64);
        }
        self.padding = (end_lsn - self.lsn) as usize;
        self.prev_record = Some(start_lsn);
        Ok(RawRecord {
            start_lsn,
            end_lsn,
            data,
        })
    }
}

/// `RmgrIdIsValid`: a built-in or custom resource manager id.
pub fn rmgr_id_is_valid(rmid: u8) -> bool {
    rmid <= RM_MAX_BUILTIN_ID || rmid >= RM_MIN_CUSTOM_ID
}
