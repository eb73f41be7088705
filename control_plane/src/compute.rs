//! Compute nodes: stateless PostgreSQL 15 servers.
//!
//! A compute keeps no relation files: the zenith extension's storage manager
//! reads every page of a permanent relation from the pageserver
//! (GetPage@LSN). Every start makes a fresh data directory from a **slim**
//! basebackup (pg_control, SLRUs, relmapper files, unlogged relations' init
//! forks; no WAL before its LSN) and starts there; nothing is kept between
//! runs, and a compute that crashes is not restarted in place
//! (`restart_after_crash = off`): the next start begins from a new slim
//! basebackup.
//!
//! - **read-write with walkeepers** (the default: `zenith init` makes 3):
//!   every start runs `postgres --sync-walkeepers` (a majority agrees on the
//!   end of the timeline's WAL), points the pageserver's WAL source at the
//!   walkeepers, waits until the pageserver has that WAL, and starts from a
//!   slim basebackup taken there, with the walproposer (contrib/zenith)
//!   loaded: commits return once a majority of walkeepers has fsynced them.
//!   `start` reports how long each step took.
//! - **read-write without walkeepers** (`zenith init --walkeepers 0`):
//!   started from the slim basebackup of its branch's last LSN; the
//!   pageserver follows its WAL through the physical replication slot
//!   `pageserver`.
//!
//! One read-write compute per branch: a second writer would fork the
//! branch's WAL (with walkeepers, one started anyway is fenced by the quorum:
//! the newer compute's election deposes the older one).
//! - **read-only** (`--lsn`): started from the slim basebackup at that LSN as
//!   a standby that never leaves recovery and reads every page at that LSN;
//!   it refuses writes.
//!
//! The full basebackup (every relation file) remains for exporting a branch
//! as a stock PostgreSQL data directory (`zenith pg export`).
//!
//! Each compute lives in `.zenith/pgdatadirs/tenants/<tenant>/<name>/` with
//! `compute.toml` (what it is), `compute.log` and `pgdata/`. A compute is
//! created under a temporary name and renamed into place when complete, so a
//! crash half-way leaves no compute that looks usable.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use zenith_utils::auth::{Scope, PAGESERVER_TOKEN_ENV, WALKEEPER_TOKEN_ENV};
use zenith_utils::crashsafe;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use crate::background_process;
use crate::local_env::{validate_name, LocalEnv};
use crate::pageserver::PageServerNode;

/// The superuser of every compute (the pageserver's initdb creates it).
pub const COMPUTE_USER: &str = "postgres";
/// The replication slot through which the pageserver follows a compute.
pub const PAGESERVER_SLOT: &str = "pageserver";
const SPEC_FILE_NAME: &str = "compute.toml";

/// What a compute is; stored in its `compute.toml`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ComputeSpec {
    pub name: String,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    /// The branch name when the compute was created.
    pub branch: String,
    pub port: u16,
    /// `None`: read-write at the branch's tip. `Some`: read-only at this LSN.
    pub read_only_lsn: Option<Lsn>,
    /// The branch's end (or the read-only LSN) when the compute was created;
    /// informational: every start takes its own slim basebackup.
    pub basebackup_lsn: Lsn,
    /// PostgreSQL settings given at creation (`NAME=VALUE`), written after ours.
    #[serde(default)]
    pub settings: Vec<String>,
    /// Roles other than the superuser log in with SCRAM-SHA-256 (endpoints
    /// of the console, reached through the proxy); otherwise loopback is
    /// trusted.
    #[serde(default)]
    pub password_auth: bool,
}

/// A `NAME=VALUE` setting as a postgresql.conf line.
fn setting_line(s: &str) -> anyhow::Result<String> {
    let (name, value) = s
        .split_once('=')
        .with_context(|| format!("setting {s:?} is not NAME=VALUE"))?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        bail!("setting {s:?}: {name:?} is not a PostgreSQL setting name");
    }
    Ok(format!("{name} = '{}'\n", value.trim().replace('\'', "''")))
}

