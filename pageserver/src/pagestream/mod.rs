//! The pagestream protocol codec (docs/architecture.md §5): the messages a compute
//! and the pageserver exchange inside CopyData after the client's
//! `pagestream <tenant> <timeline>` query. Full description: `docs/pagestream.md`.
//!
//! This module only turns bytes into typed messages and back; it knows nothing
//! about connections or storage. [`client`] is the pagestream client over
//! the shared PostgreSQL client, and [`bench`](mod@bench) the load generator of the
//! `pagebench` binary built on it; the server side is `crate::page_service`. Each CopyData payload holds exactly one
//! message, so parsers take the whole payload and reject trailing bytes.
//!
//! # Wire format
//!
//! All integers are big-endian. A request is a 25-byte header followed by a
//! payload chosen by the tag:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | tag | u8 | 0 exists, 1 nblocks, 2 get_page, 3 db_size, 4 get_slru_segment |
//! | reqid | u64 | echoed in the response |
//! | request_lsn | u64 | the version wanted; `u64::MAX` = latest |
//! | not_modified_since | u64 | the page is known unchanged since this LSN |
//!
//! | request | tag | payload | total size |
//! |---|---|---|---|
//! | exists | 0 | u32 spcnode, u32 dbnode, u32 relnode, u8 forknum | 38 |
//! | nblocks | 1 | same as exists | 38 |
//! | get_page | 2 | same as exists, then u32 blkno | 42 |
//! | db_size | 3 | u32 dbnode | 29 |
//! | get_slru_segment | 4 | u8 kind (0 clog, 1 multixact offsets, 2 multixact members), u32 segno | 30 |
//!
//! A response is `u8 tag`, `u64 reqid`, then a body. 103 is the error tag,
//! so the db_size and get_slru_segment responses are 104 and 105:
//!
//! | response | tag | body | total size |
//! |---|---|---|---|
//! | exists | 100 | u8 (0 or 1) | 10 |
//! | nblocks | 101 | u32 | 13 |
//! | get_page | 102 | 8192 bytes | 8201 |
//! | error | 103 | UTF-8 message without NUL, then one NUL | 10 + message length |
//! | db_size | 104 | i64, the size in bytes | 17 |
//! | get_slru_segment | 105 | u32 nblocks, then nblocks × 8192 bytes | 13 + 8192 × nblocks |
//!
//! # Invariants
//!
//! - Parsers never panic and never allocate more than the input's size; any
//!   malformed input (truncated, trailing bytes, unknown tag, fork > 3, unknown
//!   SLRU kind, exists byte other than 0/1, unterminated or non-UTF-8 error
//!   text) is a [`PagestreamError`].
//! - `serialize` checks the same rules as `parse`: whatever it writes, `parse`
//!   reads back as an equal message. On error it writes nothing.
//! - Parsing checks the format only. [`PagestreamRequest::validate`] checks the
//!   LSN rules of §5; its [`RequestLsnError`] is a distinct type because the
//!   server answers it with an error response and keeps the stream open, while
//!   a [`PagestreamError`] on a request closes the connection.

pub mod bench;
pub mod client;

use bytes::{BufMut, Bytes, BytesMut};
use postgres_ffi::pg_constants::{BLCKSZ, INIT_FORKNUM};
use postgres_ffi::relfile::{BlockNumber, RelTag};
use postgres_ffi::slru::SlruKind;
use zenith_utils::lsn::Lsn;

/// Size of a page in a get_page or get_slru_segment response.
pub const PAGE_SIZE: usize = BLCKSZ as usize;

const REQ_EXISTS: u8 = 0;
const REQ_NBLOCKS: u8 = 1;
const REQ_GET_PAGE: u8 = 2;
const REQ_DB_SIZE: u8 = 3;
const REQ_GET_SLRU_SEGMENT: u8 = 4;

const RESP_EXISTS: u8 = 100;
const RESP_NBLOCKS: u8 = 101;
const RESP_GET_PAGE: u8 = 102;
const RESP_ERROR: u8 = 103;
const RESP_DB_SIZE: u8 = 104;
const RESP_GET_SLRU_SEGMENT: u8 = 105;

