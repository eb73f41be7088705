//! PostgreSQL 15's on-disk and WAL formats, in Rust.
//!
//! - [`waldecoder`]: a streaming decoder from WAL bytes to whole records,
//!   with page-header, prev-link and CRC checks (`xlogreader.c`);
//! - [`wal_decode_error`]: the error of both decoders;
//! - [`xlog_record`]: the parts of a record: header, block references
//!   (with image decompression), main data (`DecodeXLogRecord`);
//! - [`walrecord`]: the bodies of the records the pageserver interprets;
//! - [`rmgr_desc`]: resource manager and record type names as pg_waldump prints them;
//! - [`controlfile`]: `pg_control` and `CheckPoint`;
//! - [`page`], [`relfile`], [`slru`], [`xlog_utils`]: page header, relation
//!   file naming, SLRU geometry, WAL file naming and synthetic segments;
//! - [`pglz`]: pglz decompression.
//!
//! This crate knows nothing about networking or storage; it turns bytes into
//! typed values and back. Every parser returns an error (never panics) on bad
//! input. The WAL format as implemented is described in `docs/postgres_ffi.md`.

pub mod controlfile;
pub mod page;
pub mod pg_constants;
pub mod pglz;
pub mod relfile;
pub mod rmgr_desc;
pub mod slru;
pub mod wal_decode_error;
pub mod waldecoder;
pub mod walrecord;
pub mod xlog_record;
pub mod xlog_utils;

pub use pg_constants::{BLCKSZ, WAL_SEGMENT_SIZE, XLOG_BLCKSZ};
pub use wal_decode_error::WalDecodeError;
pub use waldecoder::{RawRecord, WalStreamDecoder};
pub use xlog_record::{DecodedBkpBlock, DecodedWALRecord, XLogRecordHeader};