/// Is a compute's PostgreSQL running?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeStatus {
    Running,
    Stopped,
}

impl std::fmt::Display for ComputeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ComputeStatus::Running => "running",
            ComputeStatus::Stopped => "stopped",
        })
    }
}

pub struct ComputeNode<'a> {
    pub env: &'a LocalEnv,
    pub spec: ComputeSpec,
    pub dir: PathBuf,
}

/// Every compute of the repository, sorted by tenant and name.
pub fn list(env: &LocalEnv) -> anyhow::Result<Vec<ComputeNode<'_>>> {
    let root = env.base_dir.join("pgdatadirs").join("tenants");
    let mut out = Vec::new();
    let Ok(tenants) = std::fs::read_dir(&root) else {
        return Ok(out);
    };
    for t in tenants {
        let t = t?;
        for c in std::fs::read_dir(t.path())? {
            let dir = c?.path();
            if crashsafe::is_temp_file(&dir) {
                continue;
            }
            let spec_path = dir.join(SPEC_FILE_NAME);
            if !spec_path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&spec_path)
                .with_context(|| format!("reading {}", spec_path.display()))?;
            let spec: ComputeSpec = toml::from_str(&text).map_err(|e| {
                anyhow::anyhow!("{} is corrupted: {}", spec_path.display(), e.message())
            })?;
            out.push(ComputeNode { env, spec, dir });
        }
    }
    out.sort_by(|a, b| (a.spec.tenant_id, &a.spec.name).cmp(&(b.spec.tenant_id, &b.spec.name)));
    Ok(out)
}

/// The compute called `name` in `tenant`.
pub fn find<'a>(
    env: &'a LocalEnv,
    tenant: TenantId,
    name: &str,
) -> anyhow::Result<ComputeNode<'a>> {
    list(env)?
        .into_iter()
        .find(|c| c.spec.tenant_id == tenant && c.spec.name == name)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no compute named {name:?} in tenant {tenant}: create it with `zenith pg create {name} --branch BRANCH` (see `zenith pg list`)"
            )
        })
}

