//! The local pageserver: its workdir under `.zenith/pageserver`, start and
//! stop as a daemon, and a client for its HTTP API and its basebackup.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Buf;
use serde::de::DeserializeOwned;
use zenith_utils::api::pageserver::{
    LsnByTimestampResponse, LsnTimestampKind, TenantCreateRequest, TenantInfo,
    TimelineCreateRequest, WalSourceRequest,
};
use zenith_utils::auth::{Scope, AUTH_TOKEN_ENV};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;
use zenith_utils::postgres_client::{ClientError, Config, Connection, CopyOut};

use crate::background_process::{self, Daemon, Stopped};
use crate::local_env::LocalEnv;
use crate::progress;

pub use zenith_utils::api::pageserver::{TimelineInfo, PID_FILE_NAME};

/// Its log (stdout and stderr) in its workdir.
pub const LOG_FILE_NAME: &str = "pageserver.log";

/// How long start waits for `/v1/status`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long stop waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// An error answered by the HTTP API (4xx/5xx with `{"msg": ...}`).
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct ApiError {
    pub status: u16,
    pub msg: String,
}

pub struct PageServerNode<'a> {
    env: &'a LocalEnv,
    http: ureq::Agent,
}

impl<'a> PageServerNode<'a> {
    pub fn new(env: &'a LocalEnv) -> Self {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        PageServerNode { env, http }
    }

    pub fn workdir(&self) -> PathBuf {
        self.env.pageserver_workdir()
    }

    pub fn pid_file(&self) -> PathBuf {
        self.workdir().join(PID_FILE_NAME)
    }

    pub fn log_file(&self) -> PathBuf {
        self.workdir().join(LOG_FILE_NAME)
    }

    fn program(&self) -> PathBuf {
        self.env.zenith_bin("pageserver")
    }

    fn envs(&self) -> Vec<(String, String)> {
        let mut envs = vec![
            ("ZENITH_ALLOW_ROOT".to_string(), "1".to_string()),
            (
                "LD_LIBRARY_PATH".to_string(),
                self.env.pg_lib_dir().to_string_lossy().into_owned(),
            ),
        ];
        if let Ok(v) = std::env::var("RUST_LOG") {
            envs.push(("RUST_LOG".into(), v));
        }
        envs
    }

    /// The pageserver's environment when it runs: with auth on, its token
    /// for the walkeepers (scope walkeeperdata, every tenant).
    fn daemon_envs(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut envs = self.envs();
        if let Some(t) = self.env.scoped_token(Scope::WalkeeperData, None)? {
            envs.push((AUTH_TOKEN_ENV.to_string(), t));
        }
        Ok(envs)
    }

