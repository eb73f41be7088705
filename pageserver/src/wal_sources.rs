//! Persisted WAL sources and the WAL receivers that follow them.
//!
//! A timeline may have one WAL source: a libpq-style connection string
//! (`host=... port=... user=... [password=...] [slot=...]`, see
//! [`WalSource::parse`]). It is stored, exactly as given, in the file
//! `wal_source` in the timeline's directory
//! (`<workdir>/tenants/<tenant>/timelines/<timeline>/wal_source`), written
//! with [`crashsafe::write_file_atomic`], so after a crash the file is either
//! the old or the new connection string. At startup [`WalSources::start_all`]
//! starts a [`WalReceiver`] for every timeline that has the file.
//!
//! Invariants:
//! - The file is written before the receiver is (re)started and removed only
//!   after the receiver has stopped: a receiver runs only for a persisted
//!   source, and a persisted source always gets a receiver after a restart.
//! - At most one receiver runs per timeline. Changes ([`set`](WalSources::set),
//!   [`remove`](WalSources::remove), [`stop`](WalSources::stop)) are
//!   serialized; they block (stopping a receiver joins its thread, which
//!   flushes the timeline's in-memory layer), so async callers run them in
//!   `spawn_blocking`.
//! - The file may hold a password: it is made readable by its owner only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tracing::{debug, info};
use zenith_utils::crashsafe;
use zenith_utils::id::{TenantId, TimelineId};

use crate::tenant::timeline::Timeline;
use crate::tenant_mgr::TenantManager;
use crate::walreceiver::{WalReceiver, WalSource};

/// Name of the file in a timeline directory that holds its WAL source.
pub const WAL_SOURCE_FILE_NAME: &str = "wal_source";

/// A WAL source change that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WalSourceError {
    /// The connection string is not one [`WalSource::parse`] accepts.
    #[error("invalid WAL source connection string: {0:#}")]
    Invalid(anyhow::Error),
    /// Persisting, removing or starting failed.
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

/// A running receiver and the connection string it follows.
struct Running {
    connstr: String,
    receiver: WalReceiver,
}

/// The WAL receivers of one pageserver, keyed by timeline.
#[derive(Default)]
pub struct WalSources {
    running: Mutex<HashMap<(TenantId, TimelineId), Running>>,
    /// Serializes changes, so that a stop-then-start is never interleaved
    /// with another change of the same timeline.
    changes: Mutex<()>,
}

/// Path of the WAL source file of the timeline in `timeline_dir`.
pub fn wal_source_path(timeline_dir: &Path) -> PathBuf {
    timeline_dir.join(WAL_SOURCE_FILE_NAME)
}

