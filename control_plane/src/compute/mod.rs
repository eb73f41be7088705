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

mod config;
mod create;
mod export;
mod spec;
mod start;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use zenith_utils::auth::{Scope, PAGESERVER_TOKEN_ENV, WALKEEPER_TOKEN_ENV};
use zenith_utils::crashsafe;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use crate::local_env::LocalEnv;
use crate::pageserver::PageServerNode;
pub use create::create;
pub use export::export;
pub use spec::ComputeSpec;
use spec::SPEC_FILE_NAME;
pub use start::StartTimings;

/// The superuser of every compute (the pageserver's initdb creates it).
pub const COMPUTE_USER: &str = "postgres";
/// The replication slot through which the pageserver follows a compute.
pub const PAGESERVER_SLOT: &str = "pageserver";

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

impl ComputeNode<'_> {
    /// Whether this compute's WAL goes through the walkeepers.
    pub fn uses_walkeepers(&self) -> bool {
        !self.read_only() && !self.env.walkeepers.is_empty()
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
