//! Page reconstruction (ARCHITECTURE.md §6): applying a page's WAL records to
//! its base image.
//!
//! [`WalRedoManager`] is what the read path calls. Rust-native pseudo-records
//! are applied here ([`apply_native`]); PostgreSQL records go to a
//! `postgres --wal-redo` process (not built yet: until then such a request
//! is an error that says so, never a wrong page).

pub mod apply_native;

use bytes::Bytes;
use zenith_utils::lsn::Lsn;

use crate::key::Key;
use crate::value::ZenithWalRecord;

/// Why a page could not be reconstructed.
#[derive(Debug, thiserror::Error)]
pub enum WalRedoError {
    #[error("no base image and the first record of {key} at {lsn} does not initialize the page")]
    NoBaseImage { key: Key, lsn: Lsn },
    #[error("applying the record at {lsn} to {key}: {source}")]
    Native {
        key: Key,
        lsn: Lsn,
        #[source]
        source: apply_native::ApplyError,
    },
    #[error("{key} at {lsn} needs PostgreSQL WAL redo, which is not available: {reason}")]
    PostgresRedoUnavailable { key: Key, lsn: Lsn, reason: String },
}

/// Reconstructs pages from a base image and records.
pub trait WalRedoManager: Send + Sync {
    /// The page of `key` at `lsn`, from `base_img` (LSN and bytes, if any)
    /// and `records` (ascending LSN, all above the base image).
    fn request_redo(
        &self,
        key: Key,
        lsn: Lsn,
        base_img: Option<(Lsn, Bytes)>,
        records: Vec<(Lsn, ZenithWalRecord)>,
    ) -> Result<Bytes, WalRedoError>;
}

/// Applies Rust-native records; refuses PostgreSQL records.
#[derive(Debug, Default)]
pub struct NativeOnlyRedoManager;

impl WalRedoManager for NativeOnlyRedoManager {
    fn request_redo(
        &self,
        key: Key,
        lsn: Lsn,
        base_img: Option<(Lsn, Bytes)>,
        records: Vec<(Lsn, ZenithWalRecord)>,
    ) -> Result<Bytes, WalRedoError> {
        let mut page = match base_img {
            Some((_, img)) => img.to_vec(),
            None => return Err(WalRedoError::NoBaseImage { key, lsn }),
        };
        for (rec_lsn, rec) in &records {
            if let ZenithWalRecord::Postgres { .. } = rec {
                return Err(WalRedoError::PostgresRedoUnavailable {
                    key,
                    lsn: *rec_lsn,
                    reason: "postgres --wal-redo is not wired in yet".into(),
                });
            }
            apply_native::apply_native(&mut page, key.field6, rec).map_err(|source| {
                WalRedoError::Native {
                    key,
                    lsn: *rec_lsn,
                    source,
                }
            })?;
        }
        Ok(Bytes::from(page))
    }
}
