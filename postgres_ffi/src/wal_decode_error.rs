//! [`WalDecodeError`]: why WAL bytes could not be decoded, shared by the
//! stream decoder ([`crate::waldecoder`]) and the record decoder
//! ([`crate::xlog_record`], [`crate::walrecord`]), which both produce it.

use zenith_utils::lsn::Lsn;

/// Why a WAL stream could not be decoded. Every variant names the LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalDecodeError {
    #[error("invalid magic number {magic:04X} in WAL page at {lsn}")]
    BadPageMagic { lsn: Lsn, magic: u16 },
    #[error("invalid info bits {info:04X} in WAL page at {lsn}")]
    BadPageInfo { lsn: Lsn, info: u16 },
    #[error("unexpected pageaddr {found} in WAL page at {lsn}")]
    UnexpectedPageAddr { lsn: Lsn, found: Lsn },
    #[error("WAL page at {lsn} is from a different database system: {reason}")]
    ForeignSystem { lsn: Lsn, reason: String },
    #[error("there is no contrecord flag at {lsn}")]
    MissingContrecord { lsn: Lsn },
    #[error("invalid contrecord length {found} (expected {expected}) at {lsn}")]
    BadContrecordLength { lsn: Lsn, found: u32, expected: u32 },
    #[error("contrecord is requested by {lsn}")]
    UnexpectedContrecord { lsn: Lsn },
    #[error("invalid record length at {lsn}: wanted {wanted}, got {got}")]
    InvalidRecordLength { lsn: Lsn, wanted: u32, got: u32 },
    #[error("record length {len} at {lsn} is too long")]
    RecordTooLong { lsn: Lsn, len: u32 },
    #[error("invalid resource manager ID {rmid} at {lsn}")]
    InvalidRmgr { lsn: Lsn, rmid: u8 },
    #[error("record with incorrect prev-link {prev} at {lsn}")]
    BadPrevLink { lsn: Lsn, prev: Lsn },
    #[error("incorrect resource manager data checksum in record at {lsn}")]
    BadCrc { lsn: Lsn },
    #[error("invalid start position {lsn}: not a page boundary or an 8-byte aligned record start")]
    BadStartLsn { lsn: Lsn },
    #[error("invalid record at {lsn}: {reason}")]
    InvalidRecord { lsn: Lsn, reason: String },
}

impl WalDecodeError {
    /// The LSN the error is about.
    pub fn lsn(&self) -> Lsn {
        use WalDecodeError::*;
        match self {
            BadPageMagic { lsn, .. }
            | BadPageInfo { lsn, .. }
            | UnexpectedPageAddr { lsn, .. }
            | ForeignSystem { lsn, .. }
            | MissingContrecord { lsn }
            | BadContrecordLength { lsn, .. }
            | UnexpectedContrecord { lsn }
            | InvalidRecordLength { lsn, .. }
            | RecordTooLong { lsn, .. }
            | InvalidRmgr { lsn, .. }
            | BadPrevLink { lsn, .. }
            | BadCrc { lsn }
            | BadStartLsn { lsn }
            | InvalidRecord { lsn, .. } => *lsn,
        }
    }

    /// True for the ways a cleanly written WAL stream usually ends: zeroed
    /// space after the last record, or a page left over from a recycled segment.
    pub fn is_end_of_wal(&self) -> bool {
        matches!(
            self,
            WalDecodeError::InvalidRecordLength { got: 0, .. }
                | WalDecodeError::UnexpectedPageAddr { .. }
                | WalDecodeError::BadPageMagic { magic: 0, .. }
        )
    }
}
