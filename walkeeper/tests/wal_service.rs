//! The walkeeper daemon end to end: three real `walkeeper` processes, a
//! proposer written against the protocol (this file), WAL that initdb
//! wrote, replication of the committed WAL back out, restarts with kill -9,
//! and bad input on the wire.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use walkeeper::proposer::{commit_lsn, elect, quorum, start_streaming_at};
use walkeeper::proto::*;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;
use zenith_utils::postgres_client::{ClientError, Config, Connection, CopyBoth};
use zenith_utils::pq_proto::replication::ReplicationMessage;
use zenith_utils::pq_proto::SqlState;

const SEG_START: Lsn = Lsn(0x0100_0000);

fn wal() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../postgres_ffi/testdata/initdb_wal_head.zst"
    );
    zstd::decode_all(&std::fs::read(path).unwrap()[..]).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Walkeeper {
    id: u64,
    dir: PathBuf,
    pg_port: u16,
    http_port: u16,
    child: Option<Child>,
}

impl Walkeeper {
    fn new(root: &Path, id: u64) -> Walkeeper {
        Walkeeper {
            id,
            dir: root.join(format!("wk{id}")),
            pg_port: free_port(),
            http_port: free_port(),
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_walkeeper"))
            .arg("-D")
            .arg(&self.dir)
            .args(["--id", &self.id.to_string()])
            .args(["--listen-pg", &format!("127.0.0.1:{}", self.pg_port)])
            .args(["--listen-http", &format!("127.0.0.1:{}", self.http_port)])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.get("/v1/status").is_err() {
            assert!(
                Instant::now() < deadline,
                "walkeeper {} did not start",
                self.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.http_port);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent.get(&url).call().map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.body_mut().read_json().map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{status} {body}"));
        }
        Ok(body)
    }

    /// Arms a failpoint (`PUT /v1/failpoints`; the test build has them).
    fn failpoint(&self, name: &str, actions: &str) {
        let url = format!("http://127.0.0.1:{}/v1/failpoints", self.http_port);
        let body = serde_json::json!([{ "name": name, "actions": actions }]);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent.put(&url).send_json(&body).unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        assert_eq!(status, 200, "{text}");
    }

    fn timeline(&self, t: &Ids) -> serde_json::Value {
        self.get(&format!("/v1/tenant/{}/timeline/{}", t.tenant, t.timeline))
            .unwrap()
    }

    fn config(&self, t: &Ids) -> Config {
        Config::new("127.0.0.1", self.pg_port, "zenith").param(
            "options",
            format!("-c tenant_id={} -c timeline_id={}", t.tenant, t.timeline),
        )
    }
}

impl Drop for Walkeeper {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[derive(Clone, Copy)]
struct Ids {
    tenant: TenantId,
    timeline: TimelineId,
}

fn greeting(t: &Ids) -> ProposerGreeting {
    ProposerGreeting {
        protocol_version: PROTOCOL_VERSION,
        pg_version: 150002,
        proposer_id: [5; 16],
        system_id: 7_000_000_000_000_000_001,
        timeline_id: t.timeline,
        tenant_id: t.tenant,
        tli: 1,
        wal_seg_size: 16 << 20,
    }
}

async fn push(wk: &Walkeeper, t: &Ids) -> Result<CopyBoth, ClientError> {
    Connection::connect(&wk.config(t))
        .await?
        .copy_both("START_WAL_PUSH")
        .await
}

async fn send(c: &mut CopyBoth, m: &ProposerMessage) -> Result<(), ClientError> {
    c.queue(m.to_bytes())?;
    c.flush().await
}

async fn request(c: &mut CopyBoth, m: &ProposerMessage) -> Result<AcceptorMessage, ClientError> {
    send(c, m).await?;
    let reply = c.recv().await?.expect("a reply");
    Ok(AcceptorMessage::parse(&reply).expect("a valid acceptor message"))
}

/// A proposer over all walkeepers that answered; elected in `term`.
struct Proposer {
    conns: Vec<CopyBoth>,
    term: Term,
    epoch_start: Lsn,
    truncate: Lsn,
    flushed: Vec<Lsn>,
    end: Lsn,
    /// The proposer's WAL from SEG_START.
    log: Vec<u8>,
}

impl Proposer {
    /// `log`: the proposer's WAL from SEG_START up to the epoch start (what
    /// recovery from the donor would have read).
    async fn elect(wks: &[&Walkeeper], t: &Ids, term: Option<Term>, log: &[u8]) -> Proposer {
        let mut conns = Vec::new();
        let mut max_term = 0;
        for wk in wks {
            let mut c = push(wk, t).await.unwrap();
            match request(&mut c, &ProposerMessage::Greeting(greeting(t)))
                .await
                .unwrap()
            {
                AcceptorMessage::Greeting(g) => max_term = max_term.max(g.term),
                other => panic!("{other:?}"),
            }
            conns.push(c);
        }
        let term = term.unwrap_or(max_term + 1);
        let mut votes = Vec::new();
        for c in &mut conns {
            let req = ProposerMessage::VoteRequest(VoteRequest {
                term,
                proposer_id: [5; 16],
            });
            match request(c, &req).await.unwrap() {
                AcceptorMessage::VoteResponse(v) => votes.push(v),
                other => panic!("{other:?}"),
            }
        }
        assert!(votes.iter().all(|v| v.vote_given), "{votes:?}");
        assert!(votes.len() >= quorum(3));
        let election = elect(term, &votes, SEG_START).expect("elected");
        let mut flushed = Vec::new();
        for (c, v) in conns.iter_mut().zip(&votes) {
            let start = start_streaming_at(
                &election.history,
                &v.term_history,
                v.flush_lsn,
                election.truncate_lsn,
            );
            let m = ProposerMessage::Elected(ProposerElected {
                term,
                start_streaming_at: start,
                term_history: election.history.clone(),
                timeline_start_lsn: election.timeline_start_lsn,
            });
            send(c, &m).await.unwrap();
            flushed.push(start);
        }
        Proposer {
            conns,
            term,
            epoch_start: election.epoch_start_lsn,
            truncate: election.truncate_lsn,
            flushed,
            end: election.epoch_start_lsn,
            log: log[..(election.epoch_start_lsn.0 - SEG_START.0) as usize].to_vec(),
        }
    }

