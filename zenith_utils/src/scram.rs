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

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;

use crate::pq_proto::SqlState;

#[cfg(test)]
mod tests;

/// The SASL mechanism without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The SASL mechanism with channel binding (`tls-server-end-point`).
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// PostgreSQL's default iteration count for new secrets.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// PostgreSQL's default salt length for new secrets, in bytes.
pub const DEFAULT_SALT_LEN: usize = 16;
/// Length of StoredKey, ServerKey, ClientKey, proofs and signatures.
pub const KEY_LEN: usize = 32;

/// Random bytes in a nonce (base64: 24 characters), as PostgreSQL.
const RAW_NONCE_LEN: usize = 18;
const SCHEME_PREFIX: &str = "SCRAM-SHA-256$";
const CHANNEL_BINDING_TYPE: &[u8] = b"tls-server-end-point";
const GS2_NONE: &[u8] = b"n,,";
const GS2_UNUSED: &[u8] = b"y,,";
const GS2_TLS_SERVER_END_POINT: &[u8] = b"p=tls-server-end-point,,";
/// Longest server `e=` value kept in [`ScramError::ServerError`].
const MAX_SERVER_ERROR_LEN: usize = 64;

/// Why a SCRAM exchange or a secret was refused. [`ScramError::sql_state`]
/// is the SQLSTATE to report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message that does not follow the SCRAM syntax or this exchange
    /// (08P01).
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client chose a mechanism the server did not offer (08P01).
    #[error("client selected an invalid SASL authentication mechanism")]
    InvalidMechanism,
    /// A channel-binding type other than `tls-server-end-point` (08P01).
    #[error("unsupported SCRAM channel-binding type")]
    UnsupportedChannelBinding,
    /// An optional SCRAM feature PostgreSQL does not implement either:
    /// authorization identity, mandatory extensions (0A000).
    #[error("{0}")]
    Unsupported(&'static str),
    /// The client supports channel binding but thinks the server does not,
    /// while the server offered it: someone may have removed
    /// SCRAM-SHA-256-PLUS from the offer (28000).
    #[error(
        "SCRAM channel binding negotiation error: the client supports channel binding \
         but thinks the server does not; this server does support channel binding"
    )]
    ChannelBindingDowngrade,
    /// The channel-binding data is not this server's certificate: the
    /// client's TLS connection ends somewhere else (28000).
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    /// The client's proof does not match the secret: a wrong password
    /// (28P01).
    #[error("password authentication failed")]
    InvalidProof,
    /// The server's signature does not verify: it does not hold the secret
    /// of the keys the client logged in with (28000).
    #[error("the server's SCRAM signature does not verify: it does not know the role's secret")]
    InvalidServerSignature,
    /// The server ended the exchange with `e=<code>` (28P01 for
    /// `invalid-proof`, 28000 otherwise).
    #[error("the server refused SCRAM authentication: {0}")]
    ServerError(String),
    /// A stored secret that cannot be parsed (XX000: not the client's
    /// doing).
    #[error("invalid SCRAM secret: {0}")]
    InvalidSecret(&'static str),
    /// A message arrived at a step of the exchange where none is expected:
    /// after the end, after a failure, or out of order (08P01).
    #[error("unexpected SCRAM message: {0}")]
    OutOfOrder(&'static str),
}

impl ScramError {
    /// The SQLSTATE to report for this error.
    pub fn sql_state(&self) -> SqlState {
        match self {
            ScramError::Malformed(_)
            | ScramError::InvalidMechanism
            | ScramError::UnsupportedChannelBinding
            | ScramError::OutOfOrder(_) => SqlState::PROTOCOL_VIOLATION,
            ScramError::Unsupported(_) => SqlState::FEATURE_NOT_SUPPORTED,
            ScramError::ChannelBindingDowngrade
            | ScramError::ChannelBindingMismatch
            | ScramError::InvalidServerSignature => SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            ScramError::InvalidProof => SqlState::INVALID_PASSWORD,
            ScramError::ServerError(code) if code == "invalid-proof" => SqlState::INVALID_PASSWORD,
            ScramError::ServerError(_) => SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            ScramError::InvalidSecret(_) => SqlState::INTERNAL_ERROR,
        }
    }
}

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

/// The server side of one SCRAM authentication: [`mechanisms`] to offer in
/// AuthenticationSASL, then [`client_first`] with the SASLInitialResponse
/// and [`client_final`] with the SASLResponse. Any error ends the exchange;
/// a later call fails with [`ScramError::OutOfOrder`].
///
/// A SASLInitialResponse without data (length -1) is allowed by the
/// protocol: the server answers with an empty AuthenticationSASLContinue
/// and the client sends its first message in a SASLResponse, which goes to
/// [`client_first`] with the mechanism of the initial response.
///
/// [`mechanisms`]: ServerExchange::mechanisms
/// [`client_first`]: ServerExchange::client_first
/// [`client_final`]: ServerExchange::client_final
pub struct ServerExchange {
    secret: ScramSecret,
    /// `Some(hash)`: SCRAM-SHA-256-PLUS is offered.
    channel_binding: Option<Vec<u8>>,
    state: ServerState,
    /// Our part of the nonce; random unless a test sets it.
    server_nonce: String,
}

enum ServerState {
    Initial,
    SentFirst {
        /// The gs2 header plus, for `p=`, the channel-binding data: what
        /// `c=` must encode.
        cbind_input: Vec<u8>,
        /// Whether the gs2 flag was `p` (a wrong `c=` is then a mismatch
        /// of certificates rather than a malformed message).
        binding: bool,
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
        nonce: Vec<u8>,
    },
    Done,
}

impl ServerExchange {
    /// An exchange against `secret`. `channel_binding`: the server runs
    /// TLS and this is its certificate's [`tls_server_end_point`] data;
    /// SCRAM-SHA-256-PLUS is then offered, and a client that could bind but
    /// does not believe the server can is refused.
    pub fn new(secret: &ScramSecret, channel_binding: Option<Vec<u8>>) -> ServerExchange {
        ServerExchange {
            secret: secret.clone(),
            channel_binding,
            state: ServerState::Initial,
            server_nonce: random_nonce(),
        }
    }

    /// The mechanisms to offer, preferred first:
    /// `["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]` with channel binding,
    /// `["SCRAM-SHA-256"]` without.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        if self.channel_binding.is_some() {
            &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        } else {
            &[SCRAM_SHA_256]
        }
    }

    /// Takes the client's mechanism and client-first-message; returns the
    /// server-first-message (`r=<nonce>,s=<salt>,i=<iterations>`) to send
    /// in AuthenticationSASLContinue.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ServerState::Initial) {
            return Err(ScramError::OutOfOrder(
                "the client-first-message was already received",
            ));
        }
        self.state = ServerState::Done;
        let plus = match mechanism {
            SCRAM_SHA_256_PLUS if self.channel_binding.is_some() => true,
            SCRAM_SHA_256 => false,
            _ => return Err(ScramError::InvalidMechanism),
        };
        let first = parse_client_first(data)?;
        let cbind_input = match (first.flag, plus) {
            (Gs2Flag::P, true) => {
                let mut input = GS2_TLS_SERVER_END_POINT.to_vec();
                input.extend_from_slice(self.channel_binding.as_deref().unwrap_or_default());
                input
            }
            (Gs2Flag::P, false) => {
                return Err(ScramError::Malformed(
                    "the client selected SCRAM-SHA-256 without channel binding, \
                     but the SCRAM message includes channel binding data",
                ))
            }
            (_, true) => {
                return Err(ScramError::Malformed(
                    "the client selected SCRAM-SHA-256-PLUS, \
                     but the SCRAM message does not include channel binding data",
                ))
            }
            (Gs2Flag::Y, false) if self.channel_binding.is_some() => {
                return Err(ScramError::ChannelBindingDowngrade)
            }
            (Gs2Flag::Y, false) => GS2_UNUSED.to_vec(),
            (Gs2Flag::N, false) => GS2_NONE.to_vec(),
        };
        let mut nonce = first.nonce.to_vec();
        nonce.extend_from_slice(self.server_nonce.as_bytes());
        let mut server_first = b"r=".to_vec();
        server_first.extend_from_slice(&nonce);
        server_first.extend_from_slice(
            format!(
                ",s={},i={}",
                BASE64.encode(&self.secret.salt),
                self.secret.iterations
            )
            .as_bytes(),
        );
        self.state = ServerState::SentFirst {
            cbind_input,
            binding: plus,
            client_first_bare: first.bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Takes the client-final-message and checks channel binding, nonce and
    /// proof. On success: the server-final-message (`v=<signature>`) to
    /// send in AuthenticationSASLFinal, and the keys the client proved to
    /// hold (its ClientKey, recovered from the proof, and the secret's
    /// ServerKey), with which to log in to PostgreSQL as this role.
    pub fn client_final(&mut self, data: &[u8]) -> Result<(Vec<u8>, ScramKeys), ScramError> {
        let ServerState::SentFirst {
            cbind_input,
            binding,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Err(ScramError::OutOfOrder(
                "a client-final-message must follow the server-first-message",
            ));
        };
        let last = parse_client_final(data)?;
        if last.channel_binding != BASE64.encode(&cbind_input).as_bytes() {
            return Err(if binding {
                ScramError::ChannelBindingMismatch
            } else {
                ScramError::Malformed(
                    "unexpected channel-binding attribute in the client-final-message",
                )
            });
        }
        if last.nonce != nonce.as_slice() {
            return Err(ScramError::Malformed("the nonce does not match"));
        }
        let auth_message = auth_message(&client_first_bare, &server_first, last.without_proof);
        let signature = hmac(&self.secret.stored_key, &auth_message);
        let client_key = xor(&last.proof, &signature);
        if !bool::from(sha256(&client_key).ct_eq(&self.secret.stored_key)) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&self.secret.server_key, &auth_message);
        let server_final = format!("v={}", BASE64.encode(server_signature)).into_bytes();
        let keys = ScramKeys {
            client_key,
            server_key: self.secret.server_key,
        };
        Ok((server_final, keys))
    }

    #[cfg(test)]
    fn set_server_nonce(&mut self, nonce: &str) {
        self.server_nonce = nonce.to_string();
    }
}

