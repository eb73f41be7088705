//! The shared async client (`zenith_utils::postgres_client`) against a real
//! PostgreSQL 15 that requires passwords: SCRAM-SHA-256, MD5 and cleartext
//! logins, the errors a wrong or missing password gives, simple queries with
//! SQLSTATEs, CopyOut and a physical-replication CopyBoth stream; and the
//! pageserver's WAL receiver following such a primary as a SCRAM user.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{initdb, Server};
use pageserver::config::TenantConf;
use pageserver::import_datadir::import_datadir;
use pageserver::pgdatadir_mapping::DatadirReader;
use pageserver::walreceiver::{WalReceiver, WalSource};
use pageserver::walredo::NativeOnlyRedoManager;
use zenith_utils::lsn::Lsn;
use zenith_utils::postgres_client::{ClientError, Config, Connection};
use zenith_utils::pq_proto::replication::{ReplicationMessage, StandbyStatusUpdate};
use zenith_utils::pq_proto::SqlState;

/// A primary whose pg_hba.conf asks every role but `postgres` for a
/// password: `scram` (SCRAM-SHA-256, also for replication), `md5user` (an
/// MD5-hashed password, MD5 challenge), `plainuser` (cleartext).
fn password_primary(dir: &std::path::Path) -> (Server, std::path::PathBuf) {
    let pgdata = initdb(dir);
    std::fs::write(
        pgdata.join("pg_hba.conf"),
        "local all all trust\n\
         host all postgres 127.0.0.1/32 trust\n\
         host all md5user 127.0.0.1/32 md5\n\
         host all plainuser 127.0.0.1/32 password\n\
         host all all 127.0.0.1/32 scram-sha-256\n\
         host replication all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    let server = Server::start(
        &pgdata,
        &[
            "password_encryption = 'scram-sha-256'",
            "wal_level = replica",
            "max_wal_senders = 4",
        ],
    );
    server.psql(
        "postgres",
        "CREATE ROLE scram LOGIN REPLICATION PASSWORD 'sCr4m pässword'; \
         CREATE ROLE plainuser LOGIN PASSWORD 'plain'; \
         SET password_encryption = 'md5'; \
         CREATE ROLE md5user LOGIN PASSWORD 'md5pw';",
    );
    (server, pgdata)
}

