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
//! | `G` | buffer tag | on stdout: the buffer tag, then 8192 bytes |
//!
//! One request (`B [P] A* G`) is written at a time and its page read back,
//! the whole exchange bounded by a timeout: a writer thread per process
//! writes requests to its stdin (so a child that stops reading cannot block
//! the caller, who holds a pool slot) and a reader thread reads replies from
//! its stdout; the request waits on the reader's channel. The reply's tag
//! must be the request's. A process that fails, times out, answers short or
//! answers for another page is killed; the caller starts a new one. Its
//! stderr is forwarded to our log. The process sandboxes itself once
//! started (PostgreSQL patch 0007: no root, no new privileges, seccomp).

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
    #[error("initdb failed: {0}")]
    Initdb(String),
    #[error("WAL redo process I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("WAL redo process did not answer within {0:?}")]
    Timeout(Duration),
    #[error("WAL redo process exited: {0}")]
    Exited(String),
    #[error("WAL redo process answered for page {got} instead of {expected}")]
    WrongPage { expected: String, got: String },
}

/// Create the small data directory `postgres --wal-redo` runs in, once.
pub fn ensure_redo_datadir(pg_distrib_dir: &Path, datadir: &Path) -> Result<(), ProcessError> {
    if datadir.join("PG_VERSION").exists() {
        return Ok(());
    }
    let tmp = datadir.with_extension("initdb.___temp");
    let _ = std::fs::remove_dir_all(&tmp);
    run_initdb(pg_distrib_dir, &tmp)?;
    std::fs::rename(&tmp, datadir)?;
    Ok(())
}

/// Run `initdb` into `pgdata` (user `postgres`, no fsync: callers make the
/// result durable or throw it away). The child dies with the calling thread,
/// so a pageserver stopped meanwhile leaves no initdb writing into `pgdata`.
pub fn run_initdb(pg_distrib_dir: &Path, pgdata: &Path) -> Result<(), ProcessError> {
    let mut initdb = Command::new(pg_distrib_dir.join("bin/initdb"));
    die_with_parent(&mut initdb);
    let out = initdb
        .args([
            "-D",
            &pgdata.to_string_lossy(),
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
    Ok(())
}

/// Have the kernel kill `cmd`'s process when the thread that started it ends,
/// so a pageserver that is stopped or killed while waiting for it leaves no
/// orphan writing into its directory. Only for children waited for on the
/// spawning thread (as `Command::output` does): the signal follows the
/// thread, not the process.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit), allocating nothing.
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Size of a buffer tag in messages and replies.
const TAG_SIZE: usize = 17;

/// A running `postgres --wal-redo`.
pub struct RedoProcess {
    child: Child,
    /// Requests for the child's stdin, written by its writer thread.
    requests: mpsc::SyncSender<Bytes>,
    /// Replies (tag + page) read from the child's stdout by its reader thread.
    pages: mpsc::Receiver<std::io::Result<Vec<u8>>>,
}

/// Read replies (tag and page) from `stdout` until it fails or the
/// receiver is gone.
fn read_pages(mut stdout: ChildStdout, tx: mpsc::SyncSender<std::io::Result<Vec<u8>>>) {
    loop {
        let mut reply = vec![0u8; TAG_SIZE + BLCKSZ as usize];
        let res = stdout.read_exact(&mut reply).map(|_| reply);
        let failed = res.is_err();
        if tx.send(res).is_err() || failed {
            return;
        }
    }
}

/// Write requests to `stdin` until one fails or the sender is gone (a
/// killed child makes the pending write fail, which ends the thread).
fn write_requests(mut stdin: ChildStdin, rx: mpsc::Receiver<Bytes>) {
    while let Ok(req) = rx.recv() {
        if stdin.write_all(&req).and_then(|_| stdin.flush()).is_err() {
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
        let (requests, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("walredo-stdin-{pid}"))
            .spawn(move || write_requests(stdin, rx))?;
        info!(pid, "started postgres --wal-redo");
        Ok(RedoProcess {
            child,
            requests,
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
        let mut expected_tag = BytesMut::with_capacity(TAG_SIZE);
        tag(&mut expected_tag);

        // The writer thread takes the request at once (one at a time); the
        // timeout covers writing it as well as the answer.
        let result = match self.requests.try_send(buf.freeze()) {
            Err(_) => Err(ProcessError::Exited("its stdin writer ended".into())),
            Ok(()) => match self.pages.recv_timeout(timeout) {
                Ok(Ok(mut reply)) => {
                    if reply[..TAG_SIZE] == expected_tag[..] {
                        return Ok(Bytes::from(reply.split_off(TAG_SIZE)));
                    }
                    Err(ProcessError::WrongPage {
                        expected: hex::encode(&expected_tag),
                        got: hex::encode(&reply[..TAG_SIZE]),
                    })
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A `postgres` that starts and then never reads its stdin.
    fn stuck_postgres(dir: &Path) -> PathBuf {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let script = bin.join("postgres");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 600\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir.to_path_buf()
    }

    /// Defect: the request was written to the child's stdin with no
    /// timeout while the caller held a pool slot; a child that stopped
    /// reading hung every reader of the tenant. The timeout now covers the
    /// write too.
    #[test]
    fn a_child_that_reads_nothing_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let distrib = stuck_postgres(dir.path());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Another test's fork may briefly hold the script's write
            // descriptor (ETXTBSY); it lets go at its exec.
            let mut p = loop {
                match RedoProcess::launch(&distrib, &distrib, "t") {
                    Err(ProcessError::Spawn { source, .. })
                        if source.kind() == std::io::ErrorKind::ExecutableFileBusy =>
                    {
                        std::thread::yield_now()
                    }
                    other => break other.unwrap(),
                }
            };
            // Far more than a pipe holds.
            let records: Vec<(Lsn, Bytes)> = (0..64)
                .map(|i| (Lsn(0x1000 + i * 0x100), Bytes::from(vec![0u8; 8192])))
                .collect();
            let rel = RelTag {
                spcnode: 1663,
                dbnode: 5,
                relnode: 16384,
                forknum: 0,
            };
            let res = p.apply(rel, 0, None, &records, Duration::from_millis(500));
            let _ = tx.send(res.map(|_| ()));
        });
        let res = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the request hung instead of timing out");
        assert!(matches!(res, Err(ProcessError::Timeout(_))), "{res:?}");
    }

    /// Defect: a pageserver stopped while the redo data directory's initdb
    /// ran left initdb running, still writing into the tenant's directory
    /// (seen as a test teardown failing on files vanishing). The child now
    /// dies with the thread that waits for it.
    #[test]
    fn a_child_dies_with_the_thread_that_started_it() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("600");
            die_with_parent(&mut cmd);
            cmd.spawn().unwrap()
        })
        .join()
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }
}