impl fmt::Debug for ServerExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ServerState::Initial => "initial",
            ServerState::SentFirst { .. } => "sent server-first",
            ServerState::Done => "done",
        };
        f.debug_struct("ServerExchange")
            .field("secret", &self.secret)
            .field("channel_binding", &self.channel_binding.is_some())
            .field("state", &state)
            .finish()
    }
}

/// The client side of SCRAM-SHA-256 with [`ScramKeys`] instead of a
/// password, without channel binding: [`client_first`] for the
/// SASLInitialResponse (mechanism [`SCRAM_SHA_256`]), [`server_first`] with
/// the AuthenticationSASLContinue data, [`server_final`] with the
/// AuthenticationSASLFinal data. Authentication has succeeded only if
/// [`server_final`] returns `Ok`.
///
/// [`client_first`]: ClientExchange::client_first
/// [`server_first`]: ClientExchange::server_first
/// [`server_final`]: ClientExchange::server_final
pub struct ClientExchange {
    keys: ScramKeys,
    client_nonce: String,
    state: ClientState,
}

enum ClientState {
    Initial,
    SentFinal { auth_message: Vec<u8> },
    Done,
}

impl ClientExchange {
    /// An exchange that logs in with `keys` (a fresh random nonce).
    pub fn with_keys(keys: ScramKeys) -> ClientExchange {
        ClientExchange {
            keys,
            client_nonce: random_nonce(),
            state: ClientState::Initial,
        }
    }

