//! The proxy daemon's start-up through the shared daemon runner: a bad
//! setting is one line on stderr and exit status 1, before anything binds;
//! the pid file is left behind for nobody.

use std::process::Command;

#[test]
fn a_missing_certificate_is_a_one_line_error() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .arg("-D")
        .arg(dir.path())
        .args(["-c", "tls_cert=\"/nonexistent/cert.pem\""])
        .args(["-c", "tls_key=\"/nonexistent/key.pem\""])
        .output()
        .expect("running proxy");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("proxy: error: ") && last.contains("/nonexistent/cert.pem"),
        "{err}"
    );
    assert!(!dir.path().join("proxy.pid").exists());
}

#[test]
fn a_bad_override_names_itself() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .arg("-D")
        .arg(dir.path())
        .args(["-c", "no_value_here"])
        .output()
        .expect("running proxy");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_value_here"), "{err}");
}
