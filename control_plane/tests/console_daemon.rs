//! The console daemon's start-up through the shared daemon runner: outside
//! a repository it fails with one line on stderr and exit status 1.

use std::process::Command;

#[test]
fn without_a_repository_the_console_says_so_in_one_line() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = Command::new(env!("CARGO_BIN_EXE_console"))
        .arg("--repo")
        .arg(dir.path().join("missing"))
        .output()
        .expect("running console");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("console: error: ") && err.contains("zenith init"),
        "{err}"
    );
}
