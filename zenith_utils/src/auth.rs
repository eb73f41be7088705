//! JWT authentication shared by every daemon.
//!
//! Tokens are RS256 JSON Web Tokens. The control plane holds the private
//! key (made by `zenith init --auth`) and issues tokens; each daemon holds
//! only the public key (`auth_validation_public_key_path`) and checks them.
//! Authentication is off by default and on with `auth_type = "ZenithJWT"`.
//!
//! A token's claims name one [`Scope`]:
//! - `pageserverapi`: the pageserver's management API (every route) and
//!   every tenant's pages;
//! - `tenant` with a `tenant_id`: that tenant's pages, basebackups and HTTP
//!   routes, nothing else;
//! - `walkeeperdata`: pushing WAL to and streaming it from walkeepers; with
//!   a `tenant_id`, only that tenant's timelines;
//! - `controlplane`: the console's and the proxy's internal HTTP APIs.
//!
//! An `exp` claim (seconds since the epoch) is checked when present; a
//! token without one does not expire.
//!
//! Where tokens travel: as the password of a PostgreSQL connection
//! (page service, walkeepers) and as `Authorization: Bearer <token>` over
//! HTTP. Processes that connect somewhere read their token from an
//! environment variable ([`AUTH_TOKEN_ENV`] and friends), never from a
//! file in clear.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::id::TenantId;

/// The token a daemon or a CLI presents when it connects to another daemon
/// with auth on (the pageserver to walkeepers, the proxy to the console).
pub const AUTH_TOKEN_ENV: &str = "ZENITH_AUTH_TOKEN";
/// The compute's token for the page service (scope `tenant`).
pub const PAGESERVER_TOKEN_ENV: &str = "ZENITH_PAGESERVER_TOKEN";
/// The compute's token for the walkeepers (scope `walkeeperdata`).
pub const WALKEEPER_TOKEN_ENV: &str = "ZENITH_WALKEEPER_TOKEN";

/// File names of the key pair in a repository directory.
pub const PRIVATE_KEY_FILE: &str = "auth_private_key.pem";
pub const PUBLIC_KEY_FILE: &str = "auth_public_key.pem";

/// Whether a daemon checks tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AuthType {
    /// Everyone who can reach the port is served.
    #[default]
    Trust,
    /// Every request carries an RS256 token signed by the control plane.
    #[serde(rename = "ZenithJWT")]
    ZenithJwt,
}

impl FromStr for AuthType {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Trust" | "trust" => Ok(AuthType::Trust),
            "ZenithJWT" | "zenithjwt" | "jwt" => Ok(AuthType::ZenithJwt),
            _ => Err(AuthError::Config(format!(
                "unknown auth_type {s:?}: expected \"Trust\" or \"ZenithJWT\""
            ))),
        }
    }
}

impl fmt::Display for AuthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthType::Trust => "Trust",
            AuthType::ZenithJwt => "ZenithJWT",
        })
    }
}

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The pageserver's management API and every tenant on it.
    PageServerApi,
    /// One tenant's pages and routes (the `tenant_id` claim).
    Tenant,
    /// WAL push and replication on walkeepers.
    WalkeeperData,
    /// The console's and the proxy's internal APIs.
    ControlPlane,
}

impl FromStr for Scope {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
            AuthError::Config(format!(
                "unknown scope {s:?}: expected pageserverapi, tenant, walkeeperdata or controlplane"
            ))
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::PageServerApi => "pageserverapi",
            Scope::Tenant => "tenant",
            Scope::WalkeeperData => "walkeeperdata",
            Scope::ControlPlane => "controlplane",
        })
    }
}

/// The claims of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub scope: Scope,
    /// The one tenant a `tenant` (or tenant-bound `walkeeperdata`) token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

impl Claims {
    pub fn new(scope: Scope, tenant_id: Option<TenantId>) -> Claims {
        Claims {
            scope,
            tenant_id,
            exp: None,
        }
    }

    /// Pages, basebackups and HTTP routes of `tenant`: a `pageserverapi`
    /// token or a `tenant` token for that tenant.
    pub fn check_tenant(&self, tenant: TenantId) -> Result<(), AuthError> {
        match (self.scope, self.tenant_id) {
            (Scope::PageServerApi, _) => Ok(()),
            (Scope::Tenant, Some(t)) if t == tenant => Ok(()),
            (Scope::Tenant, Some(t)) => Err(AuthError::Forbidden(format!(
                "the token is for tenant {t}, not {tenant}"
            ))),
            (Scope::Tenant, None) => Err(AuthError::Forbidden(
                "a tenant token must name its tenant_id".into(),
            )),
            (scope, _) => Err(AuthError::Forbidden(format!(
                "a {scope} token does not give access to tenant {tenant}"
            ))),
        }
    }

    /// Exactly `scope` (management routes, internal APIs).
    pub fn check_scope(&self, scope: Scope) -> Result<(), AuthError> {
        if self.scope == scope {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!(
                "this needs a {scope} token, not a {} token",
                self.scope
            )))
        }
    }

    /// WAL of `tenant` on a walkeeper: a `walkeeperdata` token, for all
    /// tenants or bound to this one.
    pub fn check_walkeeper(&self, tenant: TenantId) -> Result<(), AuthError> {
        self.check_scope(Scope::WalkeeperData)?;
        match self.tenant_id {
            Some(t) if t != tenant => Err(AuthError::Forbidden(format!(
                "the token is for tenant {t}, not {tenant}"
            ))),
            _ => Ok(()),
        }
    }
}

