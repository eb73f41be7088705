//! A full basebackup starts a stock PostgreSQL 15: import what initdb wrote,
//! create a database and table on the original and import again, take a full
//! basebackup at the import LSN, start a stock server on it, and compare
//! `pg_dumpall` output with the original's.

mod common;

use std::sync::Arc;

use common::{initdb, pg_tool, Server};
use pageserver::basebackup::send_basebackup;
use pageserver::config::TenantConf;
use pageserver::import_datadir::import_datadir;
use pageserver::walredo::NativeOnlyRedoManager;

fn dumpall(server: &Server) -> String {
    let out = pg_tool(
        "pg_dumpall",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "postgres",
            "--no-role-passwords",
        ],
    );
    // pg_dump's \restrict lines carry a random key per run.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_same_dump(got: &str, expected: &str) {
    if got != expected {
        let (i, (g, e)) = got
            .lines()
            .zip(expected.lines())
            .enumerate()
            .find(|(_, (g, e))| g != e)
            .unwrap_or((0, ("<length differs>", "")));
        panic!(
            "pg_dumpall differs at line {}: got {g:?}, expected {e:?}",
            i + 1
        );
    }
}

#[test]
fn stock_postgres_starts_from_a_full_basebackup() {
    let dir = tempfile::tempdir().unwrap();
    let pgdata = initdb(dir.path());
    // Some user data, then a clean shutdown.
    let server = Server::start(&pgdata, &[]);
    server.psql("postgres", "CREATE DATABASE app");
    server.psql("app", "CREATE TABLE items (id int primary key, name text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 3000) g; CREATE INDEX ON items (name)");
    let expected = dumpall(&server);
    server.stop();

    let tl = common::empty_timeline(
        dir.path(),
        TenantConf::default(),
        Arc::new(NativeOnlyRedoManager),
    );
    let point = import_datadir(&tl, &pgdata).unwrap();

    let tar = send_basebackup(&tl, point.end_lsn, true, Vec::new()).unwrap();
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    tar::Archive::new(&tar[..]).unpack(&restored).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&restored, std::fs::Permissions::from_mode(0o700)).unwrap();

    let server = Server::start(&restored, &[]);
    assert_eq!(server.psql("app", "SELECT count(*) FROM items"), "3000");
    assert_eq!(
        server.psql("app", "SELECT name FROM items WHERE id = 1234"),
        "item 1234"
    );
    // It accepts writes after starting at the basebackup's checkpoint.
    server.psql("app", "INSERT INTO items VALUES (0, 'zero')");
    server.psql("app", "DELETE FROM items WHERE id = 0");
    let got = dumpall(&server);
    server.stop();
    assert_same_dump(&got, &expected);

    // Slim basebackups have no relation files but the rest of the skeleton.
    let tar = send_basebackup(&tl, point.end_lsn, false, Vec::new()).unwrap();
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "global/pg_control"));
    assert!(names.iter().any(|n| n == "zenith.signal"));
    assert!(names.iter().any(|n| n.starts_with("pg_xact/")));
    assert!(
        !names.iter().any(|n| n == "global/1262"),
        "slim backup has relation files"
    );
}
