//! The page service over real sockets: a timeline imported from a fresh initdb
//! directory (kept, so answers can be compared with its files) is served by
//! `page_service::serve` on 127.0.0.1, and a low-level client speaks the
//! PostgreSQL protocol to it message by message (built and parsed with
//! `pq_proto`, with raw bytes where a test needs malformed input).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use pageserver::config::PageServerConf;
use pageserver::page_service::serve;
use pageserver::pagestream::bench::{run_bench, BenchConfig, BenchLimit};
use pageserver::pagestream::{
    PagestreamRequest, PagestreamRequestBody as Req, PagestreamResponse,
    PagestreamResponseBody as Resp, PAGE_SIZE,
};
use pageserver::pgdatadir_mapping::DatadirReader;
use pageserver::tenant::mgr::TenantManager;
use pageserver::tenant::timeline::Timeline;
use postgres_ffi::pg_constants::{DEFAULTTABLESPACE_OID, GLOBALTABLESPACE_OID, MAIN_FORKNUM};
use postgres_ffi::relfile::{parse_relfilename, RelTag};
use postgres_ffi::slru::SlruKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;
use zenith_utils::pq_proto::{
    AuthRequest, BackendMessage, BeDecoder, CancelKeyData, ErrorNotice, FeMessage, FeStartupPacket,
    StartupParams,
};

/// The `postgres` database of a fresh initdb.
const DB: u32 = 5;
const PG_CLASS: u32 = 1259;
const PG_ATTRIBUTE: u32 = 1249;
const PG_PROC: u32 = 1255;
const WAIT_LSN_TIMEOUT: Duration = Duration::from_secs(1);
/// Any single read from the server that takes longer fails the test.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

fn rel(relnode: u32) -> RelTag {
    RelTag {
        spcnode: DEFAULTTABLESPACE_OID,
        dbnode: DB,
        relnode,
        forknum: MAIN_FORKNUM,
    }
}

/// A server on a timeline imported from its own initdb directory.
struct Fixture {
    _dir: tempfile::TempDir,
    pgdata: PathBuf,
    tenant_id: TenantId,
    timeline_id: TimelineId,
    tl: Arc<Timeline>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Fixture {
    async fn start() -> Fixture {
        Self::start_with(|_| {}).await
    }

    /// A server whose configuration `tune` adjusts.
    async fn start_with(tune: impl FnOnce(&mut PageServerConf) + Send + 'static) -> Fixture {
        let (dir, pgdata, mgr, conf, tenant_id, timeline_id, tl) =
            tokio::task::spawn_blocking(|| {
                let dir = tempfile::tempdir().unwrap();
                let pgdata = common::initdb(dir.path());
                let mut conf = PageServerConf {
                    pg_distrib_dir: common::pg_install(),
                    wait_lsn_timeout: WAIT_LSN_TIMEOUT,
                    ..PageServerConf::default()
                };
                tune(&mut conf);
                let conf = Arc::new(conf);
                let workdir = dir.path().join("pageserver");
                std::fs::create_dir_all(&workdir).unwrap();
                let mgr = Arc::new(TenantManager::load(&workdir, Arc::clone(&conf)).unwrap());
                let (tenant_id, timeline_id) = (TenantId::generate(), TimelineId::generate());
                let tenant = mgr.create_tenant(tenant_id).unwrap();
                let tl = tenant.import_timeline(timeline_id, &pgdata).unwrap();
                (dir, pgdata, mgr, conf, tenant_id, timeline_id, tl)
            })
            .await
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, rx) = watch::channel(false);
        let server = Some(tokio::spawn(serve(listener, mgr, conf, rx)));
        Fixture {
            _dir: dir,
            pgdata,
            tenant_id,
            timeline_id,
            tl,
            addr,
            shutdown,
            server,
        }
    }

    fn lsn(&self) -> Lsn {
        self.tl.last_record_lsn()
    }

