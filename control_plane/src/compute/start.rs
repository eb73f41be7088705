//! Starting a compute: `postgres --sync-walkeepers`, the slim basebackup,
//! pg_ctl, and for a compute without walkeepers the pageserver following
//! it through its slot.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use zenith_utils::crashsafe;
use zenith_utils::lsn::Lsn;

use super::config::{walproposer_config, write_config, zenith_config};
use super::{ComputeNode, ComputeStatus, COMPUTE_USER, PAGESERVER_SLOT};
use crate::background_process;
use crate::pageserver::PageServerNode;

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
}

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
