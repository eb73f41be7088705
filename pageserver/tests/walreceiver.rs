//! The WAL receiver follows a real PostgreSQL 15 primary through a physical
//! replication slot: the timeline catches up with the primary's flush LSN,
//! sees its tables and commits, and the slot learns what the pageserver has
//! made durable. A stopped primary is an outage the receiver rides out.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{initdb, Server};
use pageserver::config::TenantConf;
use pageserver::import_datadir::import_datadir;
use pageserver::pgdatadir_mapping::DatadirReader;
use pageserver::walreceiver::{WalReceiver, WalSource};
use pageserver::walredo::NativeOnlyRedoManager;
use postgres_ffi::relfile::relation_segment_path;
use postgres_ffi::slru::{slru_segment_filename, SlruKind};
use zenith_utils::lsn::Lsn;

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn follows_a_primary_through_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let pgdata = initdb(dir.path());
    let tl = common::empty_timeline(
        dir.path(),
        TenantConf {
            checkpoint_distance: 512 * 1024,
            ..TenantConf::default()
        },
        Arc::new(NativeOnlyRedoManager),
    );
    import_datadir(&tl, &pgdata).unwrap();
    let server = Server::start(
        &pgdata,
        &[
            "wal_level = replica",
            "max_wal_senders = 4",
            "max_replication_slots = 4",
        ],
    );
    server.psql(
        "postgres",
        "SELECT pg_create_physical_replication_slot('pageserver')",
    );
    let src = WalSource::parse(&format!(
        "host=127.0.0.1 port={} user=postgres slot=pageserver",
        server.port
    ))
    .unwrap();
    let receiver = WalReceiver::spawn(Arc::clone(&tl), src).unwrap();

    server.psql("postgres", "CREATE TABLE t (id int primary key, v text)");
    server.psql(
        "postgres",
        "INSERT INTO t SELECT g, repeat('z', 200) FROM generate_series(1, 20000) g",
    );
    server.psql("postgres", "CREATE DATABASE other");
    server.psql("postgres", "CHECKPOINT");
    let flush: Lsn = server
        .psql("postgres", "SELECT pg_current_wal_flush_lsn()")
        .parse()
        .unwrap();
    wait_for("the timeline to catch up", Duration::from_secs(60), || {
        tl.last_record_lsn() >= flush
    });

    // The slot hears what is durable in layer files.
    tl.freeze_and_flush().unwrap();
    let durable = tl.disk_consistent_lsn();
    wait_for(
        "the slot's restart_lsn to advance",
        Duration::from_secs(30),
        || {
            let r = server.psql(
                "postgres",
                "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'pageserver'",
            );
            r.parse::<Lsn>()
                .map(|l| l >= durable.min(flush))
                .unwrap_or(false)
        },
    );

    let lsn = tl.last_record_lsn();
    let r = DatadirReader::new(&tl, lsn);
    let rel = server.rel_tag("postgres", "t");
    let file_len = std::fs::metadata(pgdata.join(relation_segment_path(rel.rnode(), 0, 0)))
        .unwrap()
        .len();
    assert_eq!(
        r.rel_size(rel).unwrap(),
        Some((file_len / 8192) as u32),
        "size of t"
    );
    let other: u32 = server
        .psql(
            "postgres",
            "SELECT oid FROM pg_database WHERE datname = 'other'",
        )
        .parse()
        .unwrap();
    assert!(r.list_dbs().unwrap().contains_key(&(1663, other)));
    let clog = std::fs::read(pgdata.join("pg_xact").join(slru_segment_filename(0))).unwrap();
    assert_eq!(
        &r.slru_page(SlruKind::Clog, 0, 0).unwrap()[..],
        &clog[..8192],
        "CLOG page 0"
    );

    // An outage: the primary stops and comes back; the receiver resumes.
    let port = server.port;
    server.stop();
    let server = Server::start_on(&pgdata, port, &[]);
    server.psql("postgres", "INSERT INTO t VALUES (0, 'after restart')");
    let flush: Lsn = server
        .psql("postgres", "SELECT pg_current_wal_flush_lsn()")
        .parse()
        .unwrap();
    wait_for(
        "the timeline to catch up after the outage",
        Duration::from_secs(60),
        || tl.last_record_lsn() >= flush,
    );
    receiver.stop();
    assert!(
        tl.layer_files().len() >= 2,
        "layers: {:?}",
        tl.layer_files()
    );
}

