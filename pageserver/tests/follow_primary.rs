//! End to end through PostgreSQL's own redo: follow a stock primary, then
//! start a second stock server from a full basebackup at a noted LSN and
//! compare `pg_dumpall` with what the primary had at that moment, and check it
//! with `pg_amcheck --heapallindexed`. Requires the patched PostgreSQL
//! (`postgres --wal-redo`) in tmp_install.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{initdb, pg_install, pg_tool, Server};
use pageserver::basebackup::send_basebackup;
use pageserver::config::TenantConf;
use pageserver::import_datadir::import_datadir;
use pageserver::walreceiver::{WalReceiver, WalSource};
use pageserver::walredo::PostgresRedoManager;
use zenith_utils::lsn::Lsn;

fn dumpall(port: u16) -> String {
    let out = pg_tool(
        "pg_dumpall",
        &["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn first_difference(got: &str, expected: &str) -> Option<String> {
    if got == expected {
        return None;
    }
    let (i, (g, e)) = got
        .lines()
        .zip(expected.lines())
        .enumerate()
        .find(|(_, (g, e))| g != e)
        .unwrap_or((0, ("<length differs>", "")));
    Some(format!("line {}: got {g:?}, expected {e:?}", i + 1))
}

#[test]
fn full_basebackup_after_following_a_primary_matches_its_dump() {
    let dir = tempfile::tempdir().unwrap();
    let pgdata = initdb(dir.path());
    let tl = common::empty_timeline(
        dir.path(),
        TenantConf {
            checkpoint_distance: 4 << 20,
            ..TenantConf::default()
        },
        Arc::new(PostgresRedoManager::new(
            pg_install(),
            dir.path().join("wal-redo-datadir"),
            "test".into(),
            Duration::from_secs(30),
        )),
    );
    import_datadir(&tl, &pgdata).unwrap();
    let server = Server::start(
        &pgdata,
        &[
            "wal_level = replica",
            "max_wal_senders = 4",
            "max_prepared_transactions = 4",
        ],
    );
    server.psql(
        "postgres",
        "SELECT pg_create_physical_replication_slot('ps')",
    );
    let receiver = WalReceiver::spawn(
        Arc::clone(&tl),
        WalSource::parse(&format!(
            "host=127.0.0.1 port={} user=postgres slot=ps",
            server.port
        ))
        .unwrap(),
    )
    .unwrap();

    pg_tool(
        "pgbench",
        &[
            "-i",
            "-s",
            "2",
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "postgres",
            "postgres",
        ],
    );
    pg_tool(
        "pgbench",
        &[
            "-t",
            "300",
            "-c",
            "2",
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "postgres",
            "postgres",
        ],
    );
    for sql in [
        "CREATE DATABASE other STRATEGY wal_log",
        "CREATE TABLE misc (id serial primary key, t text, j jsonb)",
        "INSERT INTO misc (t, j) SELECT md5(g::text), jsonb_build_object('g', g) FROM generate_series(1, 5000) g",
        "CREATE INDEX misc_t ON misc (t)",
        "CREATE INDEX misc_j ON misc USING gin (j)",
        "UPDATE misc SET t = 'updated' WHERE id % 5 = 0",
        "DELETE FROM misc WHERE id % 13 = 0",
        "VACUUM misc",
        "BEGIN; INSERT INTO misc (t) VALUES ('prepared'); PREPARE TRANSACTION 'gx';",
        "CREATE TABLE gone AS SELECT 1 a",
        "TRUNCATE pgbench_history",
    ] {
        server.psql("postgres", sql);
    }
    server.psql(
        "other",
        "CREATE TABLE o AS SELECT g FROM generate_series(1, 1000) g",
    );
    let expected = dumpall(server.port);
    let lsn: Lsn = server
        .psql("postgres", "SELECT pg_current_wal_insert_lsn()")
        .parse()
        .unwrap();
    common::wait_for_lsn(&tl, lsn, Duration::from_secs(120));
    // Changes after the snapshot must not show up in it.
    server.psql("postgres", "DROP TABLE gone");
    server.psql("postgres", "COMMIT PREPARED 'gx'");
    let snap = tl.last_record_lsn();
    assert!(snap >= lsn);
    receiver.stop();
    server.stop();

    // pg_current_wal_insert_lsn() after a statement is a record boundary.
    let tar = send_basebackup(&tl, lsn, true, Vec::new()).unwrap();
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    tar::Archive::new(&tar[..]).unpack(&restored).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&restored, std::fs::Permissions::from_mode(0o700)).unwrap();
    let server = Server::start(&restored, &["max_prepared_transactions = 4"]);
    let got = dumpall(server.port);
    if let Some(d) = first_difference(&got, &expected) {
        panic!("pg_dumpall of the basebackup differs from the primary's: {d}");
    }
    let out = std::process::Command::new(pg_install().join("bin/pg_amcheck"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "postgres",
            "--all",
            "--heapallindexed",
            "--install-missing",
        ])
        .env("LD_LIBRARY_PATH", pg_install().join("lib"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "pg_amcheck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();
}
