//! Monitoring of the local cluster (docs/monitoring.md): `zenith monitoring
//! start|stop` runs Debian's Prometheus on the cluster's `/metrics`
//! endpoints, and one `prometheus-postgres-exporter` per running compute.
//!
//! Files, in `<repo>/monitoring/`:
//!
//! ```text
//! prometheus.yml      generated from the shipped monitoring/prometheus.yml with this
//!                     cluster's addresses and scrape interval
//! computes.json       the exporters' addresses and labels (Prometheus file_sd)
//! prometheus.pid|log  data/   Prometheus' pid file, log and TSDB
//! exporter-web.yml    the exporters' (empty) web configuration
//! exporters/<tenant>-<compute>/exporter.pid|log|port
//! sync.lock           serializes [`sync_computes`]
//! ```
//!
//! Invariants: while Prometheus runs, every running compute has one running
//! exporter listed in `computes.json` and no other exporter runs. Every
//! compute start and stop (by the CLI or by the console) goes through
//! [`crate::repo`], which then calls [`sync_computes`]; that restores this
//! under `sync.lock`, and Prometheus re-reads `computes.json` when it
//! changes (it is replaced atomically).
//! When Prometheus is not running, nothing is synced and no exporter runs.
//! Neither program keeps a pid file: they inherit one locked for them
//! ([`background_process::start_foreign_daemon`]).

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use zenith_utils::crashsafe;

use crate::background_process::{self, Daemon, Stopped};
use crate::compute::{self, ComputeNode, ComputeStatus};
use crate::local_env::LocalEnv;

/// The shipped configuration: every job and setting but the targets.
pub const PROMETHEUS_TEMPLATE: &str = include_str!("../../monitoring/prometheus.yml");

/// The file Prometheus' `compute` job reads its targets from.
pub const COMPUTES_FILE: &str = "computes.json";

const PROMETHEUS_START_TIMEOUT: Duration = Duration::from_secs(60);
const EXPORTER_START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where Debian installs the two programs; found on `PATH` otherwise.
const PROMETHEUS: &str = "prometheus";
const POSTGRES_EXPORTER: &str = "prometheus-postgres-exporter";

/// The addresses the generated configuration scrapes.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeTargets {
    pub pageserver: SocketAddr,
    /// Walkeeper id and HTTP address.
    pub walkeepers: Vec<(u64, SocketAddr)>,
    pub proxy: SocketAddr,
    pub console: SocketAddr,
}

impl ScrapeTargets {
    pub fn of(env: &LocalEnv) -> ScrapeTargets {
        ScrapeTargets {
            pageserver: env.pageserver.listen_http_addr,
            walkeepers: env
                .walkeepers
                .iter()
                .map(|w| (w.id, w.listen_http_addr))
                .collect(),
            proxy: env.proxy.listen_http_addr,
            console: env.console.listen_http_addr,
        }
    }

    /// The `static_configs` entries of `job`, as YAML lines (unindented).
    fn static_configs(&self, job: &str) -> Option<Vec<String>> {
        let one = |a: &SocketAddr| vec![format!("- targets: ['{a}']")];
        Some(match job {
            "pageserver" => one(&self.pageserver),
            "proxy" => one(&self.proxy),
            "console" => one(&self.console),
            "walkeeper" => self
                .walkeepers
                .iter()
                .flat_map(|(id, a)| {
                    [
                        format!("- targets: ['{a}']"),
                        "  labels:".to_string(),
                        format!("    walkeeper_id: '{id}'"),
                    ]
                })
                .collect(),
            _ => return None,
        })
    }
}