    fn commit(&self) -> Lsn {
        commit_lsn(&self.flushed, quorum(3), self.epoch_start)
    }

    /// Append `data` to the proposer's WAL and send every walkeeper what
    /// it lacks (from its own flush LSN); returns each one's reply term.
    async fn append(&mut self, data: &[u8]) -> Vec<Result<Term, ClientError>> {
        self.log.extend_from_slice(data);
        self.end = Lsn(SEG_START.0 + self.log.len() as u64);
        let mut out = Vec::new();
        for i in 0..self.conns.len() {
            let mut result;
            loop {
                let begin = self.flushed[i];
                let upto = Lsn(self.end.0.min(begin.0 + MAX_SEND_SIZE as u64));
                let m = ProposerMessage::Append(AppendRequest {
                    term: self.term,
                    epoch_start_lsn: self.epoch_start,
                    begin_lsn: begin,
                    end_lsn: upto,
                    commit_lsn: self.commit(),
                    truncate_lsn: self.truncate,
                    proposer_id: [5; 16],
                    wal_data: Bytes::copy_from_slice(
                        &self.log
                            [(begin.0 - SEG_START.0) as usize..(upto.0 - SEG_START.0) as usize],
                    ),
                });
                match request(&mut self.conns[i], &m).await {
                    Ok(AcceptorMessage::AppendResponse(r)) => {
                        result = Ok(r.term);
                        if r.term != self.term {
                            break;
                        }
                        self.flushed[i] = r.flush_lsn;
                    }
                    Ok(other) => panic!("{other:?}"),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
                if self.flushed[i] >= self.end {
                    break;
                }
            }
            out.push(result);
        }
        out
    }
}

fn lsn(v: &serde_json::Value, key: &str) -> Lsn {
    v[key].as_str().unwrap().parse().unwrap()
}

/// Read committed WAL from `wk` over START_REPLICATION, from `start` up to `end`.
async fn replicate(wk: &Walkeeper, t: &Ids, start: Lsn, end: Lsn) -> Vec<u8> {
    let conn = Connection::connect(&wk.config(t)).await.unwrap();
    let mut r = conn
        .copy_both(&format!("START_REPLICATION PHYSICAL {start}"))
        .await
        .unwrap();
    let mut out = Vec::new();
    while Lsn(start.0 + out.len() as u64) < end {
        let data = tokio::time::timeout(Duration::from_secs(20), r.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let ReplicationMessage::XLogData(x) = ReplicationMessage::parse(&data).unwrap() {
            assert_eq!(x.wal_start, Lsn(start.0 + out.len() as u64));
            assert!(x.wal_end <= end || x.wal_end >= end);
            out.extend_from_slice(&x.data);
        }
    }
    out
}

fn sqlstate(e: &ClientError) -> Option<SqlState> {
    e.sql_state()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_commit_replication_restart_and_bad_input() {
    let root = tempfile::tempdir().unwrap();
    let mut wks: Vec<Walkeeper> = (1..=3).map(|i| Walkeeper::new(root.path(), i)).collect();
    for w in &mut wks {
        w.start();
    }
    let t = Ids {
        tenant: TenantId::from_array([0x11; 16]),
        timeline: TimelineId::from_array([0x22; 16]),
    };
    let input = wal();

    // Elect, stream 2 MiB of WAL in 128 KiB appends, commit on the quorum.
    let mut p = Proposer::elect(&[&wks[0], &wks[1], &wks[2]], &t, None, &[]).await;
    assert_eq!(p.term, 1);
    for chunk in input.chunks(100_000) {
        for r in p.append(chunk).await {
            assert_eq!(r.unwrap(), 1);
        }
    }
    let end = Lsn(SEG_START.0 + input.len() as u64);
    assert_eq!(p.commit(), end);
    // One more (empty) append carries the final commit LSN.
    p.append(&[]).await;
    for w in &wks {
        let st = w.timeline(&t);
        assert_eq!(lsn(&st, "flush_lsn"), end, "{st}");
        assert_eq!(lsn(&st, "commit_lsn"), end, "{st}");
        assert_eq!(st["term"], 1);
        assert_eq!(st["epoch"], 1);
        assert!(st["proposer"].is_string(), "{st}");
    }
    // Segment file on disk holds exactly the WAL.
    let seg = std::fs::read(wks[0].dir.join(format!(
        "{}/{}/000000010000000000000001.partial",
        t.tenant, t.timeline
    )))
    .unwrap();
    assert_eq!(&seg[..input.len()], &input[..]);

    // Committed WAL comes back out over physical replication.
    let got = replicate(&wks[1], &t, SEG_START, end).await;
    assert_eq!(&got[..input.len()], &input[..]);

    // Bad input on other connections; the proposer's stream is unaffected.
    let other = Ids {
        tenant: TenantId::from_array([0x33; 16]),
        timeline: TimelineId::from_array([0x44; 16]),
    };
    // Garbage instead of a greeting.
    let mut c = push(&wks[0], &other).await.unwrap();
    c.queue(Bytes::from_static(b"this is not a greeting"))
        .unwrap();
    c.flush().await.unwrap();
    let e = c.recv().await.unwrap_err();
    assert_eq!(sqlstate(&e), Some(SqlState::PROTOCOL_VIOLATION), "{e}");
    // A greeting for another timeline than the connection's.
    let mut c = push(&wks[0], &other).await.unwrap();
    let e = request(&mut c, &ProposerMessage::Greeting(greeting(&t)))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), Some(SqlState::INVALID_PARAMETER_VALUE), "{e}");
    assert!(e.to_string().contains("tenant"), "{e}");
    // A protocol version mismatch.
    let mut c = push(&wks[0], &other).await.unwrap();
    let mut g = greeting(&other);
    g.protocol_version = 99;
    let e = request(&mut c, &ProposerMessage::Greeting(g))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), Some(SqlState::INVALID_PARAMETER_VALUE), "{e}");
    assert!(e.to_string().contains("protocol version 99"), "{e}");
    // An AppendRequest before any election.
    let mut c = push(&wks[0], &other).await.unwrap();
    request(&mut c, &ProposerMessage::Greeting(greeting(&other)))
        .await
        .unwrap();
    let m = ProposerMessage::Append(AppendRequest {
        term: 1,
        epoch_start_lsn: SEG_START,
        begin_lsn: SEG_START,
        end_lsn: SEG_START,
        commit_lsn: Lsn(0),
        truncate_lsn: Lsn(0),
        proposer_id: [6; 16],
        wal_data: Bytes::new(),
    });
    let e = request(&mut c, &m).await.unwrap_err();
    assert_eq!(
        sqlstate(&e),
        Some(SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
        "{e}"
    );
    assert!(e.to_string().contains("before ProposerElected"), "{e}");
    // No timeline named: a clear error.
    let conn = Connection::connect(&Config::new("127.0.0.1", wks[0].pg_port, "zenith"))
        .await
        .unwrap();
    let Err(e) = conn.copy_both("START_WAL_PUSH").await else {
        panic!("START_WAL_PUSH without a timeline was accepted");
    };
    assert!(e.to_string().contains("tenant_id"), "{e}");
    // Unknown timeline over HTTP: 404 with a JSON body.
    let e = wks[0]
        .get(
            "/v1/tenant/55555555555555555555555555555555/timeline/66666666666666666666666666666666",
        )
        .unwrap_err();
    assert!(e.starts_with("404"), "{e}");
    // The first proposer carries on.
    for r in p.append(&[]).await {
        assert_eq!(r.unwrap(), 1);
    }

    // kill -9 and restart one walkeeper: it finds the end of its WAL again
    // (the end of the last whole record, at or below what was written).
    wks[2].kill9();
    wks[2].start();
    let st = wks[2].timeline(&t);
    assert_eq!(st["term"], 1);
    let found = lsn(&st, "flush_lsn");
    assert!(found <= end && found.0 > end.0 - 70_000, "{st}");

    // A second proposer in term 2 fences the first.
    drop(p.conns.pop()); // the restarted walkeeper's connection is gone anyway
    let mut p2 = Proposer::elect(&[&wks[0], &wks[1], &wks[2]], &t, None, &input).await;
    assert_eq!(p2.term, 2);
    for r in p.append(b"late").await {
        assert_eq!(r.unwrap(), 2, "the old proposer must learn the new term");
    }
    // The new proposer's WAL starts where the most advanced log ended.
    assert_eq!(p2.epoch_start, end);
    for r in p2.append(&[]).await {
        assert_eq!(r.unwrap(), 2);
    }
    for w in &wks {
        let st = w.timeline(&t);
        assert_eq!(lsn(&st, "flush_lsn"), end, "{st}");
        assert_eq!(st["term"], 2);
    }
}

/// One walkeeper's fsync stalls (a failpoint sleeps 4 s in it) while it
/// holds the acceptor's lock: its HTTP status and replication of committed
/// WAL to the pageserver must go on answering meanwhile. Before status and
/// replication read a published snapshot, both waited for the fsync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_fsync_stalls_neither_status_nor_replication() {
    const STALL: Duration = Duration::from_secs(4);
    let root = tempfile::tempdir().unwrap();
    let mut wks: Vec<Walkeeper> = (1..=3).map(|i| Walkeeper::new(root.path(), i)).collect();
    for w in &mut wks {
        w.start();
    }
    let t = Ids {
        tenant: TenantId::from_array([0x17; 16]),
        timeline: TimelineId::from_array([0x18; 16]),
    };
    let input = wal();
    let (first, second) = input.split_at(input.len() / 2);
    let mut p = Proposer::elect(&[&wks[0], &wks[1], &wks[2]], &t, None, &[]).await;
    for r in p.append(first).await {
        assert_eq!(r.unwrap(), 1);
    }
    // An empty append carries the commit LSN.
    p.append(&[]).await;
    let committed = Lsn(SEG_START.0 + first.len() as u64);
    assert_eq!(lsn(&wks[0].timeline(&t), "commit_lsn"), committed);