    fn reader(&self) -> DatadirReader<'_> {
        DatadirReader::new(&self.tl, self.lsn())
    }

    /// The relation fork's file in the initdb directory (one segment).
    fn rel_file(&self, rel: RelTag) -> Vec<u8> {
        assert!(
            !self.pgdata.join(rel.segment_path(1)).exists(),
            "{rel} has several segments"
        );
        std::fs::read(self.pgdata.join(rel.segment_path(0))).unwrap()
    }

    fn page_in_file(&self, rel: RelTag, blkno: u32) -> Vec<u8> {
        let file = self.rel_file(rel);
        file[blkno as usize * PAGE_SIZE..][..PAGE_SIZE].to_vec()
    }

    fn pagestream_query(&self) -> String {
        format!("pagestream {} {}", self.tenant_id, self.timeline_id)
    }

    /// A connection in pagestream mode.
    async fn pagestream(&self) -> Client {
        let mut c = Client::connect(self.addr).await;
        c.startup().await;
        let msgs = c.query(&self.pagestream_query()).await;
        assert_eq!(tags(&msgs), "W");
        c
    }
}

/// Latest version, nothing known about modifications.
fn latest(reqid: u64, body: Req) -> PagestreamRequest {
    PagestreamRequest {
        reqid,
        request_lsn: Lsn::MAX,
        not_modified_since: Lsn(0),
        body,
    }
}

type Msg = BackendMessage;

fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| char::from(m.tag())).collect()
}

/// The ErrorResponse a message is.
fn error_notice(m: &Msg) -> &ErrorNotice {
    match m {
        BackendMessage::ErrorResponse(e) => e,
        other => panic!("expected an ErrorResponse, got {other:?}"),
    }
}

/// (SQLSTATE, message) of the ErrorResponse in `msgs`.
fn error_of(msgs: &[Msg]) -> (String, String) {
    let e = msgs
        .iter()
        .find(|m| m.tag() == b'E')
        .map(error_notice)
        .unwrap_or_else(|| panic!("no ErrorResponse in {}", tags(msgs)));
    (e.code.clone(), e.message.clone())
}

fn error_text(r: &PagestreamResponse) -> &str {
    match &r.body {
        Resp::Error(m) => m,
        other => panic!("expected an error response, got {other:?}"),
    }
}

/// A low-level frontend: builds messages with the pq_proto codec (or sends
/// raw bytes) and parses backend messages with [`BeDecoder`].
struct Client {
    sock: TcpStream,
    buf: BytesMut,
    decoder: BeDecoder,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let sock = TcpStream::connect(addr).await.unwrap();
        sock.set_nodelay(true).unwrap();
        Client {
            sock,
            buf: BytesMut::new(),
            decoder: BeDecoder::default(),
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.unwrap();
    }

    async fn send(&mut self, msg: FeMessage) {
        let mut b = BytesMut::new();
        msg.write(&mut b).unwrap();
        self.send_raw(&b).await;
    }

    async fn send_startup(&mut self, packet: FeStartupPacket) {
        let mut b = BytesMut::new();
        packet.write(&mut b).unwrap();
        self.send_raw(&b).await;
    }

    fn startup_message(minor_version: u16) -> FeStartupPacket {
        let params: StartupParams = [("user", "postgres"), ("database", "postgres")]
            .into_iter()
            .collect();
        FeStartupPacket::StartupMessage {
            major_version: 3,
            minor_version,
            params,
        }
    }

    /// More bytes from the server; false on EOF (or reset).
    async fn fill(&mut self) -> bool {
        let read = tokio::time::timeout(READ_TIMEOUT, self.sock.read_buf(&mut self.buf))
            .await
            .expect("the server did not answer in time");
        matches!(read, Ok(n) if n > 0)
    }

    /// One raw byte (the answer to SSLRequest/GSSENCRequest).
    async fn read_byte(&mut self) -> u8 {
        while self.buf.is_empty() {
            assert!(self.fill().await, "EOF instead of a byte");
        }
        self.buf.get_u8()
    }

