//! The repository as a whole: `zenith init`, and starting and stopping
//! every daemon (walkeepers, pageserver, console, proxy, computes).
//!
//! A compute is started, stopped and destroyed through [`start_compute`],
//! [`stop_compute`] and [`destroy_compute`] (by the CLI and by the
//! console): each then brings monitoring up to date
//! ([`monitoring::sync_computes`]), so that [`compute`] knows nothing of
//! monitoring.

use std::path::Path;

use anyhow::{bail, Context};

use crate::background_process::Stopped;
use crate::compute::{self, ComputeNode, ComputeStatus, StartTimings};
use crate::console_node::ConsoleNode;
use crate::local_env::{InitConfig, LocalEnv, CONFIG_FILE_NAME, DEFAULT_BRANCH_NAME};
use crate::monitoring::{self, MonitoringNode};
use crate::pageserver::PageServerNode;
use crate::proxy::ProxyNode;
use crate::walkeeper::WalkeeperNode;

/// Create a repository in `base_dir`: the config, the pageserver's workdir,
/// a default tenant and its `main` branch (initdb + import on the
/// pageserver). The pageserver runs only for the duration of init.
///
/// Refused if `base_dir` already holds anything. If init fails half-way the
/// pageserver is stopped and the directory removed.
pub fn init(base_dir: &Path, init: InitConfig) -> anyhow::Result<LocalEnv> {
    if base_dir.join(CONFIG_FILE_NAME).exists() {
        bail!(
            "a zenith repository already exists in {}: use it (`zenith start`), or remove that directory first to start over",
            base_dir.display()
        );
    }
    if let Ok(mut entries) = std::fs::read_dir(base_dir) {
        if entries.next().is_some() {
            bail!(
                "{} exists and is not empty, but holds no zenith config: remove it, or choose another directory with ZENITH_REPO_DIR",
                base_dir.display()
            );
        }
    }
    let mut env = LocalEnv::new(base_dir, &init)?;
    env.check_binaries()?;
    std::fs::create_dir_all(&env.base_dir)
        .with_context(|| format!("creating {}", env.base_dir.display()))?;
    let res = (|| -> anyhow::Result<()> {
        if env.auth_enabled() {
            env.generate_auth_keys()?;
        }
        let ps = PageServerNode::new(&env);
        ps.init(&init.pageserver_config)?;
        ps.start()?;
        let created = ps.tenant_create_with_timeline(None);
        let stopped = ps.stop(false);
        let (tenant, timeline) = created?;
        stopped?;
        env.default_tenant_id = Some(tenant);
        env.add_branch(tenant, DEFAULT_BRANCH_NAME, timeline)?;
        ProxyNode::new(&env).init()?;
        env.save()
    })();
    if let Err(e) = res {
        let _ = PageServerNode::new(&env).stop(true);
        let _ = std::fs::remove_dir_all(&env.base_dir);
        return Err(e.context(format!(
            "zenith init in {} failed (nothing was left behind)",
            base_dir.display()
        )));
    }
    Ok(env)
}

/// `zenith start`: the walkeepers, the pageserver, the console and the
/// proxy (computes are started one by one with `zenith pg start`, or by
/// the console when a client connects to an endpoint). Returns a line per
/// daemon. A walkeeper, console or proxy that is already running is left
/// alone. If anything fails,
/// what this call started is stopped again.
pub fn start_all(env: &LocalEnv) -> anyhow::Result<Vec<String>> {
    let ps = PageServerNode::new(env);
    if let Some(pid) = ps.pid()? {
        bail!("the pageserver is already running (pid {pid}); stop it first with `zenith stop`");
    }
    ps.check_ports_free()?;
    let mut report = Vec::new();
    let mut started = Vec::new();
    let mut started_console = false;
    let res = (|| -> anyhow::Result<()> {
        for wk in WalkeeperNode::all(env) {
            if let Some(pid) = wk.pid()? {
                report.push(format!(
                    "walkeeper {} already running (pid {pid})",
                    wk.conf.id
                ));
                continue;
            }
            let pid = wk
                .start()
                .with_context(|| format!("starting walkeeper {}", wk.conf.id))?;
            report.push(format!(
                "walkeeper {} started (pid {pid}), WAL service on {}",
                wk.conf.id, wk.conf.listen_pg_addr
            ));
            started.push(wk);
        }
        let pid = ps.start()?;
        report.push(format!(
            "pageserver started (pid {pid}), page service on {}, HTTP API on {}",
            env.pageserver.listen_pg_addr, env.pageserver.listen_http_addr
        ));
        let console = ConsoleNode::new(env);
        match console.pid()? {
            Some(pid) => report.push(format!("console already running (pid {pid})")),
            None => {
                let pid = console.start().context("starting the console")?;
                started_console = true;
                report.push(format!(
                    "console started (pid {pid}), HTTP on {}",
                    env.console.listen_http_addr
                ));
            }
        }
        let proxy = ProxyNode::new(env);
        match proxy.pid()? {
            Some(pid) => report.push(format!("proxy already running (pid {pid})")),
            None => {
                let pid = proxy.start().context("starting the proxy")?;
                report.push(format!(
                    "proxy started (pid {pid}), clients on {}, HTTP on {}",
                    env.proxy.listen_pg_addr, env.proxy.listen_http_addr
                ));
            }
        }
        Ok(())
    })();
    if let Err(e) = res {
        if started_console {
            let _ = ConsoleNode::new(env).stop(true);
        }
        let _ = ps.stop(true);
        for wk in started {
            let _ = wk.stop(true);
        }
        return Err(e);
    }
    Ok(report)
}

