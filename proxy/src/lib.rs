//! The proxy (docs/architecture.md §1, §2).
//!
//! Accepts psql connections, authenticates them and routes each to the
//! compute of its project through the control-plane API.
//!
//! Status: not built yet (a later issue); this crate has no binary until it
//! can route connections.