    /// The next backend message, or None when the server closed the connection.
    async fn read(&mut self) -> Option<Msg> {
        loop {
            if let Some(m) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(m);
            }
            if !self.fill().await {
                assert!(self.buf.is_empty(), "EOF inside a message");
                return None;
            }
        }
    }

    async fn expect(&mut self) -> Msg {
        self.read().await.expect("the server closed the connection")
    }

    /// Asserts that the server closes the connection (after `allowed` messages).
    async fn expect_eof(&mut self, allowed: &str) -> Vec<Msg> {
        let mut msgs = Vec::new();
        while let Some(m) = self.read().await {
            msgs.push(m);
        }
        assert_eq!(tags(&msgs), allowed);
        msgs
    }

    /// Messages up to and including ReadyForQuery.
    async fn until_ready(&mut self) -> Vec<Msg> {
        let mut msgs = Vec::new();
        loop {
            let m = self.expect().await;
            let done = m.tag() == b'Z';
            msgs.push(m);
            if done {
                return msgs;
            }
        }
    }

    /// A plain startup; checks what the server announces.
    async fn startup(&mut self) {
        self.send_startup(Self::startup_message(0)).await;
        let msgs = self.until_ready().await;
        check_startup_reply(&msgs);
    }

    /// A simple query; messages up to ReadyForQuery or the start of COPY.
    async fn query(&mut self, q: &str) -> Vec<Msg> {
        self.send(FeMessage::Query(q.to_string())).await;
        let mut msgs = Vec::new();
        loop {
            let m = self.expect().await;
            let done = matches!(m.tag(), b'Z' | b'W' | b'H');
            msgs.push(m);
            if done {
                return msgs;
            }
        }
    }

    async fn send_request(&mut self, req: &PagestreamRequest) {
        let mut payload = BytesMut::new();
        req.serialize(&mut payload).unwrap();
        self.send(FeMessage::CopyData(payload.freeze())).await;
    }

    async fn recv_response(&mut self) -> PagestreamResponse {
        match self.expect().await {
            BackendMessage::CopyData(body) => PagestreamResponse::parse(&body).unwrap(),
            other => panic!("expected CopyData, got {other:?}"),
        }
    }

    async fn request(&mut self, req: PagestreamRequest) -> PagestreamResponse {
        self.send_request(&req).await;
        let resp = self.recv_response().await;
        assert_eq!(resp.reqid, req.reqid);
        resp
    }

    async fn get_page(&mut self, rel: RelTag, blkno: u32) -> Bytes {
        match self
            .request(latest(1, Req::GetPage { rel, blkno }))
            .await
            .body
        {
            Resp::GetPage(p) => p,
            other => panic!("get_page {rel} {blkno}: {other:?}"),
        }
    }
}

