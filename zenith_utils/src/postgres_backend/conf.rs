//! The limits and settings a backend serves its connections with.

use std::sync::Arc;
use std::time::Duration;

/// How a backend serves its connections.
#[derive(Clone)]
pub struct BackendConf {
    /// What the logs call this server ("page service", ...).
    pub name: &'static str,
    /// Largest frontend message body accepted.
    pub max_message_size: usize,
    /// Time allowed from accept to the first ReadyForQuery.
    pub startup_timeout: Duration,
    /// A session idle between queries this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Connections served at once.
    pub max_connections: usize,
    /// TLS for clients that send SSLRequest; `None` refuses it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Announced in ParameterStatus `server_version`.
    pub server_version: &'static str,
    /// How long [`serve`] waits for connections after shutdown.
    ///
    /// [`serve`]: super::serve()
    pub shutdown_grace: Duration,
}

impl BackendConf {
    pub fn new(name: &'static str) -> BackendConf {
        BackendConf {
            name,
            max_message_size: 1 << 20,
            startup_timeout: Duration::from_secs(60),
            idle_timeout: None,
            max_connections: 512,
            tls: None,
            server_version: "15.18",
            shutdown_grace: Duration::from_secs(5),
        }
    }
}
