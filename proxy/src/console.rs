//! The proxy's client of the console API: role secrets (cached for
//! `secret_ttl`) and wake-ups. Calls are blocking HTTP (ureq) run on the
//! blocking pool.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zenith_utils::api::console::{ComputeAddress, RoleSecret};
use zenith_utils::auth::AUTH_TOKEN_ENV;

/// Why the console could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// 404: the endpoint or role does not exist (the console's message).
    #[error("{0}")]
    NotFound(String),
    /// Any other refusal or failure, with the console's message.
    #[error("the console failed: {0}")]
    Failed(String),
    #[error("the console is unreachable at {url}: {msg}")]
    Unreachable { url: String, msg: String },
}

pub struct ConsoleClient {
    base: String,
    http: ureq::Agent,
    ttl: Duration,
    /// `Authorization` with the proxy's token, when it has one.
    bearer: Option<String>,
    secrets: Mutex<HashMap<(String, String), (Instant, RoleSecret)>>,
}

impl ConsoleClient {
    pub fn new(base: &str, ttl: Duration) -> ConsoleClient {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A wake-up starts a compute: allow it time.
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let bearer = std::env::var(AUTH_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
            .map(|t| format!("Bearer {t}"));
        ConsoleClient {
            base: base.trim_end_matches('/').to_string(),
            http,
            ttl,
            bearer,
            secrets: Mutex::new(HashMap::new()),
        }
    }

    /// The console's address, for login URLs.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn call<T: serde::de::DeserializeOwned>(
        &self,
        post: bool,
        path: &str,
    ) -> Result<T, ConsoleError> {
        let url = format!("{}{path}", self.base);
        let resp = match (post, &self.bearer) {
            (true, Some(b)) => self.http.post(&url).header("Authorization", b).send_empty(),
            (true, None) => self.http.post(&url).send_empty(),
            (false, Some(b)) => self.http.get(&url).header("Authorization", b).call(),
            (false, None) => self.http.get(&url).call(),
        };
        let mut resp = resp.map_err(|e| ConsoleError::Unreachable {
            url: self.base.clone(),
            msg: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| ConsoleError::Failed(format!("reading its answer: {e}")))?;
        if !(200..300).contains(&status) {
            let msg = zenith_utils::http::error_message(text);
            return Err(if status == 404 {
                ConsoleError::NotFound(msg)
            } else {
                ConsoleError::Failed(format!("{status}: {msg}"))
            });
        }
        serde_json::from_str(&text).map_err(|e| ConsoleError::Failed(format!("its answer: {e}")))
    }

    /// How `role` of `endpoint` logs in (cached).
    pub async fn role_secret(
        self: &std::sync::Arc<Self>,
        endpoint: &str,
        role: &str,
    ) -> Result<RoleSecret, ConsoleError> {
        let key = (endpoint.to_string(), role.to_string());
        if let Some((at, s)) = self.lock().get(&key) {
            if at.elapsed() < self.ttl {
                return Ok(s.clone());
            }
        }
        let path = format!(
            "/v1/proxy/endpoints/{}/roles/{}",
            encode(endpoint),
            encode(role)
        );
        let me = std::sync::Arc::clone(self);
        let s: RoleSecret = blocking(move || me.call(false, &path)).await?;
        self.lock().insert(key, (Instant::now(), s.clone()));
        Ok(s)
    }

    /// Forgets a cached secret (after a failed login, the role's password
    /// may have changed).
    pub fn invalidate(&self, endpoint: &str, role: &str) {
        self.lock()
            .remove(&(endpoint.to_string(), role.to_string()));
    }

    /// Wakes the endpoint: its compute's address once it accepts
    /// connections.
    pub async fn wake(
        self: &std::sync::Arc<Self>,
        endpoint: &str,
    ) -> Result<ComputeAddress, ConsoleError> {
        let path = format!("/v1/proxy/endpoints/{}/wake", encode(endpoint));
        let me = std::sync::Arc::clone(self);
        blocking(move || me.call(true, &path)).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (Instant, RoleSecret)>> {
        self.secrets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ConsoleError> + Send + 'static,
) -> Result<T, ConsoleError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ConsoleError::Failed(format!("the request task failed: {e}")))?
}

/// Percent-encodes a path segment.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