/// Create a compute (not started). `lsn` makes it read-only at that LSN.
#[allow(clippy::too_many_arguments)] // each is a choice of `zenith pg create`
pub fn create<'a>(
    env: &'a LocalEnv,
    ps: &PageServerNode<'_>,
    tenant: TenantId,
    name: &str,
    branch: &str,
    lsn: Option<Lsn>,
    port: Option<u16>,
    settings: &[String],
) -> anyhow::Result<ComputeNode<'a>> {
    validate_name("compute", name)?;
    for s in settings {
        setting_line(s)?;
    }
    env.check_binaries()?;
    let timeline = env.branch_timeline(tenant, branch)?;
    let existing = list(env)?;
    if existing
        .iter()
        .any(|c| c.spec.tenant_id == tenant && c.spec.name == name)
    {
        bail!("a compute named {name:?} already exists in tenant {tenant}: start it with `zenith pg start {name}`, or pick another name");
    }
    if lsn.is_none() {
        if let Some(w) = existing.iter().find(|c| {
            c.spec.tenant_id == tenant
                && c.spec.timeline_id == timeline
                && c.spec.read_only_lsn.is_none()
        }) {
            bail!(
                "compute {:?} already writes to branch {branch:?}; a branch has one read-write compute (use that one, create a branch with `zenith branch`, or add --lsn for a read-only compute)",
                w.spec.name
            );
        }
    }
    let port = match port {
        Some(p) => {
            if let Some(c) = existing.iter().find(|c| c.spec.port == p) {
                bail!(
                    "port {p} is already assigned to compute {:?}: pick another --port",
                    c.spec.name
                );
            }
            p
        }
        None => pick_port(env, &existing)?,
    };
    if let Some(l) = lsn {
        // An LSN the writer has produced but the pageserver not yet ingested.
        if ps.timeline_info(tenant, timeline)?.last_record_lsn < l {
            catch_up(env, ps, tenant, timeline)?;
        }
    }
    let info = ps.timeline_info(tenant, timeline)?;
    let basebackup_lsn = lsn.unwrap_or(info.last_record_lsn);
    if let Some(l) = lsn {
        if l > info.last_record_lsn {
            bail!(
                "LSN {l} is beyond the end of branch {branch:?} ({}): pick an earlier LSN",
                info.last_record_lsn
            );
        }
        if l < info.latest_gc_cutoff_lsn {
            bail!(
                "LSN {l} is below the GC cutoff {} of branch {branch:?}: its history there was garbage-collected; pick a later LSN",
                info.latest_gc_cutoff_lsn
            );
        }
    }

    let parent = env.computes_dir(tenant);
    crashsafe::create_dir_all_durable(&parent)
        .with_context(|| format!("creating {}", parent.display()))?;
    let dir = parent.join(name);
    let tmp = parent.join(format!("{name}{}", crashsafe::TEMP_FILE_SUFFIX));
    let _ = std::fs::remove_dir_all(&tmp);
    let spec = ComputeSpec {
        name: name.to_string(),
        tenant_id: tenant,
        timeline_id: timeline,
        branch: branch.to_string(),
        port,
        read_only_lsn: lsn,
        basebackup_lsn,
        settings: settings.to_vec(),
        password_auth: false,
    };
    let res = (|| -> anyhow::Result<()> {
        // Every start makes the data directory (`ComputeNode::start`).
        std::fs::create_dir_all(&tmp)?;
        let text = toml::to_string_pretty(&spec)?;
        crashsafe::write_file_atomic(tmp.join(SPEC_FILE_NAME), text.as_bytes())?;
        crashsafe::rename_durable(&tmp, &dir)?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("creating compute {name:?}")));
    }
    Ok(ComputeNode { env, spec, dir })
}

/// `zenith pg export`: write the branch's data at `lsn` (default: its end,
/// once the pageserver has the WAL of a running writer) as a stock
/// PostgreSQL 15 data directory at `dest`, from a full basebackup. `dest`
/// must not exist or be empty; it appears complete or not at all. Returns
/// the LSN.
pub fn export(
    env: &LocalEnv,
    ps: &PageServerNode<'_>,
    tenant: TenantId,
    branch: &str,
    lsn: Option<Lsn>,
    dest: &Path,
) -> anyhow::Result<Lsn> {
    env.check_binaries()?;
    let timeline = env.branch_timeline(tenant, branch)?;
    if dest.exists()
        && std::fs::read_dir(dest)
            .with_context(|| format!("reading {}", dest.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty: export into a new directory",
            dest.display()
        );
    }
    let lsn = match lsn {
        Some(l) => l,
        None => {
            catch_up(env, ps, tenant, timeline)?;
            ps.timeline_info(tenant, timeline)?.last_record_lsn
        }
    };
    let name = dest
        .file_name()
        .with_context(|| format!("{} has no file name", dest.display()))?
        .to_string_lossy()
        .to_string();
    let tmp = dest.with_file_name(format!("{name}{}", crashsafe::TEMP_FILE_SUFFIX));
    let _ = std::fs::remove_dir_all(&tmp);
    let res = (|| -> anyhow::Result<()> {
        ps.basebackup_into(tenant, timeline, Some(lsn), true, &tmp)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))?;
        if dest.exists() {
            std::fs::remove_dir(dest).with_context(|| format!("replacing {}", dest.display()))?;
        }
        crashsafe::rename_durable(&tmp, dest)?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("exporting branch {branch:?} at {lsn}")));
    }
    Ok(lsn)
}

