//! The pagestream over real sockets: pages, sizes and SLRU segments equal the
//! imported initdb directory's files, pipelined requests come back in order,
//! bad requests get errors while other connections keep working, and the
//! pagebench core reads through the server. The server and client are in
//! `page_service_kit`.

mod common;
mod page_service_kit;

use page_service_kit::*;

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