    /// The client-first-message, `n,,n=,r=<nonce>` (an empty user name, as
    /// libpq: PostgreSQL takes it from the startup packet).
    pub fn client_first(&self) -> Vec<u8> {
        let mut m = GS2_NONE.to_vec();
        m.extend_from_slice(self.client_first_bare().as_bytes());
        m
    }

    fn client_first_bare(&self) -> String {
        format!("n=,r={}", self.client_nonce)
    }

    /// Takes the server-first-message; returns the client-final-message
    /// (`c=biws,r=<nonce>,p=<proof>`). The salt and iteration count are
    /// checked for form only: the keys already embody them.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ClientState::Initial) {
            return Err(ScramError::OutOfOrder(
                "the server-first-message was already received",
            ));
        }
        self.state = ClientState::Done;
        let nonce = parse_server_first(data)?;
        if nonce.len() <= self.client_nonce.len()
            || !nonce.starts_with(self.client_nonce.as_bytes())
        {
            return Err(ScramError::Malformed(
                "the server's nonce does not extend the client's",
            ));
        }
        let mut without_proof = format!("c={},r=", BASE64.encode(GS2_NONE)).into_bytes();
        without_proof.extend_from_slice(nonce);
        let auth_message = auth_message(self.client_first_bare().as_bytes(), data, &without_proof);
        let stored_key = sha256(&self.keys.client_key);
        let proof = xor(&self.keys.client_key, &hmac(&stored_key, &auth_message));
        let mut client_final = without_proof;
        client_final.extend_from_slice(format!(",p={}", BASE64.encode(proof)).as_bytes());
        self.state = ClientState::SentFinal { auth_message };
        Ok(client_final)
    }

    /// Takes the server-final-message and checks the server's signature
    /// (`v=`); an `e=` error from the server is [`ScramError::ServerError`].
    pub fn server_final(&self, data: &[u8]) -> Result<(), ScramError> {
        let ClientState::SentFinal { auth_message } = &self.state else {
            return Err(ScramError::OutOfOrder(
                "a server-final-message must follow the client-final-message",
            ));
        };
        let signature = match parse_server_final(data)? {
            ServerFinal::Error(e) => return Err(ScramError::ServerError(e)),
            ServerFinal::Verifier(v) => v,
        };
        let expected = hmac(&self.keys.server_key, auth_message);
        if bool::from(expected.ct_eq(&signature)) {
            Ok(())
        } else {
            Err(ScramError::InvalidServerSignature)
        }
    }

    #[cfg(test)]
    fn set_client_nonce(&mut self, nonce: &str) {
        self.client_nonce = nonce.to_string();
    }
}