/// A duration as Prometheus writes it: `1s`, `500ms`.
pub fn prometheus_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `template` with each job's `static_configs` replaced by `targets` and the
/// global intervals (and scrape timeout) set to `interval`. Every job with
/// static targets in the template must be one of ours; every one of ours
/// must be in the template.
pub fn prometheus_config(
    template: &str,
    targets: &ScrapeTargets,
    interval: Duration,
) -> anyhow::Result<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let interval = prometheus_duration(interval);
    let mut out = String::new();
    let mut job: Option<String> = None;
    let mut replaced = Vec::new();
    let mut skip_deeper_than: Option<usize> = None;
    for line in template.lines() {
        let t = line.trim();
        if let Some(depth) = skip_deeper_than {
            if t.is_empty() {
                out.push('\n');
                continue;
            }
            if indent(line) > depth {
                continue;
            }
            skip_deeper_than = None;
        }
        if let Some(name) = t.strip_prefix("- job_name:") {
            job = Some(name.trim().trim_matches(['\'', '"']).to_string());
        }
        let key = t.split(':').next().unwrap_or("");
        if indent(line) == 2
            && matches!(
                key,
                "scrape_interval" | "scrape_timeout" | "evaluation_interval"
            )
        {
            out.push_str(&format!("  {key}: {interval}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if t == "static_configs:" {
            let Some(name) = job.clone() else {
                bail!("the Prometheus template has static_configs outside a job");
            };
            let Some(entries) = targets.static_configs(&name) else {
                bail!("the Prometheus template scrapes job {name:?}, which zenith does not know");
            };
            let pad = " ".repeat(indent(line) + 2);
            for e in entries {
                out.push_str(&format!("{pad}{e}\n"));
            }
            replaced.push(name);
            skip_deeper_than = Some(indent(line));
        }
    }
    for j in ["pageserver", "walkeeper", "proxy", "console"] {
        if !replaced.iter().any(|r| r == j) {
            bail!("the Prometheus template has no static_configs for job {j:?}");
        }
    }
    Ok(out)
}

/// One `computes.json` entry (Prometheus' file_sd format).
#[derive(Serialize, Debug, PartialEq)]
struct FileSdGroup {
    targets: Vec<String>,
    labels: std::collections::BTreeMap<&'static str, String>,
}

/// A program on `PATH` (Debian puts both in /usr/bin).
fn find_program(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{name} is not installed: apt-get install prometheus prometheus-postgres-exporter \
                 (or `make test-apt-deps`)"
            )
        })
}

/// A TCP port nobody listens on now.
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port for an exporter")?;
    Ok(l.local_addr()?.port())
}

/// Prometheus and the exporters of one repository.
pub struct MonitoringNode<'a> {
    pub env: &'a LocalEnv,
}

impl<'a> MonitoringNode<'a> {
    pub fn new(env: &'a LocalEnv) -> Self {
        MonitoringNode { env }
    }

    pub fn dir(&self) -> PathBuf {
        self.env.base_dir.join("monitoring")
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir().join("prometheus.yml")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir().join("prometheus.pid")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir().join("prometheus.log")
    }

    fn exporters_dir(&self) -> PathBuf {
        self.dir().join("exporters")
    }

    fn exporter_web_config(&self) -> PathBuf {
        self.dir().join("exporter-web.yml")
    }

