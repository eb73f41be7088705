//! Page reconstruction (docs/architecture.md §6): applying a page's WAL records to
//! its base image.
//!
//! [`WalRedoManager`] is what the read path calls. Rust-native pseudo-records
//! are applied here ([`apply_native`]); PostgreSQL records go to a
//! `postgres --wal-redo` process ([`process`]), managed by
//! [`PostgresRedoManager`]: one process per tenant, started on first use,
//! replaced after any failure.

pub mod apply_native;
pub mod process;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use zenith_utils::lsn::Lsn;

use crate::key::Key;
use crate::value::ZenithWalRecord;

/// `pageserver_wal_redo_seconds{path}`: one reconstruction of a page;
/// `postgres` when any of its records went to a `postgres --wal-redo`
/// process, `native` when Rust applied them all. Index: [`redo_path`].
static WAL_REDO_SECONDS: std::sync::LazyLock<[zenith_metrics::Histogram; 2]> =
    std::sync::LazyLock::new(|| {
        let vec = zenith_metrics::register_histogram_vec!(
            "pageserver_wal_redo_seconds",
            "Time to reconstruct a page from its base image and WAL records, by path (native, postgres)",
            &["path"],
            zenith_metrics::LATENCY_BUCKETS_SECONDS.to_vec()
        )
        .expect("registering pageserver_wal_redo_seconds");
        ["native", "postgres"].map(|path| vec.with_label_values(&[path]))
    });

/// Registers `pageserver_wal_redo_seconds` (see [`crate::register_metrics`]).
pub fn register_metrics() {
    std::sync::LazyLock::force(&WAL_REDO_SECONDS);
}

/// 0 (`native`) or 1 (`postgres`): which redo path `records` take.
fn redo_path(records: &[(Lsn, ZenithWalRecord)]) -> usize {
    usize::from(
        records
            .iter()
            .any(|(_, r)| matches!(r, ZenithWalRecord::Postgres { .. })),
    )
}

/// [`WalRedoManager::request_redo`], timed in `pageserver_wal_redo_seconds`.
pub fn timed_redo(
    mgr: &dyn WalRedoManager,
    key: Key,
    lsn: Lsn,
    base_img: Option<(Lsn, Bytes)>,
    records: Vec<(Lsn, ZenithWalRecord)>,
) -> Result<Bytes, WalRedoError> {
    let _timer = WAL_REDO_SECONDS[redo_path(&records)].start_timer();
    mgr.request_redo(key, lsn, base_img, records)
}

/// Why a page could not be reconstructed.
#[derive(Debug, thiserror::Error)]
pub enum WalRedoError {
    #[error("no base image and the first record of {key} at {lsn} does not initialize the page")]
    NoBaseImage { key: Key, lsn: Lsn },
    #[error("applying the record at {lsn} to {key}: {source}")]
    Native {
        key: Key,
        lsn: Lsn,
        #[source]
        source: apply_native::ApplyError,
    },
    #[error("{key} at {lsn} needs PostgreSQL WAL redo, which is not available: {reason}")]
    PostgresRedoUnavailable { key: Key, lsn: Lsn, reason: String },
    #[error("WAL redo of {key} at {lsn} failed: {source}")]
    Process {
        key: Key,
        lsn: Lsn,
        #[source]
        source: process::ProcessError,
    },
}

/// Reconstructs pages from a base image and records.
pub trait WalRedoManager: Send + Sync {
    /// The page of `key` at `lsn`, from `base_img` (LSN and bytes, if any)
    /// and `records` (ascending LSN, all above the base image).
    fn request_redo(
        &self,
        key: Key,
        lsn: Lsn,
        base_img: Option<(Lsn, Bytes)>,
        records: Vec<(Lsn, ZenithWalRecord)>,
    ) -> Result<Bytes, WalRedoError>;