impl fmt::Debug for ClientExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ClientState::Initial => "initial",
            ClientState::SentFinal { .. } => "sent client-final",
            ClientState::Done => "done",
        };
        f.debug_struct("ClientExchange")
            .field("keys", &self.keys)
            .field("state", &state)
            .finish()
    }
}

/// The `tls-server-end-point` channel-binding data of a server certificate
/// (RFC 5929 §4.1): the hash of its DER encoding with the hash function of
/// its signature algorithm, where MD5 and SHA-1 are replaced by SHA-256.
///
/// Recognized signature algorithms: RSA PKCS#1 v1.5 and ECDSA with SHA-224,
/// SHA-256, SHA-384 or SHA-512 (RSA/ECDSA with MD5 or SHA-1 give SHA-256).
/// Anything else (RSASSA-PSS, whose hash is in its parameters; Ed25519,
/// which has none; bytes that are not a certificate) gets SHA-256, which is
/// what certificates are signed with in practice. PostgreSQL (OpenSSL)
/// computes the same for every recognized algorithm.
pub fn tls_server_end_point(cert_der: &[u8]) -> Vec<u8> {
    match signature_hash(cert_der) {
        CertHash::Sha224 => Sha224::digest(cert_der).to_vec(),
        CertHash::Sha256 => Sha256::digest(cert_der).to_vec(),
        CertHash::Sha384 => Sha384::digest(cert_der).to_vec(),
        CertHash::Sha512 => Sha512::digest(cert_der).to_vec(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CertHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// The hash of the certificate's `signatureAlgorithm` (the second element
/// of `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm,
/// signatureValue }`), SHA-256 when unknown.
fn signature_hash(cert_der: &[u8]) -> CertHash {
    // 1.2.840.113549.1.1.x: sha{224,256,384,512}WithRSAEncryption are 14,
    // 11, 12, 13.
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    // 1.2.840.10045.4.3.x: ecdsa-with-SHA{224,256,384,512} are 1, 2, 3, 4.
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    let oid = (|| {
        let (cert, _) = der_element(cert_der, 0x30)?;
        let (_tbs, rest) = der_element(cert, 0x30)?;
        let (alg, _) = der_element(rest, 0x30)?;
        let (oid, _) = der_element(alg, 0x06)?;
        Some(oid)
    })();
    let Some(oid) = oid else {
        return CertHash::Sha256;
    };
    if let Some(n) = oid.strip_prefix(RSA) {
        match n {
            [14] => CertHash::Sha224,
            [12] => CertHash::Sha384,
            [13] => CertHash::Sha512,
            _ => CertHash::Sha256,
        }
    } else if let Some(n) = oid.strip_prefix(ECDSA) {
        match n {
            [1] => CertHash::Sha224,
            [3] => CertHash::Sha384,
            [4] => CertHash::Sha512,
            _ => CertHash::Sha256,
        }
    } else {
        CertHash::Sha256
    }
}

/// One DER element with tag `tag` at the front of `input`: its contents
/// and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    (len <= rest.len()).then(|| rest.split_at(len))
}

// ---------------------------------------------------------------------
// Message parsing. Messages are split at ',' into `<letter>=<value>`
// attributes; values cannot contain ','.

/// The gs2-cbind-flag of a client-first-message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gs2Flag {
    /// `n`: the client does not support channel binding.
    N,
    /// `y`: the client supports it but thinks the server does not.
    Y,
    /// `p=tls-server-end-point`: the client binds.
    P,
}

struct ClientFirst<'a> {
    flag: Gs2Flag,
    /// The client-first-message-bare (after the gs2 header).
    bare: &'a [u8],
    nonce: &'a [u8],
}

