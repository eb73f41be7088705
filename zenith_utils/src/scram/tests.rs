//! Tests of [`crate::scram`]: the RFC 7677 example, `postgres-protocol`'s
//! client and secrets as oracles, our client against our server, refusals,
//! and property tests that no input panics.

mod channel_binding;
mod client;
mod client_messages;
mod properties;
mod secret;
mod server;

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::*;

const PASSWORD: &str = "pencil";

/// A secret with few iterations, for tests that do not check PBKDF2.
fn cheap_secret() -> ScramSecret {
    ScramSecret::with_salt(PASSWORD, b"salt", 2)
}

fn secret() -> ScramSecret {
    ScramSecret::with_salt(PASSWORD, b"0123456789abcdef", DEFAULT_ITERATIONS)
}

/// `postgres-protocol`'s client (what PostgreSQL's Rust driver uses)
/// against our server. The client must accept everything our server
/// sends; the server's outcome is returned.
fn oracle_login(
    password: &str,
    channel_binding: ChannelBinding,
    mechanism: &str,
    server: &mut ServerExchange,
) -> Result<ScramKeys, ScramError> {
    let mut client = ScramSha256::new(password.as_bytes(), channel_binding);
    let first = server.client_first(mechanism, client.message())?;
    client
        .update(&first)
        .expect("the client accepts our server-first-message");
    let (last, keys) = server.client_final(client.message())?;
    client
        .finish(&last)
        .expect("the client verifies our server signature");
    Ok(keys)
}

/// Our client with `keys` against our server.
fn keys_login(keys: &ScramKeys, server: &mut ServerExchange) -> Result<ScramKeys, ScramError> {
    let mut client = ClientExchange::with_keys(keys.clone());
    let first = server.client_first(SCRAM_SHA_256, &client.client_first())?;
    let last = client.server_first(&first)?;
    let (server_final, recovered) = server.client_final(&last)?;
    client.server_final(&server_final)?;
    Ok(recovered)
}