    /// Offers the data directory of a fresh initdb (the tenant's bootstrap
    /// has one) to run redo in, saving an initdb at the first request.
    /// True if it was taken (moved away).
    fn adopt_datadir(&self, _initdb_dir: &std::path::Path) -> bool {
        false
    }
}

/// Applies Rust-native records; refuses PostgreSQL records.
#[derive(Debug, Default)]
pub struct NativeOnlyRedoManager;

impl WalRedoManager for NativeOnlyRedoManager {
    fn request_redo(
        &self,
        key: Key,
        lsn: Lsn,
        base_img: Option<(Lsn, Bytes)>,
        records: Vec<(Lsn, ZenithWalRecord)>,
    ) -> Result<Bytes, WalRedoError> {
        let mut page = match base_img {
            Some((_, img)) => img.to_vec(),
            None => return Err(WalRedoError::NoBaseImage { key, lsn }),
        };
        for (rec_lsn, rec) in &records {
            if let ZenithWalRecord::Postgres { .. } = rec {
                return Err(WalRedoError::PostgresRedoUnavailable {
                    key,
                    lsn: *rec_lsn,
                    reason: "postgres --wal-redo is not wired in yet".into(),
                });
            }
            apply_native::apply_native(&mut page, key.field6, rec).map_err(|source| {
                WalRedoError::Native {
                    key,
                    lsn: *rec_lsn,
                    source,
                }
            })?;
        }
        Ok(Bytes::from(page))
    }
}

/// One redo process per CPU, at most [`MAX_REDO_PROCESSES`].
fn redo_pool_size() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_REDO_PROCESSES)
}

/// Reconstructs pages with `postgres --wal-redo` (and Rust for native records).
///
/// A tenant has a pool of redo processes, one per CPU (at most
/// [`MAX_REDO_PROCESSES`]), each started on first use and restarted after a
/// failure, so concurrent reads (page service clients, a basebackup) replay
/// in parallel. They share one data directory: `--wal-redo` takes no lock
/// file.
pub struct PostgresRedoManager {
    pg_distrib_dir: PathBuf,
    datadir: PathBuf,
    tenant: String,
    timeout: Duration,
    processes: Vec<Mutex<Option<process::RedoProcess>>>,
    /// Serializes creating the data directory.
    datadir_lock: Mutex<()>,
    next: std::sync::atomic::AtomicUsize,
}

/// Upper bound of a tenant's redo process pool.
pub const MAX_REDO_PROCESSES: usize = 4;