/// The first port from `computes.base_port` that no compute has and that is free.
fn pick_port(env: &LocalEnv, existing: &[ComputeNode<'_>]) -> anyhow::Result<u16> {
    let mut p = env.computes.base_port;
    for _ in 0..1000 {
        let taken = existing.iter().any(|c| c.spec.port == p)
            || background_process::check_port_free(
                std::net::SocketAddr::from(([127, 0, 0, 1], p)),
                "compute",
                "change computes.base_port in .zenith/config",
            )
            .is_err();
        if !taken {
            return Ok(p);
        }
        p = p.checked_add(1).context("no free port for the compute")?;
    }
    bail!(
        "no free port for a compute from {}: pass --port",
        env.computes.base_port
    )
}

/// Our `postgresql.conf` and `pg_hba.conf` (replacing the basebackup's
/// minimal ones), and `standby.signal` for a read-only compute. A
/// read-write compute with walkeepers gets the walproposer: commits wait
/// until a majority of walkeepers has the WAL on disk.
fn write_config(env: &LocalEnv, pgdata: &Path, spec: &ComputeSpec) -> anyhow::Result<()> {
    let mut conf = format!(
        "# Written by zenith for compute {name:?}.\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = ''\n\
         max_connections = 100\n\
         shared_buffers = 128MB\n\
         wal_level = replica\n\
         max_wal_senders = 10\n\
         max_replication_slots = 10\n\
         hot_standby = on\n\
         fsync = on\n\
         synchronous_commit = on\n\
         max_prepared_transactions = 10\n\
         restart_after_crash = off\n\
         effective_io_concurrency = 32\n\
         maintenance_io_concurrency = 32\n\
         log_line_prefix = '%m [%p] '\n",
        name = spec.name,
        port = spec.port
    );
    conf.push_str(&zenith_config(env, spec));
    if spec.read_only_lsn.is_none() && !env.walkeepers.is_empty() {
        conf.push_str(&walproposer_config(env));
        // WAL a lagging walkeeper may still need is read from here.
        conf.push_str("wal_keep_size = '1GB'\n");
    }
    for s in &spec.settings {
        conf.push_str(&setting_line(s)?);
    }
    let hba = if spec.password_auth {
        // The superuser stays trusted on loopback (the console and the
        // control plane use it); every other role proves its password.
        "# Written by zenith: the superuser is trusted on loopback, other roles use SCRAM.\n\
         local all all trust\n\
         host all postgres 127.0.0.1/32 trust\n\
         host all postgres ::1/128 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n\
         host all all ::1/128 scram-sha-256\n\
         local replication all trust\n\
         host replication postgres 127.0.0.1/32 trust\n"
    } else {
        "# Written by zenith: local computes trust loopback connections.\n\
         local all all trust\n\
         host all all 127.0.0.1/32 trust\n\
         host all all ::1/128 trust\n\
         local replication all trust\n\
         host replication all 127.0.0.1/32 trust\n\
         host replication all ::1/128 trust\n"
    };
    crashsafe::write_file_atomic(pgdata.join("postgresql.conf"), conf.as_bytes())?;
    crashsafe::write_file_atomic(pgdata.join("pg_hba.conf"), hba.as_bytes())?;
    if spec.read_only_lsn.is_some() {
        crashsafe::write_file_atomic(pgdata.join("standby.signal"), b"")?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// What every compute of `spec`'s timeline gets: the zenith extension,
/// its timeline, and the pageserver that has its pages.
fn zenith_config(env: &LocalEnv, spec: &ComputeSpec) -> String {
    let ps = env.pageserver.listen_pg_addr;
    format!(
        "shared_preload_libraries = 'zenith'\n\
         zenith.tenant_id = '{}'\n\
         zenith.timeline_id = '{}'\n\
         zenith.pageserver_connstring = 'host={} port={} dbname=postgres user=zenith_admin application_name=compute'\n",
        spec.tenant_id,
        spec.timeline_id,
        ps.ip(),
        ps.port()
    )
}

/// The walproposer's settings.
fn walproposer_config(env: &LocalEnv) -> String {
    format!(
        "zenith.walkeepers = '{}'\n\
         synchronous_standby_names = 'walproposer'\n",
        crate::walkeeper::addresses(env)
    )
}

/// How long each step of starting a compute with walkeepers took.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartTimings {
    pub sync_walkeepers: Duration,
    pub basebackup: Duration,
    pub start: Duration,
}

impl std::fmt::Display for StartTimings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sync-walkeepers {} ms, basebackup {} ms, start {} ms",
            self.sync_walkeepers.as_millis(),
            self.basebackup.as_millis(),
            self.start.as_millis()
        )
    }
}

