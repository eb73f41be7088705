//! Shared building blocks of every Zenith process.
//!
//! - [`lsn::Lsn`]: a position in a WAL stream, printed and parsed as `X/Y`.
//! - [`id`]: [`id::TenantId`] and [`id::TimelineId`], 16 random bytes shown
//!   as 32 hex characters.
//! - [`pq_proto`]: the server side of the PostgreSQL v3 wire protocol as a
//!   synchronous codec over `BytesMut` (frontend parsing, backend
//!   serialization).
//! - [`crashsafe`]: durable, atomic file writes, directory creation and
//!   removal (fsync of files and of their directories).
//! - [`logging`]: the `tracing` subscriber setup every binary uses.
//!
//! Nothing here knows about networking beyond byte codecs, or about any
//! particular daemon.

pub mod crashsafe;
pub mod id;
pub mod logging;
pub mod lsn;
pub mod pq_proto;
