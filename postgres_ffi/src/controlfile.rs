//! `global/pg_control` (`ControlFileData`) and `CheckPoint`, PostgreSQL 15
//! layout on 64-bit little-endian platforms.
//!
//! The structs are encoded field by field at their C offsets (see the offset
//! tables below), so no `unsafe` transmutes are needed. The control file's CRC
//! covers the bytes before the `crc` field; on disk the struct is padded with
//! zeros to [`PG_CONTROL_FILE_SIZE`] bytes.

use crate::pg_constants::*;
use zenith_utils::lsn::Lsn;

/// A control file or checkpoint that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlFileError {
    #[error("{what} is {got} bytes, expected at least {want}")]
    TooShort {
        what: &'static str,
        got: usize,
        want: usize,
    },
    #[error("pg_control CRC mismatch: stored {stored:08X}, computed {computed:08X}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("pg_control version {0} is not PostgreSQL 15's {PG_CONTROL_VERSION}")]
    BadVersion(u32),
}

fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// `CheckPoint` (the body of checkpoint records, and a copy in pg_control).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckPoint {
    pub redo: Lsn,
    pub this_timeline_id: u32,
    pub prev_timeline_id: u32,
    pub full_page_writes: bool,
    /// `FullTransactionId` (epoch << 32 | xid).
    pub next_xid: u64,
    pub next_oid: u32,
    pub next_multi: u32,
    pub next_multi_offset: u32,
    pub oldest_xid: u32,
    pub oldest_xid_db: u32,
    pub oldest_multi: u32,
    pub oldest_multi_db: u32,
    /// `pg_time_t` (seconds since the Unix epoch).
    pub time: i64,
    pub oldest_commit_ts_xid: u32,
    pub newest_commit_ts_xid: u32,
    pub oldest_active_xid: u32,
}

impl CheckPoint {
    /// `sizeof(CheckPoint)`.
    pub const SIZE: usize = 88;

    pub fn decode(b: &[u8]) -> Result<CheckPoint, ControlFileError> {
        if b.len() < Self::SIZE {
            return Err(ControlFileError::TooShort {
                what: "CheckPoint",
                got: b.len(),
                want: Self::SIZE,
            });
        }
        Ok(CheckPoint {
            redo: Lsn(get_u64(b, 0)),
            this_timeline_id: get_u32(b, 8),
            prev_timeline_id: get_u32(b, 12),
            full_page_writes: b[16] != 0,
            next_xid: get_u64(b, 24),
            next_oid: get_u32(b, 32),
            next_multi: get_u32(b, 36),
            next_multi_offset: get_u32(b, 40),
            oldest_xid: get_u32(b, 44),
            oldest_xid_db: get_u32(b, 48),
            oldest_multi: get_u32(b, 52),
            oldest_multi_db: get_u32(b, 56),
            time: get_u64(b, 64) as i64,
            oldest_commit_ts_xid: get_u32(b, 72),
            newest_commit_ts_xid: get_u32(b, 76),
            oldest_active_xid: get_u32(b, 80),
        })
    }

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put_u64(&mut b, 0, self.redo.0);
        put_u32(&mut b, 8, self.this_timeline_id);
        put_u32(&mut b, 12, self.prev_timeline_id);
        b[16] = self.full_page_writes as u8;
        put_u64(&mut b, 24, self.next_xid);
        put_u32(&mut b, 32, self.next_oid);
        put_u32(&mut b, 36, self.next_multi);
        put_u32(&mut b, 40, self.next_multi_offset);
        put_u32(&mut b, 44, self.oldest_xid);
        put_u32(&mut b, 48, self.oldest_xid_db);
        put_u32(&mut b, 52, self.oldest_multi);
        put_u32(&mut b, 56, self.oldest_multi_db);
        put_u64(&mut b, 64, self.time as u64);
        put_u32(&mut b, 72, self.oldest_commit_ts_xid);
        put_u32(&mut b, 76, self.newest_commit_ts_xid);
        put_u32(&mut b, 80, self.oldest_active_xid);
        b
    }

    /// The 32-bit next xid (without epoch).
    pub fn next_xid32(&self) -> u32 {
        self.next_xid as u32
    }

    /// Advance `next_xid` past `xid` (handles wraparound into the next epoch),
    /// as replay of a record with that xid does. Returns true if it changed.
    pub fn update_next_xid(&mut self, xid: u32) -> bool {
        if xid < FIRST_NORMAL_TRANSACTION_ID {
            return false;
        }
        let next = xid.wrapping_add(1);
        let next = if next < FIRST_NORMAL_TRANSACTION_ID {
            FIRST_NORMAL_TRANSACTION_ID
        } else {
            next
        };
        let cur = self.next_xid32();
        // Compare modulo 2^32 like TransactionIdFollowsOrEquals.
        if (next.wrapping_sub(cur) as i32) > 0 {
            let mut epoch = self.next_xid >> 32;
            if next < cur {
                epoch += 1;
            }
            self.next_xid = (epoch << 32) | next as u64;
            true
        } else {
            false
        }
    }
}

