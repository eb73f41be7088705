//! The walkeeper (docs/architecture.md §9).
//!
//! A walkeeper accepts WAL from a compute's walproposer under a term/vote
//! quorum protocol, stores it durably in 16 MiB segment files and serves it to
//! the pageserver over physical replication.
//!
//! Status: not built yet (a later issue); this crate has no binary until it
//! can accept WAL.
