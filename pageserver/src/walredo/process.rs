//! The `postgres --wal-redo` child process and its protocol (docs/architecture.md §6).
//!
//! Messages on the child's stdin: `u8 type, i32 length` (big-endian,
//! counting the length field itself but not the type byte), payload:
//!
//! | type | payload | reply |
//! |---|---|---|
//! | `B` | buffer tag: `u8 fork, u32 spc, u32 db, u32 rel, u32 blkno` | none |
//! | `P` | buffer tag + 8192-byte base image | none |
//! | `A` | `u64` record end LSN + the whole XLogRecord | none |
//! | `G` | buffer tag | 8192 bytes on stdout |
//!
//! One request (`B [P] A* G`) is written at a time and its page read back with
//! a timeout: a reader thread per process reads pages from its stdout into a
//! channel the request waits on. A process that fails, times out or answers short is killed; the
//! caller starts a new one. Its stderr is forwarded to our log.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use postgres_ffi::relfile::RelTag;
use postgres_ffi::BLCKSZ;
use tracing::{info, warn};
use zenith_utils::lsn::Lsn;

/// Why a redo process request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("starting {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("initdb for the WAL redo data directory failed: {0}")]
    Initdb(String),
    #[error("WAL redo process I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("WAL redo process did not answer within {0:?}")]
    Timeout(Duration),
    #[error("WAL redo process exited: {0}")]
    Exited(String),
}

/// Create the small data directory `postgres --wal-redo` runs in, once.
pub fn ensure_redo_datadir(pg_distrib_dir: &Path, datadir: &Path) -> Result<(), ProcessError> {
    if datadir.join("PG_VERSION").exists() {
        return Ok(());
    }
    let tmp = datadir.with_extension("initdb.___temp");
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new(pg_distrib_dir.join("bin/initdb"))
        .args([
            "-D",
            &tmp.to_string_lossy(),
            "-U",
            "postgres",
            "--no-sync",
            "--no-instructions",
        ])
        .env("ZENITH_ALLOW_ROOT", "1")
        .env("LD_LIBRARY_PATH", pg_distrib_dir.join("lib"))
        .output()
        .map_err(|source| ProcessError::Spawn {
            what: "initdb".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(ProcessError::Initdb(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    std::fs::rename(&tmp, datadir)?;
    Ok(())
}

/// A running `postgres --wal-redo`.
pub struct RedoProcess {
    child: Child,
    stdin: ChildStdin,
    /// Pages read from the child's stdout by its reader thread.
    pages: mpsc::Receiver<std::io::Result<Vec<u8>>>,
}

/// Read 8 KiB pages from `stdout` until it fails or the receiver is gone.
fn read_pages(mut stdout: ChildStdout, tx: mpsc::SyncSender<std::io::Result<Vec<u8>>>) {
    loop {
        let mut page = vec![0u8; BLCKSZ as usize];
        let res = stdout.read_exact(&mut page).map(|_| page);
        let failed = res.is_err();
        if tx.send(res).is_err() || failed {
            return;
        }
    }
}

impl RedoProcess {
    /// Start a process on `datadir` (made by [`ensure_redo_datadir`]).
    pub fn launch(
        pg_distrib_dir: &Path,
        datadir: &Path,
        tenant: &str,
    ) -> Result<RedoProcess, ProcessError> {
        let bin: PathBuf = pg_distrib_dir.join("bin/postgres");
        let mut child = Command::new(&bin)
            .arg("--wal-redo")
            .env_clear()
            .env("PGDATA", datadir)
            .env("ZENITH_ALLOW_ROOT", "1")
            .env("LD_LIBRARY_PATH", pg_distrib_dir.join("lib"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                what: bin.display().to_string(),
                source,
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            return Err(ProcessError::Exited("no pipes to the child".into()));
        };
        let pid = child.id();
        let tenant = tenant.to_string();
        std::thread::Builder::new()
            .name(format!("walredo-stderr-{pid}"))
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    warn!(tenant_id = %tenant, pid, "wal-redo: {line}");
                }
            })?;
        let (tx, pages) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("walredo-stdout-{pid}"))
            .spawn(move || read_pages(stdout, tx))?;
        info!(pid, "started postgres --wal-redo");
        Ok(RedoProcess {
            child,
            stdin,
            pages,
        })
    }

    /// Apply `records` (ascending, each with its end LSN) to `base` (or to
    /// nothing, if the first record initializes the page) and return the page.
    pub fn apply(
        &mut self,
        rel: RelTag,
        blkno: u32,
        base: Option<&[u8]>,
        records: &[(Lsn, Bytes)],
        timeout: Duration,
    ) -> Result<Bytes, ProcessError> {
        let mut buf = BytesMut::new();
        let tag = |b: &mut BytesMut| {
            b.put_u8(rel.forknum);
            b.put_u32(rel.spcnode);
            b.put_u32(rel.dbnode);
            b.put_u32(rel.relnode);
            b.put_u32(blkno);
        };
        buf.put_u8(b'B');
        buf.put_i32(4 + 17);
        tag(&mut buf);
        if let Some(img) = base {
            buf.put_u8(b'P');
            buf.put_i32(4 + 17 + BLCKSZ as i32);
            tag(&mut buf);
            buf.put_slice(img);
        }
        for (lsn, rec) in records {
            buf.put_u8(b'A');
            buf.put_i32(4 + 8 + rec.len() as i32);
            buf.put_u64(lsn.0);
            buf.put_slice(rec);
        }
        buf.put_u8(b'G');
        buf.put_i32(4 + 17);
        tag(&mut buf);

        let write = self.stdin.write_all(&buf).and_then(|_| self.stdin.flush());
        let result = match write {
            Err(e) => Err(ProcessError::Io(e)),
            Ok(()) => match self.pages.recv_timeout(timeout) {
                Ok(Ok(page)) => return Ok(Bytes::from(page)),
                Ok(Err(e)) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    Err(ProcessError::Exited(format!("{status} ({e})")))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => Err(ProcessError::Timeout(timeout)),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    Err(ProcessError::Exited("its stdout reader ended".into()))
                }
            },
        };
        // A failed process is not reused: kill it (its reader thread ends).
        let _ = self.child.kill();
        result
    }
}

impl Drop for RedoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