/// The persisted connection string of a timeline, if it has one.
pub fn load_persisted(timeline_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = wal_source_path(timeline_dir);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The connection string with its password replaced by `***` (for display).
pub fn redact(connstr: &str) -> String {
    connstr
        .split_whitespace()
        .map(|part| match part.split_once('=') {
            Some(("password", _)) => "password=***".to_string(),
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl WalSources {
    pub fn new() -> WalSources {
        WalSources::default()
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, TimelineId), Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Validate `connstr`, persist it as the timeline's WAL source and
    /// (re)start the timeline's receiver, unless that source is already
    /// streaming. Blocks.
    pub fn set(&self, tl: &Arc<Timeline>, connstr: &str) -> Result<(), WalSourceError> {
        let connstr = connstr.trim();
        if connstr.is_empty() {
            return Err(WalSourceError::Invalid(anyhow::anyhow!(
                "the connection string is empty"
            )));
        }
        let src = WalSource::parse(connstr).map_err(WalSourceError::Invalid)?;
        let _changing = self.lock_changes();
        // The same source, streaming: nothing to change (every compute start
        // sets it; restarting the receiver would cost a stop and a reconnect).
        if self
            .lock_running()
            .get(&(tl.tenant_id, tl.timeline_id))
            .is_some_and(|r| r.connstr == connstr && r.receiver.is_running())
        {
            debug!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id,
                   "WAL source unchanged: {}", redact(connstr));
            return Ok(());
        }
        let path = wal_source_path(&tl.path);
        // It may hold a password: readable by the owner only, from creation.
        crashsafe::write_file_atomic_mode(&path, format!("{connstr}\n").as_bytes(), 0o600)
            .with_context(|| format!("persisting the WAL source of {}", tl.timeline_id))?;
        self.stop_locked(tl.tenant_id, tl.timeline_id);
        self.spawn_locked(tl, src, connstr.to_string())?;
        info!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id,
              "WAL source set to {}", redact(connstr));
        Ok(())
    }

    /// Stop the timeline's receiver and remove its persisted WAL source.
    /// Returns whether there was one. Blocks.
    pub fn remove(&self, tl: &Timeline) -> anyhow::Result<bool> {
        let _changing = self.lock_changes();
        let was_running = self.stop_locked(tl.tenant_id, tl.timeline_id);
        let path = wal_source_path(&tl.path);
        let had_file = match crashsafe::remove_file_durable(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e).context("removing the WAL source file"),
        };
        if was_running || had_file {
            info!(tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id, "WAL source removed");
        }
        Ok(was_running || had_file)
    }

    /// Stop the timeline's receiver (if any), keeping the persisted source.
    /// Blocks until its thread has flushed and exited.
    pub fn stop(&self, tenant_id: TenantId, timeline_id: TimelineId) -> bool {
        let _changing = self.lock_changes();
        self.stop_locked(tenant_id, timeline_id)
    }

    /// Stop every receiver (at shutdown). Blocks.
    pub fn stop_all(&self) {
        let _changing = self.lock_changes();
        let all: Vec<_> = self.lock_running().drain().collect();
        let n = all.len();
        // Signal all of them first, then wait: stopping is parallel.
        let handles: Vec<_> = all
            .into_iter()
            .map(|(_, r)| std::thread::spawn(move || r.receiver.stop()))
            .collect();
        for h in handles {
            let _ = h.join();
        }
        if n > 0 {
            info!(receivers = n, "stopped WAL receivers");
        }
    }

    /// Start a receiver for every timeline with a persisted WAL source.
    /// A source that does not parse any more is logged and skipped.
    /// Returns the number of receivers started.
    pub fn start_all(&self, mgr: &TenantManager) -> anyhow::Result<usize> {
        let _changing = self.lock_changes();
        let mut started = 0;
        for tenant in mgr.list() {
            for tl in tenant.list_timelines() {
                let connstr = match load_persisted(&tl.path) {
                    Ok(Some(c)) => c,
                    Ok(None) => continue,
                    Err(e) => {
                        tl.set_broken(format!("cannot read its WAL source: {e:#}"));
                        continue;
                    }
                };
                match WalSource::parse(&connstr) {
                    Ok(src) => {
                        self.spawn_locked(&tl, src, connstr)?;
                        started += 1;
                    }
                    Err(e) => {
                        tl.set_broken(format!("invalid persisted WAL source: {e:#}"));
                    }
                }
            }
        }
        Ok(started)
    }

    /// The connection string the timeline's receiver follows, if one runs.
    pub fn running_connstr(&self, tenant_id: TenantId, timeline_id: TimelineId) -> Option<String> {
        self.lock_running()
            .get(&(tenant_id, timeline_id))
            .map(|r| r.connstr.clone())
    }

    /// Number of running receivers.
    pub fn running_count(&self) -> usize {
        self.lock_running().len()
    }

    fn spawn_locked(
        &self,
        tl: &Arc<Timeline>,
        src: WalSource,
        connstr: String,
    ) -> anyhow::Result<()> {
        let receiver = WalReceiver::spawn(Arc::clone(tl), src)
            .with_context(|| format!("starting the WAL receiver of {}", tl.timeline_id))?;
        let old = self.lock_running().insert(
            (tl.tenant_id, tl.timeline_id),
            Running { connstr, receiver },
        );
        if let Some(old) = old {
            // Not expected (callers stop first), but never leave two running.
            old.receiver.stop();
        }
        Ok(())
    }

    fn stop_locked(&self, tenant_id: TenantId, timeline_id: TimelineId) -> bool {
        let old = self.lock_running().remove(&(tenant_id, timeline_id));
        match old {
            Some(r) => {
                r.receiver.stop();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("host=h port=1 user=u password=secret slot=s"),
            "host=h port=1 user=u password=*** slot=s"
        );
        assert_eq!(redact("host=h"), "host=h");
    }

    #[test]
    fn missing_file_is_no_source() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_persisted(dir.path()).unwrap(), None);
        std::fs::write(wal_source_path(dir.path()), "host=h port=5\n").unwrap();
        assert_eq!(
            load_persisted(dir.path()).unwrap().as_deref(),
            Some("host=h port=5")
        );
    }
}