/// A message that is not a well-formed pagestream request or response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagestreamError {
    #[error("pagestream message truncated: needed {needed} bytes, got {got}")]
    Truncated { needed: usize, got: usize },
    #[error("pagestream message has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("unknown pagestream message tag {0}")]
    UnknownTag(u8),
    #[error("invalid fork number {0}")]
    InvalidFork(u8),
    #[error("unknown SLRU kind {0}")]
    UnknownSlruKind(u8),
    #[error("invalid boolean byte {0} in exists response")]
    InvalidBool(u8),
    #[error("page data of {0} bytes is not a multiple of {PAGE_SIZE} (or not exactly one page)")]
    BadPageSize(usize),
    #[error("SLRU segment of {0} pages is too large")]
    TooManyPages(usize),
    #[error("error message is not NUL-terminated")]
    MessageNotTerminated,
    #[error("error message is not valid UTF-8")]
    MessageNotUtf8,
    #[error("error message contains a NUL byte")]
    MessageContainsNul,
}

/// A request whose LSNs break the rules of docs/architecture.md §5. The server
/// answers it with an error response; the stream stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestLsnError {
    #[error("invalid request LSN {}", Lsn::INVALID)]
    InvalidRequestLsn,
    #[error("request LSN {request_lsn} is before not_modified_since {not_modified_since}")]
    RequestLsnBeforeNotModifiedSince {
        request_lsn: Lsn,
        not_modified_since: Lsn,
    },
}

/// One request from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagestreamRequest {
    /// Echoed in the response, so a pipelining client can match them up.
    pub reqid: u64,
    /// The version wanted; [`Lsn::MAX`] means the latest.
    pub request_lsn: Lsn,
    /// The data is known to be unchanged since this LSN.
    pub not_modified_since: Lsn,
    pub body: PagestreamRequestBody,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagestreamRequestBody {
    Exists { rel: RelTag },
    Nblocks { rel: RelTag },
    GetPage { rel: RelTag, blkno: BlockNumber },
    DbSize { dbnode: u32 },
    GetSlruSegment { kind: SlruKind, segno: u32 },
}

/// One response from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagestreamResponse {
    /// The `reqid` of the request this answers.
    pub reqid: u64,
    pub body: PagestreamResponseBody,
}

/// The answer to a request, or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagestreamResponseBody {
    Exists(bool),
    Nblocks(u32),
    /// Exactly [`PAGE_SIZE`] bytes.
    GetPage(Bytes),
    /// Database size in bytes.
    DbSize(i64),
    /// The segment's pages, concatenated: a multiple of [`PAGE_SIZE`] bytes.
    GetSlruSegment(Bytes),
    /// A human-readable message without NUL bytes.
    Error(String),
}

impl PagestreamRequest {
    /// Parses one request: the whole CopyData payload.
    pub fn parse(buf: &[u8]) -> Result<Self, PagestreamError> {
        let mut r = Reader::new(buf);
        let tag = r.u8()?;
        if tag > REQ_GET_SLRU_SEGMENT {
            return Err(PagestreamError::UnknownTag(tag));
        }
        // Tuple fields are evaluated left to right, i.e. in wire order.
        let (reqid, request_lsn, not_modified_since) = (r.u64()?, Lsn(r.u64()?), Lsn(r.u64()?));
        let body = match tag {
            REQ_EXISTS => PagestreamRequestBody::Exists { rel: r.rel()? },
            REQ_NBLOCKS => PagestreamRequestBody::Nblocks { rel: r.rel()? },
            REQ_GET_PAGE => PagestreamRequestBody::GetPage {
                rel: r.rel()?,
                blkno: r.u32()?,
            },
            REQ_DB_SIZE => PagestreamRequestBody::DbSize { dbnode: r.u32()? },
            _ => {
                let kind = r.u8()?;
                let kind = SlruKind::from_u8(kind).ok_or(PagestreamError::UnknownSlruKind(kind))?;
                PagestreamRequestBody::GetSlruSegment {
                    kind,
                    segno: r.u32()?,
                }
            }
        };
        r.finish()?;
        Ok(PagestreamRequest {
            reqid,
            request_lsn,
            not_modified_since,
            body,
        })
    }