/// `zenith stop`: monitoring (Prometheus and the exporters), the proxy and
/// the console (so that nothing wakes a compute meanwhile), every running
/// compute, the walkeepers, then the pageserver. Returns a line per daemon saying what happened.
pub fn stop_all(env: &LocalEnv, immediate: bool) -> anyhow::Result<Vec<String>> {
    let mut report = Vec::new();
    let mut first_err = None;
    // Monitoring first: nothing to sync as the computes stop.
    match MonitoringNode::new(env).stop(immediate) {
        Ok(lines) => report.extend(lines),
        Err(e) => {
            report.push(format!("monitoring: {e:#}"));
            first_err.get_or_insert(e);
        }
    }
    let front = [
        ("proxy", ProxyNode::new(env).stop(immediate)),
        ("console", ConsoleNode::new(env).stop(immediate)),
    ];
    for (what, res) in front {
        match res {
            Ok(Stopped::Stopped(pid)) => report.push(format!("{what} (pid {pid}) stopped")),
            Ok(Stopped::Killed(pid)) => report.push(format!(
                "{what} (pid {pid}) did not stop in time and was killed"
            )),
            Ok(Stopped::NotRunning) => {}
            Err(e) => {
                report.push(format!("{what}: {e:#}"));
                first_err.get_or_insert(e);
            }
        }
    }
    for c in compute::list(env)? {
        if c.status() == ComputeStatus::Running {
            let change = stop_compute(&c, immediate);
            if let Some(e) = change.monitoring_error() {
                report.push(format!(
                    "warning: updating the monitoring of computes: {e:#}"
                ));
            }
            match change.result {
                Ok(()) => report.push(format!("compute {} stopped", c.spec.name)),
                Err(e) => {
                    report.push(format!("compute {}: {e:#}", c.spec.name));
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    for wk in WalkeeperNode::all(env) {
        let what = format!("walkeeper {}", wk.conf.id);
        match wk.stop(immediate) {
            Ok(Stopped::Stopped(pid)) => report.push(format!("{what} (pid {pid}) stopped")),
            Ok(Stopped::Killed(pid)) => report.push(format!(
                "{what} (pid {pid}) did not stop in time and was killed"
            )),
            Ok(Stopped::NotRunning) => report.push(format!("{what} was not running")),
            Err(e) => {
                report.push(format!("{what}: {e:#}"));
                first_err.get_or_insert(e);
            }
        }
    }
    let ps = PageServerNode::new(env);
    match ps.stop(immediate) {
        Ok(Stopped::Stopped(pid)) => report.push(format!("pageserver (pid {pid}) stopped")),
        Ok(Stopped::Killed(pid)) => report.push(format!(
            "pageserver (pid {pid}) did not stop in time and was killed"
        )),
        Ok(Stopped::NotRunning) => report.push("pageserver was not running".to_string()),
        Err(e) => {
            report.push(format!("pageserver: {e:#}"));
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        None => Ok(report),
        Some(e) => Err(e.context(report.join("\n"))),
    }
}

/// A compute start, stop or destroy, and the monitoring sync after it.
#[must_use]
pub struct ComputeChange<T> {
    /// How the start, stop or destroy went.
    pub result: anyhow::Result<T>,
    /// What [`monitoring::sync_computes`] did (a line per exporter started
    /// or stopped), when the compute started or stopped; `None`: it did
    /// not, and there was nothing to sync. A failed sync is only a warning:
    /// the start or stop stands.
    pub monitoring: Option<anyhow::Result<Vec<String>>>,
}

impl<T> ComputeChange<T> {
    /// Why the monitoring sync failed, if it did: what to warn about.
    pub fn monitoring_error(&self) -> Option<&anyhow::Error> {
        self.monitoring.as_ref().and_then(|m| m.as_ref().err())
    }
}

/// [`ComputeNode::start`], then, once it runs, the monitoring sync (an
/// exporter for it while monitoring runs).
pub fn start_compute(c: &ComputeNode<'_>, ps: &PageServerNode<'_>) -> ComputeChange<StartTimings> {
    let result = c.start(ps);
    let monitoring = result.is_ok().then(|| monitoring::sync_computes(c.env));
    ComputeChange { result, monitoring }
}

/// [`ComputeNode::stop`], then, if it was running, the monitoring sync (its
/// exporter goes).
pub fn stop_compute(c: &ComputeNode<'_>, immediate: bool) -> ComputeChange<()> {
    let was_running = c.status() == ComputeStatus::Running;
    let result = c.stop(immediate);
    let monitoring = (was_running && result.is_ok()).then(|| monitoring::sync_computes(c.env));
    ComputeChange { result, monitoring }
}

/// [`ComputeNode::destroy`], then, if it was running and no longer is (also
/// when a later step of the destroy failed), the monitoring sync.
pub fn destroy_compute(c: &ComputeNode<'_>, ps: &PageServerNode<'_>) -> ComputeChange<()> {
    let was_running = c.status() == ComputeStatus::Running;
    let result = c.destroy(ps);
    let stopped = was_running && c.status() == ComputeStatus::Stopped;
    let monitoring = stopped.then(|| monitoring::sync_computes(c.env));
    ComputeChange { result, monitoring }
}