/// A token was refused, or keys could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: no token was presented")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token's signature is not valid (signed by another key?)")]
    BadSignature,
    #[error("permission denied: {0}")]
    Forbidden(String),
    #[error("auth key: {0}")]
    Key(String),
    #[error("auth configuration: {0}")]
    Config(String),
}

impl AuthError {
    /// Whether this is about who the client is (401) rather than what it
    /// may do (403).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            AuthError::Missing
                | AuthError::Malformed(_)
                | AuthError::Expired
                | AuthError::BadSignature
        )
    }
}

impl From<jsonwebtoken::errors::Error> for AuthError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm => {
                AuthError::Malformed("the token is not signed with RS256".into())
            }
            ErrorKind::Json(_) => AuthError::Malformed(format!("invalid claims: {e}")),
            ErrorKind::InvalidToken => {
                AuthError::Malformed("not a JWT (three base64url parts joined by dots)".into())
            }
            _ => AuthError::Malformed(e.to_string()),
        }
    }
}

/// Checks tokens with the control plane's public key.
pub struct JwtAuth {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtAuth { .. }")
    }
}

impl JwtAuth {
    /// From a PEM public key (SubjectPublicKeyInfo or PKCS#1).
    pub fn from_pem(pem: &[u8]) -> Result<JwtAuth, AuthError> {
        let key = DecodingKey::from_rsa_pem(pem)
            .map_err(|e| AuthError::Key(format!("not an RSA public key in PEM: {e}")))?;
        let mut validation = Validation::new(Algorithm::RS256);
        // `exp` is optional; when present it is checked (with a minute of
        // leeway for clocks that differ).
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        Ok(JwtAuth { key, validation })
    }

    /// From the file named by `auth_validation_public_key_path`.
    pub fn from_key_path(path: &Path) -> Result<JwtAuth, AuthError> {
        let pem = std::fs::read(path)
            .map_err(|e| AuthError::Key(format!("cannot read {}: {e}", path.display())))?;
        Self::from_pem(&pem).map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))
    }

    /// What a daemon configured with `auth_type` and an optional public key
    /// checks tokens with: nothing under `Trust`; under `ZenithJWT` the key,
    /// which must be given.
    pub fn for_auth_type(
        auth_type: AuthType,
        public_key_path: Option<&Path>,
    ) -> Result<Option<JwtAuth>, AuthError> {
        match (auth_type, public_key_path) {
            (AuthType::Trust, _) => Ok(None),
            (AuthType::ZenithJwt, Some(path)) => JwtAuth::from_key_path(path).map(Some),
            (AuthType::ZenithJwt, None) => Err(AuthError::Config(
                "auth_type ZenithJWT needs auth_validation_public_key_path".into(),
            )),
        }
    }

    /// The claims of a valid token.
    pub fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        Ok(jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)?.claims)
    }
}

/// Makes tokens with the control plane's private key.
pub struct TokenIssuer {
    key: EncodingKey,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenIssuer { .. }")
    }
}

impl TokenIssuer {
    /// From a PEM private key (PKCS#8 or PKCS#1).
    pub fn from_pem(pem: &[u8]) -> Result<TokenIssuer, AuthError> {
        let key = EncodingKey::from_rsa_pem(pem)
            .map_err(|e| AuthError::Key(format!("not an RSA private key in PEM: {e}")))?;
        Ok(TokenIssuer { key })
    }

    pub fn from_key_path(path: &Path) -> Result<TokenIssuer, AuthError> {
        let pem = std::fs::read(path)
            .map_err(|e| AuthError::Key(format!("cannot read {}: {e}", path.display())))?;
        Self::from_pem(&pem).map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))
    }

    pub fn issue(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &self.key)
            .map_err(|e| AuthError::Key(format!("cannot sign a token: {e}")))
    }
}

/// A new 2048-bit RSA key pair as (private PKCS#8 PEM, public SPKI PEM).
pub fn generate_key_pair() -> Result<(String, String), AuthError> {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048)
        .map_err(|e| AuthError::Key(format!("cannot generate an RSA key: {e}")))?;
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| AuthError::Key(format!("cannot encode the private key: {e}")))?;
    let public = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| AuthError::Key(format!("cannot encode the public key: {e}")))?;
    Ok((private.to_string(), public))
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn parse_bearer(header: &str) -> Result<&str, AuthError> {
    let (kind, token) = header
        .trim()
        .split_once(' ')
        .ok_or_else(|| AuthError::Malformed("expected \"Authorization: Bearer <token>\"".into()))?;
    if !kind.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed(format!(
            "unsupported authorization scheme {kind:?}: expected Bearer"
        )));
    }
    match token.trim() {
        "" => Err(AuthError::Missing),
        t => Ok(t),
    }
}

#[cfg(test)]
mod tests;
