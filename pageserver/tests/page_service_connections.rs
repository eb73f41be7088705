//! The page service's connections over real sockets: startup variants and
//! simple queries, basebackup (and one nobody reads), the connection limit
//! and idle timeout, and shutdown. The server and client are in
//! `page_service_kit`.

mod common;
mod page_service_kit;

use page_service_kit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basebackup_streams_a_tar_of_the_data_directory() {
    let f = Fixture::start().await;
    let mut c = Client::connect(f.addr).await;
    c.startup().await;

    // Full: every relation file, as initdb wrote it.
    let tar = basebackup(&mut c, &format!("{} {} --full", f.tenant_id, f.timeline_id)).await;
    assert_eq!(tar["global/pg_control"].len(), 8192);
    assert!(tar.contains_key("PG_VERSION"));
    let mut rel_files = 0;
    for e in std::fs::read_dir(f.pgdata.join("base/5")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if parse_relfilename(&name).is_some() {
            let path = format!("base/5/{name}");
            let got = tar
                .get(&path)
                .unwrap_or_else(|| panic!("{path} missing from the tar"));
            assert!(
                *got == std::fs::read(f.pgdata.join(&path)).unwrap(),
                "{path} differs"
            );
            rel_files += 1;
        }
    }
    assert!(rel_files > 100);
    assert!(tar.contains_key(&format!("base/5/{PG_CLASS}")));

    // Slim, at an explicit LSN: no relation files, the signal file instead.
    let lsn = f.lsn();
    let tar = basebackup(&mut c, &format!("{} {} {lsn}", f.tenant_id, f.timeline_id)).await;
    assert!(tar.contains_key("global/pg_control"));
    assert!(tar.contains_key("zenith.signal"));
    assert!(!tar.contains_key(&format!("base/5/{PG_CLASS}")));

    // Refused: below the GC cutoff, a malformed LSN, WAL that never arrives.
    let q = |args: &str| format!("basebackup {} {} {args}", f.tenant_id, f.timeline_id);
    let msgs = c.query(&q("0/10")).await;
    assert_eq!(tags(&msgs), "EZ");
    assert!(error_of(&msgs).1.contains("GC cutoff"), "{msgs:?}");
    let msgs = c.query(&q("lots")).await;
    assert_eq!(
        (tags(&msgs), error_of(&msgs).0),
        ("EZ".into(), "22023".into())
    );
    let started = Instant::now();
    let msgs = c.query(&q(&format!("{} --full", lsn + 0x1000_0000))).await;
    assert_eq!(tags(&msgs), "EZ");
    assert!(started.elapsed() >= WAIT_LSN_TIMEOUT);
    assert!(error_of(&msgs).1.contains("timed out"), "{msgs:?}");
    let msgs = c
        .query(&format!(
            "basebackup {} {}",
            TenantId::generate(),
            f.timeline_id
        ))
        .await;
    assert_eq!(error_of(&msgs).0, "3D000");

    // The connection is still usable.
    assert_eq!(tags(&c.query("identify_system").await), "TDCZ");
}