/// `DBState`.
pub const DB_STARTUP: u32 = 0;
pub const DB_SHUTDOWNED: u32 = 1;
pub const DB_SHUTDOWNED_IN_RECOVERY: u32 = 2;
pub const DB_SHUTDOWNING: u32 = 3;
pub const DB_IN_CRASH_RECOVERY: u32 = 4;
pub const DB_IN_ARCHIVE_RECOVERY: u32 = 5;
pub const DB_IN_PRODUCTION: u32 = 6;

/// `ControlFileData`.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlFileData {
    pub system_identifier: u64,
    pub pg_control_version: u32,
    pub catalog_version_no: u32,
    pub state: u32,
    pub time: i64,
    pub checkpoint: Lsn,
    pub checkpoint_copy: CheckPoint,
    pub unlogged_lsn: Lsn,
    pub min_recovery_point: Lsn,
    pub min_recovery_point_tli: u32,
    pub backup_start_point: Lsn,
    pub backup_end_point: Lsn,
    pub backup_end_required: bool,
    pub wal_level: i32,
    pub wal_log_hints: bool,
    pub max_connections: i32,
    pub max_worker_processes: i32,
    pub max_wal_senders: i32,
    pub max_prepared_xacts: i32,
    pub max_locks_per_xact: i32,
    pub track_commit_timestamp: bool,
    pub max_align: u32,
    pub float_format: f64,
    pub blcksz: u32,
    pub relseg_size: u32,
    pub xlog_blcksz: u32,
    pub xlog_seg_size: u32,
    pub name_data_len: u32,
    pub index_max_keys: u32,
    pub toast_max_chunk_size: u32,
    pub loblksize: u32,
    pub float8_by_val: bool,
    pub data_checksum_version: u32,
    pub mock_authentication_nonce: [u8; 32],
    pub crc: u32,
}

impl ControlFileData {
    /// `offsetof(ControlFileData, crc)`: the CRC covers the bytes before it.
    pub const CRC_OFFSET: usize = 288;
    /// `sizeof(ControlFileData)`.
    pub const SIZE: usize = 296;

    /// Decode and check the CRC and version.
    pub fn decode(b: &[u8]) -> Result<ControlFileData, ControlFileError> {
        let c = Self::decode_unchecked(b)?;
        let computed = crc32c::crc32c(&b[..Self::CRC_OFFSET]);
        if computed != c.crc {
            return Err(ControlFileError::BadCrc {
                stored: c.crc,
                computed,
            });
        }
        if c.pg_control_version != PG_CONTROL_VERSION {
            return Err(ControlFileError::BadVersion(c.pg_control_version));
        }
        Ok(c)
    }

    /// Decode without checking the CRC.
    pub fn decode_unchecked(b: &[u8]) -> Result<ControlFileData, ControlFileError> {
        if b.len() < Self::SIZE {
            return Err(ControlFileError::TooShort {
                what: "pg_control",
                got: b.len(),
                want: Self::SIZE,
            });
        }
        let mut nonce = [0u8; 32];
        nonce.copy_from_slice(&b[256..288]);
        Ok(ControlFileData {
            system_identifier: get_u64(b, 0),
            pg_control_version: get_u32(b, 8),
            catalog_version_no: get_u32(b, 12),
            state: get_u32(b, 16),
            time: get_u64(b, 24) as i64,
            checkpoint: Lsn(get_u64(b, 32)),
            checkpoint_copy: CheckPoint::decode(&b[40..40 + CheckPoint::SIZE])?,
            unlogged_lsn: Lsn(get_u64(b, 128)),
            min_recovery_point: Lsn(get_u64(b, 136)),
            min_recovery_point_tli: get_u32(b, 144),
            backup_start_point: Lsn(get_u64(b, 152)),
            backup_end_point: Lsn(get_u64(b, 160)),
            backup_end_required: b[168] != 0,
            wal_level: get_u32(b, 172) as i32,
            wal_log_hints: b[176] != 0,
            max_connections: get_u32(b, 180) as i32,
            max_worker_processes: get_u32(b, 184) as i32,
            max_wal_senders: get_u32(b, 188) as i32,
            max_prepared_xacts: get_u32(b, 192) as i32,
            max_locks_per_xact: get_u32(b, 196) as i32,
            track_commit_timestamp: b[200] != 0,
            max_align: get_u32(b, 204),
            float_format: f64::from_bits(get_u64(b, 208)),
            blcksz: get_u32(b, 216),
            relseg_size: get_u32(b, 220),
            xlog_blcksz: get_u32(b, 224),
            xlog_seg_size: get_u32(b, 228),
            name_data_len: get_u32(b, 232),
            index_max_keys: get_u32(b, 236),
            toast_max_chunk_size: get_u32(b, 240),
            loblksize: get_u32(b, 244),
            float8_by_val: b[248] != 0,
            data_checksum_version: get_u32(b, 252),
            mock_authentication_nonce: nonce,
            crc: get_u32(b, 288),
        })
    }

