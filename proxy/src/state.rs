//! What every connection of the proxy shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use zenith_utils::api::console::{LinkApproval, LinkSession};

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

type Waiting = HashMap<String, (LinkSession, oneshot::Sender<LinkApproval>)>;

/// Link-auth clients waiting for the console's approval, by session id,
/// with what each asked for (the console reads it from here, not from the
/// URL, which the client could have edited).
#[derive(Default)]
pub struct LinkSessions {
    waiting: Arc<Mutex<Waiting>>,
}

/// A waiting session; dropping it (approved, timed out, client gone,
/// connection task aborted) removes it.
pub struct LinkWait {
    pub id: String,
    pub rx: oneshot::Receiver<LinkApproval>,
    waiting: Arc<Mutex<Waiting>>,
}

impl Drop for LinkWait {
    fn drop(&mut self) {
        lock(&self.waiting).remove(&self.id);
    }
}

fn lock(m: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LinkSessions {
    /// A new session with a random id for what the client asked.
    pub fn open(&self, session: LinkSession) -> LinkWait {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id.clone(), (session, tx));
        LinkWait {
            id,
            rx,
            waiting: Arc::clone(&self.waiting),
        }
    }

    /// What the client waiting under `id` asked for.
    pub fn get(&self, id: &str) -> Option<LinkSession> {
        lock(&self.waiting).get(id).map(|(s, _)| s.clone())
    }

    /// Delivers an approval; false if no client waits under `id`, or the
    /// approval is for another role or database than the client asked.
    pub fn approve(&self, id: &str, approval: LinkApproval) -> bool {
        let mut w = lock(&self.waiting);
        match w.get(id) {
            Some((s, _)) if s.user == approval.user && s.dbname == approval.dbname => {}
            _ => return false,
        }
        match w.remove(id) {
            Some((_, tx)) => tx.send(approval).is_ok(),
            None => false,
        }
    }
}
