//! The local control plane (ARCHITECTURE.md §10).
//!
//! Knows the `.zenith/` repository directory and starts, stops and inspects
//! the pageserver, walkeepers, computes and proxy as local processes; the
//! `zenith` CLI is a thin layer over it.
//!
//! Status: tracked by issue 4; empty until then.
