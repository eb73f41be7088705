//! How a connection authenticates, as a handler chooses it.

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Anyone the handler's startup check admits.
    Trust,
    /// A cleartext password (or token), checked by
    /// [`Handler::check_password`]. Only sensible over TLS or loopback.
    ///
    /// [`Handler::check_password`]: super::Handler::check_password
    CleartextPassword,
    /// The handler's own exchange, [`Handler::authenticate`].
    ///
    /// [`Handler::authenticate`]: super::Handler::authenticate
    Custom,
}

/// How [`Handler::authenticate`] ended.
///
/// [`Handler::authenticate`]: super::Handler::authenticate
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The client is who it says: the backend sends AuthenticationOk and the
    /// rest, then serves queries.
    Authenticated,
    /// The handler has sent AuthenticationOk and what follows itself; the
    /// rest of the connection is [`Handler::take_over`], outside the
    /// startup timeout.
    ///
    /// [`Handler::take_over`]: super::Handler::take_over
    TakeOver,
}
