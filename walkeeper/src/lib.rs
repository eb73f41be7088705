//! The walkeeper (docs/architecture.md §9, docs/walkeeper_protocol.md).
//!
//! A walkeeper accepts WAL from a compute's walproposer under a term/vote
//! quorum protocol, stores it durably in 16 MiB segment files and serves it to
//! the pageserver over physical replication.
//!
//! - [`proto`]: the consensus protocol's messages and their codec;
//! - [`acceptor`]: a timeline's acceptor state machine (no I/O: storage goes
//!   through [`acceptor::WalStore`]);
//! - [`proposer`]: the proposer's decisions (donor, history, streaming start,
//!   commit), shared by the model checker and the test proposer;
//! - [`control_file`]: the acceptor state on disk (checksummed, atomic);
//! - [`wal_storage`]: WAL segment files, truncation, and finding the end of
//!   WAL after a restart;
//! - [`timeline`]: the daemon's timelines (acceptor + disk store + watches);
//! - [`wal_service`], [`receive_wal`], [`send_wal`]: the PostgreSQL-protocol
//!   service: `START_WAL_PUSH` from proposers, `START_REPLICATION` to the
//!   pageserver;
//! - [`http`]: status, timeline status, metrics.
//!
//! The model check of the protocol (stateright) is in `model.rs`, run by
//! `cargo test`.

pub mod acceptor;
pub mod control_file;
pub mod http;
#[cfg(test)]
mod model;
pub mod proposer;
pub mod proto;
pub mod receive_wal;
pub mod send_wal;
pub mod timeline;
pub mod wal_service;
pub mod wal_storage;