/// How long `postgres --sync-walkeepers` may take (a majority must answer).
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

impl ComputeNode<'_> {
    /// Whether this compute's WAL goes through the walkeepers.
    pub fn uses_walkeepers(&self) -> bool {
        !self.read_only() && !self.env.walkeepers.is_empty()
    }

    /// `postgres --sync-walkeepers`: the LSN where a majority of walkeepers
    /// agree the timeline's WAL ends; `None` if they hold none yet.
    pub fn sync_walkeepers(&self) -> anyhow::Result<Option<Lsn>> {
        let dir = self.dir.join("sync");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        crashsafe::write_file_atomic(
            dir.join("postgresql.conf"),
            format!(
                "{}{}",
                zenith_config(self.env, &self.spec),
                walproposer_config(self.env)
            )
            .as_bytes(),
        )?;
        let log = std::fs::File::create(dir.join("sync.log"))?;
        let mut child = self
            .pg_cmd("postgres")
            .arg("--sync-walkeepers")
            .arg("-D")
            .arg(&dir)
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .context("running postgres --sync-walkeepers")?;
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if start.elapsed() > SYNC_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "postgres --sync-walkeepers found no majority of walkeepers within {}s (are they running? `zenith status`); see {}",
                    SYNC_TIMEOUT.as_secs(),
                    dir.join("sync.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut out = String::new();
        if let Some(mut o) = child.stdout.take() {
            use std::io::Read;
            o.read_to_string(&mut out)?;
        }
        if !status.success() {
            bail!(
                "postgres --sync-walkeepers failed ({status}); see {}",
                dir.join("sync.log").display()
            );
        }
        let line = out.lines().last().unwrap_or("").trim();
        let lsn: Lsn = line.parse().map_err(|_| {
            anyhow::anyhow!("postgres --sync-walkeepers printed {line:?}, not an LSN")
        })?;
        Ok((lsn != Lsn(0)).then_some(lsn))
    }

    /// With walkeepers: agree on the end of WAL and make the pageserver
    /// follow the walkeepers up to it; returns that LSN.
    fn sync_from_walkeepers(
        &self,
        ps: &PageServerNode<'_>,
        t: &mut StartTimings,
    ) -> anyhow::Result<Lsn> {
        let (tenant, timeline) = (self.spec.tenant_id, self.spec.timeline_id);
        let started = Instant::now();
        let synced = self.sync_walkeepers()?;
        t.sync_walkeepers = started.elapsed();
        let started = Instant::now();
        let source = format!("walkeepers={}", crate::walkeeper::addresses(self.env));
        ps.set_wal_source(tenant, timeline, &source)?;
        let lsn = match synced {
            Some(l) => {
                ps.wait_for_lsn(
                    tenant,
                    timeline,
                    l,
                    Duration::from_secs(120),
                    "of the walkeepers",
                )?;
                l
            }
            None => ps.timeline_info(tenant, timeline)?.last_record_lsn,
        };
        t.basebackup = started.elapsed();
        Ok(lsn)
    }

    /// Put a fresh data directory from the slim basebackup at `lsn` in place.
    fn prepare_slim(
        &self,
        ps: &PageServerNode<'_>,
        lsn: Lsn,
        t: &mut StartTimings,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let pgdata = self.pgdata();
        let tmp = self
            .dir
            .join(format!("pgdata{}", crashsafe::TEMP_FILE_SUFFIX));
        let _ = std::fs::remove_dir_all(&tmp);
        ps.basebackup_into(
            self.spec.tenant_id,
            self.spec.timeline_id,
            Some(lsn),
            false,
            &tmp,
        )?;
        write_config(self.env, &tmp, &self.spec)?;
        let _ = std::fs::remove_dir_all(&pgdata);
        crashsafe::rename_durable(&tmp, &pgdata)?;
        t.basebackup += started.elapsed();
        Ok(())
    }

    /// Rewrites `compute.toml` from `self.spec` (atomically).
    pub fn save_spec(&self) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(&self.spec)?;
        crashsafe::write_file_atomic(self.dir.join(SPEC_FILE_NAME), text.as_bytes())
            .with_context(|| format!("writing {}", self.dir.join(SPEC_FILE_NAME).display()))
    }

    pub fn pgdata(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("compute.log")
    }

    pub fn read_only(&self) -> bool {
        self.spec.read_only_lsn.is_some()
    }

    /// A connection string ready to paste into psql.
    pub fn connstr(&self) -> String {
        format!(
            "postgresql://{COMPUTE_USER}@127.0.0.1:{}/postgres",
            self.spec.port
        )
    }

    /// How the compute runs, in words for `pg list`.
    pub fn mode(&self) -> String {
        match self.spec.read_only_lsn {
            Some(l) => format!("read-only at {l}"),
            None if self.uses_walkeepers() => "read-write (WAL to the walkeepers)".to_string(),
            None => "read-write (local data dir; pageserver follows its WAL)".to_string(),
        }
    }

    /// A PostgreSQL program with the compute's environment: with auth on,
    /// its tokens for the page service (its tenant) and the walkeepers
    /// (walkeeperdata bound to its tenant), which the zenith extension
    /// reads from there: they are never written to postgresql.conf.
    fn pg_cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(self.env.pg_bin(prog));
        c.env("ZENITH_ALLOW_ROOT", "1")
            .env("LD_LIBRARY_PATH", self.env.pg_lib_dir());
        let tenant = Some(self.spec.tenant_id);
        match (
            self.env.scoped_token(Scope::Tenant, tenant),
            self.env.scoped_token(Scope::WalkeeperData, tenant),
        ) {
            (Ok(Some(ps)), Ok(Some(wk))) => {
                c.env(PAGESERVER_TOKEN_ENV, ps).env(WALKEEPER_TOKEN_ENV, wk);
            }
            (Ok(_), Ok(_)) => {}
            (Err(e), _) | (_, Err(e)) => {
                // The compute then fails to log in, with the reason in its
                // log; say why here too.
                eprintln!("warning: cannot sign the compute's auth tokens: {e:#}");
            }
        }
        c
    }

    pub fn status(&self) -> ComputeStatus {
        if postmaster_running(&self.pgdata()) {
            ComputeStatus::Running
        } else {
            ComputeStatus::Stopped
        }
    }

    /// Run one SQL statement through psql; returns its unaligned output.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        let out = self
            .pg_cmd("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.spec.port.to_string(),
                "-U",
                COMPUTE_USER,
                "-d",
                "postgres",
            ])
            .args(["-c", sql])
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!(
                "compute {:?}: {}",
                self.spec.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The compute's WAL flush position (read-write computes).
    pub fn flush_lsn(&self) -> anyhow::Result<Lsn> {
        let s = self.psql("SELECT pg_current_wal_flush_lsn()")?;
        s.parse()
            .map_err(|_| anyhow::anyhow!("unexpected LSN {s:?} from compute {:?}", self.spec.name))
    }

    /// Start PostgreSQL and, for a read-write compute, make the pageserver
    /// follow it. On failure the compute is stopped again. Monitoring is
    /// not updated here: callers go through `repo::start_compute`.
    pub fn start(&self, ps: &PageServerNode<'_>) -> anyhow::Result<StartTimings> {
        self.env.check_binaries()?;
        if self.status() == ComputeStatus::Running {
            bail!(
                "compute {:?} is already running on port {}",
                self.spec.name,
                self.spec.port
            );
        }
        background_process::check_port_free(
            std::net::SocketAddr::from(([127, 0, 0, 1], self.spec.port)),
            &format!("compute {:?}", self.spec.name),
            "destroy the compute and create it again with another --port",
        )?;
        // A read-write compute needs the pageserver to follow it; check the
        // timeline before starting anything.
        if !self.read_only() {
            ps.timeline_info(self.spec.tenant_id, self.spec.timeline_id)
                .with_context(|| {
                    format!("checking branch {:?} on the pageserver", self.spec.branch)
                })?;
        }
        let mut timings = StartTimings::default();
        let lsn = if self.uses_walkeepers() {
            self.sync_from_walkeepers(ps, &mut timings)?
        } else if let Some(l) = self.spec.read_only_lsn {
            l
        } else {
            ps.timeline_info(self.spec.tenant_id, self.spec.timeline_id)?
                .last_record_lsn
        };
        self.prepare_slim(ps, lsn, &mut timings)?;
        let started = Instant::now();
        // pg_ctl -w checks every 100 ms: start without waiting, and watch
        // postmaster.pid for "ready" ourselves, every few milliseconds.
        let out = self
            .pg_cmd("pg_ctl")
            .arg("start")
            .arg("-W")
            .arg("-D")
            .arg(self.pgdata())
            .arg("-l")
            .arg(self.log_file())
            .output()
            .context("running pg_ctl start")?;
        let ready = if out.status.success() {
            wait_ready(&self.pgdata(), Duration::from_secs(120))
        } else {
            Err(anyhow::anyhow!(
                "{}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        };
        if let Err(e) = ready {
            let _ = self.stop(true);
            bail!(
                "compute {:?} did not start: {e:#}; see its log {}",
                self.spec.name,
                self.log_file().display()
            );
        }
        timings.start = started.elapsed();
        if !self.read_only() && !self.uses_walkeepers() {
            if let Err(e) = self.attach_pageserver(ps) {
                let _ = self.stop(true);
                return Err(e.context(format!(
                    "making the pageserver follow compute {:?} (the compute was stopped again)",
                    self.spec.name
                )));
            }
        }
        Ok(timings)
    }

    /// Create the slot if missing and point the timeline's WAL source here.
    fn attach_pageserver(&self, ps: &PageServerNode<'_>) -> anyhow::Result<()> {
        self.psql(&format!(
            "SELECT pg_create_physical_replication_slot('{PAGESERVER_SLOT}', true) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{PAGESERVER_SLOT}')"
        ))?;
        let connstr = format!(
            "host=127.0.0.1 port={} user={COMPUTE_USER} slot={PAGESERVER_SLOT}",
            self.spec.port
        );
        ps.set_wal_source(self.spec.tenant_id, self.spec.timeline_id, &connstr)
    }

    /// Stop PostgreSQL (`fast`, or `immediate`). Not running is fine.
    /// Monitoring is not updated here: callers go through
    /// `repo::stop_compute`.
    pub fn stop(&self, immediate: bool) -> anyhow::Result<()> {
        if self.status() == ComputeStatus::Stopped {
            return Ok(());
        }
        let out = self
            .pg_cmd("pg_ctl")
            .arg("stop")
            .arg("-w")
            .args(["-t", "120"])
            .args(["-m", if immediate { "immediate" } else { "fast" }])
            .arg("-D")
            .arg(self.pgdata())
            .output()
            .context("running pg_ctl stop")?;
        if !out.status.success() && self.status() == ComputeStatus::Running {
            bail!(
                "compute {:?} did not stop: {}",
                self.spec.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Stop, detach the pageserver, and delete the compute's directory.
    /// Monitoring is not updated here: callers go through
    /// `repo::destroy_compute`.
    pub fn destroy(&self, ps: &PageServerNode<'_>) -> anyhow::Result<()> {
        self.stop(true)?;
        if !self.read_only() {
            if let Err(e) = ps.remove_wal_source(self.spec.tenant_id, self.spec.timeline_id) {
                // The timeline may be gone or have no source; say so, go on.
                eprintln!(
                    "note: could not detach the pageserver from {:?}: {e:#}",
                    self.spec.name
                );
            }
        }
        let tmp = self.dir.with_file_name(format!(
            "{}.destroy{}",
            self.spec.name,
            crashsafe::TEMP_FILE_SUFFIX
        ));
        std::fs::rename(&self.dir, &tmp)
            .with_context(|| format!("removing {}", self.dir.display()))?;
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        Ok(())
    }

    /// Wait until the pageserver has ingested this compute's WAL up to its
    /// current flush position; returns that LSN.
    pub fn wait_pageserver_caught_up(
        &self,
        ps: &PageServerNode<'_>,
        timeout: Duration,
    ) -> anyhow::Result<Lsn> {
        let target = self.flush_lsn()?;
        ps.wait_for_lsn(
            self.spec.tenant_id,
            self.spec.timeline_id,
            target,
            timeout,
            &format!("of compute {:?}", self.spec.name),
        )?;
        Ok(target)
    }
}

/// If a read-write compute runs on `timeline`, wait until the pageserver
/// has its WAL up to the compute's flush position and return that LSN.
pub fn catch_up(
    env: &LocalEnv,
    ps: &PageServerNode<'_>,
    tenant: TenantId,
    timeline: TimelineId,
) -> anyhow::Result<Option<Lsn>> {
    for c in list(env)? {
        if c.spec.tenant_id == tenant
            && c.spec.timeline_id == timeline
            && !c.read_only()
            && c.status() == ComputeStatus::Running
        {
            let lsn = c.wait_pageserver_caught_up(ps, Duration::from_secs(120))?;
            return Ok(Some(lsn));
        }
    }
    Ok(None)
}

/// Whether the postmaster named in `pgdata/postmaster.pid` runs. PostgreSQL
/// does not lock that file, but a postmaster works in its data directory:
/// the pid must be alive with `pgdata` as its current directory, which a
/// recycled pid of an unrelated process (or a zombie) never has.
/// Wait until the postmaster of `pgdata` accepts connections: line 8 of
/// postmaster.pid (its status) says "ready" or "standby", as pg_ctl
/// checks. An error if it exits first or
/// `timeout` passes.
fn wait_ready(pgdata: &Path, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut pid: Option<u32> = None;
    loop {
        // The file is written line by line: a read may see part of it.
        if let Ok(text) = std::fs::read_to_string(pgdata.join("postmaster.pid")) {
            let mut lines = text.lines();
            if let Some(p) = lines.next().and_then(|l| l.trim().parse::<u32>().ok()) {
                pid = Some(p);
            }
            // "standby": a read-only compute accepting read-only connections.
            if matches!(
                text.lines().nth(7).map(str::trim),
                Some("ready" | "standby")
            ) {
                return Ok(());
            }
        }
        if let Some(p) = pid {
            if !Path::new(&format!("/proc/{p}")).exists() {
                bail!("the postmaster exited while starting");
            }
        }
        if started.elapsed() > timeout {
            bail!("not ready after {} s", timeout.as_secs());
        }
        // Before postmaster.pid exists, the postmaster may still be forking.
        if pid.is_none() && started.elapsed() > Duration::from_secs(10) {
            bail!("no postmaster.pid after 10 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn postmaster_running(pgdata: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(pgdata.join("postmaster.pid")) else {
        return false;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
        .filter(|&p| p > 0)
    else {
        return false;
    };
    match (
        std::fs::read_link(format!("/proc/{pid}/cwd")),
        pgdata.canonicalize(),
    ) {
        (Ok(cwd), Ok(dir)) => cwd == dir,
        _ => false,
    }
}
