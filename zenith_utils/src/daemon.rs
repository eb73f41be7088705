//! What every long-running Zenith process does the same way: its pid file,
//! its configuration file with `-c key=value` overrides, shutdown on
//! SIGTERM/SIGINT, and one-line fatal errors. Logging setup is
//! [`crate::logging`].
//!
//! - [`PidFile`]: `<workdir>/<name>.pid`, locked with `flock` for the life of
//!   the process. A second instance on the same workdir is refused; a file
//!   left by a dead process is taken over (the kernel dropped its lock).
//!   [`running_pid`] tells another process whether a daemon runs, by the
//!   lock rather than by a pid that may have been reused.
//! - [`parse_config`]: a TOML file's text plus overrides (`key=value`, the
//!   value in TOML syntax, dotted keys for nested tables), applied after the
//!   file, into any `serde` type; errors name the key.
//! - [`shutdown_signal`] waits for SIGTERM or SIGINT;
//!   [`exit_on_second_signal`] makes a second one end the process at once,
//!   so that a stuck shutdown can always be cut short.
//! - [`Daemon`]: the whole lifecycle built from these (pid file, logging,
//!   runtime, signals, named servers, drain, shutdown step); see
//!   [`runner`].

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

pub mod runner;
pub use runner::{bind, main, Daemon, Servers};

use serde::de::DeserializeOwned;
use tokio::signal::unix::{signal, SignalKind};
use tracing::warn;

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid override {0:?}: expected key=value with a TOML value, e.g. wait_lsn_timeout=\"10s\"")]
    BadOverride(String),
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Parses a configuration file's text, applies `key=value` overrides and
/// deserializes the result.
pub fn parse_config<T: DeserializeOwned>(
    text: &str,
    overrides: &[String],
) -> Result<T, ConfigError> {
    let mut doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
    for o in overrides {
        let (key, _) = o
            .split_once('=')
            .ok_or_else(|| ConfigError::BadOverride(o.clone()))?;
        if key.trim().is_empty() {
            return Err(ConfigError::BadOverride(o.clone()));
        }
        let t: toml::Table = o.parse().map_err(|_| ConfigError::BadOverride(o.clone()))?;
        merge(&mut doc, t);
    }
    toml::Value::Table(doc)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))
}