/// Runs `basebackup <args>` and returns the tar's regular files by path.
async fn basebackup(c: &mut Client, args: &str) -> HashMap<String, Vec<u8>> {
    let msgs = c.query(&format!("basebackup {args}")).await;
    assert_eq!(tags(&msgs), "H", "{msgs:?}");
    let mut tar = Vec::new();
    let mut chunks = 0;
    loop {
        match c.expect().await {
            BackendMessage::CopyData(body) => {
                assert!(body.len() <= 64 * 1024);
                tar.extend_from_slice(&body);
                chunks += 1;
            }
            BackendMessage::CopyDone => break,
            other => panic!("unexpected {other:?} in a basebackup"),
        }
    }
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "CZ");
    assert_eq!(
        msgs[0],
        BackendMessage::CommandComplete("BASEBACKUP".into())
    );
    assert!(chunks > 1 || tar.len() < 64 * 1024);

    let mut files = HashMap::new();
    let mut ar = tar::Archive::new(&tar[..]);
    for entry in ar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        files.insert(path.trim_start_matches("./").to_string(), data);
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_variants_and_simple_queries() {
    let f = Fixture::start().await;

    // SSL and GSS encryption are refused; the plain startup goes on.
    let mut c = Client::connect(f.addr).await;
    c.send_startup(FeStartupPacket::SslRequest).await;
    assert_eq!(c.read_byte().await, b'N');
    c.send_startup(FeStartupPacket::GssEncRequest).await;
    assert_eq!(c.read_byte().await, b'N');
    c.startup().await;

    let msgs = c.query("identify_system").await;
    assert_eq!(tags(&msgs), "TDCZ");
    let BackendMessage::DataRow(row) = &msgs[1] else {
        panic!("{msgs:?}")
    };
    assert_eq!(row.len(), 4, "four columns");
    assert_eq!(row[3], None, "dbname is NULL");
    assert_eq!(msgs[2], BackendMessage::CommandComplete("SELECT 1".into()));

    let msgs = c.query("SET application_name = 'x'").await;
    assert_eq!(tags(&msgs), "CZ");
    assert_eq!(msgs[0], BackendMessage::CommandComplete("SET".into()));
    assert_eq!(tags(&c.query("").await), "IZ");
    let msgs = c.query("select 1").await;
    assert_eq!(tags(&msgs), "EZ");
    let (code, msg) = error_of(&msgs);
    assert_eq!(code, "42601");
    assert!(msg.contains("unsupported command"), "{msg}");
    // Messages that belong to COPY or the extended protocol's Sync are ignored outside it.
    c.send(FeMessage::Sync).await;
    c.send(FeMessage::CopyDone).await;
    assert_eq!(tags(&c.query("set x=1").await), "CZ");
    c.send(FeMessage::Terminate).await;
    c.expect_eof("").await;

    // A cancel request is not supported: the connection just closes.
    let mut c = Client::connect(f.addr).await;
    c.send_startup(FeStartupPacket::CancelRequest(CancelKeyData {
        backend_pid: 1,
        cancel_key: 2,
    }))
    .await;
    c.expect_eof("").await;

    // Protocol 3.1: NegotiateProtocolVersion, then the usual startup.
    let mut c = Client::connect(f.addr).await;
    c.send_startup(Client::startup_message(1)).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs[..1]), "v");
    check_startup_reply(&msgs[1..]);

    // A malformed startup packet: FATAL, then close.
    let mut c = Client::connect(f.addr).await;
    c.send_raw(&[0, 0, 0, 2, 0, 0, 0, 0]).await;
    let msgs = c.expect_eof("E").await;
    assert_eq!(error_notice(&msgs[0]).severity, "FATAL");

    // A password nobody asked for: FATAL, then close.
    let mut c = Client::connect(f.addr).await;
    c.startup().await;
    c.send(FeMessage::password("secret").unwrap()).await;
    let msgs = c.expect_eof("E").await;
    assert_eq!(error_notice(&msgs[0]).code, "08P01");

    // The server is fine.
    let mut c = f.pagestream().await;
    check_healthy(&f, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_ends_connections() {
    let mut f = Fixture::start().await;
    let mut idle = Client::connect(f.addr).await;
    idle.startup().await;
    let mut stream = f.pagestream().await;
    check_healthy(&f, &mut stream).await;

    f.shutdown.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), f.server.take().unwrap())
        .await
        .expect("serve did not return after shutdown")
        .unwrap()
        .unwrap();
    for c in [&mut idle, &mut stream] {
        let msgs = c.expect_eof("E").await;
        let e = error_notice(&msgs[0]);
        assert_eq!((e.severity.as_str(), e.code.as_str()), ("FATAL", "57P01"));
    }
    assert!(TcpStream::connect(f.addr).await.is_err());
    // The storage is untouched.
    let page = f.reader().rel_page(rel(PG_CLASS), 0).unwrap();
    assert_eq!(page[..], f.page_in_file(rel(PG_CLASS), 0)[..]);
}

/// Defect: the page service served any number of connections, and idle
/// ones forever. Now one over `pg_max_connections` is refused with 53300
/// and a session idle between queries is closed with 57P05.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_idle_timeout() {
    let f = Fixture::start_with(|c| {
        c.pg_max_connections = 2;
        c.pg_idle_timeout = Duration::from_millis(700);
    })
    .await;
    let mut a = f.pagestream().await;
    let mut b = Client::connect(f.addr).await;
    b.startup().await;
    let mut c = Client::connect(f.addr).await;
    c.send_startup(Client::startup_message(0)).await;
    let msgs = c.expect_eof("E").await;
    assert_eq!(error_notice(&msgs[0]).code, "53300");
    // A pagestream is not idle: it keeps working past the idle timeout.
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        check_healthy(&f, &mut a).await;
    }
    // `b` sat idle between queries: closed with 57P05.
    let msgs = b.expect_eof("E").await;
    assert_eq!(error_notice(&msgs[0]).code, "57P05");
    // Its slot is free again.
    let mut d = f.pagestream().await;
    check_healthy(&f, &mut d).await;
}

fn basebackups_in_progress() -> i64 {
    zenith_metrics::gather_text()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("pageserver_basebackups_in_progress "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Defect: a basebackup client that stopped reading pinned the producer's
/// blocking thread forever (about 512 of them stall every tenant). Now the
/// connection is dropped after `pg_send_timeout` and the producer ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basebackup_nobody_reads_is_dropped() {
    let f = Fixture::start_with(|c| c.pg_send_timeout = Duration::from_secs(1)).await;
    let mut c = Client::connect(f.addr).await;
    c.startup().await;
    // A full basebackup is far more than the socket buffers hold.
    c.send(FeMessage::Query(format!(
        "basebackup {} {} --full",
        f.tenant_id, f.timeline_id
    )))
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while basebackups_in_progress() == 0 {
        assert!(Instant::now() < deadline, "the basebackup did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // We read nothing; the server gives up and the producer ends.
    while basebackups_in_progress() != 0 {
        assert!(
            Instant::now() < deadline,
            "the basebackup still runs for a client that reads nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The rest of the service is fine.
    let mut s = f.pagestream().await;
    check_healthy(&f, &mut s).await;
    drop(c);
}
