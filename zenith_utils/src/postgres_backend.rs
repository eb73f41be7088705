//! The server side of a PostgreSQL connection, shared by every daemon that
//! accepts libpq clients (the pageserver's page service today; the
//! walkeeper and the proxy next).
//!
//! [`serve()`] accepts connections and runs each in its own task:
//!
//! 1. **Startup**: SSLRequest is answered with `S` and a TLS handshake
//!    (rustls) when [`BackendConf::tls`] is set, else `N`; GSSENCRequest
//!    with `N`; a CancelRequest is passed to [`Handler::cancel`] and the
//!    connection closed; the StartupMessage goes to [`Handler::startup`]
//!    (which may refuse it), minor versions above 3.0 and `_pq_.` options
//!    get NegotiateProtocolVersion.
//! 2. **Authentication** by [`Handler::auth_method`]: trust, or a cleartext
//!    password checked by [`Handler::check_password`] (JWTs travel this
//!    way), or the handler's own exchange ([`Handler::authenticate`]: the
//!    proxy's SCRAM). Then AuthenticationOk, ParameterStatus,
//!    BackendKeyData and ReadyForQuery; or the handler has answered those
//!    itself and runs the rest of the connection in [`Handler::take_over`]
//!    (the proxy splices the client to a compute, with
//!    [`PostgresBackend::take_stream`]).
//! 3. **Queries**: each simple query goes to [`Handler::process_query`],
//!    which writes its results (rows, CopyOut or CopyBoth streams) through
//!    the [`PostgresBackend`]; the backend then sends ReadyForQuery, or for
//!    a [`HandlerError::Query`] an ERROR and ReadyForQuery.
//!
//! Limits and guarantees:
//! - The whole startup phase (TLS, authentication included) must end
//!   within [`BackendConf::startup_timeout`]; a session waiting for a query
//!   is closed after [`BackendConf::idle_timeout`] (57P05). Streams started
//!   by the handler are not subject to the idle timeout.
//! - At most [`BackendConf::max_connections`] connections are served; one
//!   more is answered FATAL 53300 after its startup packet, like PostgreSQL.
//! - Every message is read through [`FeDecoder`](crate::pq_proto::FeDecoder) with
//!   [`BackendConf::max_message_size`]: a malformed or oversized message is
//!   FATAL with the decoder's SQLSTATE, and only that connection ends.
//! - Shutdown (the watch turning true): [`serve()`] stops accepting; a
//!   connection ends at its next read with FATAL 57P01 (reads are cancel
//!   safe: nothing half-read is lost or misparsed); [`serve()`] returns when
//!   all are gone or after [`BackendConf::shutdown_grace`], aborting the
//!   rest. A panicking handler ends its connection only.

mod auth_method;
mod conf;
mod connection;
mod connection_auth;
mod error;
mod handler;
mod listener;
mod messages;
mod queries;
mod socket;
mod startup;
mod tls;

pub use auth_method::{AuthMethod, AuthOutcome};
pub use conf::BackendConf;
pub use connection::PostgresBackend;
pub use connection_auth::ConnectionAuth;
pub use error::HandlerError;
pub use handler::Handler;
pub use listener::{run_connection, serve};
pub use messages::{BackendReader, BackendWriter};
pub use queries::truncated;
pub use socket::ClientStream;
