//! The `zenith` binary as a user first meets it: its usage lists every
//! command, and a command outside a repository fails with one clear line.

use std::process::Command;

#[test]
fn help_lists_every_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_zenith"))
        .arg("--help")
        .output()
        .expect("running zenith --help");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "init",
        "start",
        "stop",
        "status",
        "pageserver",
        "walkeeper",
        "tenant",
        "branch",
        "pg",
        "proxy",
        "endpoint",
        "role",
        "monitoring",
        "db",
        "token",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing from:\n{text}"
        );
    }
}

#[test]
fn a_command_without_a_repository_is_one_line_on_stderr() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = Command::new(env!("CARGO_BIN_EXE_zenith"))
        .arg("status")
        .env("ZENITH_REPO_DIR", dir.path().join("nothing-here"))
        .output()
        .expect("running zenith status");
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("zenith init"), "{err}");
}