    /// Prometheus' address, as a URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.env.monitoring.listen_http_addr)
    }

    pub fn pid(&self) -> anyhow::Result<Option<i32>> {
        background_process::running_pid(&self.pid_file())
    }

    fn scrape_interval(&self) -> anyhow::Result<Duration> {
        let s = &self.env.monitoring.scrape_interval;
        let d = humantime::parse_duration(s).map_err(|e| {
            anyhow::anyhow!("[monitoring] scrape_interval {s:?} in the config is invalid: {e}")
        })?;
        if d < Duration::from_millis(100) || d.subsec_nanos() % 1_000_000 != 0 {
            bail!("[monitoring] scrape_interval {s:?} must be whole milliseconds, at least 100ms");
        }
        Ok(d)
    }

    /// Writes `prometheus.yml` for this cluster; returns its path.
    pub fn write_config(&self) -> anyhow::Result<PathBuf> {
        let text = prometheus_config(
            PROMETHEUS_TEMPLATE,
            &ScrapeTargets::of(self.env),
            self.scrape_interval()?,
        )?;
        let header = "# Generated by `zenith monitoring start` from monitoring/prometheus.yml; \
                      rewritten at every start.\n";
        let path = self.config_file();
        crashsafe::write_file_atomic(&path, format!("{header}{text}").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// `zenith monitoring start`: the configuration, an exporter per running
    /// compute, then Prometheus. Returns a line per process started.
    pub fn start(&self) -> anyhow::Result<Vec<String>> {
        if let Some(pid) = self.pid()? {
            bail!(
                "monitoring is already running (Prometheus pid {pid}, {})",
                self.url()
            );
        }
        let prometheus = find_program(PROMETHEUS)?;
        find_program(POSTGRES_EXPORTER)?;
        let addr = self.env.monitoring.listen_http_addr;
        background_process::check_port_free(
            addr,
            "Prometheus",
            "set [monitoring] listen_http_addr in the repository's config",
        )?;
        let dir = self.dir();
        crashsafe::create_dir_all_durable(self.exporters_dir())
            .with_context(|| format!("creating {}", dir.display()))?;
        let config = self.write_config()?;
        crashsafe::write_file_atomic(
            self.exporter_web_config(),
            b"# The exporters' web configuration: plain HTTP on 127.0.0.1, no authentication.\n",
        )?;
        let mut report = self.sync_exporters(true)?;
        let daemon = Daemon {
            name: "Prometheus",
            program: &prometheus,
            args: vec![
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                "--storage.tsdb.retention.time=2d".into(),
                format!("--web.listen-address={addr}"),
            ],
            envs: vec![],
            log_file: self.log_file(),
            pid_file: self.pid_file(),
        };
        let ready_url = format!("{}/-/ready", self.url());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let started = background_process::start_foreign_daemon(
            &daemon,
            PROMETHEUS_START_TIMEOUT,
            || matches!(agent.get(&ready_url).call(), Ok(r) if r.status() == 200),
        );
        let pid = match started {
            Ok(pid) => pid,
            Err(e) => {
                let _ = self.stop_exporters(true);
                return Err(e);
            }
        };
        report.push(format!(
            "Prometheus started (pid {pid}) on {}, scraping every {}; config {}, log {}",
            self.url(),
            self.env.monitoring.scrape_interval,
            config.display(),
            self.log_file().display()
        ));
        // A compute that started while Prometheus was starting found it not
        // running and synced nothing: catch up.
        report.extend(self.sync_exporters(false)?);
        Ok(report)
    }

    /// `zenith monitoring stop` (and `zenith stop`): Prometheus, then every
    /// exporter. Returns a line per process stopped.
    pub fn stop(&self, immediate: bool) -> anyhow::Result<Vec<String>> {
        let mut report = Vec::new();
        match background_process::stop_daemon(&self.pid_file(), immediate, STOP_TIMEOUT)? {
            Stopped::Stopped(pid) => report.push(format!("Prometheus (pid {pid}) stopped")),
            Stopped::Killed(pid) => report.push(format!(
                "Prometheus (pid {pid}) did not stop in time and was killed"
            )),
            Stopped::NotRunning => {}
        }
        report.extend(self.stop_exporters(immediate)?);
        Ok(report)
    }

    fn stop_exporters(&self, immediate: bool) -> anyhow::Result<Vec<String>> {
        if !self.exporters_dir().is_dir() {
            // Monitoring never started in this repository.
            return Ok(Vec::new());
        }
        let _lock = self.sync_lock()?;
        let mut report = Vec::new();
        for (key, dir) in self.exporter_dirs()? {
            if let Some(line) = stop_exporter(&key, &dir, immediate)? {
                report.push(line);
            }
        }
        Ok(report)
    }

    /// `(key, dir)` of every exporter directory.
    fn exporter_dirs(&self) -> anyhow::Result<Vec<(String, PathBuf)>> {
        let root = self.exporters_dir();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e?;
            if e.file_type()?.is_dir() {
                out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Running exporters, for `zenith status`: (key, pid, port).
    pub fn exporters(&self) -> anyhow::Result<Vec<(String, i32, Option<u16>)>> {
        let mut out = Vec::new();
        for (key, dir) in self.exporter_dirs()? {
            if let Some(pid) = background_process::running_pid(&dir.join("exporter.pid"))? {
                out.push((key, pid, read_port(&dir)));
            }
        }
        Ok(out)
    }

    fn sync_lock(&self) -> anyhow::Result<std::fs::File> {
        let path = self.dir().join("sync.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(f)
    }

    /// Starts an exporter for every running compute that has none, stops
    /// the others, and rewrites `computes.json`. Only while Prometheus runs,
    /// unless `force` (its own start).
    fn sync_exporters(&self, force: bool) -> anyhow::Result<Vec<String>> {
        if !force && self.pid()?.is_none() {
            return Ok(Vec::new());
        }
        let exporter = find_program(POSTGRES_EXPORTER)?;
        let _lock = self.sync_lock()?;
        let mut report = Vec::new();
        let mut groups = Vec::new();
        let mut wanted = Vec::new();
        for c in compute::list(self.env)? {
            if c.status() != ComputeStatus::Running {
                continue;
            }
            let key = format!("{}-{}", c.spec.tenant_id, c.spec.name);
            let dir = self.exporters_dir().join(&key);
            let port = match background_process::running_pid(&dir.join("exporter.pid"))? {
                Some(_) => read_port(&dir),
                None => {
                    let (pid, port) = self.start_exporter(&exporter, &c, &dir)?;
                    report.push(format!(
                        "postgres_exporter for compute {} started (pid {pid}) on 127.0.0.1:{port}",
                        c.spec.name
                    ));
                    Some(port)
                }
            };
            if let Some(port) = port {
                groups.push(FileSdGroup {
                    targets: vec![format!("127.0.0.1:{port}")],
                    labels: [
                        ("compute", c.spec.name.clone()),
                        ("tenant_id", c.spec.tenant_id.to_string()),
                        ("timeline_id", c.spec.timeline_id.to_string()),
                        ("branch", c.spec.branch.clone()),
                    ]
                    .into_iter()
                    .collect(),
                });
            }
            wanted.push(key);
        }
        for (key, dir) in self.exporter_dirs()? {
            if !wanted.contains(&key) {
                if let Some(line) = stop_exporter(&key, &dir, false)? {
                    report.push(line);
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        let json = serde_json::to_string_pretty(&groups)?;
        let path = self.dir().join(COMPUTES_FILE);
        crashsafe::write_file_atomic(&path, json.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(report)
    }

    fn start_exporter(
        &self,
        program: &Path,
        c: &ComputeNode<'_>,
        dir: &Path,
    ) -> anyhow::Result<(i32, u16)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let name = format!("postgres_exporter of compute {}", c.spec.name);
        let daemon = Daemon {
            name: &name,
            program,
            args: vec![
                format!("--web.listen-address={addr}"),
                // Names the repository in the command line (the test suite
                // finds leftover processes that way).
                format!("--web.config.file={}", self.exporter_web_config().display()),
            ],
            envs: vec![(
                "DATA_SOURCE_NAME".into(),
                format!("{}?sslmode=disable", c.connstr()),
            )],
            log_file: dir.join("exporter.log"),
            pid_file: dir.join("exporter.pid"),
        };
        let pid =
            background_process::start_foreign_daemon(&daemon, EXPORTER_START_TIMEOUT, || {
                background_process::port_answers(addr)
            })?;
        crashsafe::write_file_atomic(dir.join("port"), format!("{port}\n").as_bytes())?;
        Ok((pid, port))
    }
}

fn read_port(dir: &Path) -> Option<u16> {
    std::fs::read_to_string(dir.join("port"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn stop_exporter(key: &str, dir: &Path, immediate: bool) -> anyhow::Result<Option<String>> {
    Ok(
        match background_process::stop_daemon(&dir.join("exporter.pid"), immediate, STOP_TIMEOUT)? {
            Stopped::Stopped(pid) | Stopped::Killed(pid) => {
                Some(format!("postgres_exporter {key} (pid {pid}) stopped"))
            }
            Stopped::NotRunning => None,
        },
    )
}

/// After a compute started or stopped: if monitoring runs, give every
/// running compute an exporter and list them for Prometheus. Returns a line
/// per exporter started or stopped. A failure must not stop a compute from
/// starting: callers report it as a warning and go on.
pub fn sync_computes(env: &LocalEnv) -> anyhow::Result<Vec<String>> {
    MonitoringNode::new(env).sync_exporters(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_targets() -> ScrapeTargets {
        let env = LocalEnv::new(
            Path::new("/tmp/repo"),
            &crate::local_env::InitConfig {
                pg_distrib_dir: Some("/pg".into()),
                zenith_distrib_dir: Some("/bin".into()),
                ..Default::default()
            },
        )
        .unwrap();
        ScrapeTargets::of(&env)
    }

    #[test]
    fn the_template_is_the_config_of_a_default_cluster() {
        let generated = prometheus_config(
            PROMETHEUS_TEMPLATE,
            &default_targets(),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(generated, PROMETHEUS_TEMPLATE);
    }

    #[test]
    fn targets_and_intervals_are_replaced() {
        let mut t = default_targets();
        t.pageserver = "127.0.0.1:1111".parse().unwrap();
        t.walkeepers = vec![(7, "127.0.0.1:2222".parse().unwrap())];
        t.console = "127.0.0.1:3333".parse().unwrap();
        let c = prometheus_config(PROMETHEUS_TEMPLATE, &t, Duration::from_millis(500)).unwrap();
        assert!(c.contains("      - targets: ['127.0.0.1:1111']\n"), "{c}");
        assert!(c.contains(
            "      - targets: ['127.0.0.1:2222']\n        labels:\n          walkeeper_id: '7'\n"
        ));
        assert!(!c.contains("127.0.0.1:7677"), "old walkeepers stay: {c}");
        assert!(!c.contains("9898") && c.contains("127.0.0.1:3333"));
        assert!(c.contains("  scrape_interval: 500ms\n  scrape_timeout: 500ms\n"));
        assert!(c.contains("      - files: ['computes.json']"));
        // Without walkeepers the job stays, with no targets.
        t.walkeepers.clear();
        let c = prometheus_config(PROMETHEUS_TEMPLATE, &t, Duration::from_secs(2)).unwrap();
        assert!(
            c.contains("  - job_name: walkeeper\n    static_configs:\n\n"),
            "{c}"
        );
    }

    #[test]
    fn unknown_or_missing_jobs_are_refused() {
        let t = default_targets();
        let unknown = format!(
            "{PROMETHEUS_TEMPLATE}  - job_name: other\n    static_configs:\n      - targets: ['x:1']\n"
        );
        let e = prometheus_config(&unknown, &t, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("\"other\""), "{e}");
        let e = prometheus_config("scrape_configs:\n", &t, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("no static_configs"), "{e}");
    }

    #[test]
    fn without_monitoring_stop_status_and_sync_do_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let env = LocalEnv::new(
            dir.path(),
            &crate::local_env::InitConfig {
                pg_distrib_dir: Some("/pg".into()),
                zenith_distrib_dir: Some("/bin".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let m = MonitoringNode::new(&env);
        assert_eq!(m.pid().unwrap(), None);
        assert!(m.exporters().unwrap().is_empty());
        assert!(m.stop(false).unwrap().is_empty());
        assert!(sync_computes(&env).unwrap().is_empty());
        assert!(!m.dir().exists(), "nothing is written");
    }

    #[test]
    fn durations_are_written_as_prometheus_reads_them() {
        assert_eq!(prometheus_duration(Duration::from_secs(1)), "1s");
        assert_eq!(prometheus_duration(Duration::from_millis(1500)), "1500ms");
    }
}
