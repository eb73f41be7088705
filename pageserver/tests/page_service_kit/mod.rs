//! The page-service test kit: a server on a timeline imported from a fresh
//! initdb directory (kept, so answers can be compared with its files), served
//! by `page_service::serve` on 127.0.0.1, and a low-level client that speaks
//! the PostgreSQL protocol to it message by message (built and parsed with
//! `pq_proto`, with raw bytes where a test needs malformed input). Used by
//! `page_service.rs` (the pagestream) and `page_service_connections.rs`
//! (startup, basebackup, limits, shutdown).
// Each test file uses part of it.
#![allow(dead_code, unused_imports)]

pub use std::collections::HashMap;
pub use std::net::SocketAddr;
pub use std::path::PathBuf;
pub use std::sync::Arc;
pub use std::time::{Duration, Instant};

pub use bytes::{Buf, Bytes, BytesMut};
pub use pageserver::config::PageServerConf;
pub use pageserver::page_service::serve;
pub use pageserver::pagestream::bench::{run_bench, BenchConfig, BenchLimit};
pub use pageserver::pagestream::{
    PagestreamRequest, PagestreamRequestBody as Req, PagestreamResponse,
    PagestreamResponseBody as Resp, PAGE_SIZE,
};
pub use pageserver::pgdatadir_mapping::DatadirReader;
pub use pageserver::tenant::timeline::Timeline;
pub use pageserver::tenant_mgr::TenantManager;
pub use postgres_ffi::pg_constants::{DEFAULTTABLESPACE_OID, GLOBALTABLESPACE_OID, MAIN_FORKNUM};
pub use postgres_ffi::relfile::{parse_relfilename, RelTag};
pub use postgres_ffi::slru::SlruKind;
pub use tokio::io::{AsyncReadExt, AsyncWriteExt};
pub use tokio::net::{TcpListener, TcpStream};
pub use tokio::sync::watch;
pub use tokio::task::JoinHandle;
pub use zenith_utils::id::{TenantId, TimelineId};
pub use zenith_utils::lsn::Lsn;
pub use zenith_utils::pq_proto::{
    AuthRequest, BackendMessage, BeDecoder, CancelKeyData, ErrorNotice, FeMessage, FeStartupPacket,
    StartupParams,
};

/// The `postgres` database of a fresh initdb.
pub const DB: u32 = 5;
pub const PG_CLASS: u32 = 1259;
pub const PG_ATTRIBUTE: u32 = 1249;
pub const PG_PROC: u32 = 1255;
pub const WAIT_LSN_TIMEOUT: Duration = Duration::from_secs(1);
/// Any single read from the server that takes longer fails the test.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

pub fn rel(relnode: u32) -> RelTag {
    RelTag {
        spcnode: DEFAULTTABLESPACE_OID,
        dbnode: DB,
        relnode,
        forknum: MAIN_FORKNUM,
    }
}

/// A server on a timeline imported from its own initdb directory.
pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub pgdata: PathBuf,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub tl: Arc<Timeline>,
    pub addr: SocketAddr,
    pub shutdown: watch::Sender<bool>,
    pub server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Self::start_with(|_| {}).await
    }

    /// A server whose configuration `tune` adjusts.
    pub async fn start_with(tune: impl FnOnce(&mut PageServerConf) + Send + 'static) -> Fixture {
        let (dir, pgdata, mgr, conf, tenant_id, timeline_id, tl) =
            tokio::task::spawn_blocking(|| {
                let dir = tempfile::tempdir().unwrap();
                let pgdata = crate::common::initdb(dir.path());
                let mut conf = PageServerConf {
                    pg_distrib_dir: crate::common::pg_install(),
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
        let server = Some(tokio::spawn(serve(listener, mgr, conf, None, rx)));
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

    pub fn lsn(&self) -> Lsn {
        self.tl.last_record_lsn()
    }

    pub fn reader(&self) -> DatadirReader<'_> {
        DatadirReader::new(&self.tl, self.lsn())
    }

    /// The relation fork's file in the initdb directory (one segment).
    pub fn rel_file(&self, rel: RelTag) -> Vec<u8> {
        assert!(
            !self.pgdata.join(rel.segment_path(1)).exists(),
            "{rel} has several segments"
        );
        std::fs::read(self.pgdata.join(rel.segment_path(0))).unwrap()
    }

    pub fn page_in_file(&self, rel: RelTag, blkno: u32) -> Vec<u8> {
        let file = self.rel_file(rel);
        file[blkno as usize * PAGE_SIZE..][..PAGE_SIZE].to_vec()
    }

    pub fn pagestream_query(&self) -> String {
        format!("pagestream {} {}", self.tenant_id, self.timeline_id)
    }

    /// A connection in pagestream mode.
    pub async fn pagestream(&self) -> Client {
        let mut c = Client::connect(self.addr).await;
        c.startup().await;
        let msgs = c.query(&self.pagestream_query()).await;
        assert_eq!(tags(&msgs), "W");
        c
    }
}

/// Latest version, nothing known about modifications.
pub fn latest(reqid: u64, body: Req) -> PagestreamRequest {
    PagestreamRequest {
        reqid,
        request_lsn: Lsn::MAX,
        not_modified_since: Lsn(0),
        body,
    }
}

type Msg = BackendMessage;

pub fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| char::from(m.tag())).collect()
}

