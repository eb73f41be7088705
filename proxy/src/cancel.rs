//! Cancel keys: the proxy gives each client a key of its own and keeps
//! where the key's session runs (the compute's address and key), so that a
//! CancelRequest to the proxy reaches the right compute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info};
use zenith_utils::pq_proto::{CancelKeyData, FeStartupPacket};

#[derive(Default)]
pub struct CancelMap {
    sessions: Mutex<HashMap<CancelKeyData, (String, CancelKeyData)>>,
}

/// Removes its key from the map when the session ends.
pub struct CancelGuard {
    map: Arc<CancelMap>,
    key: CancelKeyData,
}

impl CancelGuard {
    /// The key the client got.
    pub fn key(&self) -> CancelKeyData {
        self.key
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.map.lock().remove(&self.key);
    }
}

impl CancelMap {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CancelKeyData, (String, CancelKeyData)>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new key for a session on the compute at `addr` with key `compute`.
    pub fn register(
        self: &Arc<Self>,
        addr: String,
        compute: CancelKeyData,
    ) -> (CancelKeyData, CancelGuard) {
        let mut map = self.lock();
        let key = loop {
            let r: u64 = rand::random();
            let k = CancelKeyData {
                backend_pid: (r >> 32) as i32 & i32::MAX,
                cancel_key: r as i32,
            };
            if !map.contains_key(&k) {
                break k;
            }
        };
        map.insert(key, (addr, compute));
        (
            key,
            CancelGuard {
                map: Arc::clone(self),
                key,
            },
        )
    }

    /// Forwards a CancelRequest (in the background); an unknown key is
    /// ignored, as PostgreSQL does.
    pub fn cancel(&self, key: CancelKeyData) {
        let Some((addr, compute)) = self.lock().get(&key).cloned() else {
            debug!("cancel request with an unknown key ignored");
            return;
        };
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            if FeStartupPacket::CancelRequest(compute)
                .write(&mut buf)
                .is_err()
            {
                return;
            }
            match tokio::net::TcpStream::connect(&addr).await {
                Ok(mut s) => {
                    let _ = s.write_all(&buf).await;
                    let _ = s.shutdown().await;
                    info!(compute = %addr, "cancel request forwarded");
                }
                Err(e) => info!(compute = %addr, "cannot forward a cancel request: {e}"),
            }
        });
    }
}