fn config(server: &Server, user: &str, password: Option<&str>) -> Config {
    let mut c = Config::new("127.0.0.1", server.port, user).dbname("postgres");
    c.password = password.map(str::to_string);
    c.connect_timeout = Duration::from_secs(10);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_with_scram_md5_and_cleartext_and_refuses_wrong_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _pgdata) = password_primary(dir.path());

    for (user, password) in [
        ("scram", "sCr4m pässword"),
        ("md5user", "md5pw"),
        ("plainuser", "plain"),
    ] {
        let mut conn = Connection::connect(&config(&server, user, Some(password)))
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        let rows = conn
            .simple_query("SELECT current_user, 1 + 1")
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].get(0), rows[0].get(1)), (Some(user), Some("2")));
        assert!(conn
            .parameter("server_version")
            .is_some_and(|v| v.starts_with("15.")));
        assert!(conn.cancel_key().is_some());
        conn.terminate().await.unwrap();
    }

    // A wrong password: the server's FATAL 28P01, as a clear error.
    for user in ["scram", "md5user", "plainuser"] {
        let err = Connection::connect(&config(&server, user, Some("wrong")))
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} logged in with a wrong password"));
        assert_eq!(err.sql_state(), Some(SqlState::INVALID_PASSWORD), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "password authentication failed for user \"{user}\""
            )),
            "{text}"
        );
    }

    // No password at all: refused on our side, naming the user.
    let err = Connection::connect(&config(&server, "scram", None))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Auth(_)), "{err}");
    assert!(err.to_string().contains("\"scram\""), "{err}");

    // Nobody listening: a connect error naming the address.
    let mut nowhere = config(&server, "scram", Some("x"));
    nowhere.port = common::free_port();
    let err = Connection::connect(&nowhere).await.err().unwrap();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&nowhere.addr()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_errors_and_copy_out() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _pgdata) = password_primary(dir.path());
    let mut conn = Connection::connect(&config(&server, "scram", Some("sCr4m pässword")))
        .await
        .unwrap();

    // Several statements, NULLs, non-ASCII text.
    let rows = conn
        .simple_query("SELECT NULL::text, 'ä'; SELECT g FROM generate_series(1, 3) g")
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!((rows[0].get(0), rows[0].get(1)), (None, Some("ä")));
    assert_eq!(rows[3].get(0), Some("3"));

    // An error keeps its SQLSTATE; the session goes on.
    let err = conn
        .simple_query("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert_eq!(err.sql_state(), SqlState::parse("42P01"), "{err}");
    assert!(err.to_string().contains("no_such_table"), "{err}");
    let err = conn.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(err.sql_state(), SqlState::parse("22012"), "{err}");
    assert_eq!(
        conn.simple_query("SELECT 7").await.unwrap()[0].get(0),
        Some("7")
    );

    // CopyOut: all the data, then the connection back.
    let mut copy = conn
        .copy_out("COPY (SELECT g, md5(g::text) FROM generate_series(1, 5000) g) TO STDOUT")
        .await
        .unwrap();
    let mut data = Vec::new();
    while let Some(chunk) = copy.recv().await.unwrap() {
        data.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(data).unwrap();
    assert_eq!(text.lines().count(), 5000);
    assert!(text.starts_with("1\tc4ca4238a0b923820dcc509a6f75849b\n"));
    let mut conn = copy.into_connection().unwrap();
    assert_eq!(
        conn.simple_query("SELECT 8").await.unwrap()[0].get(0),
        Some("8")
    );

    // A COPY that fails before it starts is the server's error.
    let err = conn
        .copy_out("COPY no_such_table TO STDOUT")
        .await
        .err()
        .unwrap();
    assert_eq!(err.sql_state(), SqlState::parse("42P01"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn physical_replication_stream_as_a_scram_user() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _pgdata) = password_primary(dir.path());
    let config = config(&server, "scram", Some("sCr4m pässword")).param("replication", "true");
    let mut conn = Connection::connect(&config).await.unwrap();
    let rows = conn.simple_query("IDENTIFY_SYSTEM").await.unwrap();
    let start: Lsn = rows[0].get(2).unwrap().parse().unwrap();
    let start = Lsn(start.0 & !0xFF_FFFF); // a segment boundary
    let mut stream = conn
        .copy_both(&format!("START_REPLICATION PHYSICAL {start}"))
        .await
        .unwrap();
    server.psql(
        "postgres",
        "CREATE TABLE r AS SELECT generate_series(1, 1000) g",
    );
    let mut received = start;
    let deadline = Instant::now() + Duration::from_secs(30);
    let target = server.flush_lsn();
    while received < target {
        assert!(
            Instant::now() < deadline,
            "WAL up to {target} did not arrive"
        );
        let data = stream.recv().await.unwrap().expect("the stream ended");
        match ReplicationMessage::parse(&data).unwrap() {
            ReplicationMessage::XLogData(x) => {
                assert_eq!(x.wal_start, received, "WAL arrives contiguously");
                received = Lsn(received.0 + x.data.len() as u64);
            }
            ReplicationMessage::PrimaryKeepalive(k) => assert!(k.wal_end >= start),
            other => panic!("the server sent {other:?}"),
        }
    }
    let status = ReplicationMessage::StandbyStatusUpdate(StandbyStatusUpdate {
        write_lsn: received,
        flush_lsn: received,
        apply_lsn: Lsn(0),
        send_time: 0,
        reply_requested: false,
    });
    stream.queue(status.to_bytes()).unwrap();
    stream.flush().await.unwrap();
    // CopyDone from us ends the stream; the session is usable again.
    let mut conn = stream.finish().await.unwrap();
    let rows = conn.simple_query("IDENTIFY_SYSTEM").await.unwrap();
    assert_eq!(rows.len(), 1);
}

#[test]
fn pageserver_follows_a_primary_that_requires_scram() {
    let dir = tempfile::tempdir().unwrap();
    let (server, pgdata) = password_primary(dir.path());
    // The timeline starts from the primary's data directory as it is now
    // (a clean checkpoint, so the import and the primary agree).
    server.psql("postgres", "CHECKPOINT");
    let server_port = server.port;
    server.stop();
    let tl = common::empty_timeline(
        dir.path(),
        TenantConf::default(),
        Arc::new(NativeOnlyRedoManager),
    );
    import_datadir(&tl, &pgdata).unwrap();
    let server = Server::start_on(&pgdata, server_port, &[]);

    let src = WalSource::parse(&format!(
        "host=127.0.0.1 port={} user=scram password='sCr4m pässword'",
        server.port
    ))
    .unwrap();
    let receiver = WalReceiver::spawn(Arc::clone(&tl), src).unwrap();
    server.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g",
    );
    common::wait_for_lsn(&tl, server.flush_lsn(), Duration::from_secs(60));
    receiver.stop();
    let rel = server.rel_tag("postgres", "t");
    let blocks = DatadirReader::new(&tl, tl.last_record_lsn())
        .rel_size(rel)
        .unwrap();
    assert!(blocks.is_some_and(|n| n >= 40), "t has {blocks:?} blocks");
}
