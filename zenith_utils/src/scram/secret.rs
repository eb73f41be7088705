//! A role's stored secret ([`ScramSecret`]) and the keys that log in
//! against it ([`ScramKeys`]).

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use subtle::ConstantTimeEq;

use super::crypto::{hmac, salted_password, sha256, KEY_LEN};
use super::error::ScramError;
use super::messages::parse_positive;

/// PostgreSQL's default iteration count for new secrets.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// PostgreSQL's default salt length for new secrets, in bytes.
pub const DEFAULT_SALT_LEN: usize = 16;
const SCHEME_PREFIX: &str = "SCRAM-SHA-256$";

/// A role's SCRAM-SHA-256 secret (verifier), as PostgreSQL stores it in
/// `pg_authid.rolpassword`. It does not reveal the password, but it allows
/// an offline guessing attack on it, and whoever holds it can act as a
/// server for the role: keep it private. `Debug` shows no key; `Display`
/// writes the whole secret in PostgreSQL's format.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// PBKDF2 iterations (PostgreSQL's default: 4096).
    pub iterations: u32,
    /// The salt (PostgreSQL's default: 16 random bytes).
    pub salt: Vec<u8>,
    /// SHA-256(ClientKey).
    pub stored_key: [u8; KEY_LEN],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; KEY_LEN],
}

impl ScramSecret {
    /// Parses PostgreSQL's format,
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` with the
    /// binary parts in standard, padded base64. The iteration count must
    /// be a positive decimal number and the salt non-empty.
    pub fn parse(s: &str) -> Result<ScramSecret, ScramError> {
        let rest = s
            .strip_prefix(SCHEME_PREFIX)
            .ok_or(ScramError::InvalidSecret(
                "it does not start with \"SCRAM-SHA-256$\"",
            ))?;
        let (params, keys) = rest.split_once('$').ok_or(ScramError::InvalidSecret(
            "expected <iterations>:<salt>$<StoredKey>:<ServerKey>",
        ))?;
        let (iterations, salt) = params.split_once(':').ok_or(ScramError::InvalidSecret(
            "expected <iterations>:<salt> after the scheme",
        ))?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(ScramError::InvalidSecret(
            "expected <StoredKey>:<ServerKey> after the salt",
        ))?;
        let iterations = parse_positive(iterations.as_bytes()).ok_or(ScramError::InvalidSecret(
            "the iteration count is not a positive number",
        ))?;
        let salt = BASE64
            .decode(salt)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or(ScramError::InvalidSecret("the salt is not valid base64"))?;
        let key = |k: &str, what| {
            BASE64
                .decode(k)
                .ok()
                .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
                .ok_or(ScramError::InvalidSecret(what))
        };
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key: key(stored_key, "StoredKey is not 32 bytes of base64")?,
            server_key: key(server_key, "ServerKey is not 32 bytes of base64")?,
        })
    }

    /// A new secret for `password` with PostgreSQL's defaults: a random
    /// 16-byte salt and 4096 iterations. The password is SASLprep-normalized
    /// when possible (see the module documentation).
    pub fn from_password(password: &str) -> ScramSecret {
        let salt: [u8; DEFAULT_SALT_LEN] = rand::random();
        ScramSecret::with_salt(password, &salt, DEFAULT_ITERATIONS)
    }

    /// The secret for `password` with this salt and iteration count.
    ///
    /// # Panics
    ///
    /// If `iterations` is 0.
    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        assert!(iterations > 0, "SCRAM needs at least one iteration");
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Whether `keys` belong to this secret: SHA-256(ClientKey) is StoredKey
    /// and the ServerKeys are equal. Compares in constant time.
    pub fn matches(&self, keys: &ScramKeys) -> bool {
        let stored = sha256(&keys.client_key);
        let ok = stored.ct_eq(&self.stored_key) & keys.server_key.ct_eq(&self.server_key);
        ok.into()
    }
}

impl fmt::Display for ScramSecret {
    /// PostgreSQL's format (see [`ScramSecret::parse`]). This is the
    /// secret itself: do not log it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME_PREFIX}{}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .field("keys", &"<redacted>")
            .finish()
    }
}

/// ClientKey and ServerKey of a role: with them a client logs in to a
/// server holding the role's [`ScramSecret`], and checks that server's
/// signature, without the password. As sensitive as the password for that
/// server. `Debug` shows neither key; equality is constant-time.
#[derive(Clone)]
pub struct ScramKeys {
    /// HMAC(SaltedPassword, "Client Key").
    pub client_key: [u8; KEY_LEN],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; KEY_LEN],
}

impl ScramKeys {
    /// The keys of `password` under the salt and iteration count of
    /// `secret` (PBKDF2-HMAC-SHA-256, `secret.iterations` rounds: 4096 take
    /// a few milliseconds). They match the secret iff the password is
    /// right ([`ScramSecret::matches`]).
    pub fn from_password(password: &str, secret: &ScramSecret) -> ScramKeys {
        let salted = salted_password(password, &secret.salt, secret.iterations);
        ScramKeys {
            client_key: hmac(&salted, b"Client Key"),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

impl PartialEq for ScramKeys {
    fn eq(&self, other: &ScramKeys) -> bool {
        let eq =
            self.client_key.ct_eq(&other.client_key) & self.server_key.ct_eq(&other.server_key);
        eq.into()
    }
}

impl Eq for ScramKeys {}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramKeys(<redacted>)")
    }
}
