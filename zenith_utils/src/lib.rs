//! Shared building blocks of every Zenith process.
//!
//! - [`lsn::Lsn`]: a position in a WAL stream, printed and parsed as `X/Y`.
//! - [`id`]: [`id::TenantId`] and [`id::TimelineId`], 16 random bytes shown
//!   as 32 hex characters.
//! - [`pq_proto`]: the PostgreSQL v3 wire protocol as a synchronous codec
//!   over `BytesMut`, both directions, and the physical-replication
//!   messages.
//! - [`postgres_client`]: the one async PostgreSQL client (login with
//!   trust/cleartext/MD5/SCRAM-SHA-256, simple queries, CopyBoth, CopyOut).
//! - [`scram`]: SCRAM-SHA-256 for a proxy: role secrets in PostgreSQL's
//!   format, the server side of an authentication (with channel binding)
//!   that recovers the client's keys, and a client that logs in with those
//!   keys instead of a password.
//! - [`postgres_backend`]: the server side of a PostgreSQL connection
//!   (startup, TLS, authentication hook, query dispatch to a `Handler`,
//!   limits and timeouts, shutdown).
//! - [`http`]: HTTP/JSON serving with routing, JSON errors, body limits,
//!   `/metrics` and `/v1/status`.
//! - [`daemon`]: pid file lock, configuration with `-c key=value`
//!   overrides, signal handling.
//! - [`api`]: the bodies of the daemons' HTTP APIs and their file names,
//!   shared by servers and clients.
//! - [`crashsafe`]: durable, atomic file writes, directory creation and
//!   removal (fsync of files and of their directories).
//! - [`logging`]: the `tracing` subscriber setup every binary uses.
//! - [`auth`]: RS256 JWT tokens: scopes, checking, issuing, key pairs.
//! - [`remote_storage`]: object storage (a local directory or S3): write-once
//!   puts, ranged gets, lists and deletes with bounded concurrency, timeouts,
//!   retries and metrics.
//!
//! Nothing here knows about any daemon's internals: a daemon plugs its
//! logic into these pieces (a `postgres_backend::Handler`, an
//! `http::Router`'s handlers).

pub mod api;
pub mod auth;
pub mod crashsafe;
pub mod daemon;
pub mod http;
pub mod id;
pub mod logging;
pub mod lsn;
pub mod postgres_backend;
pub mod postgres_client;
pub mod pq_proto;
pub mod remote_storage;
pub mod scram;
