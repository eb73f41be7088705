//! The proxy: one address for every endpoint's database (docs/proxy.md).
//!
//! A client connects with any PostgreSQL client; the proxy
//! 1. negotiates TLS (rustls, the certificate `zenith init` made) and finds
//!    the **endpoint** the client wants ([`routing`]): the first DNS label
//!    of the TLS server name (SNI), else `options=endpoint=<name>`, else the
//!    password form `endpoint=<name>;<password>` (TLS only);
//! 2. authenticates the role ([`auth`]) against the secret the console
//!    holds ([`console`]): SCRAM-SHA-256 (or -PLUS with channel binding
//!    over TLS) with the client, which leaves the proxy with the role's
//!    ClientKey and never the password; or the login link of link-auth
//!    endpoints, approved in the console's web page;
//! 3. asks the console to wake the endpoint (its compute is started if it
//!    was suspended) and logs in to the compute with those SCRAM keys;
//! 4. hands the compute's startup answers to the client under a cancel key
//!    of its own ([`cancel`]), then splices the two sockets.
//!
//! Limits: connections at once, time to authenticate, and failed
//! authentications per endpoint and role ([`rate_limit`]). Every refusal is
//! an ErrorResponse with a SQLSTATE. HTTP ([`mgmt`]): `/metrics`,
//! `/v1/status`, and the console's link-session approvals.

pub mod auth;
pub mod cancel;
pub mod config;
pub mod console;
pub mod handler;
pub mod metrics;
pub mod mgmt;
pub mod rate_limit;
pub mod routing;
pub mod state;
