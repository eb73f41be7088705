//! The pageserver (ARCHITECTURE.md §5–§8, §10).
//!
//! It follows WAL from a walkeeper or a PostgreSQL primary, decodes it with
//! `postgres_ffi`, stores page versions in layer files per timeline, and
//! reconstructs any page at any LSN for computes (GetPage@LSN) with
//! `postgres --wal-redo`.
//!
//! Status: the storage service is tracked by issue 3 and is not built yet;
//! this crate has no binary until it can serve pages.