    /// Appends the request to `buf`. Fails (writing nothing) on a fork number
    /// above 3, which `parse` would reject.
    pub fn serialize(&self, buf: &mut BytesMut) -> Result<(), PagestreamError> {
        use PagestreamRequestBody::*;
        let (tag, rel) = match &self.body {
            Exists { rel } => (REQ_EXISTS, Some(rel)),
            Nblocks { rel } => (REQ_NBLOCKS, Some(rel)),
            GetPage { rel, .. } => (REQ_GET_PAGE, Some(rel)),
            DbSize { .. } => (REQ_DB_SIZE, None),
            GetSlruSegment { .. } => (REQ_GET_SLRU_SEGMENT, None),
        };
        if let Some(rel) = rel {
            check_fork(rel.forknum)?;
        }
        buf.put_u8(tag);
        buf.put_u64(self.reqid);
        buf.put_u64(self.request_lsn.0);
        buf.put_u64(self.not_modified_since.0);
        match &self.body {
            Exists { rel } | Nblocks { rel } => put_rel(buf, rel),
            GetPage { rel, blkno } => {
                put_rel(buf, rel);
                buf.put_u32(*blkno);
            }
            DbSize { dbnode } => buf.put_u32(*dbnode),
            GetSlruSegment { kind, segno } => {
                buf.put_u8(kind.to_u8());
                buf.put_u32(*segno);
            }
        }
        Ok(())
    }

    /// Checks the LSN rules of docs/architecture.md §5: `request_lsn` is valid
    /// (not 0/0) and not below `not_modified_since`.
    pub fn validate(&self) -> Result<(), RequestLsnError> {
        if !self.request_lsn.is_valid() {
            return Err(RequestLsnError::InvalidRequestLsn);
        }
        if self.request_lsn < self.not_modified_since {
            return Err(RequestLsnError::RequestLsnBeforeNotModifiedSince {
                request_lsn: self.request_lsn,
                not_modified_since: self.not_modified_since,
            });
        }
        Ok(())
    }
}

impl PagestreamResponse {
    /// An error response. NUL bytes in `msg`, which the wire format cannot
    /// carry, are replaced by U+FFFD.
    pub fn error(reqid: u64, msg: impl std::fmt::Display) -> Self {
        PagestreamResponse {
            reqid,
            body: PagestreamResponseBody::Error(msg.to_string().replace('\0', "\u{FFFD}")),
        }
    }

    /// Parses one response: the whole CopyData payload.
    pub fn parse(buf: &[u8]) -> Result<Self, PagestreamError> {
        let mut r = Reader::new(buf);
        let tag = r.u8()?;
        if !(RESP_EXISTS..=RESP_GET_SLRU_SEGMENT).contains(&tag) {
            return Err(PagestreamError::UnknownTag(tag));
        }
        let reqid = r.u64()?;
        let body = match tag {
            RESP_EXISTS => match r.u8()? {
                0 => PagestreamResponseBody::Exists(false),
                1 => PagestreamResponseBody::Exists(true),
                b => return Err(PagestreamError::InvalidBool(b)),
            },
            RESP_NBLOCKS => PagestreamResponseBody::Nblocks(r.u32()?),
            RESP_GET_PAGE => {
                PagestreamResponseBody::GetPage(Bytes::copy_from_slice(r.take(PAGE_SIZE)?))
            }
            RESP_ERROR => {
                let nul = (r.buf[r.pos..].iter())
                    .position(|&b| b == 0)
                    .ok_or(PagestreamError::MessageNotTerminated)?;
                let msg = std::str::from_utf8(r.take(nul)?)
                    .map_err(|_| PagestreamError::MessageNotUtf8)?;
                r.take(1)?;
                PagestreamResponseBody::Error(msg.to_owned())
            }
            RESP_DB_SIZE => PagestreamResponseBody::DbSize(r.u64()? as i64),
            _ => {
                let nblocks = r.u32()? as usize;
                let len = nblocks
                    .checked_mul(PAGE_SIZE)
                    .ok_or(PagestreamError::TooManyPages(nblocks))?;
                PagestreamResponseBody::GetSlruSegment(Bytes::copy_from_slice(r.take(len)?))
            }
        };
        r.finish()?;
        Ok(PagestreamResponse { reqid, body })
    }