struct ClientFinal<'a> {
    /// The base64 value of `c=`.
    channel_binding: &'a [u8],
    nonce: &'a [u8],
    proof: [u8; KEY_LEN],
    without_proof: &'a [u8],
}

enum ServerFinal {
    Verifier([u8; KEY_LEN]),
    Error(String),
}

/// Rejects what PostgreSQL rejects before parsing: empty messages and NUL
/// bytes (the server reads them as C strings).
fn check_message(data: &[u8]) -> Result<(), ScramError> {
    if data.is_empty() {
        return Err(ScramError::Malformed("the message is empty"));
    }
    if data.contains(&0) {
        return Err(ScramError::Malformed("the message contains a NUL byte"));
    }
    Ok(())
}

/// The value of attribute `name` (`<name>=<value>`).
fn attr<'a>(
    part: Option<&'a [u8]>,
    name: u8,
    missing: &'static str,
) -> Result<&'a [u8], ScramError> {
    match part {
        Some([n, b'=', value @ ..]) if *n == name => Ok(value),
        _ => Err(ScramError::Malformed(missing)),
    }
}

/// Any attribute (an extension): a letter, `=`, the value.
fn any_attr(part: &[u8]) -> Result<(u8, &[u8]), ScramError> {
    match part {
        [n, b'=', value @ ..] if n.is_ascii_alphabetic() => Ok((*n, value)),
        [] => Err(ScramError::Malformed(
            "an attribute was expected, but the message ends",
        )),
        _ => Err(ScramError::Malformed(
            "an attribute is not of the form x=value",
        )),
    }
}

/// RFC 5802 `printable`: ASCII 0x21-0x7e except ','.
fn is_printable(s: &[u8]) -> bool {
    s.iter().all(|&c| (0x21..=0x7e).contains(&c) && c != b',')
}

/// A positive decimal number that fits in `u32`, digits only.
fn parse_positive(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok().filter(|&n| n > 0)
}

/// `gs2-header client-first-message-bare`: `n,,n=<user>,r=<nonce>[,ext]`.
fn parse_client_first(data: &[u8]) -> Result<ClientFirst<'_>, ScramError> {
    check_message(data)?;
    let mut header = data.splitn(3, |&c| c == b',');
    let flag = match header.next().unwrap_or_default() {
        b"n" => Gs2Flag::N,
        b"y" => Gs2Flag::Y,
        [b'p', b'=', name @ ..] if name == CHANNEL_BINDING_TYPE => Gs2Flag::P,
        [b'p', b'=', ..] => return Err(ScramError::UnsupportedChannelBinding),
        _ => return Err(ScramError::Malformed("unexpected channel-binding flag")),
    };
    match header.next() {
        Some([]) => {}
        Some([b'a', b'=', ..]) => {
            return Err(ScramError::Unsupported(
                "client uses authorization identity, but it is not supported",
            ))
        }
        Some(_) => {
            return Err(ScramError::Malformed(
                "unexpected attribute in the GS2 header",
            ))
        }
        None => return Err(ScramError::Malformed("the GS2 header is incomplete")),
    }
    let bare = header
        .next()
        .ok_or(ScramError::Malformed("the GS2 header is incomplete"))?;
    if bare.starts_with(b"m=") {
        return Err(ScramError::Unsupported(
            "client requires an unsupported SCRAM extension",
        ));
    }
    let mut parts = bare.split(|&c| c == b',');
    // The user name is ignored, as in PostgreSQL.
    attr(parts.next(), b'n', "expected the user name attribute \"n\"")?;
    let nonce = attr(parts.next(), b'r', "expected the nonce attribute \"r\"")?;
    if nonce.is_empty() || !is_printable(nonce) {
        return Err(ScramError::Malformed(
            "the nonce is empty or has non-printable characters",
        ));
    }
    for part in parts {
        any_attr(part)?;
    }
    Ok(ClientFirst { flag, bare, nonce })
}