    /// `pageserver -D <workdir> --init` with our addresses and `overrides`
    /// (`key=value` settings).
    pub fn init(&self, overrides: &[String]) -> anyhow::Result<()> {
        let ps = &self.env.pageserver;
        let mut cmd = std::process::Command::new(self.program());
        if self.env.auth_enabled() {
            // Tokens on every connection; WAL sources only on this machine
            // (the local walkeepers and computes); import_pgdata off.
            // `overrides` come after, so they may change the last two.
            for o in [
                "auth_type='ZenithJWT'".to_string(),
                format!(
                    "auth_validation_public_key_path='{}'",
                    self.env.auth_public_key_path().display()
                ),
                "wal_source_allowed_hosts=['127.0.0.1', 'localhost']".to_string(),
            ] {
                cmd.arg("-c").arg(o);
            }
        }
        // Layer files go to object storage: unless the overrides name one
        // (an S3 bucket, say), the repository's local directory backend
        // (the same upload path as with S3).
        if !overrides
            .iter()
            .any(|o| o.trim_start().starts_with("remote_storage"))
        {
            cmd.arg("-c").arg(format!(
                "remote_storage={{ local_path = '{}' }}",
                self.env.remote_storage_dir().display()
            ));
        }
        for o in overrides {
            cmd.arg("-c").arg(o);
        }
        let out = cmd
            .arg("-D")
            .arg(self.workdir())
            .arg("--init")
            .arg("-c")
            .arg(format!("listen_pg_addr='{}'", ps.listen_pg_addr))
            .arg("-c")
            .arg(format!("listen_http_addr='{}'", ps.listen_http_addr))
            .arg("-c")
            .arg(format!(
                "pg_distrib_dir='{}'",
                self.env.pg_distrib_dir.display()
            ))
            .envs(self.envs())
            .output()
            .with_context(|| format!("running {}", self.program().display()))?;
        if !out.status.success() {
            bail!(
                "pageserver --init failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The pid of the running pageserver, if any (stale pid files removed).
    pub fn pid(&self) -> anyhow::Result<Option<i32>> {
        background_process::running_pid(&self.pid_file())
    }

    /// Fail with a clear message if its ports are taken.
    pub fn check_ports_free(&self) -> anyhow::Result<()> {
        let ps = &self.env.pageserver;
        background_process::check_port_free(
            ps.listen_pg_addr,
            "pageserver page service",
            "change pageserver.listen_pg_addr in .zenith/config",
        )?;
        background_process::check_port_free(
            ps.listen_http_addr,
            "pageserver HTTP API",
            "change pageserver.listen_http_addr in .zenith/config",
        )
    }

    /// Start in the background; returns when `/v1/status` answers OK.
    pub fn start(&self) -> anyhow::Result<i32> {
        self.env.check_binaries()?;
        if let Some(pid) = self.pid()? {
            bail!("the pageserver is already running (pid {pid}); stop it with `zenith stop`");
        }
        let ps = &self.env.pageserver;
        self.check_ports_free()?;
        let d = Daemon {
            name: "pageserver",
            program: &self.program(),
            args: vec![
                "-D".into(),
                self.workdir().to_string_lossy().into_owned(),
                "--log-format".into(),
                self.env.log_format.to_string(),
            ],
            envs: self.daemon_envs()?,
            log_file: self.log_file(),
            pid_file: self.pid_file(),
        };
        background_process::start_daemon(&d, START_TIMEOUT, || {
            background_process::port_answers(ps.listen_pg_addr) && self.status_ok()
        })
    }

    pub fn stop(&self, immediate: bool) -> anyhow::Result<Stopped> {
        background_process::stop_daemon(&self.pid_file(), immediate, STOP_TIMEOUT)
    }

    fn status_ok(&self) -> bool {
        let url = format!("{}/v1/status", self.base_url());
        matches!(self.http.get(&url).call(), Ok(r) if r.status().is_success())
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.env.pageserver.listen_http_addr)
    }

    fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base_url());
        // The CLI is the pageserver's operator: a management token.
        let bearer = self.env.bearer(Scope::PageServerApi, None)?;
        let resp = match (method, body) {
            ("GET", _) => crate::with_bearer(self.http.get(&url), bearer.as_deref()).call(),
            ("DELETE", _) => crate::with_bearer(self.http.delete(&url), bearer.as_deref()).call(),
            ("POST", Some(b)) => {
                crate::with_bearer(self.http.post(&url), bearer.as_deref()).send_json(b)
            }
            ("POST", None) => {
                crate::with_bearer(self.http.post(&url), bearer.as_deref()).send_empty()
            }
            ("PUT", Some(b)) => {
                crate::with_bearer(self.http.put(&url), bearer.as_deref()).send_json(b)
            }
            _ => bail!("unsupported request {method} {path}"),
        };
        let mut resp = match resp {
            Ok(r) => r,
            Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                bail!(
                    "the pageserver is not running ({} refused the connection): start it with `zenith start`",
                    self.env.pageserver.listen_http_addr
                )
            }
            Err(ureq::Error::ConnectionFailed) => bail!(
                "the pageserver is not running (cannot connect to {}): start it with `zenith start`",
                self.env.pageserver.listen_http_addr
            ),
            Err(e) => return Err(anyhow!(e).context(format!("{method} {url}"))),
        };
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        if !(200..300).contains(&status) {
            let msg = zenith_utils::http::error_message(text);
            return Err(ApiError { status, msg }.into());
        }
        serde_json::from_str(&text)
            .with_context(|| format!("decoding the answer to {method} {url}"))
    }

    pub fn tenant_create(&self, id: Option<TenantId>) -> anyhow::Result<TenantId> {
        let body = serde_json::to_value(TenantCreateRequest { new_tenant_id: id })?;
        let t: TenantInfo = self.request("POST", "/v1/tenant", Some(body))?;
        Ok(t.id)
    }

    /// Create a tenant and bootstrap its first timeline (initdb + import);
    /// returns both ids (the caller names the timeline `main`).
    pub fn tenant_create_with_timeline(
        &self,
        id: Option<TenantId>,
    ) -> anyhow::Result<(TenantId, TimelineId)> {
        let _progress =
            progress::spinner("creating a tenant (initdb and import on the pageserver)");
        let tenant = self.tenant_create(id)?;
        let tl = self.timeline_create(tenant, None, None, None)?;
        Ok((tenant, tl.timeline_id))
    }

    pub fn tenant_list(&self) -> anyhow::Result<Vec<TenantId>> {
        let l: Vec<TenantInfo> = self.request("GET", "/v1/tenant", None)?;
        Ok(l.into_iter().map(|t| t.id).collect())
    }

    /// Create a timeline: bootstrapped by initdb when `ancestor` is None,
    /// else a branch of it at `lsn` (default: its last LSN).
    pub fn timeline_create(
        &self,
        tenant: TenantId,
        new_id: Option<TimelineId>,
        ancestor: Option<TimelineId>,
        lsn: Option<Lsn>,
    ) -> anyhow::Result<TimelineInfo> {
        let body = serde_json::to_value(TimelineCreateRequest {
            new_timeline_id: new_id,
            ancestor_timeline_id: ancestor,
            ancestor_start_lsn: lsn,
            import_pgdata: None,
        })?;
        self.request("POST", &format!("/v1/tenant/{tenant}/timeline"), Some(body))
    }

    pub fn timeline_list(&self, tenant: TenantId) -> anyhow::Result<Vec<TimelineInfo>> {
        self.request("GET", &format!("/v1/tenant/{tenant}/timeline"), None)
    }

    pub fn timeline_info(
        &self,
        tenant: TenantId,
        timeline: TimelineId,
    ) -> anyhow::Result<TimelineInfo> {
        self.request(
            "GET",
            &format!("/v1/tenant/{tenant}/timeline/{timeline}"),
            None,
        )
    }

    /// Wait until the timeline's `last_record_lsn` reaches `lsn`. `what`
    /// names the WAL in the timeout error ("of compute \"main\"").
    pub fn wait_for_lsn(
        &self,
        tenant: TenantId,
        timeline: TimelineId,
        lsn: Lsn,
        timeout: Duration,
        what: &str,
    ) -> anyhow::Result<()> {
        let start = std::time::Instant::now();
        let progress =
            progress::spinner(format!("waiting for the pageserver to catch up to {lsn}"));
        loop {
            let info = self.timeline_info(tenant, timeline)?;
            if info.last_record_lsn >= lsn {
                return Ok(());
            }
            progress.set_message(format!(
                "waiting for the pageserver to catch up {what}: {} of {lsn}",
                info.last_record_lsn
            ));
            if start.elapsed() > timeout {
                bail!(
                    "the pageserver has WAL {what} up to {} only, not {lsn}, after {}s; see {}",
                    info.last_record_lsn,
                    timeout.as_secs(),
                    self.log_file().display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn set_wal_source(
        &self,
        tenant: TenantId,
        timeline: TimelineId,
        connstr: &str,
    ) -> anyhow::Result<()> {
        let _: serde_json::Value = self.request(
            "PUT",
            &format!("/v1/tenant/{tenant}/timeline/{timeline}/wal_source"),
            Some(serde_json::to_value(WalSourceRequest {
                connstr: connstr.to_string(),
            })?),
        )?;
        Ok(())
    }

    pub fn remove_wal_source(&self, tenant: TenantId, timeline: TimelineId) -> anyhow::Result<()> {
        let _: serde_json::Value = self.request(
            "DELETE",
            &format!("/v1/tenant/{tenant}/timeline/{timeline}/wal_source"),
            None,
        )?;
        Ok(())
    }

    /// The LSN of the last commit at or before `timestamp` (ISO 8601).
    pub fn lsn_by_timestamp(
        &self,
        tenant: TenantId,
        timeline: TimelineId,
        timestamp: &str,
    ) -> anyhow::Result<(Lsn, LsnTimestampKind)> {
        let ts: String = timestamp
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let r: LsnByTimestampResponse = self.request(
            "GET",
            &format!("/v1/tenant/{tenant}/timeline/{timeline}/get_lsn_by_timestamp?timestamp={ts}"),
            None,
        )?;
        Ok((r.lsn, r.kind))
    }

    /// Fetch a basebackup (`--full` if `full`) at `lsn` (default: the last
    /// LSN) and unpack it into `dest`, which must not exist yet.
    pub fn basebackup_into(
        &self,
        tenant: TenantId,
        timeline: TimelineId,
        lsn: Option<Lsn>,
        full: bool,
        dest: &Path,
    ) -> anyhow::Result<()> {
        let addr = self.env.pageserver.listen_pg_addr;
        let mut q = format!("basebackup {tenant} {timeline}");
        if let Some(l) = lsn {
            q.push_str(&format!(" {l}"));
        }
        if full {
            q.push_str(" --full");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting an async runtime for the basebackup")?;
        let mut config =
            Config::new(addr.ip().to_string(), addr.port(), "zenith").dbname("postgres");
        if let Some(token) = self.env.scoped_token(Scope::Tenant, Some(tenant))? {
            config = config.password(token);
        }
        let copy = runtime
            .block_on(async {
                let conn = Connection::connect(&config).await?;
                conn.copy_out(&q).await
            })
            .map_err(|e| match e {
                // The pageserver's refusal (unknown timeline, LSN below the
                // GC cutoff, ...) is the message.
                ClientError::Server(e) => anyhow!("{}", e.message),
                ClientError::Connect { .. } | ClientError::ConnectTimeout { .. } => anyhow!(
                    "connecting to the pageserver's page service at {addr}: is it running (`zenith start`)? ({e})"
                ),
                e => anyhow!("basebackup from the pageserver at {addr}: {e}"),
            })?;
        std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
        let mut reader = CopyOutReader {
            runtime: &runtime,
            copy,
            cur: bytes::Bytes::new(),
            error: None,
            progress: progress::bytes(format!("basebackup of {timeline}")),
        };
        let mut archive = tar::Archive::new(&mut reader);
        archive.set_preserve_permissions(true);
        let unpacked = archive.unpack(dest);
        if let Some(e) = reader.error.take() {
            bail!("basebackup failed: {e}");
        }
        unpacked.with_context(|| format!("unpacking the basebackup into {}", dest.display()))?;
        // Drain to the end of the copy so the server's error, if any, shows.
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest)?;
        if let Some(e) = reader.error.take() {
            bail!("basebackup failed: {e}");
        }
        Ok(())
    }
}

/// The CopyData stream of a CopyOut as a `Read` (for the tar reader).
/// Errors from the server are kept in `error`: the tar reader would
/// otherwise hide them.
struct CopyOutReader<'r> {
    runtime: &'r tokio::runtime::Runtime,
    copy: CopyOut,
    cur: bytes::Bytes,
    error: Option<String>,
    progress: progress::Progress,
}

impl Read for CopyOutReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.runtime.block_on(self.copy.recv()) {
                Ok(Some(chunk)) => {
                    self.progress.inc(chunk.len() as u64);
                    self.cur = chunk
                }
                Ok(None) => return Ok(0),
                Err(e) => {
                    let msg = match &e {
                        ClientError::Server(n) => n.message.clone(),
                        e => e.to_string(),
                    };
                    self.error = Some(msg.clone());
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}
