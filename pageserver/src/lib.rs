//! The pageserver (ARCHITECTURE.md §5–§8, §10).
//!
//! It follows WAL from a walkeeper or a PostgreSQL primary, decodes it with
//! `postgres_ffi`, stores page versions in layer files per timeline, and
//! reconstructs any page at any LSN for computes (GetPage@LSN) with
//! `postgres --wal-redo`.
//!
//! Status (issue 3, in progress): the storage key space ([`key`]) and the
//! timeline metadata file ([`tenant::metadata`]) exist; ingest, layers, WAL
//! redo, the page service and the daemon do not yet, so this crate has no
//! binary.

pub mod basebackup;
pub mod config;
pub mod import_datadir;
pub mod key;
pub mod pagestream;
pub mod pgdatadir_mapping;
pub mod tenant;
pub mod value;
pub mod walingest;
pub mod walreceiver;
pub mod walredo;
