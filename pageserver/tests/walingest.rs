//! WAL ingest against a real PostgreSQL 15: import what initdb wrote, run a
//! workload on a stock server started on the same directory, stop it cleanly,
//! ingest its WAL, and compare what the timeline says with the files the
//! server left: databases, relations and their sizes, CLOG pages (rebuilt by
//! Rust-native redo), relmapper files, two-phase state and the checkpoint.

mod common;

use std::sync::Arc;

use common::{initdb, Server};
use pageserver::config::TenantConf;
use pageserver::import_datadir::import_datadir;
use pageserver::pgdatadir_mapping::DatadirReader;
use pageserver::walredo::NativeOnlyRedoManager;
use postgres_ffi::controlfile::ControlFileData;
use postgres_ffi::pg_constants::*;
use postgres_ffi::relfile::{database_dir, relation_segment_path, RelTag};
use postgres_ffi::slru::{slru_segment_filename, SlruKind};

#[test]
fn ingested_wal_matches_the_server_files() {
    let dir = tempfile::tempdir().unwrap();
    let pgdata = initdb(dir.path());
    let tl = common::empty_timeline(
        dir.path(),
        TenantConf {
            checkpoint_distance: 1 << 20,
            ..TenantConf::default()
        },
        Arc::new(NativeOnlyRedoManager),
    );
    let point = import_datadir(&tl, &pgdata).unwrap();

    let server = Server::start(
        &pgdata,
        &[
            "wal_level = replica",
            "max_prepared_transactions = 5",
            "max_wal_size = 1GB",
            "wal_keep_size = 1GB",
        ],
    );
    server.psql(
        "postgres",
        "CREATE TABLE t (id int primary key, v text);
         INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g;
         UPDATE t SET v = 'y' WHERE id % 7 = 0;
         DELETE FROM t WHERE id % 11 = 0;
         CREATE TABLE gone (a int); INSERT INTO gone VALUES (1); DROP TABLE gone;
         CREATE TABLE tr (a int); INSERT INTO tr SELECT generate_series(1, 1000); TRUNCATE tr;
         INSERT INTO tr VALUES (5);
         CREATE SEQUENCE s; SELECT nextval('s');",
    );
    server.psql("postgres", "VACUUM t");
    server.psql("postgres", "CREATE DATABASE d_wal STRATEGY wal_log");
    server.psql("postgres", "CREATE DATABASE d_copy STRATEGY file_copy");
    server.psql("postgres", "CREATE DATABASE d_drop");
    server.psql("postgres", "DROP DATABASE d_drop");
    server.psql(
        "d_copy",
        "CREATE TABLE in_copy AS SELECT generate_series(1, 100) a",
    );
    for sql in [
        "BEGIN; INSERT INTO t VALUES (100001, 'a'); SAVEPOINT s1; INSERT INTO t VALUES (100002, 'b'); \
         ROLLBACK TO s1; INSERT INTO t VALUES (100003, 'c'); COMMIT;",
        "BEGIN; INSERT INTO t VALUES (100004, 'd'); PREPARE TRANSACTION 'p1';",
        "BEGIN; INSERT INTO t VALUES (100005, 'e'); PREPARE TRANSACTION 'p2';",
        "COMMIT PREPARED 'p1'",
        "BEGIN; INSERT INTO t VALUES (100006, 'f'); PREPARE TRANSACTION 'p3';",
    ] {
        server.psql("postgres", sql);
    }
    server.psql(
        "postgres",
        "BEGIN; INSERT INTO t VALUES (100007, 'g'); ROLLBACK;",
    );
    server.psql("postgres", "ROLLBACK PREPARED 'p2'");
    server.stop();

    // Ingest all WAL after the import point.
    let control =
        ControlFileData::decode(&std::fs::read(pgdata.join("global/pg_control")).unwrap()).unwrap();
    let records = common::ingest_wal_from(&tl, &pgdata, point.end_lsn, point.checkpoint_lsn);
    assert!(records > 1000, "only {records} records");
    // Counted in pageserver_wal_ingest_{records,bytes}_total (this test is
    // alone in its process): every record, and the WAL they span.
    let metrics = zenith_metrics::gather_text().unwrap();
    let counted = |name| common::metric_sample(&metrics, name, &[]).unwrap_or(0.0);
    assert_eq!(
        counted("pageserver_wal_ingest_records_total"),
        records as f64
    );
    let bytes = counted("pageserver_wal_ingest_bytes_total");
    let span = (tl.last_record_lsn().0 - point.end_lsn.0) as f64;
    assert!(
        bytes >= 24.0 * records as f64 && bytes <= span,
        "{bytes} bytes for {records} records over {span} bytes of WAL"
    );
    tl.freeze_and_flush().unwrap();
    assert!(
        tl.layer_files().len() > 2,
        "expected several layers, got {:?}",
        tl.layer_files()
    );
    let lsn = tl.last_record_lsn();
    assert!(
        lsn > control.checkpoint,
        "ingest stopped at {lsn}, before the shutdown checkpoint"
    );

    let r = DatadirReader::new(&tl, lsn);
    // Databases: exactly the directories under base/ (plus global).
    let mut on_disk: Vec<u32> = std::fs::read_dir(pgdata.join("base"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_string_lossy().parse().ok())
        .collect();
    on_disk.sort();
    let dbs = r.list_dbs().unwrap();
    let mut ours: Vec<u32> = dbs
        .keys()
        .filter(|(spc, _)| *spc == DEFAULTTABLESPACE_OID)
        .map(|(_, db)| *db)
        .collect();
    ours.sort();
    assert_eq!(ours, on_disk, "databases");

    // Relations and main-fork sizes match the files; every file is known.
    for &(spc, db) in dbs.keys() {
        let rels = r.list_rels(spc, db).unwrap();
        let relmap =
            std::fs::read(pgdata.join(database_dir(spc, db)).join("pg_filenode.map")).unwrap();
        assert_eq!(
            r.relmap_file(spc, db).unwrap().unwrap(),
            relmap,
            "relmap of {spc}/{db}"
        );
        for entry in std::fs::read_dir(pgdata.join(database_dir(spc, db))).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            // Stock PostgreSQL does not WAL-log FSM pages (computes will: a
            // later patch), so an FSM fork can exist on disk only.
            if let Some((relnode, fork, 0)) =
                postgres_ffi::relfile::parse_relfilename(&name).filter(|r| r.1 != FSM_FORKNUM)
            {
                assert!(
                    rels.contains(&(relnode, fork)),
                    "{spc}/{db}/{name} exists on disk but not in the timeline"
                );
            }
        }
        for (relnode, forknum) in rels {
            let rel = RelTag {
                spcnode: spc,
                dbnode: db,
                relnode,
                forknum,
            };
            let path = pgdata.join(relation_segment_path(rel.rnode(), forknum, 0));
            let len = std::fs::metadata(&path)
                .map(|m| m.len())
                .unwrap_or_else(|_| panic!("{rel} is in the timeline but not on disk"));
            let size = r.rel_size(rel).unwrap().unwrap();
            if forknum == MAIN_FORKNUM {
                assert_eq!(size as u64 * 8192, len, "size of {rel}");
            }
        }
    }

    // CLOG pages equal the server's (status bits set by Rust-native redo).
    let clog = std::fs::read(pgdata.join("pg_xact").join(slru_segment_filename(0))).unwrap();
    let page = r.slru_page(SlruKind::Clog, 0, 0).unwrap();
    assert_eq!(&page[..], &clog[..8192], "CLOG page 0");

    // Two-phase: only p3 is still prepared (its state file is written at the checkpoint).
    assert_eq!(r.list_twophase_files().unwrap().len(), 1);

    // Checkpoint fields follow the server's.
    let cp = postgres_ffi::controlfile::CheckPoint::decode(&r.checkpoint().unwrap()).unwrap();
    assert_eq!(cp.next_xid, control.checkpoint_copy.next_xid, "nextXid");
    assert_eq!(cp.next_oid, control.checkpoint_copy.next_oid, "nextOid");
    assert_eq!(
        cp.oldest_xid, control.checkpoint_copy.oldest_xid,
        "oldestXid"
    );
    assert_eq!(
        cp.next_multi, control.checkpoint_copy.next_multi,
        "nextMulti"
    );
}