/// The ErrorResponse a message is.
pub fn error_notice(m: &Msg) -> &ErrorNotice {
    match m {
        BackendMessage::ErrorResponse(e) => e,
        other => panic!("expected an ErrorResponse, got {other:?}"),
    }
}

/// (SQLSTATE, message) of the ErrorResponse in `msgs`.
pub fn error_of(msgs: &[Msg]) -> (String, String) {
    let e = msgs
        .iter()
        .find(|m| m.tag() == b'E')
        .map(error_notice)
        .unwrap_or_else(|| panic!("no ErrorResponse in {}", tags(msgs)));
    (e.code.clone(), e.message.clone())
}

pub fn error_text(r: &PagestreamResponse) -> &str {
    match &r.body {
        Resp::Error(m) => m,
        other => panic!("expected an error response, got {other:?}"),
    }
}

/// A low-level frontend: builds messages with the pq_proto codec (or sends
/// raw bytes) and parses backend messages with [`BeDecoder`].
pub struct Client {
    pub sock: TcpStream,
    pub buf: BytesMut,
    pub decoder: BeDecoder,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let sock = TcpStream::connect(addr).await.unwrap();
        sock.set_nodelay(true).unwrap();
        Client {
            sock,
            buf: BytesMut::new(),
            decoder: BeDecoder::default(),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.unwrap();
    }

    pub async fn send(&mut self, msg: FeMessage) {
        let mut b = BytesMut::new();
        msg.write(&mut b).unwrap();
        self.send_raw(&b).await;
    }

    pub async fn send_startup(&mut self, packet: FeStartupPacket) {
        let mut b = BytesMut::new();
        packet.write(&mut b).unwrap();
        self.send_raw(&b).await;
    }

    pub fn startup_message(minor_version: u16) -> FeStartupPacket {
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
    pub async fn fill(&mut self) -> bool {
        let read = tokio::time::timeout(READ_TIMEOUT, self.sock.read_buf(&mut self.buf))
            .await
            .expect("the server did not answer in time");
        matches!(read, Ok(n) if n > 0)
    }

    /// One raw byte (the answer to SSLRequest/GSSENCRequest).
    pub async fn read_byte(&mut self) -> u8 {
        while self.buf.is_empty() {
            assert!(self.fill().await, "EOF instead of a byte");
        }
        self.buf.get_u8()
    }

    /// The next backend message, or None when the server closed the connection.
    pub async fn read(&mut self) -> Option<Msg> {
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

    pub async fn expect(&mut self) -> Msg {
        self.read().await.expect("the server closed the connection")
    }

    /// Asserts that the server closes the connection (after `allowed` messages).
    pub async fn expect_eof(&mut self, allowed: &str) -> Vec<Msg> {
        let mut msgs = Vec::new();
        while let Some(m) = self.read().await {
            msgs.push(m);
        }
        assert_eq!(tags(&msgs), allowed);
        msgs
    }

    /// Messages up to and including ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Msg> {
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
    pub async fn startup(&mut self) {
        self.send_startup(Self::startup_message(0)).await;
        let msgs = self.until_ready().await;
        check_startup_reply(&msgs);
    }

    /// A simple query; messages up to ReadyForQuery or the start of COPY.
    pub async fn query(&mut self, q: &str) -> Vec<Msg> {
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

    pub async fn send_request(&mut self, req: &PagestreamRequest) {
        let mut payload = BytesMut::new();
        req.serialize(&mut payload).unwrap();
        self.send(FeMessage::CopyData(payload.freeze())).await;
    }

    pub async fn recv_response(&mut self) -> PagestreamResponse {
        match self.expect().await {
            BackendMessage::CopyData(body) => PagestreamResponse::parse(&body).unwrap(),
            other => panic!("expected CopyData, got {other:?}"),
        }
    }

    pub async fn request(&mut self, req: PagestreamRequest) -> PagestreamResponse {
        self.send_request(&req).await;
        let resp = self.recv_response().await;
        assert_eq!(resp.reqid, req.reqid);
        resp
    }

    pub async fn get_page(&mut self, rel: RelTag, blkno: u32) -> Bytes {
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

pub fn check_startup_reply(msgs: &[Msg]) {
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
pub async fn check_healthy(f: &Fixture, c: &mut Client) {
    let page = c.get_page(rel(PG_CLASS), 0).await;
    assert_eq!(page[..], f.page_in_file(rel(PG_CLASS), 0)[..]);
}
