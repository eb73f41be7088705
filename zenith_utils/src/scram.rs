//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, for a proxy
//! that authenticates clients against a role's stored secret and then logs
//! in to the real PostgreSQL with the ClientKey the client's proof reveals,
//! never knowing the password.
//!
//! - [`ScramSecret`]: the verifier as `pg_authid.rolpassword` stores it,
//!   `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64).
//! - [`ScramKeys`]: ClientKey and ServerKey, what it takes to log in to a
//!   server holding the secret (and to prove being that server).
//! - [`ServerExchange`]: one authentication of a client against a secret,
//!   with SCRAM-SHA-256-PLUS (`tls-server-end-point` channel binding) when
//!   the server runs TLS. A success yields the client's [`ScramKeys`].
//! - [`ClientExchange`]: logging in to a server with [`ScramKeys`] instead
//!   of a password (no channel binding: the caller does not run TLS).
//! - [`tls_server_end_point`]: the channel-binding data of a certificate.
//!
//! The rules follow PostgreSQL's `auth-scram.c`: the user name in the SCRAM
//! message is ignored (the startup packet names the role; libpq sends
//! `n=`), an authorization identity (`a=`) and mandatory extensions (`m=`)
//! are refused, and a client that supports channel binding but thinks the
//! server does not (`y`) is refused when the server offers it, since that
//! means someone removed SCRAM-SHA-256-PLUS from the offer.
//!
//! Every parser takes untrusted bytes and returns a [`ScramError`] on bad
//! input; none panics. Error messages never contain a password, a key or a
//! proof, and echo nothing the peer sent except a server's `e=` error code
//! (sanitized).
//!
//! Passwords are normalized with SASLprep (RFC 4013) when they are valid
//! SASLprep input, and used as they are otherwise (prohibited characters
//! such as control characters, unassigned code points): exactly what
//! PostgreSQL (`pg_saslprep`) and `postgres_protocol` do, so that secrets
//! and proofs agree with theirs.

mod channel_binding;
mod client;
mod crypto;
mod error;
mod messages;
mod secret;
mod server;
#[cfg(test)]
mod tests;

pub use channel_binding::tls_server_end_point;
pub use client::ClientExchange;
pub use crypto::KEY_LEN;
pub use error::ScramError;
pub use messages::{SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
pub use secret::{ScramKeys, ScramSecret, DEFAULT_ITERATIONS, DEFAULT_SALT_LEN};
pub use server::ServerExchange;
