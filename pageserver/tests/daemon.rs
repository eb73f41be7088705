//! The pageserver binary as a daemon: start, pid file lock, a second
//! instance refused, SIGTERM, and one-line startup errors.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http_client::{create_tenant, expect};
use serde_json::Value;
use zenith_utils::api::pageserver::{CONFIG_FILE_NAME, PID_FILE_NAME};

fn pageserver_cmd(workdir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pageserver"));
    c.arg("-D").arg(workdir).env("RUST_LOG", "info");
    c
}

/// Run `pageserver --init` with the given listen ports.
fn init_workdir(workdir: &Path, http_port: u16, pg_port: u16) {
    let out = pageserver_cmd(workdir)
        .arg("--init")
        .arg("-c")
        .arg(format!("listen_http_addr='127.0.0.1:{http_port}'"))
        .arg("-c")
        .arg(format!("listen_pg_addr='127.0.0.1:{pg_port}'"))
        .env("POSTGRES_INSTALL_DIR", common::pg_install())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running daemon; killed if the test fails.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(workdir: &Path, log: PathBuf) -> Daemon {
        let child = pageserver_cmd(workdir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until `/v1/status` answers.
    fn wait_ready(&mut self, addr: SocketAddr) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("pageserver exited with {st}: {}", self.log());
            }
            if TcpStream::connect(addr).is_ok() {
                return expect(addr, "GET", "/v1/status", None, 200).json();
            }
            assert!(Instant::now() < deadline, "not ready: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Send `signal` and wait for the exit status.
    fn stop_with(mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "did not stop: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn daemon_runs_refuses_a_second_instance_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("pageserver");
    let (http_port, pg_port) = (common::free_port(), common::free_port());
    init_workdir(&workdir, http_port, pg_port);
    let toml = std::fs::read_to_string(workdir.join(CONFIG_FILE_NAME)).unwrap();
    assert!(toml.contains(&format!("127.0.0.1:{http_port}")), "{toml}");
    assert!(
        toml.contains(&common::pg_install().display().to_string()),
        "{toml}"
    );
    // --init refuses an initialized workdir.
    let out = pageserver_cmd(&workdir).arg("--init").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // A stale pid file (no process holds it) is taken over.
    let pid_file = workdir.join(PID_FILE_NAME);
    std::fs::write(&pid_file, "4194303\n").unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let mut d = Daemon::start(&workdir, dir.path().join("ps1.log"));
    let status = d.wait_ready(addr);
    assert_eq!(status["id"], d.child.id());
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        d.child.id().to_string()
    );

    // A second instance on the same workdir refuses to start.
    let out = pageserver_cmd(&workdir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already running") && err.contains(&d.child.id().to_string()),
        "{err}"
    );
    assert!(pid_file.exists());

    // Create a tenant and a timeline, then stop with SIGTERM.
    let t = create_tenant(addr);
    let tl = expect(addr, "POST", &format!("/v1/tenant/{t}/timeline"), None, 201).json();
    let tl_path = format!(
        "/v1/tenant/{t}/timeline/{}",
        tl["timeline_id"].as_str().unwrap()
    );
    let st = d.stop_with("TERM");
    assert_eq!(st.code(), Some(0), "exit status {st}");
    assert!(!pid_file.exists(), "the pid file is removed at exit");

    // Restart: the timeline is back, durable up to its last record; stop with SIGINT.
    let mut d = Daemon::start(&workdir, dir.path().join("ps2.log"));
    d.wait_ready(addr);
    let back = expect(addr, "GET", &tl_path, None, 200).json();
    assert_eq!(back["last_record_lsn"], tl["last_record_lsn"]);
    assert_eq!(back["disk_consistent_lsn"], tl["last_record_lsn"]);
    let log = d.log();
    assert!(log.contains("pageserver started"), "{log}");
    let st = d.stop_with("INT");
    assert_eq!(st.code(), Some(0), "exit status {st}");
    assert!(!pid_file.exists());
}

#[test]
fn daemon_startup_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("pageserver");
    let last_line = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stderr)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_string()
    };

    // No workdir yet.
    let out = pageserver_cmd(&workdir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(last_line(&out).contains("--init"), "{}", last_line(&out));

    // The HTTP port is in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    init_workdir(&workdir, busy_port, common::free_port());
    let out = pageserver_cmd(&workdir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = last_line(&out);
    assert!(
        line.starts_with("pageserver: error: cannot listen for HTTP on 127.0.0.1:")
            && line.contains(&busy_port.to_string()),
        "{line}"
    );
    assert!(!workdir.join(PID_FILE_NAME).exists());
    drop(busy);

    // An invalid configuration override names the key.
    let out = pageserver_cmd(&workdir)
        .args(["-c", "wait_lsn_timeout=\"soon\""])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("soon"), "{err}");
    let out = pageserver_cmd(&workdir)
        .args(["-c", "no_such_key=1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        last_line(&out).contains("no_such_key"),
        "{}",
        last_line(&out)
    );
}
