//! JWT tokens as the password of a PostgreSQL-protocol connection: the
//! glue between [`crate::auth`] and a [`Handler`](super::Handler).

use std::sync::{Arc, OnceLock};

use super::auth_method::AuthMethod;
use super::error::HandlerError;
use crate::auth::{AuthError, Claims, JwtAuth};
use crate::pq_proto::SqlState;

/// Tokens as passwords on a PostgreSQL-protocol connection: what a
/// `postgres_backend::Handler` of a daemon with auth keeps per connection.
/// A handler hands it out through [`Handler::token_auth`], whose default
/// methods then ask for and check the token.
///
/// [`Handler::token_auth`]: crate::postgres_backend::Handler::token_auth
#[derive(Debug, Default)]
pub struct ConnectionAuth {
    auth: Option<Arc<JwtAuth>>,
    /// Set once, at login.
    claims: OnceLock<Claims>,
}

impl ConnectionAuth {
    /// `None`: auth is off and everything is allowed.
    pub fn new(auth: Option<Arc<JwtAuth>>) -> ConnectionAuth {
        ConnectionAuth {
            auth,
            claims: OnceLock::new(),
        }
    }

    /// Cleartext password (the token) when auth is on, else trust.
    pub fn method(&self) -> AuthMethod {
        match self.auth {
            Some(_) => AuthMethod::CleartextPassword,
            None => AuthMethod::Trust,
        }
    }

    /// Checks the token given as the password: FATAL 28P01 if invalid.
    pub fn login(&self, password: &str) -> Result<(), HandlerError> {
        if let Some(auth) = &self.auth {
            let claims = auth
                .decode(password)
                .map_err(|e| HandlerError::fatal(SqlState::INVALID_PASSWORD, e.to_string()))?;
            if self.claims.set(claims).is_err() {
                return Err(HandlerError::fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    "a second login on one connection",
                ));
            }
        }
        Ok(())
    }

    /// Whether the connection's token passes `check` (always, with auth
    /// off): ERROR 42501 if not, and the connection stays usable.
    pub fn allow(
        &self,
        check: impl FnOnce(&Claims) -> Result<(), AuthError>,
    ) -> Result<(), HandlerError> {
        if self.auth.is_none() {
            return Ok(());
        }
        let claims = self.claims.get().ok_or_else(|| {
            HandlerError::fatal(SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "no token")
        })?;
        check(claims)
            .map_err(|e| HandlerError::query(SqlState::INSUFFICIENT_PRIVILEGE, e.to_string()))
    }
}
