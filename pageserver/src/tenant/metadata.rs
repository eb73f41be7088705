//! The timeline metadata file: `tenants/<tenant>/timelines/<timeline>/metadata`.
//!
//! It records what a restart needs before reading any layer: how far data is
//! durably in layer files (`disk_consistent_lsn`) and the record before it,
//! the ancestor (branch point), the GC cutoff, the LSN the timeline was
//! created from and the PostgreSQL major version.
//!
//! Format (all integers big-endian), at most [`METADATA_MAX_SIZE`] bytes:
//!
//! | offset | field |
//! |---|---|
//! | 0 | `u32` magic `0x5A4D4554` ("ZMET") |
//! | 4 | `u16` format version (1) |
//! | 6 | `u16` body length N |
//! | 8 | `u32` CRC-32C of the N body bytes |
//! | 12 | body: the [`TimelineMetadata`] fields as JSON |
//!
//! The file is replaced atomically (temp file, fsync, rename, directory fsync),
//! so a reader sees either the old or the new version; a torn or corrupted file
//! is a [`MetadataError`], never a silently wrong value.

use std::path::Path;

use serde::{Deserialize, Serialize};
use zenith_utils::crashsafe;
use zenith_utils::id::TimelineId;
use zenith_utils::lsn::Lsn;

pub const METADATA_MAGIC: u32 = 0x5A4D_4554;
pub const METADATA_FORMAT_VERSION: u16 = 1;
pub const METADATA_MAX_SIZE: usize = 8192;
const HEADER_SIZE: usize = 12;

/// Persistent state of a timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineMetadata {
    /// All WAL up to here is in layer files on disk.
    pub disk_consistent_lsn: Lsn,
    /// Start of the last record before `disk_consistent_lsn` (for `xl_prev`).
    pub prev_record_lsn: Option<Lsn>,
    /// The timeline this one branched from, and where.
    pub ancestor_timeline: Option<TimelineId>,
    pub ancestor_lsn: Lsn,
    /// Reads below this LSN are refused; layers only it needed may be removed.
    pub latest_gc_cutoff_lsn: Lsn,
    /// The LSN the timeline was imported or bootstrapped at.
    pub initdb_lsn: Lsn,
    /// PostgreSQL major version of the data.
    pub pg_version: u32,
}

/// A metadata file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata file is corrupt: {0}")]
    Corrupt(String),
}

impl TimelineMetadata {
    /// Serialize with header and checksum.
    pub fn to_bytes(&self) -> Result<Vec<u8>, MetadataError> {
        let body = serde_json::to_vec(self).map_err(|e| MetadataError::Corrupt(e.to_string()))?;
        if HEADER_SIZE + body.len() > METADATA_MAX_SIZE {
            return Err(MetadataError::Corrupt(format!(
                "body of {} bytes is too large",
                body.len()
            )));
        }
        let mut out = Vec::with_capacity(HEADER_SIZE + body.len());
        out.extend_from_slice(&METADATA_MAGIC.to_be_bytes());
        out.extend_from_slice(&METADATA_FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Parse and verify a serialized metadata file.
    pub fn from_bytes(b: &[u8]) -> Result<TimelineMetadata, MetadataError> {
        let corrupt = |m: String| MetadataError::Corrupt(m);
        if b.len() < HEADER_SIZE {
            return Err(corrupt(format!(
                "{} bytes is shorter than the header",
                b.len()
            )));
        }
        let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if magic != METADATA_MAGIC {
            return Err(corrupt(format!("bad magic {magic:08X}")));
        }
        let version = u16::from_be_bytes([b[4], b[5]]);
        if version != METADATA_FORMAT_VERSION {
            return Err(corrupt(format!("unsupported format version {version}")));
        }
        let len = u16::from_be_bytes([b[6], b[7]]) as usize;
        let crc = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        let body = b
            .get(HEADER_SIZE..HEADER_SIZE + len)
            .ok_or_else(|| corrupt(format!("body of {len} bytes is truncated")))?;
        if b.len() != HEADER_SIZE + len {
            return Err(corrupt(format!(
                "{} trailing bytes",
                b.len() - HEADER_SIZE - len
            )));
        }
        if crc32c::crc32c(body) != crc {
            return Err(corrupt("checksum mismatch".into()));
        }
        serde_json::from_slice(body).map_err(|e| corrupt(format!("bad body: {e}")))
    }

    /// Durably replace the metadata file at `path`.
    pub fn save(&self, path: &Path) -> Result<(), MetadataError> {
        let bytes = self.to_bytes()?;
        crashsafe::write_file_atomic(path, &bytes).map_err(|source| MetadataError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Read and verify the metadata file at `path`.
    pub fn load(path: &Path) -> Result<TimelineMetadata, MetadataError> {
        let bytes = std::fs::read(path).map_err(|source| MetadataError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TimelineMetadata {
        TimelineMetadata {
            disk_consistent_lsn: Lsn(0x1_6B37_48A0),
            prev_record_lsn: Some(Lsn(0x1_6B37_4800)),
            ancestor_timeline: Some(TimelineId::generate()),
            ancestor_lsn: Lsn(0x0100_0028),
            latest_gc_cutoff_lsn: Lsn(0x0100_0000),
            initdb_lsn: Lsn(0x0149_3008),
            pg_version: 15,
        }
    }

    #[test]
    fn roundtrip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata");
        let m = sample();
        m.save(&path).unwrap();
        assert_eq!(TimelineMetadata::load(&path).unwrap(), m);
        let mut m2 = m.clone();
        m2.disk_consistent_lsn = Lsn(0x2_0000_0000);
        m2.save(&path).unwrap();
        assert_eq!(TimelineMetadata::load(&path).unwrap(), m2);
    }

    #[test]
    fn every_single_byte_corruption_is_detected() {
        let bytes = sample().to_bytes().unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(
                TimelineMetadata::from_bytes(&bad).is_err(),
                "flip at {i} undetected"
            );
        }
        for n in 0..bytes.len() {
            assert!(TimelineMetadata::from_bytes(&bytes[..n]).is_err());
        }
    }
}
