//! The HTTP management API, in process (router + TenantManager in a tempdir)
//! and through the real `pageserver` binary (init, run, SIGTERM, pid file).
//!
//! The client is a minimal HTTP/1.1 one over std's TcpStream: one request per
//! connection, `Connection: close`.

#[path = "../common/mod.rs"]
mod common;

mod errors;
mod following;
mod metrics;
mod tenants;
mod wal_source;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use pageserver::config::PageServerConf;
use pageserver::http::{self, ApiState};
use pageserver::tenant_mgr::TenantManager;
use pageserver::wal_sources::WalSources;
use serde_json::Value;
use tokio::sync::watch;
use zenith_utils::lsn::Lsn;

struct Server {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    mgr: Arc<TenantManager>,
    wal_sources: Arc<WalSources>,
}

impl Server {
    /// Load a TenantManager on `workdir`, restart stored WAL sources, serve on 127.0.0.1:0.
    fn start(workdir: &Path, conf: PageServerConf) -> Server {
        let conf = Arc::new(conf);
        let mgr = Arc::new(TenantManager::load(workdir, Arc::clone(&conf)).unwrap());
        let wal_sources = Arc::new(WalSources::new());
        wal_sources.start_all(&mgr).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, rx) = watch::channel(false);
        let state = Arc::new(ApiState::new(
            Arc::clone(&mgr),
            conf,
            Arc::clone(&wal_sources),
            None,
        ));
        let task = rt.spawn(http::serve(listener, state, rx));
        Server {
            rt,
            addr,
            shutdown,
            task,
            mgr,
            wal_sources,
        }
    }

    /// Stop serving, stop the receivers and flush, like the daemon does.
    fn stop(self) {
        self.shutdown.send(true).unwrap();
        self.rt.block_on(self.task).unwrap().unwrap();
        self.wal_sources.stop_all();
        self.mgr.shutdown().unwrap();
    }
}

fn pg_conf() -> PageServerConf {
    PageServerConf {
        pg_distrib_dir: common::pg_install(),
        ..PageServerConf::default()
    }
}

fn lsn(v: &Value) -> Lsn {
    v.as_str()
        .unwrap_or_else(|| panic!("not an LSN string: {v}"))
        .parse()
        .unwrap()
}
