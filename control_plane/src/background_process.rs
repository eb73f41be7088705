//! Daemons in the background: start with a log file and wait until ready,
//! stop with SIGTERM then SIGKILL, and pid files that may be stale.
//!
//! A daemon runs in its own process group (so a Ctrl-C aimed at `zenith`
//! does not reach it), with stdin closed and stdout/stderr appended to its
//! log. Start never leaves an orphan: if the process does not become ready
//! in time, it is killed before the error is returned.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(50);

/// The pid of a running daemon from its pid file. Zenith's daemons hold
/// their pid file locked (`flock`) while they run, so the lock, not the pid
/// (which the kernel may have given to an unrelated process since), says
/// whether one runs. A file nobody holds is stale: it is removed.
pub fn running_pid(pid_file: &Path) -> anyhow::Result<Option<i32>> {
    match zenith_utils::daemon::running_pid(pid_file)
        .with_context(|| format!("checking the pid file {}", pid_file.display()))?
    {
        Some(pid) => Ok(Some(pid)),
        None => {
            remove_if_exists(pid_file)?;
            Ok(None)
        }
    }
}

fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Fail with a clear message if another process listens on `addr`.
/// `remedy` ends the message: what to change instead of stopping the other process.
pub fn check_port_free(addr: SocketAddr, what: &str, remedy: &str) -> anyhow::Result<()> {
    match TcpListener::bind(addr) {
        Ok(l) => {
            drop(l);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "port {} ({what}) is in use by another process: stop that process, or {remedy}",
            addr
        ),
        Err(e) => Err(e).with_context(|| format!("checking whether {addr} ({what}) is free")),
    }
}

/// Is something accepting connections on `addr`?
pub fn port_answers(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// How to start one daemon.
pub struct Daemon<'a> {
    /// Human name, for messages ("pageserver").
    pub name: &'a str,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub log_file: PathBuf,
    pub pid_file: PathBuf,
}

/// An error if `d`'s pid file names a live process.
fn refuse_if_running(d: &Daemon<'_>) -> anyhow::Result<()> {
    match running_pid(&d.pid_file)? {
        Some(pid) => bail!(
            "the {} is already running (pid {pid}); stop it first with `zenith stop`",
            d.name
        ),
        None => Ok(()),
    }
}

/// Start `d` and wait until `ready()` says so. Returns its pid.
///
/// Refused if the pid file names a live process. If the process exits, or is
/// not ready within `timeout`, it is killed and the error names the log.
pub fn start_daemon(
    d: &Daemon<'_>,
    timeout: Duration,
    ready: impl FnMut() -> bool,
) -> anyhow::Result<i32> {
    refuse_if_running(d)?;
    let mut cmd = command(d)?;
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", d.program.display()))?;
    wait_ready(d, child, timeout, ready)
}

/// [`start_daemon`] for a program that keeps no pid file of its own
/// (Prometheus, postgres_exporter): the pid file is locked here and the
/// lock handed down to the program, which holds it until it exits, so
/// [`running_pid`] and [`stop_daemon`] work for it like for ours.
pub fn start_foreign_daemon(
    d: &Daemon<'_>,
    timeout: Duration,
    ready: impl FnMut() -> bool,
) -> anyhow::Result<i32> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    refuse_if_running(d)?;
    let mut pid_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&d.pid_file)
        .with_context(|| format!("creating the pid file {}", d.pid_file.display()))?;
    match pid_file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("the {} is being started by another process", d.name)
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", d.pid_file.display()))
        }
    }
    pid_file.set_len(0)?;
    let fd = pid_file.as_raw_fd();
    let mut cmd = command(d)?;
    // SAFETY: fcntl is async-signal-safe; it only clears close-on-exec on
    // the locked pid file's descriptor, so that the program inherits it
    // (and with it the lock, which belongs to the open file description).
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", d.program.display()))?;
    writeln!(pid_file, "{}", child.id())
        .with_context(|| format!("writing {}", d.pid_file.display()))?;
    // The child holds the lock now; ours goes with this descriptor.
    drop(pid_file);
    wait_ready(d, child, timeout, ready)
}