impl PostgresRedoManager {
    /// `datadir` is created with initdb on first use.
    pub fn new(
        pg_distrib_dir: PathBuf,
        datadir: PathBuf,
        tenant: String,
        timeout: Duration,
    ) -> PostgresRedoManager {
        PostgresRedoManager {
            pg_distrib_dir,
            datadir,
            tenant,
            timeout,
            processes: (0..redo_pool_size()).map(|_| Mutex::new(None)).collect(),
            datadir_lock: Mutex::new(()),
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// A free slot of the pool if there is one, else the next in turn
    /// (waiting for it).
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<process::RedoProcess>> {
        let n = self.processes.len();
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..n {
            match self.processes[(start + i) % n].try_lock() {
                Ok(g) => return g,
                Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.processes[start % n]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn apply_postgres(
        &self,
        key: Key,
        lsn: Lsn,
        base: Option<&[u8]>,
        records: &[(Lsn, Bytes)],
    ) -> Result<Bytes, WalRedoError> {
        let err = |source| WalRedoError::Process { key, lsn, source };
        let rel = key
            .rel_tag()
            .filter(|_| key.is_rel_block_key())
            .ok_or_else(|| WalRedoError::PostgresRedoUnavailable {
                key,
                lsn,
                reason: "PostgreSQL records are only stored for relation blocks".into(),
            })?;
        let mut guard = self.slot();
        if guard.is_none() {
            {
                let _d = self.datadir_lock.lock().unwrap_or_else(|e| e.into_inner());
                process::ensure_redo_datadir(&self.pg_distrib_dir, &self.datadir).map_err(err)?;
            }
            *guard = Some(
                process::RedoProcess::launch(&self.pg_distrib_dir, &self.datadir, &self.tenant)
                    .map_err(err)?,
            );
        }
        let Some(proc_) = guard.as_mut() else {
            return Err(WalRedoError::PostgresRedoUnavailable {
                key,
                lsn,
                reason: "no redo process".into(),
            });
        };
        match proc_.apply(rel, key.field6, base, records, self.timeout) {
            Ok(page) => Ok(page),
            Err(e) => {
                // The process is unusable after any failure: start anew next time.
                *guard = None;
                Err(err(e))
            }
        }
    }
}

impl WalRedoManager for PostgresRedoManager {
    fn adopt_datadir(&self, initdb_dir: &std::path::Path) -> bool {
        let _d = self.datadir_lock.lock().unwrap_or_else(|e| e.into_inner());
        !self.datadir.join("PG_VERSION").exists()
            && initdb_dir.join("PG_VERSION").exists()
            && std::fs::rename(initdb_dir, &self.datadir).is_ok()
    }

    fn request_redo(
        &self,
        key: Key,
        lsn: Lsn,
        base_img: Option<(Lsn, Bytes)>,
        records: Vec<(Lsn, ZenithWalRecord)>,
    ) -> Result<Bytes, WalRedoError> {
        let mut page: Option<Bytes> = base_img.map(|(_, img)| img);
        let mut pending: Vec<(Lsn, Bytes)> = Vec::new();
        for (rec_lsn, rec) in records {
            match rec {
                ZenithWalRecord::Postgres { rec, .. } => pending.push((rec_lsn, rec)),
                native => {
                    if !pending.is_empty() {
                        page =
                            Some(self.apply_postgres(key, rec_lsn, page.as_deref(), &pending)?);
                        pending.clear();
                    }
                    let mut p = page.ok_or(WalRedoError::NoBaseImage { key, lsn })?.to_vec();
                    apply_native::apply_native(&mut p, key.field6, &native).map_err(|source| {
                        WalRedoError::Native {
                            key,
                            lsn: rec_lsn,
                            source,
                        }
                    })?;
                    page = Some(Bytes::from(p));
                }
            }
        }
        if !pending.is_empty() {
            page = Some(self.apply_postgres(key, lsn, page.as_deref(), &pending)?);
        }
        page.ok_or(WalRedoError::NoBaseImage { key, lsn })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redo_is_timed_by_path() {
        let native = vec![(Lsn(0x10), ZenithWalRecord::ClogSetAborted { xids: vec![5] })];
        let postgres = vec![(
            Lsn(0x10),
            ZenithWalRecord::Postgres {
                will_init: false,
                rec: Bytes::from_static(b"x"),
            },
        )];
        assert_eq!(redo_path(&native), 0);
        assert_eq!(redo_path(&postgres), 1);
        let counts = || WAL_REDO_SECONDS.each_ref().map(|h| h.get_sample_count());
        let before = counts();
        let base = Some((Lsn(0x8), Bytes::from(vec![0u8; 8192])));
        timed_redo(
            &NativeOnlyRedoManager,
            Key::MIN,
            Lsn(0x10),
            base.clone(),
            native,
        )
        .unwrap();
        // Refused (no redo process), and timed all the same.
        assert!(timed_redo(&NativeOnlyRedoManager, Key::MIN, Lsn(0x10), base, postgres).is_err());
        let after = counts();
        assert!(after[0] > before[0] && after[1] > before[1]);
        let text = zenith_metrics::gather_text().unwrap();
        assert!(text.contains("pageserver_wal_redo_seconds_count{path=\"native\"}"));
        assert!(text.contains("pageserver_wal_redo_seconds_count{path=\"postgres\"}"));
    }
}