/// A WAL source that logs in, answers IDENTIFY_SYSTEM with `sysid` and
/// START_REPLICATION with WAL bytes that are not WAL; counts the streams.
struct GarbageSource {
    sysid: String,
    streams: Arc<std::sync::atomic::AtomicUsize>,
}

impl zenith_utils::postgres_backend::Handler for GarbageSource {
    async fn process_query(
        &mut self,
        pgb: &mut zenith_utils::postgres_backend::PostgresBackend,
        query: &str,
    ) -> Result<(), zenith_utils::postgres_backend::HandlerError> {
        use zenith_utils::pq_proto::replication::{ReplicationMessage, XLogData};
        use zenith_utils::pq_proto::{write_text_result, BeMessage, CopyResponse};
        if query == "IDENTIFY_SYSTEM" {
            write_text_result(
                pgb.writer.buf_mut(),
                &["systemid", "timeline", "xlogpos", "dbname"],
                &[&[Some(&self.sysid), Some("1"), Some("0/0"), None]],
            )?;
            return Ok(());
        }
        let start: Lsn = query
            .rsplit(' ')
            .next()
            .and_then(|l| l.parse().ok())
            .expect("START_REPLICATION PHYSICAL X/Y");
        self.streams
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        pgb.write_message(&BeMessage::CopyBothResponse(CopyResponse::TEXT))?;
        let garbage = ReplicationMessage::XLogData(XLogData {
            wal_start: start,
            wal_end: start + 8192,
            send_time: 0,
            data: bytes::Bytes::from(vec![0xA5u8; 8192]),
        });
        pgb.write_message(&BeMessage::CopyData(&garbage.to_bytes()))?;
        pgb.flush().await?;
        // Until the client goes away.
        while pgb.reader.read_message().await?.is_some() {}
        Err(zenith_utils::postgres_backend::HandlerError::ClientGone)
    }
}

/// Defect: an ingest error (WAL that does not decode, a record that cannot
/// be filed) was taken for an unavailable source and retried forever,
/// logged at DEBUG after the first time. Now the timeline is marked broken
/// (API, ERROR log, metric) and the receiver stops.
#[test]
fn undecodable_wal_breaks_the_timeline_instead_of_retrying_forever() {
    let dir = tempfile::tempdir().unwrap();
    let pgdata = initdb(dir.path());
    let tl = common::empty_timeline(
        dir.path(),
        TenantConf::default(),
        Arc::new(NativeOnlyRedoManager),
    );
    import_datadir(&tl, &pgdata).unwrap();
    let control = DatadirReader::new(&tl, tl.last_record_lsn())
        .control_file()
        .unwrap();
    let sysid = postgres_ffi::controlfile::ControlFileData::decode(&control)
        .unwrap()
        .system_identifier
        .to_string();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let streams = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let s2 = Arc::clone(&streams);
    let server = rt.spawn(zenith_utils::postgres_backend::serve(
        listener,
        Arc::new(zenith_utils::postgres_backend::BackendConf::new(
            "fake WAL source",
        )),
        move |_| {
            (
                GarbageSource {
                    sysid: sysid.clone(),
                    streams: Arc::clone(&s2),
                },
                tracing::Span::none(),
            )
        },
        stop_rx,
    ));

    let before = tl.last_record_lsn();
    let src = WalSource::parse(&format!("host=127.0.0.1 port={port} user=postgres")).unwrap();
    let receiver = WalReceiver::spawn(Arc::clone(&tl), src).unwrap();
    wait_for("the timeline to break", Duration::from_secs(30), || {
        tl.broken_reason().is_some()
    });
    let reason = tl.broken_reason().unwrap();
    assert!(reason.contains("WAL ingest failed"), "{reason}");
    receiver.stop();
    assert_eq!(
        streams.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "no retries"
    );
    assert_eq!(tl.last_record_lsn(), before);
    let metrics = zenith_metrics::gather_text().unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pageserver_wal_ingest_errors_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    stop_tx.send(true).unwrap();
    rt.block_on(server).unwrap().unwrap();
}