/// The command of `d`: its own process group, stdin closed, output
/// appended to its log.
fn command(d: &Daemon<'_>) -> anyhow::Result<Command> {
    if !d.program.is_file() {
        bail!(
            "{} is missing: run `make` in the source tree to build it",
            d.program.display()
        );
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&d.log_file)
        .with_context(|| format!("opening the log file {}", d.log_file.display()))?;
    let log2 = log.try_clone()?;
    let mut cmd = Command::new(d.program);
    cmd.args(&d.args)
        .envs(d.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    Ok(cmd)
}

/// Waits until `ready()`; kills the child if it exits or times out first.
fn wait_ready(
    d: &Daemon<'_>,
    mut child: std::process::Child,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<i32> {
    let pid = child.id() as i32;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the {} exited ({status}) instead of starting; see its log {}",
                d.name,
                d.log_file.display()
            );
        }
        if ready() {
            // Reap it when it exits: a long-running starter (the console
            // starts computes' exporters) would otherwise collect zombies.
            std::thread::spawn(move || child.wait());
            return Ok(pid);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the {} did not become ready within {}s and was stopped; see its log {}",
                d.name,
                timeout.as_secs(),
                d.log_file.display()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// What [`stop_daemon`] found and did.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It was running and has exited.
    Stopped(i32),
    /// It had to be killed with SIGKILL after `timeout`.
    Killed(i32),
    /// No pid file, or a stale one (removed).
    NotRunning,
}

/// Stop the daemon that holds `pid_file`: SIGTERM (SIGKILL at once if
/// `immediate`), wait up to `timeout` for it to let go of the file, then
/// SIGKILL. The pid file is removed.
pub fn stop_daemon(pid_file: &Path, immediate: bool, timeout: Duration) -> anyhow::Result<Stopped> {
    let Some(pid) = running_pid(pid_file)? else {
        return Ok(Stopped::NotRunning);
    };
    if pid <= 0 {
        bail!(
            "{} is locked by a process that has not written its pid yet; try again",
            pid_file.display()
        );
    }
    let target = Pid::from_raw(pid);
    let sig = if immediate {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    let _ = kill(target, sig);
    let mut result = Stopped::Stopped(pid);
    if !wait_released(pid_file, timeout)? {
        let _ = kill(target, Signal::SIGKILL);
        result = Stopped::Killed(pid);
        if !wait_released(pid_file, Duration::from_secs(10))? {
            bail!("process {pid} did not exit even after SIGKILL");
        }
    }
    remove_if_exists(pid_file)?;
    Ok(result)
}

/// Waits until no process holds `pid_file` (its holder has exited).
fn wait_released(pid_file: &Path, timeout: Duration) -> anyhow::Result<bool> {
    let start = Instant::now();
    while zenith_utils::daemon::running_pid(pid_file)?.is_some() {
        if start.elapsed() > timeout {
            return Ok(false);
        }
        std::thread::sleep(POLL);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_and_garbage_pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let pf = dir.path().join("x.pid");
        assert_eq!(running_pid(&pf).unwrap(), None);
        std::fs::write(&pf, "garbage\n").unwrap();
        assert_eq!(running_pid(&pf).unwrap(), None);
        assert!(!pf.exists(), "stale pid file removed");
        // Our own, live pid in a file nobody locks: stale all the same
        // (a recycled pid must not pass for a running daemon).
        std::fs::write(&pf, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(running_pid(&pf).unwrap(), None);
        assert!(!pf.exists(), "stale pid file removed");
    }

    /// `sleep 30` as a daemon that holds its pid file locked like ours do
    /// (`flock --no-fork` execs the shell, which writes its pid and execs
    /// sleep: one process, holding the lock).
    fn sleeper(dir: &Path) -> Daemon<'static> {
        let pid_file = dir.join("sleep.pid");
        Daemon {
            name: "sleeper",
            program: Path::new("/usr/bin/flock"),
            args: vec![
                "--no-fork".into(),
                pid_file.to_string_lossy().into_owned(),
                "sh".into(),
                "-c".into(),
                "echo $$ > \"$0\"; exec sleep 30".into(),
                pid_file.to_string_lossy().into_owned(),
            ],
            envs: vec![],
            log_file: dir.join("sleep.log"),
            pid_file,
        }
    }

    #[test]
    fn start_wait_and_stop() {
        let dir = tempfile::tempdir().unwrap();
        let d = sleeper(dir.path());
        let pid = start_daemon(
            &d,
            Duration::from_secs(5),
            || matches!(running_pid(&d.pid_file), Ok(Some(p)) if p > 0),
        )
        .unwrap();
        assert_eq!(running_pid(&d.pid_file).unwrap(), Some(pid));
        assert!(start_daemon(&d, Duration::from_secs(5), || true)
            .unwrap_err()
            .to_string()
            .contains("already running"));
        // Reap in the background: the child is ours in this test.
        std::thread::spawn(move || {
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        });
        let st = stop_daemon(&d.pid_file, false, Duration::from_secs(5)).unwrap();
        assert_eq!(st, Stopped::Stopped(pid));
        assert!(!d.pid_file.exists());
        assert_eq!(running_pid(&d.pid_file).unwrap(), None);
    }

    #[test]
    fn a_foreign_daemon_holds_the_pid_file_we_lock_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon {
            name: "plain sleeper",
            program: Path::new("/bin/sleep"),
            args: vec!["30".into()],
            envs: vec![],
            log_file: dir.path().join("sleep.log"),
            pid_file: dir.path().join("sleep.pid"),
        };
        let pid = start_foreign_daemon(&d, Duration::from_secs(5), || true).unwrap();
        // `sleep` knows nothing of the file, yet holds it locked.
        assert_eq!(running_pid(&d.pid_file).unwrap(), Some(pid));
        let err = start_foreign_daemon(&d, Duration::from_secs(5), || true).unwrap_err();
        assert!(err.to_string().contains("already running"), "{err}");
        std::thread::spawn(move || {
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        });
        assert_eq!(
            stop_daemon(&d.pid_file, false, Duration::from_secs(5)).unwrap(),
            Stopped::Stopped(pid)
        );
        assert_eq!(running_pid(&d.pid_file).unwrap(), None);
    }

    #[test]
    fn never_ready_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let d = sleeper(dir.path());
        let err = start_daemon(&d, Duration::from_millis(200), || false).unwrap_err();
        assert!(err.to_string().contains("did not become ready"), "{err}");
    }

    #[test]
    fn busy_port_is_reported() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let err = check_port_free(addr, "test", "x").unwrap_err().to_string();
        assert!(err.contains("in use by another process"), "{err}");
    }
}
