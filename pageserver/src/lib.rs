//! The pageserver (docs/architecture.md §5–§8, §10).
//!
//! It follows WAL from a walkeeper or a PostgreSQL primary, decodes it with
//! `postgres_ffi`, stores page versions in layer files per timeline, and
//! reconstructs any page at any LSN for computes (GetPage@LSN) with
//! `postgres --wal-redo`.
//!
//! Map of the crate, by concept:
//!
//! - storage: [`key`], [`value`], [`tenant`] (timelines, layer files, layer
//!   map, image layers, compaction, GC); [`tenant_mgr`], every tenant, above
//!   the storage and the data model;
//! - PostgreSQL's data directory over the key space: [`pgdatadir_mapping`],
//!   [`import_datadir`], [`basebackup`];
//! - WAL: [`walreceiver`] (replication client), [`walingest`] (records to
//!   values), [`walredo`] (page reconstruction);
//! - serving: [`page_service`] (libpq: pagestream, basebackup) with the wire
//!   codec in [`pagestream`], [`http`] (management API), [`wal_sources`];
//! - [`config`], the `pageserver.toml` settings.
//!
//! Binaries: `pageserver` (the daemon) and `pagebench` (GetPage@LSN load).

pub mod basebackup;
pub mod config;
pub mod http;
pub mod import_datadir;
pub mod key;
pub mod page_cache;
pub mod page_service;
pub mod pagestream;
pub mod pgdatadir_mapping;
pub mod tenant;
pub mod tenant_mgr;
pub mod value;
pub mod wal_sources;
pub mod walingest;
pub mod walreceiver;
pub mod walredo;

/// Registers every metric of the pageserver that is not registered at
/// startup anyway, so that `/metrics` lists them all from the start (at 0),
/// before the code they measure first runs.
pub fn register_metrics() {
    page_service::register_metrics();
    tenant::storage_layer::reader_cache::register_metrics();
    tenant::timeline::register_metrics();
    walingest::register_metrics();
    walreceiver::register_metrics();
    walredo::register_metrics();
}