    /// Encode as the 8 KiB file PostgreSQL writes, with a freshly computed CRC
    /// (the `crc` field is ignored).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; PG_CONTROL_FILE_SIZE];
        put_u64(&mut b, 0, self.system_identifier);
        put_u32(&mut b, 8, self.pg_control_version);
        put_u32(&mut b, 12, self.catalog_version_no);
        put_u32(&mut b, 16, self.state);
        put_u64(&mut b, 24, self.time as u64);
        put_u64(&mut b, 32, self.checkpoint.0);
        b[40..40 + CheckPoint::SIZE].copy_from_slice(&self.checkpoint_copy.encode());
        put_u64(&mut b, 128, self.unlogged_lsn.0);
        put_u64(&mut b, 136, self.min_recovery_point.0);
        put_u32(&mut b, 144, self.min_recovery_point_tli);
        put_u64(&mut b, 152, self.backup_start_point.0);
        put_u64(&mut b, 160, self.backup_end_point.0);
        b[168] = self.backup_end_required as u8;
        put_u32(&mut b, 172, self.wal_level as u32);
        b[176] = self.wal_log_hints as u8;
        put_u32(&mut b, 180, self.max_connections as u32);
        put_u32(&mut b, 184, self.max_worker_processes as u32);
        put_u32(&mut b, 188, self.max_wal_senders as u32);
        put_u32(&mut b, 192, self.max_prepared_xacts as u32);
        put_u32(&mut b, 196, self.max_locks_per_xact as u32);
        b[200] = self.track_commit_timestamp as u8;
        put_u32(&mut b, 204, self.max_align);
        put_u64(&mut b, 208, self.float_format.to_bits());
        put_u32(&mut b, 216, self.blcksz);
        put_u32(&mut b, 220, self.relseg_size);
        put_u32(&mut b, 224, self.xlog_blcksz);
        put_u32(&mut b, 228, self.xlog_seg_size);
        put_u32(&mut b, 232, self.name_data_len);
        put_u32(&mut b, 236, self.index_max_keys);
        put_u32(&mut b, 240, self.toast_max_chunk_size);
        put_u32(&mut b, 244, self.loblksize);
        b[248] = self.float8_by_val as u8;
        put_u32(&mut b, 252, self.data_checksum_version);
        b[256..288].copy_from_slice(&self.mock_authentication_nonce);
        let crc = crc32c::crc32c(&b[..Self::CRC_OFFSET]);
        put_u32(&mut b, 288, crc);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pg_control of a fresh `initdb` made with this project's PostgreSQL 15.
    const INITDB_PG_CONTROL: &[u8] = include_bytes!("../testdata/pg_control");

    #[test]
    fn decodes_initdb_control_file() {
        let c = ControlFileData::decode(INITDB_PG_CONTROL).unwrap();
        assert_eq!(c.pg_control_version, PG_CONTROL_VERSION);
        assert_eq!(c.catalog_version_no, CATALOG_VERSION_NO);
        assert_eq!(c.state, DB_SHUTDOWNED);
        assert_eq!(c.blcksz, BLCKSZ as u32);
        assert_eq!(c.xlog_blcksz, XLOG_BLCKSZ as u32);
        assert_eq!(c.xlog_seg_size, WAL_SEGMENT_SIZE as u32);
        assert_eq!(c.relseg_size, RELSEG_SIZE);
        assert_eq!(c.float_format, 1234567.0);
        assert_eq!(c.max_align, 8);
        assert_eq!(c.checkpoint_copy.redo, c.checkpoint);
        assert_eq!(c.checkpoint_copy.this_timeline_id, 1);
        // Values as pg_controldata prints them for this file.
        assert_eq!(c.system_identifier, 7711500105855544436);
        assert_eq!(c.checkpoint, Lsn(0x0149_3008));
        assert_eq!(c.checkpoint_copy.next_xid, 724);
        assert_eq!(c.checkpoint_copy.next_oid, 12766);
        assert_eq!(c.checkpoint_copy.oldest_xid, 716);
    }

    #[test]
    fn roundtrip_is_byte_exact() {
        let c = ControlFileData::decode(INITDB_PG_CONTROL).unwrap();
        assert_eq!(c.encode(), INITDB_PG_CONTROL);
    }

    #[test]
    fn detects_corruption() {
        let mut b = INITDB_PG_CONTROL.to_vec();
        b[100] ^= 0x40;
        assert!(matches!(
            ControlFileData::decode(&b),
            Err(ControlFileError::BadCrc { .. })
        ));
        assert!(matches!(
            ControlFileData::decode(&b[..100]),
            Err(ControlFileError::TooShort { .. })
        ));
    }

    #[test]
    fn next_xid_advances_with_epoch() {
        let mut cp = CheckPoint {
            next_xid: 1000,
            ..Default::default()
        };
        assert!(cp.update_next_xid(1500));
        assert_eq!(cp.next_xid, 1501);
        assert!(!cp.update_next_xid(10));
        cp.next_xid = 0xFFFF_FFF0;
        assert!(cp.update_next_xid(0xFFFF_FFFF));
        assert_eq!(cp.next_xid, (1 << 32) | 3);
    }
}