    /// Appends the response to `buf`. Fails (writing nothing) on a page that
    /// is not [`PAGE_SIZE`] bytes, a segment that is not a whole number of
    /// pages (or more than `u32::MAX` of them), or an error message with NUL.
    pub fn serialize(&self, buf: &mut BytesMut) -> Result<(), PagestreamError> {
        use PagestreamResponseBody::*;
        match &self.body {
            GetPage(p) if p.len() != PAGE_SIZE => {
                return Err(PagestreamError::BadPageSize(p.len()))
            }
            GetSlruSegment(p) if p.len() % PAGE_SIZE != 0 => {
                return Err(PagestreamError::BadPageSize(p.len()))
            }
            GetSlruSegment(p) if p.len() / PAGE_SIZE > u32::MAX as usize => {
                return Err(PagestreamError::TooManyPages(p.len() / PAGE_SIZE))
            }
            Error(msg) if msg.contains('\0') => return Err(PagestreamError::MessageContainsNul),
            _ => {}
        }
        let tag = match &self.body {
            Exists(_) => RESP_EXISTS,
            Nblocks(_) => RESP_NBLOCKS,
            GetPage(_) => RESP_GET_PAGE,
            Error(_) => RESP_ERROR,
            DbSize(_) => RESP_DB_SIZE,
            GetSlruSegment(_) => RESP_GET_SLRU_SEGMENT,
        };
        buf.put_u8(tag);
        buf.put_u64(self.reqid);
        match &self.body {
            Exists(b) => buf.put_u8(u8::from(*b)),
            Nblocks(n) => buf.put_u32(*n),
            GetPage(page) => buf.put_slice(page),
            Error(msg) => {
                buf.put_slice(msg.as_bytes());
                buf.put_u8(0);
            }
            DbSize(size) => buf.put_i64(*size),
            GetSlruSegment(pages) => {
                buf.put_u32((pages.len() / PAGE_SIZE) as u32); // checked above
                buf.put_slice(pages);
            }
        }
        Ok(())
    }
}

fn check_fork(forknum: u8) -> Result<u8, PagestreamError> {
    match forknum {
        0..=INIT_FORKNUM => Ok(forknum),
        _ => Err(PagestreamError::InvalidFork(forknum)),
    }
}

fn put_rel(buf: &mut BytesMut, rel: &RelTag) {
    buf.put_u32(rel.spcnode);
    buf.put_u32(rel.dbnode);
    buf.put_u32(rel.relnode);
    buf.put_u8(rel.forknum);
}

/// A cursor over one message that reports truncation as an error.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PagestreamError> {
        let got = self.buf.len();
        match self.pos.checked_add(n) {
            Some(end) if end <= got => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            end => Err(PagestreamError::Truncated {
                needed: end.unwrap_or(usize::MAX),
                got,
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PagestreamError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u8(&mut self) -> Result<u8, PagestreamError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, PagestreamError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, PagestreamError> {
        self.array().map(u64::from_be_bytes)
    }

    fn rel(&mut self) -> Result<RelTag, PagestreamError> {
        // Fields are evaluated in source order, i.e. in wire order.
        Ok(RelTag {
            spcnode: self.u32()?,
            dbnode: self.u32()?,
            relnode: self.u32()?,
            forknum: check_fork(self.u8()?)?,
        })
    }

    fn finish(self) -> Result<(), PagestreamError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(PagestreamError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests;
