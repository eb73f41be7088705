//! The proxy's configuration: `proxy.toml` in its workdir, with
//! `-c key=value` overrides.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::time::Duration;

use serde::Deserialize;
use zenith_utils::auth::{AuthError, AuthType, JwtAuth};

/// The configuration file in the workdir.
pub const CONFIG_FILE_NAME: &str = "proxy.toml";
/// The pid file in the workdir, locked while the proxy runs.
pub const PID_FILE_NAME: &str = "proxy.pid";

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConf {
    /// Where clients connect (PostgreSQL protocol).
    pub listen_pg: String,
    /// HTTP: `/metrics`, `/v1/status`, link-session approvals.
    pub listen_http: String,
    /// The console's API, and the base of link-auth login URLs.
    pub console_url: String,
    /// Server names `<endpoint>.<domain>` name endpoints (SNI).
    pub domain: String,
    /// PEM certificate chain and PKCS#8 key; without them TLS is refused
    /// (and with it SNI routing and the password form).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Connections served at once.
    pub max_connections: usize,
    /// Threads relaying bytes: 0, one per core; 1, a single-threaded
    /// runtime (measured: no faster on 2 cores, the kernel's loopback TCP
    /// dominates).
    pub worker_threads: usize,
    /// From accept to the end of authentication (link auth excepted).
    pub startup_timeout_ms: u64,
    /// How long a role's secret from the console is reused.
    pub secret_ttl_ms: u64,
    /// Failed authentications allowed per endpoint and role within
    /// `auth_failure_window_ms`; more are refused without trying.
    pub max_auth_failures: u32,
    pub auth_failure_window_ms: u64,
    /// How long a link-auth client waits for the approval.
    pub link_timeout_ms: u64,
    /// `"Trust"`, or `"ZenithJWT"`: the HTTP API (link approvals) needs a
    /// `controlplane` token; the proxy's own calls to the console carry
    /// the token in its `ZENITH_AUTH_TOKEN` environment variable.
    pub auth_type: AuthType,
    /// The public key (PEM) that checks tokens; needed with ZenithJWT.
    pub auth_validation_public_key_path: Option<PathBuf>,
}

impl Default for ProxyConf {
    fn default() -> Self {
        ProxyConf {
            listen_pg: "127.0.0.1:4432".into(),
            listen_http: "127.0.0.1:7001".into(),
            console_url: "http://127.0.0.1:7002".into(),
            domain: "zenith.localhost".into(),
            tls_cert: None,
            tls_key: None,
            max_connections: 1000,
            worker_threads: 0,
            startup_timeout_ms: 30_000,
            secret_ttl_ms: 60_000,
            max_auth_failures: 10,
            auth_failure_window_ms: 60_000,
            link_timeout_ms: 300_000,
            auth_type: AuthType::Trust,
            auth_validation_public_key_path: None,
        }
    }
}

impl ProxyConf {
    /// The token checker when auth is on.
    pub fn jwt_auth(&self) -> Result<Option<JwtAuth>, AuthError> {
        JwtAuth::for_auth_type(
            self.auth_type,
            self.auth_validation_public_key_path.as_deref(),
        )
    }

    pub fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.startup_timeout_ms)
    }
    pub fn secret_ttl(&self) -> Duration {
        Duration::from_millis(self.secret_ttl_ms)
    }
    pub fn auth_failure_window(&self) -> Duration {
        Duration::from_millis(self.auth_failure_window_ms)
    }
    pub fn link_timeout(&self) -> Duration {
        Duration::from_millis(self.link_timeout_ms)
    }
}

/// Loading the configuration and its TLS material (the daemon's start).
impl ProxyConf {
    /// `<workdir>/proxy.toml` (a missing file is the defaults) with
    /// `key=value` overrides.
    pub fn load(workdir: &Path, overrides: &[String]) -> anyhow::Result<ProxyConf> {
        let path = workdir.join(CONFIG_FILE_NAME);
        let text = zenith_utils::daemon::read_config_text(&path)?;
        zenith_utils::daemon::parse_config(&text, overrides)
            .with_context(|| format!("in {}", path.display()))
    }

    /// The rustls configuration and the certificate's channel-binding data.
    pub fn tls(&self) -> anyhow::Result<Option<(Arc<rustls::ServerConfig>, Vec<u8>)>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("reading the certificate {}", cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing the certificate {}", cert.display()))?;
        let first = certs
            .first()
            .with_context(|| format!("{} holds no certificate", cert.display()))?;
        let binding = zenith_utils::scram::tls_server_end_point(first);
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading the key {}", key.display()))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not go together")?;
        Ok(Some((Arc::new(config), binding)))
    }
}