/// Reads `path` (a missing file is an empty one) for [`parse_config`].
pub fn read_config_text(path: &Path) -> Result<String, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(ConfigError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Merges `src` into `dst`, recursing into tables (`a.b=1` style overrides
/// arrive as nested tables).
fn merge(dst: &mut toml::Table, src: toml::Table) {
    for (k, v) in src {
        match (dst.get_mut(&k), v) {
            (Some(toml::Value::Table(d)), toml::Value::Table(s)) => merge(d, s),
            (_, v) => {
                dst.insert(k, v);
            }
        }
    }
}

/// A message on one line (TOML and `anyhow` chains span several).
pub fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The pid file of a running daemon, locked while the process runs.
pub struct PidFile {
    path: PathBuf,
    file: File,
}

/// Another live process holds the pid file.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("another {daemon} (pid {pid}) is already running in {dir}")]
    Locked {
        daemon: String,
        pid: String,
        dir: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl PidFile {
    /// Locks the pid file and writes our pid. Refused while another live
    /// process holds the lock; a file left by a dead process is taken over.
    pub fn acquire(path: &Path, daemon: &str) -> Result<PidFile, PidFileError> {
        let io_err = |what, source| PidFileError::Io {
            what,
            path: path.display().to_string(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_err("opening", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = text.trim();
                return Err(PidFileError::Locked {
                    daemon: daemon.to_string(),
                    pid: if holder.is_empty() { "unknown" } else { holder }.to_string(),
                    dir: path
                        .parent()
                        .unwrap_or(Path::new("."))
                        .display()
                        .to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err("locking", e)),
        }
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        if !previous.trim().is_empty() {
            warn!(
                "taking over the stale pid file {} (pid {} is gone)",
                path.display(),
                previous.trim()
            );
        }
        let write = |file: &mut File| -> io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_all()
        };
        write(&mut file).map_err(|e| io_err("writing", e))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Removes the file, then drops the lock.
    pub fn release(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            warn!("removing {}: {e}", self.path.display());
        }
        drop(self.file);
    }
}

/// The pid of the process that holds the pid file at `path` locked, or
/// `None` when no process does (no file, or a stale one). The lock, not the
/// pid, decides: a pid that was reused by an unrelated process never counts.
pub fn running_pid(path: &Path) -> io::Result<Option<i32>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // A killed daemon's main thread is a zombie while its other threads
    // still exit and hold the lock, for milliseconds: that is not running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match file.try_lock_shared() {
            Ok(()) => return Ok(None),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut text = String::new();
        file.rewind()?;
        file.read_to_string(&mut text)?;
        // The holder may not have written its pid yet.
        let pid = text.trim().parse().unwrap_or(0);
        if pid <= 0 || !exiting(pid) || std::time::Instant::now() >= deadline {
            return Ok(Some(pid));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether `pid` is a zombie or gone: a killed process whose threads may
/// still be releasing its files.
fn exiting(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": comm may hold spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Why a daemon's server task ended when it should have run until
/// shutdown: it returned, failed, or panicked.
pub fn task_ended(
    what: &str,
    r: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Error {
    match r {
        Ok(Ok(())) => anyhow::anyhow!("{what} stopped unexpectedly"),
        Ok(Err(e)) => e.context(format!("{what} failed")),
        Err(e) => anyhow::anyhow!("{what} crashed: {e}"),
    }
}

/// Installs SIGTERM and SIGINT handlers now (from then on they no longer
/// kill the process) and returns a future that resolves with the name of
/// the first one that arrives.
pub fn shutdown_signal() -> io::Result<impl std::future::Future<Output = &'static str>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// From now on, a SIGTERM or SIGINT ends the process at once with status 1
/// (call it when shutdown starts).
pub fn exit_on_second_signal(daemon: &'static str) -> io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        eprintln!("{daemon}: second signal during shutdown, exiting immediately");
        std::process::exit(1);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Conf {
        a: u32,
        s: String,
        nested: Nested,
    }

    #[derive(serde::Deserialize, Debug, PartialEq, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Nested {
        x: u32,
        y: u32,
    }

    #[test]
    fn overrides_apply_after_the_file_and_merge_nested_tables() {
        let text = "a = 1\ns = \"file\"\n[nested]\nx = 5\ny = 6\n";
        let c: Conf = parse_config(
            text,
            &["s='override'".to_string(), "nested.y=7".to_string()],
        )
        .unwrap();
        assert_eq!(
            c,
            Conf {
                a: 1,
                s: "override".into(),
                nested: Nested { x: 5, y: 7 }
            }
        );
        assert!(matches!(
            parse_config::<Conf>("", &["novalue".into()]),
            Err(ConfigError::BadOverride(_))
        ));
        assert!(matches!(
            parse_config::<Conf>("", &["=1".into()]),
            Err(ConfigError::BadOverride(_))
        ));
        let e = parse_config::<Conf>("bogus = 1", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn pid_file_is_exclusive_and_running_pid_follows_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        assert_eq!(running_pid(&path).unwrap(), None);
        // A stale file with some pid: not running.
        std::fs::write(&path, "999999\n").unwrap();
        assert_eq!(running_pid(&path).unwrap(), None);
        let pid = PidFile::acquire(&path, "d").unwrap();
        assert_eq!(running_pid(&path).unwrap(), Some(std::process::id() as i32));
        let e = PidFile::acquire(&path, "d").err().unwrap().to_string();
        assert!(e.contains("already running"), "{e}");
        pid.release();
        assert!(!path.exists());
        assert_eq!(running_pid(&path).unwrap(), None);
    }

    #[test]
    fn one_line_joins_lines() {
        assert_eq!(one_line("a\n  b \n\nc"), "a b c");
    }
}

/// The other half of `a_killed_daemon_is_not_running_while_its_threads_exit`:
/// when run with ZENITH_TEST_PID_FILE set, this test holds that pid file the
/// way a daemon does, with busy threads owning a lot of memory (so that their
/// exit takes a while), and never returns.
#[cfg(test)]
mod killed_holder {
    use super::*;

    #[test]
    fn hold_pid_file_if_asked() {
        let Some(path) = std::env::var_os("ZENITH_TEST_PID_FILE") else {
            return;
        };
        let _pid = PidFile::acquire(Path::new(&path), "holder").unwrap();
        for _ in 0..4 {
            std::thread::spawn(|| {
                let mem = vec![1u8; 128 << 20];
                loop {
                    std::hint::black_box(&mem);
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            });
        }
        std::fs::write(format!("{}.ready", path.to_string_lossy()), "").unwrap();
        loop {
            std::thread::park();
        }
    }

    /// A daemon killed with SIGKILL shows as a zombie while its other threads
    /// still exit and hold the pid file's lock. `zenith start` right after a
    /// kill -9 called that "already running" (seen in CI and in half of 30
    /// kills of a pageserver by hand).
    #[test]
    fn a_killed_daemon_is_not_running_while_its_threads_exit() {
        if std::env::var_os("ZENITH_TEST_PID_FILE").is_some() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        let ready = dir.path().join("d.pid.ready");
        for round in 0..10 {
            let _ = std::fs::remove_file(&ready);
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "daemon::killed_holder::hold_pid_file_if_asked"])
                .args(["--nocapture", "--test-threads=1"])
                .env("ZENITH_TEST_PID_FILE", &path)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            while !ready.exists() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let pid = child.id() as i32;
            assert_eq!(running_pid(&path).unwrap(), Some(pid));
            child.kill().unwrap();
            // As soon as the main thread is a zombie (not reaped: we are the parent).
            while !exiting(pid) {
                std::hint::spin_loop();
            }
            assert_eq!(running_pid(&path).unwrap(), None, "round {round}");
            child.wait().unwrap();
        }
    }
}