    // The next append to walkeeper 1 stalls in its fsync.
    wks[0].failpoint("walkeeper-fsync", &format!("sleep({})", STALL.as_millis()));
    let end = Lsn(committed.0 + second.len().min(MAX_SEND_SIZE) as u64);
    let m = ProposerMessage::Append(AppendRequest {
        term: p.term,
        epoch_start_lsn: p.epoch_start,
        begin_lsn: committed,
        end_lsn: end,
        commit_lsn: committed,
        truncate_lsn: p.truncate,
        proposer_id: [5; 16],
        wal_data: Bytes::copy_from_slice(&second[..(end.0 - committed.0) as usize]),
    });
    let sent = Instant::now();
    let mut conn = p.conns.remove(0);
    let stalled = tokio::spawn(async move {
        let reply = request(&mut conn, &m).await.unwrap();
        (reply, sent.elapsed())
    });
    // Let the request reach the fsync.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Status answers at once, from the last published state.
    let asked = Instant::now();
    let st = tokio::task::block_in_place(|| wks[0].timeline(&t));
    let status_took = asked.elapsed();
    assert_eq!(lsn(&st, "commit_lsn"), committed, "{st}");
    assert!(
        status_took < Duration::from_secs(1),
        "status took {status_took:?} during a stalled fsync"
    );
    let metrics_took = {
        let asked = Instant::now();
        let url = format!("http://127.0.0.1:{}/metrics", wks[0].http_port);
        tokio::task::block_in_place(|| ureq::get(&url).call().unwrap());
        asked.elapsed()
    };
    assert!(
        metrics_took < Duration::from_secs(1),
        "/metrics took {metrics_took:?} during a stalled fsync"
    );

    // Replication of the committed WAL goes on too.
    let asked = Instant::now();
    let got = replicate(&wks[0], &t, SEG_START, committed).await;
    let replication_took = asked.elapsed();
    assert_eq!(&got[..first.len()], first);
    assert!(
        replication_took < Duration::from_secs(2),
        "replication took {replication_took:?} during a stalled fsync"
    );
    assert!(
        !stalled.is_finished(),
        "the fsync did not stall (status {status_took:?}, replication {replication_took:?})"
    );

    // The stalled append completes once the fsync does.
    let (reply, took) = stalled.await.unwrap();
    match reply {
        AcceptorMessage::AppendResponse(r) => assert_eq!(r.flush_lsn, end),
        other => panic!("{other:?}"),
    }
    assert!(took >= STALL - Duration::from_millis(500), "{took:?}");
    wks[0].failpoint("walkeeper-fsync", "off");
    assert_eq!(lsn(&wks[0].timeline(&t), "flush_lsn"), end);
}