/// `c=<cbind>,r=<nonce>[,ext...],p=<proof>`.
fn parse_client_final(data: &[u8]) -> Result<ClientFinal<'_>, ScramError> {
    check_message(data)?;
    let mut parts = data.split(|&c| c == b',');
    let channel_binding = attr(
        parts.next(),
        b'c',
        "expected the channel-binding attribute \"c\"",
    )?;
    let nonce = attr(parts.next(), b'r', "expected the nonce attribute \"r\"")?;
    // Extensions up to the proof, which must be last.
    let proof = loop {
        let part = parts.next().ok_or(ScramError::Malformed(
            "the client-final-message has no proof",
        ))?;
        if let (b'p', proof) = any_attr(part)? {
            break proof;
        }
    };
    if parts.next().is_some() {
        return Err(ScramError::Malformed(
            "garbage found after the proof in the client-final-message",
        ));
    }
    let without_proof = &data[..data.len() - proof.len() - ",p=".len()];
    let proof = BASE64
        .decode(proof)
        .ok()
        .and_then(|p| <[u8; KEY_LEN]>::try_from(p).ok())
        .ok_or(ScramError::Malformed(
            "the proof in the client-final-message is not 32 bytes of base64",
        ))?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        proof,
        without_proof,
    })
}

/// `r=<nonce>,s=<salt>,i=<iterations>[,ext]`; returns the nonce.
fn parse_server_first(data: &[u8]) -> Result<&[u8], ScramError> {
    check_message(data)?;
    if data.starts_with(b"m=") {
        return Err(ScramError::Unsupported(
            "the server requires an unsupported SCRAM extension",
        ));
    }
    let mut parts = data.split(|&c| c == b',');
    let nonce = attr(parts.next(), b'r', "expected the nonce attribute \"r\"")?;
    if !is_printable(nonce) {
        return Err(ScramError::Malformed(
            "the nonce has non-printable characters",
        ));
    }
    let salt = attr(parts.next(), b's', "expected the salt attribute \"s\"")?;
    if BASE64.decode(salt).map_or(true, |s| s.is_empty()) {
        return Err(ScramError::Malformed("the salt is not valid base64"));
    }
    let iterations = attr(parts.next(), b'i', "expected the iteration count \"i\"")?;
    if parse_positive(iterations).is_none() {
        return Err(ScramError::Malformed(
            "the iteration count is not a positive number",
        ));
    }
    for part in parts {
        any_attr(part)?;
    }
    Ok(nonce)
}

/// `v=<signature>[,ext]` or `e=<error>[,ext]`.
fn parse_server_final(data: &[u8]) -> Result<ServerFinal, ScramError> {
    check_message(data)?;
    let mut parts = data.split(|&c| c == b',');
    let result = match parts.next().map(any_attr).transpose()? {
        Some((b'v', v)) => BASE64
            .decode(v)
            .ok()
            .and_then(|v| <[u8; KEY_LEN]>::try_from(v).ok())
            .map(ServerFinal::Verifier)
            .ok_or(ScramError::Malformed(
                "the server signature is not 32 bytes of base64",
            ))?,
        Some((b'e', e)) => ServerFinal::Error(sanitize(e)),
        _ => {
            return Err(ScramError::Malformed(
                "expected the server signature \"v\" or an error \"e\"",
            ))
        }
    };
    for part in parts {
        any_attr(part)?;
    }
    Ok(result)
}

/// A peer's string for an error message: printable ASCII only (others
/// become '?'), at most [`MAX_SERVER_ERROR_LEN`] characters.
fn sanitize(s: &[u8]) -> String {
    s.iter()
        .take(MAX_SERVER_ERROR_LEN)
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

// ---------------------------------------------------------------------
// Cryptography.

/// SaltedPassword = PBKDF2-HMAC-SHA-256(Normalize(password), salt, i).
fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    let normalized = stringprep::saslprep(password).unwrap_or(std::borrow::Cow::Borrowed(password));
    pbkdf2::pbkdf2_hmac_array::<Sha256, KEY_LEN>(normalized.as_bytes(), salt, iterations)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    // HMAC takes keys of any length: this never fails.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// AuthMessage = client-first-message-bare "," server-first-message ","
/// client-final-message-without-proof.
fn auth_message(client_first_bare: &[u8], server_first: &[u8], without_proof: &[u8]) -> Vec<u8> {
    [client_first_bare, server_first, without_proof].join(&b","[..])
}

/// 18 random bytes in base64, as PostgreSQL's nonces.
fn random_nonce() -> String {
    let raw: [u8; RAW_NONCE_LEN] = rand::random();
    BASE64.encode(raw)
}
