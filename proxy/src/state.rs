//! What every connection of the proxy shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use zenith_utils::api::console::LinkApproval;

use crate::cancel::CancelMap;
use crate::config::ProxyConf;
use crate::console::ConsoleClient;
use crate::rate_limit::AuthRateLimiter;

pub struct ProxyState {
    pub conf: ProxyConf,
    pub console: Arc<ConsoleClient>,
    pub cancels: Arc<CancelMap>,
    pub limiter: AuthRateLimiter,
    pub links: LinkSessions,
    /// `tls-server-end-point` channel-binding data of our certificate;
    /// `None` without TLS.
    pub channel_binding: Option<Vec<u8>>,
}

impl ProxyState {
    pub fn new(conf: ProxyConf, channel_binding: Option<Vec<u8>>) -> ProxyState {
        ProxyState {
            console: Arc::new(ConsoleClient::new(&conf.console_url, conf.secret_ttl())),
            cancels: Arc::new(CancelMap::default()),
            limiter: AuthRateLimiter::new(conf.max_auth_failures, conf.auth_failure_window()),
            links: LinkSessions::default(),
            channel_binding,
            conf,
        }
    }
}

/// Link-auth clients waiting for the console's approval, by session id.
#[derive(Default)]
pub struct LinkSessions {
    waiting: Mutex<HashMap<String, oneshot::Sender<LinkApproval>>>,
}

/// Removes a session that ended (approved, timed out, client gone).
pub struct LinkWait {
    pub id: String,
    pub rx: oneshot::Receiver<LinkApproval>,
}

impl LinkSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<LinkApproval>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session with a random id.
    pub fn open(&self) -> LinkWait {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id.clone(), tx);
        LinkWait { id, rx }
    }

    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Delivers an approval; false if no client waits under `id`.
    pub fn approve(&self, id: &str, approval: LinkApproval) -> bool {
        match self.lock().remove(id) {
            Some(tx) => tx.send(approval).is_ok(),
            None => false,
        }
    }
}
