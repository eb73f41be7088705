//! Local walkeepers: `.zenith/walkeepers/<id>/` each, started and stopped
//! as daemons, and asked for timeline status over HTTP.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use zenith_utils::auth::Scope;
use zenith_utils::id::{TenantId, TimelineId};

use crate::background_process::{self, Daemon, Stopped};
use crate::local_env::LocalEnv;
pub use crate::local_env::WalkeeperConf;

/// The walkeeper's pid file and its timeline status (the daemon's own types).
pub use zenith_utils::api::walkeeper::{TimelineStatus, PID_FILE_NAME};
pub const LOG_FILE_NAME: &str = "walkeeper.log";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The walkeepers' `host:port` list, as `zenith.walkeepers` and the
/// pageserver's WAL source want it.
pub fn addresses(env: &LocalEnv) -> String {
    env.walkeepers
        .iter()
        .map(|w| w.listen_pg_addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

pub struct WalkeeperNode<'a> {
    env: &'a LocalEnv,
    pub conf: WalkeeperConf,
    http: ureq::Agent,
}

impl<'a> WalkeeperNode<'a> {
    pub fn new(env: &'a LocalEnv, conf: &WalkeeperConf) -> Self {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        WalkeeperNode {
            env,
            conf: conf.clone(),
            http,
        }
    }

    /// Every walkeeper of the repository.
    pub fn all(env: &'a LocalEnv) -> Vec<WalkeeperNode<'a>> {
        env.walkeepers
            .iter()
            .map(|c| WalkeeperNode::new(env, c))
            .collect()
    }

    /// The walkeeper with this id.
    pub fn find(env: &'a LocalEnv, id: u64) -> anyhow::Result<WalkeeperNode<'a>> {
        let c = env
            .walkeepers
            .iter()
            .find(|w| w.id == id)
            .with_context(|| {
                let ids: Vec<String> = env.walkeepers.iter().map(|w| w.id.to_string()).collect();
                format!(
                    "no walkeeper {id} in this repository (its walkeepers: {})",
                    if ids.is_empty() {
                        "none".to_string()
                    } else {
                        ids.join(", ")
                    }
                )
            })?;
        Ok(WalkeeperNode::new(env, c))
    }

    pub fn datadir(&self) -> PathBuf {
        self.env
            .base_dir
            .join("walkeepers")
            .join(self.conf.id.to_string())
    }

    pub fn pid_file(&self) -> PathBuf {
        self.datadir().join(PID_FILE_NAME)
    }

    pub fn log_file(&self) -> PathBuf {
        self.datadir().join(LOG_FILE_NAME)
    }

    pub fn pid(&self) -> anyhow::Result<Option<i32>> {
        background_process::running_pid(&self.pid_file())
    }

    fn status_ok(&self) -> bool {
        let url = format!("http://{}/v1/status", self.conf.listen_http_addr);
        matches!(self.http.get(&url).call(), Ok(r) if r.status() == 200)
    }

    /// Start in the background; returns its pid once `/v1/status` answers.
    pub fn start(&self) -> anyhow::Result<i32> {
        let program = self.env.zenith_bin("walkeeper");
        let name = format!("walkeeper {}", self.conf.id);
        background_process::check_port_free(
            self.conf.listen_pg_addr,
            &format!("{name} WAL service"),
            "change its listen_pg_addr in .zenith/config",
        )?;
        background_process::check_port_free(
            self.conf.listen_http_addr,
            &format!("{name} HTTP API"),
            "change its listen_http_addr in .zenith/config",
        )?;
        std::fs::create_dir_all(self.datadir())
            .with_context(|| format!("creating {}", self.datadir().display()))?;
        let mut envs = Vec::new();
        if let Ok(v) = std::env::var("RUST_LOG") {
            envs.push(("RUST_LOG".to_string(), v));
        }
        let mut args = vec![
            "-D".into(),
            self.datadir().to_string_lossy().into_owned(),
            "--id".into(),
            self.conf.id.to_string(),
            "--listen-pg".into(),
            self.conf.listen_pg_addr.to_string(),
            "--listen-http".into(),
            self.conf.listen_http_addr.to_string(),
            "--log-format".into(),
            self.env.log_format.to_string(),
        ];
        if self.env.auth_enabled() {
            args.extend([
                "--auth-type".into(),
                "ZenithJWT".into(),
                "--auth-validation-public-key-path".into(),
                self.env
                    .auth_public_key_path()
                    .to_string_lossy()
                    .into_owned(),
            ]);
        }
        let d = Daemon {
            name: &name,
            program: &program,
            args,
            envs,
            log_file: self.log_file(),
            pid_file: self.pid_file(),
        };
        background_process::start_daemon(&d, START_TIMEOUT, || {
            background_process::port_answers(self.conf.listen_pg_addr) && self.status_ok()
        })
    }

    pub fn stop(&self, immediate: bool) -> anyhow::Result<Stopped> {
        background_process::stop_daemon(&self.pid_file(), immediate, STOP_TIMEOUT)
    }

    /// The walkeeper's view of a timeline; `None` if it does not have it.
    pub fn timeline_status(
        &self,
        tenant: TenantId,
        timeline: TimelineId,
    ) -> anyhow::Result<Option<TimelineStatus>> {
        let url = format!(
            "http://{}/v1/tenant/{tenant}/timeline/{timeline}",
            self.conf.listen_http_addr
        );
        let bearer = self.env.bearer(Scope::WalkeeperData, Some(tenant))?;
        let mut resp = crate::with_bearer(self.http.get(&url), bearer.as_deref())
            .call()
            .with_context(|| format!("asking walkeeper {} at {url}", self.conf.id))?;
        match resp.status().as_u16() {
            200 => Ok(Some(
                resp.body_mut()
                    .read_json()
                    .context("walkeeper timeline status")?,
            )),
            404 => Ok(None),
            s => anyhow::bail!(
                "walkeeper {} answered {s}: {}",
                self.conf.id,
                resp.body_mut().read_to_string().unwrap_or_default()
            ),
        }
    }
}