fn check_startup_reply(msgs: &[Msg]) {
    assert_eq!(tags(msgs), "RSSSSSSKZ");
    assert_eq!(msgs[0], BackendMessage::Authentication(AuthRequest::Ok));
    let params: HashMap<String, String> = msgs[1..7]
        .iter()
        .map(|m| match m {
            BackendMessage::ParameterStatus { name, value } => (name.clone(), value.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    for (k, v) in [
        ("server_version", "15.18"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        assert_eq!(params.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(matches!(msgs[7], BackendMessage::BackendKeyData(_)));
    assert_eq!(
        msgs[8],
        BackendMessage::ReadyForQuery(zenith_utils::pq_proto::TransactionStatus::Idle)
    );
}

/// A second connection that must keep working while others misbehave.
async fn check_healthy(f: &Fixture, c: &mut Client) {
    let page = c.get_page(rel(PG_CLASS), 0).await;
    assert_eq!(page[..], f.page_in_file(rel(PG_CLASS), 0)[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_sizes_and_slru_segments_match_the_imported_data_directory() {
    let f = Fixture::start().await;
    let mut c = f.pagestream().await;
    let r = f.reader();

    let mut rels: Vec<RelTag> = Vec::new();
    for (spc, db) in [(DEFAULTTABLESPACE_OID, DB), (GLOBALTABLESPACE_OID, 0)] {
        for (relnode, forknum) in r.list_rels(spc, db).unwrap() {
            rels.push(RelTag {
                spcnode: spc,
                dbnode: db,
                relnode,
                forknum,
            });
        }
    }
    assert!(rels.len() > 100, "only {} relations", rels.len());
    assert!(rels.contains(&rel(PG_CLASS)));

    let mut pages = 0;
    for (i, &rel) in rels.iter().enumerate() {
        let file = f.rel_file(rel);
        let nblocks = (file.len() / PAGE_SIZE) as u32;
        let reqid = i as u64;
        assert_eq!(
            c.request(latest(reqid, Req::Exists { rel })).await.body,
            Resp::Exists(true)
        );
        assert_eq!(
            c.request(latest(reqid, Req::Nblocks { rel })).await.body,
            Resp::Nblocks(nblocks),
            "{rel}"
        );
        // Every block, pipelined in batches.
        for batch in (0..nblocks).collect::<Vec<_>>().chunks(32) {
            for &blkno in batch {
                c.send_request(&latest(u64::from(blkno), Req::GetPage { rel, blkno }))
                    .await;
            }
            for &blkno in batch {
                let resp = c.recv_response().await;
                assert_eq!(resp.reqid, u64::from(blkno));
                let Resp::GetPage(page) = resp.body else {
                    panic!("{rel} block {blkno}: {:?}", resp.body);
                };
                let start = blkno as usize * PAGE_SIZE;
                assert_eq!(
                    page[..],
                    file[start..start + PAGE_SIZE],
                    "{rel} block {blkno}"
                );
                assert_eq!(page, r.rel_page(rel, blkno).unwrap());
                pages += 1;
            }
        }
    }
    assert!(pages > 500, "only {pages} pages");

    // A relation that does not exist.
    let missing = rel(4_000_000_000);
    assert_eq!(
        c.request(latest(7, Req::Exists { rel: missing }))
            .await
            .body,
        Resp::Exists(false)
    );
    let resp = c.request(latest(8, Req::Nblocks { rel: missing })).await;
    assert!(
        error_text(&resp).contains("does not exist"),
        "{:?}",
        resp.body
    );

    // db_size: the relation files of base/5.
    let mut expected = 0u64;
    for e in std::fs::read_dir(f.pgdata.join("base/5")).unwrap() {
        let e = e.unwrap();
        if parse_relfilename(&e.file_name().to_string_lossy()).is_some() {
            expected += e.metadata().unwrap().len();
        }
    }
    assert_eq!(
        c.request(latest(9, Req::DbSize { dbnode: DB })).await.body,
        Resp::DbSize(expected as i64)
    );
    assert_eq!(r.db_size(DEFAULTTABLESPACE_OID, DB).unwrap(), expected);

    // SLRU segments: the files initdb wrote; a segment that does not exist is empty.
    for kind in [
        SlruKind::Clog,
        SlruKind::MultiXactOffsets,
        SlruKind::MultiXactMembers,
    ] {
        let file = std::fs::read(f.pgdata.join(kind.dir()).join("0000")).unwrap();
        let resp = c
            .request(latest(10, Req::GetSlruSegment { kind, segno: 0 }))
            .await;
        assert_eq!(
            resp.body,
            Resp::GetSlruSegment(Bytes::from(file)),
            "{kind:?}"
        );
        let resp = c
            .request(latest(11, Req::GetSlruSegment { kind, segno: 0x100 }))
            .await;
        assert_eq!(resp.body, Resp::GetSlruSegment(Bytes::new()));
    }

    // An explicit LSN (the import LSN) reads the same pages.
    let lsn = f.lsn();
    let req = PagestreamRequest {
        reqid: 12,
        request_lsn: lsn,
        not_modified_since: lsn,
        body: Req::GetPage {
            rel: rel(PG_CLASS),
            blkno: 1,
        },
    };
    assert_eq!(
        c.request(req).await.body,
        Resp::GetPage(Bytes::from(f.page_in_file(rel(PG_CLASS), 1)))
    );

    // CopyDone ends the stream; the connection goes back to queries.
    c.send(FeMessage::CopyDone).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "cCZ");
    assert_eq!(
        msgs[1],
        BackendMessage::CommandComplete("PAGESTREAM".into())
    );
    assert_eq!(tags(&c.query("identify_system").await), "TDCZ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_request_order() {
    let f = Fixture::start().await;
    let mut c = f.pagestream().await;
    let nblocks = (f.rel_file(rel(PG_ATTRIBUTE)).len() / PAGE_SIZE) as u32;
    assert!(nblocks > 10);

    // 50 mixed requests, sent before reading anything; one of them fails, one
    // reads beyond the end (a zero page: a compute may extend a relation with
    // empty pages that reach WAL only when something is written into them).
    let mut reqs = Vec::new();
    for i in 0..50u32 {
        let body = match i % 5 {
            0 => Req::Nblocks {
                rel: rel(PG_ATTRIBUTE),
            },
            1 => Req::DbSize { dbnode: DB },
            2 if i == 22 => Req::GetPage {
                rel: rel(4_000_000_000),
                blkno: 0,
            },
            2 if i == 27 => Req::GetPage {
                rel: rel(PG_ATTRIBUTE),
                blkno: nblocks + 5,
            },
            _ => Req::GetPage {
                rel: rel(PG_ATTRIBUTE),
                blkno: (i * 7) % nblocks,
            },
        };
        reqs.push(latest(1000 + u64::from(i) * 3, body));
    }
    for r in &reqs {
        c.send_request(r).await;
    }
    for r in &reqs {
        let resp = c.recv_response().await;
        assert_eq!(resp.reqid, r.reqid, "responses out of order");
        match (&r.body, &resp.body) {
            (Req::Nblocks { .. }, Resp::Nblocks(n)) => assert_eq!(*n, nblocks),
            (Req::DbSize { .. }, Resp::DbSize(s)) => assert!(*s > 0),
            (Req::GetPage { blkno, .. }, Resp::GetPage(p)) if *blkno >= nblocks => {
                assert!(p.iter().all(|&b| b == 0), "block {blkno} beyond the end")
            }
            (Req::GetPage { rel, blkno }, Resp::GetPage(p)) => {
                assert_eq!(p[..], f.page_in_file(*rel, *blkno)[..])
            }
            (Req::GetPage { rel, .. }, Resp::Error(e)) if rel.relnode == 4_000_000_000 => {
                assert!(e.contains("does not exist"), "{e}")
            }
            (req, resp) => panic!("{req:?} answered with {resp:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_errors_while_other_connections_keep_working() {
    let f = Fixture::start().await;
    let mut healthy = f.pagestream().await;
    check_healthy(&f, &mut healthy).await;

    // Unknown tenant or timeline, malformed ids: ERROR, and the connection stays usable.
    let mut c = Client::connect(f.addr).await;
    c.startup().await;
    let unknown_tenant = format!("pagestream {} {}", TenantId::generate(), f.timeline_id);
    let msgs = c.query(&unknown_tenant).await;
    assert_eq!(tags(&msgs), "EZ");
    let (code, msg) = error_of(&msgs);
    assert_eq!(code, "3D000");
    assert!(msg.contains("not found"), "{msg}");
    let unknown_timeline = format!("pagestream {} {}", f.tenant_id, TimelineId::generate());
    let msgs = c.query(&unknown_timeline).await;
    assert_eq!(error_of(&msgs).0, "3D000");
    assert!(error_of(&msgs).1.contains("timeline"), "{msgs:?}");
    let msgs = c
        .query(&format!("pagestream nonsense {}", f.timeline_id))
        .await;
    assert_eq!(tags(&msgs), "EZ");
    assert_eq!(error_of(&msgs).0, "22023");
    assert!(error_of(&msgs).1.contains("invalid tenant id"), "{msgs:?}");
    check_healthy(&f, &mut healthy).await;
    assert_eq!(tags(&c.query(&f.pagestream_query()).await), "W");

    // Requests with bad LSNs or of a relation that does not exist: error responses, stream stays open.
    let pg_class = rel(PG_CLASS);
    let nblocks = (f.rel_file(pg_class).len() / PAGE_SIZE) as u32;
    let get = |reqid, request_lsn, not_modified_since, blkno| PagestreamRequest {
        reqid,
        request_lsn,
        not_modified_since,
        body: Req::GetPage {
            rel: pg_class,
            blkno,
        },
    };
    let lsn = f.lsn();
    let cases = [
        (get(1, Lsn(0), Lsn(0), 0), "invalid request LSN 0/0"),
        (get(2, lsn, lsn + 8, 0), "is before not_modified_since"),
        (get(3, Lsn(0x1000), Lsn(0), 0), "below the GC cutoff"),
        (
            latest(
                5,
                Req::GetPage {
                    rel: rel(4_000_000_000),
                    blkno: 0,
                },
            ),
            "does not exist",
        ),
    ];
    for (req, expected) in cases {
        let resp = c.request(req).await;
        assert!(error_text(&resp).contains(expected), "{:?}", resp.body);
        check_healthy(&f, &mut healthy).await;
        assert_eq!(
            c.get_page(pg_class, 0).await[..],
            f.page_in_file(pg_class, 0)[..]
        );
    }

    // Beyond the end: a zero page, not an error.
    match c.request(get(4, Lsn::MAX, Lsn(0), nblocks)).await.body {
        Resp::GetPage(p) => assert!(p.iter().all(|&b| b == 0)),
        other => panic!("beyond the end: {other:?}"),
    }

    // WAL that never arrives: an error naming the LSNs after wait_lsn_timeout,
    // while the healthy connection keeps getting answers.
    let future = lsn + 0x1000_0000;
    let started = Instant::now();
    let (resp, healthy_done) = tokio::join!(c.request(get(6, future, future, 0)), async {
        for _ in 0..5 {
            check_healthy(&f, &mut healthy).await;
        }
        started.elapsed()
    });
    let waited = started.elapsed();
    let msg = error_text(&resp);
    assert!(
        msg.contains(&future.to_string()) && msg.contains(&lsn.to_string()),
        "{msg}"
    );
    assert!(waited >= WAIT_LSN_TIMEOUT, "answered after {waited:?}");
    assert!(
        healthy_done < waited,
        "the healthy connection was answered only after {healthy_done:?}"
    );
    assert_eq!(
        c.get_page(pg_class, 0).await[..],
        f.page_in_file(pg_class, 0)[..]
    );

    // A request that does not parse: error response with reqid 0, then the connection closes.
    c.send(FeMessage::CopyData(Bytes::from_static(&[0xFF, 1, 2, 3])))
        .await;
    let resp = c.recv_response().await;
    assert_eq!(resp.reqid, 0);
    assert!(error_text(&resp).contains("malformed"), "{resp:?}");
    c.expect_eof("").await;
    check_healthy(&f, &mut healthy).await;

    // A truncated request with a complete header: its reqid is echoed.
    let mut c = f.pagestream().await;
    let mut bytes = BytesMut::new();
    get(77, Lsn::MAX, Lsn(0), 0).serialize(&mut bytes).unwrap();
    c.send(FeMessage::CopyData(bytes.freeze().slice(..30)))
        .await;
    let resp = c.recv_response().await;
    assert_eq!(resp.reqid, 77);
    assert!(error_text(&resp).contains("truncated"), "{resp:?}");
    c.expect_eof("").await;

    // Garbage instead of a protocol message: FATAL, then close.
    let mut c = f.pagestream().await;
    c.send_raw(b"\x01garbage garbage").await;
    let msgs = c.expect_eof("E").await;
    let e = error_notice(&msgs[0]);
    assert_eq!((e.severity.as_str(), e.code.as_str()), ("FATAL", "08P01"));

    // A query in the middle of a pagestream: FATAL, then close.
    let mut c = f.pagestream().await;
    c.send(FeMessage::Query("select 1".into())).await;
    let msgs = c.expect_eof("E").await;
    assert_eq!(error_notice(&msgs[0]).code, "08P01");

    // A client that vanishes mid-request does no harm.
    let mut c = f.pagestream().await;
    c.send_raw(&[b'd', 0, 0, 0, 100, 2]).await;
    drop(c);

    check_healthy(&f, &mut healthy).await;
}

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
async fn pagebench_core_reads_random_pages_through_the_server() {
    let f = Fixture::start().await;
    let rels = vec![rel(PG_CLASS), rel(PG_ATTRIBUTE), rel(PG_PROC)];
    let blocks: u64 = rels
        .iter()
        .map(|r| (f.rel_file(*r).len() / PAGE_SIZE) as u64)
        .sum();
    let mut cfg = BenchConfig {
        addr: f.addr.to_string(),
        tenant_id: f.tenant_id,
        timeline_id: f.timeline_id,
        clients: 3,
        pipeline: 8,
        limit: BenchLimit::Requests(301),
        lsn: None,
        rels,
    };
    let report = run_bench(&cfg).await.unwrap();
    assert_eq!(report.requests, 301);
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert_eq!((report.relations, report.blocks), (3, blocks));
    let l = &report.latency_us;
    assert!(
        0.0 < l.min && l.min <= l.p50 && l.p50 <= l.p99 && l.p99 <= l.p99_9 && l.p99_9 <= l.max
    );
    assert!(report.requests_per_s > 0.0);
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["requests"], 301);
    assert!(json["latency_us"]["p99_9"].is_number());

    // At a fixed LSN, for a duration.
    cfg.lsn = Some(f.lsn());
    cfg.limit = BenchLimit::Duration(Duration::from_millis(300));
    cfg.clients = 2;
    cfg.pipeline = 1;
    let report = run_bench(&cfg).await.unwrap();
    assert!(report.requests > 0);
    assert_eq!(report.errors, 0, "{:?}", report.first_error);

    // A relation that does not exist, or an unknown timeline, fails the run.
    cfg.rels = vec![rel(4_000_000_000)];
    let e = run_bench(&cfg).await.unwrap_err().to_string();
    assert!(e.contains("does not exist"), "{e}");
    cfg.rels = vec![rel(PG_CLASS)];
    cfg.timeline_id = TimelineId::generate();
    let e = run_bench(&cfg).await.unwrap_err().to_string();
    assert!(e.contains("not found"), "{e}");
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
