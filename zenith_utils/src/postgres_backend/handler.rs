//! The application side of a backend: the [`Handler`] trait.

use std::future::Future;

use tracing::debug;

use super::auth_method::{AuthMethod, AuthOutcome};
use super::connection::PostgresBackend;
use super::connection_auth::ConnectionAuth;
use super::error::HandlerError;
use crate::pq_proto::{CancelKeyData, SqlState, StartupParams};

/// The application behind a backend: one value per connection.
pub trait Handler: Send {
    /// Checks the StartupMessage's parameters (user, database, options);
    /// an error refuses the connection.
    fn startup(&mut self, _params: &StartupParams) -> Result<(), HandlerError> {
        Ok(())
    }

    /// The connection's JWT auth, for a daemon whose clients present a
    /// token as their password: the default [`auth_method`](Self::auth_method)
    /// and [`check_password`](Self::check_password) then use it.
    fn token_auth(&self) -> Option<&ConnectionAuth> {
        None
    }

    /// How this connection must authenticate (by default: a token as the
    /// password when [`token_auth`](Self::token_auth) says auth is on, else
    /// trust).
    fn auth_method(&self) -> AuthMethod {
        self.token_auth()
            .map_or(AuthMethod::Trust, ConnectionAuth::method)
    }

    /// Checks a cleartext password; an error is sent as FATAL (use
    /// [`SqlState::INVALID_PASSWORD`]). By default the password is the
    /// token [`token_auth`](Self::token_auth) checks.
    fn check_password(
        &mut self,
        _params: &StartupParams,
        password: &str,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let res = match self.token_auth() {
            Some(auth) => auth.login(password),
            None => Err(HandlerError::fatal(
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                "password authentication is not configured",
            )),
        };
        async { res }
    }

    /// The authentication exchange of [`AuthMethod::Custom`], run within
    /// the startup timeout; [`PostgresBackend::startup_params`] is set.
    fn authenticate(
        &mut self,
        _pgb: &mut PostgresBackend,
    ) -> impl Future<Output = Result<AuthOutcome, HandlerError>> + Send {
        async {
            Err(HandlerError::fatal(
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                "this server has no authentication exchange of its own",
            ))
        }
    }

    /// The rest of a connection after [`AuthOutcome::TakeOver`].
    fn take_over(
        &mut self,
        _pgb: &mut PostgresBackend,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async { Ok(()) }
    }

    /// A CancelRequest arrived on a new connection.
    fn cancel(&mut self, key: CancelKeyData) {
        debug!(pid = key.backend_pid, "cancel request ignored");
    }

    /// Runs one simple query, writing its results through `pgb`. The
    /// backend sends ReadyForQuery afterwards.
    fn process_query(
        &mut self,
        pgb: &mut PostgresBackend,
        query: &str,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}
