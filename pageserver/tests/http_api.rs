//! The HTTP management API, in process (router + TenantManager in a tempdir)
//! and through the real `pageserver` binary (init, run, SIGTERM, pid file).
//!
//! The client is a minimal HTTP/1.1 one over std's TcpStream: one request per
//! connection, `Connection: close`.

mod common;

use common::http_client::{create_tenant, expect, get, request, request_raw};

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pageserver::config::PageServerConf;
use pageserver::http::{self, ApiState};
use pageserver::tenant::mgr::TenantManager;
use pageserver::wal_sources::{WalSources, WAL_SOURCE_FILE_NAME};
use serde_json::{json, Value};
use tokio::sync::watch;
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

// ---------------------------------------------------------------------------
// The API in process
// ---------------------------------------------------------------------------

struct Server {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    mgr: Arc<TenantManager>,
    wal_sources: Arc<WalSources>,
}

impl Server {
    /// Load a TenantManager on `workdir`, restart stored WAL sources, serve on 127.0.0.1:0.
    fn start(workdir: &Path, conf: PageServerConf) -> Server {
        let conf = Arc::new(conf);
        let mgr = Arc::new(TenantManager::load(workdir, Arc::clone(&conf)).unwrap());
        let wal_sources = Arc::new(WalSources::new());
        wal_sources.start_all(&mgr).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, rx) = watch::channel(false);
        let state = Arc::new(ApiState::new(
            Arc::clone(&mgr),
            conf,
            Arc::clone(&wal_sources),
            None,
        ));
        let task = rt.spawn(http::serve(listener, state, rx));
        Server {
            rt,
            addr,
            shutdown,
            task,
            mgr,
            wal_sources,
        }
    }

    /// Stop serving, stop the receivers and flush, like the daemon does.
    fn stop(self) {
        self.shutdown.send(true).unwrap();
        self.rt.block_on(self.task).unwrap().unwrap();
        self.wal_sources.stop_all();
        self.mgr.shutdown().unwrap();
    }
}

fn pg_conf() -> PageServerConf {
    PageServerConf {
        pg_distrib_dir: common::pg_install(),
        ..PageServerConf::default()
    }
}

fn lsn(v: &Value) -> Lsn {
    v.as_str()
        .unwrap_or_else(|| panic!("not an LSN string: {v}"))
        .parse()
        .unwrap()
}

#[test]
fn tenants_timelines_branches_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), pg_conf());
    let a = srv.addr;

    // Tenants: generated and given ids, duplicates, bad ids, listing.
    let t1 = create_tenant(a);
    assert_eq!(t1.len(), 32);
    let t2 = TenantId::generate().to_string();
    let r = expect(
        a,
        "POST",
        "/v1/tenant",
        Some(&json!({ "new_tenant_id": t2 }).to_string()),
        201,
    );
    assert_eq!(r.json(), json!({ "id": t2 }));
    let r = expect(
        a,
        "POST",
        "/v1/tenant",
        Some(&json!({ "new_tenant_id": t2 }).to_string()),
        409,
    );
    assert!(r.msg().contains("already exists"), "{}", r.msg());
    expect(
        a,
        "POST",
        "/v1/tenant",
        Some(r#"{"new_tenant_id": "xyz"}"#),
        400,
    );
    // An empty body is allowed: a generated id.
    expect(a, "POST", "/v1/tenant", None, 201);
    let list = expect(a, "GET", "/v1/tenant", None, 200).json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(&t1.as_str()) && ids.contains(&t2.as_str()));
    // A new tenant has no timelines.
    let r = expect(a, "GET", &format!("/v1/tenant/{t1}/timeline"), None, 200);
    assert_eq!(r.json(), json!([]));

    // Bootstrap a timeline.
    let tls = format!("/v1/tenant/{t1}/timeline");
    let main_id = TimelineId::generate().to_string();
    let body = json!({ "new_timeline_id": main_id }).to_string();
    let main = expect(a, "POST", &tls, Some(&body), 201).json();
    assert_eq!(main["timeline_id"], main_id.as_str());
    assert_eq!(main["tenant_id"], t1.as_str());
    assert_eq!(main["ancestor_timeline_id"], Value::Null);
    assert_eq!(main["ancestor_lsn"], Value::Null);
    assert_eq!(main["wal_source"], Value::Null);
    let last = lsn(&main["last_record_lsn"]);
    assert!(last > Lsn(0));
    assert_eq!(lsn(&main["initdb_lsn"]), last);
    assert_eq!(lsn(&main["disk_consistent_lsn"]), last);
    assert!(lsn(&main["latest_gc_cutoff_lsn"]) <= last);
    assert!(lsn(&main["prev_record_lsn"]) <= last);
    // initdb's databases hold a few MB of catalogs.
    assert!(
        main["current_logical_size"].as_u64().unwrap() > 1_000_000,
        "{main}"
    );
    assert!(
        main["current_physical_size"].as_u64().unwrap() > 0,
        "{main}"
    );
    expect(a, "POST", &tls, Some(&body), 409);
    let main_path = format!("{tls}/{main_id}");
    assert_eq!(expect(a, "GET", &main_path, None, 200).json(), main);

    // Branch at the last LSN; refusals.
    let br_id = TimelineId::generate().to_string();
    let branch = |lsn: Option<String>, ancestor: &str, id: &str| {
        let mut b = json!({ "new_timeline_id": id, "ancestor_timeline_id": ancestor });
        if let Some(l) = lsn {
            b["ancestor_start_lsn"] = json!(l);
        }
        request(a, "POST", &tls, Some(&b.to_string()))
    };
    let r = branch(Some(last.to_string()), &main_id, &br_id);
    assert_eq!(r.status, 201, "{}", r.body);
    let br = r.json();
    assert_eq!(br["ancestor_timeline_id"], main_id.as_str());
    assert_eq!(lsn(&br["ancestor_lsn"]), last);
    assert_eq!(lsn(&br["last_record_lsn"]), last);
    assert_eq!(
        br["current_logical_size"], main["current_logical_size"],
        "a branch reads its ancestor's data"
    );
    assert_eq!(br["current_physical_size"], 0);
    let other = TimelineId::generate().to_string();
    let r = branch(Some((last + 8).to_string()), &main_id, &other);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.msg().contains("above"), "{}", r.msg());
    let r = branch(None, &TimelineId::generate().to_string(), &other);
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.msg().contains("not found"), "{}", r.msg());
    assert_eq!(branch(None, &main_id, &br_id).status, 409);
    assert_eq!(branch(Some("zz".into()), &main_id, &other).status, 400);
    let r = expect(
        a,
        "POST",
        &tls,
        Some(&json!({ "ancestor_start_lsn": last.to_string() }).to_string()),
        400,
    );
    assert!(r.msg().contains("ancestor_timeline_id"), "{}", r.msg());
    expect(
        a,
        "POST",
        &format!("/v1/tenant/{}/timeline", TenantId::generate()),
        Some("{}"),
        404,
    );
    let list = expect(a, "GET", &tls, None, 200).json();
    assert_eq!(list.as_array().unwrap().len(), 2);

    // Checkpoint, and what is not built yet.
    let br_path = format!("{tls}/{br_id}");
    let r = expect(a, "PUT", &format!("{br_path}/checkpoint"), None, 200).json();
    assert_eq!(lsn(&r["disk_consistent_lsn"]), last);
    // Compaction with a single layer: nothing to merge.
    let r = expect(a, "PUT", &format!("{main_path}/compact"), None, 200).json();
    assert_eq!(r["l1_layers_written"], 0, "{r}");
    // GC of the parent keeps everything the branch needs: the cutoff may move
    // up to the branch point, no layer below it is removed.
    let r = expect(
        a,
        "PUT",
        &format!("{main_path}/do_gc"),
        Some(r#"{"gc_horizon": 0, "pitr_interval": "0s"}"#),
        200,
    )
    .json();
    assert_eq!(lsn(&r["cutoff"]), last, "{r}");
    assert_eq!(r["layers_removed"], 0, "{r}");
    let detail = expect(a, "GET", &main_path, None, 200).json();
    assert_eq!(lsn(&detail["latest_gc_cutoff_lsn"]), last);
    assert_eq!(detail["current_logical_size"], main["current_logical_size"]);
    expect(
        a,
        "PUT",
        &format!("{main_path}/do_gc"),
        Some(r#"{"gc_horizon": "big"}"#),
        400,
    );
    let by_ts = format!("{br_path}/get_lsn_by_timestamp");
    // A fresh branch has no commits of its own to go by.
    let r = expect(
        a,
        "GET",
        &format!("{by_ts}?timestamp=2024-01-31T12%3A00%3A00Z"),
        None,
        200,
    )
    .json();
    assert_eq!(r["kind"], "nodata", "{r}");
    expect(a, "GET", &by_ts, None, 400);
    expect(a, "GET", &format!("{by_ts}?timestamp=yesterday"), None, 400);
    expect(
        a,
        "PUT",
        &format!("{tls}/{}/do_gc", TimelineId::generate()),
        None,
        404,
    );

    // Deletion: refused for an ancestor; the branch first, then the parent.
    let r = expect(a, "DELETE", &main_path, None, 409);
    assert!(r.msg().contains(&br_id), "{}", r.msg());
    let br_dir = dir.path().join(format!("tenants/{t1}/timelines/{br_id}"));
    assert!(br_dir.is_dir());
    expect(a, "DELETE", &br_path, None, 200);
    assert!(!br_dir.exists());
    expect(a, "GET", &br_path, None, 404);
    expect(a, "DELETE", &br_path, None, 404);
    expect(a, "DELETE", &main_path, None, 200);
    assert_eq!(expect(a, "GET", &tls, None, 200).json(), json!([]));
    srv.stop();

    // Deletions survive a restart (and leave nothing half-deleted behind).
    let srv = Server::start(dir.path(), pg_conf());
    assert_eq!(expect(srv.addr, "GET", &tls, None, 200).json(), json!([]));
    let left: Vec<_> = std::fs::read_dir(dir.path().join(format!("tenants/{t1}/timelines")))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    srv.stop();
}

#[test]
fn wal_source_is_validated_persisted_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), pg_conf());
    let a = srv.addr;
    let t = create_tenant(a);
    let tl = expect(a, "POST", &format!("/v1/tenant/{t}/timeline"), None, 201).json();
    let tl_id = tl["timeline_id"].as_str().unwrap().to_string();
    let path = format!("/v1/tenant/{t}/timeline/{tl_id}");
    let ws = format!("{path}/wal_source");

    // Validation: every refusal is a 400 with a message, and stores nothing.
    for body in [
        r#"{"connstr": "host"}"#,
        r#"{"connstr": "port=x"}"#,
        r#"{"connstr": "dbname=postgres"}"#,
        r#"{"connstr": "   "}"#,
        r#"{"conn": "host=h"}"#,
        r#"{"connstr": 5}"#,
        "{",
        "",
    ] {
        let r = expect(a, "PUT", &ws, Some(body), 400);
        assert!(!r.msg().is_empty());
    }
    let file = dir.path().join(format!(
        "tenants/{t}/timelines/{tl_id}/{WAL_SOURCE_FILE_NAME}"
    ));
    assert!(!file.exists());
    expect(
        a,
        "PUT",
        &format!(
            "/v1/tenant/{t}/timeline/{}/wal_source",
            TimelineId::generate()
        ),
        Some(r#"{"connstr": "host=h"}"#),
        404,
    );

    // A valid source (nothing listens there: the receiver keeps retrying).
    let port = common::free_port();
    let connstr = format!("host=127.0.0.1 port={port} user=postgres password=secret");
    let r = expect(
        a,
        "PUT",
        &ws,
        Some(&json!({ "connstr": connstr }).to_string()),
        200,
    );
    let shown = format!("host=127.0.0.1 port={port} user=postgres password=***");
    assert_eq!(r.json()["wal_source"], shown.as_str());
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), connstr);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the file may hold a password: {mode:o}");
    }
    assert_eq!(
        expect(a, "GET", &path, None, 200).json()["wal_source"],
        shown.as_str()
    );
    let tenant_id: TenantId = t.parse().unwrap();
    let timeline_id: TimelineId = tl_id.parse().unwrap();
    assert_eq!(
        srv.wal_sources.running_connstr(tenant_id, timeline_id),
        Some(connstr.clone())
    );
    let metrics = get(a, "/metrics").body;
    assert!(metrics.contains("pageserver_wal_receivers 1"), "{metrics}");
    // Replacing it restarts the receiver on the new source.
    let connstr2 = format!("host=127.0.0.1 port={port} user=other slot=s1");
    expect(
        a,
        "PUT",
        &ws,
        Some(&json!({ "connstr": connstr2 }).to_string()),
        200,
    );
    assert_eq!(
        srv.wal_sources.running_connstr(tenant_id, timeline_id),
        Some(connstr2.clone())
    );
    assert_eq!(srv.wal_sources.running_count(), 1);
    srv.stop();

    // After a restart the stored source is followed again.
    let srv = Server::start(dir.path(), pg_conf());
    let a = srv.addr;
    assert_eq!(
        srv.wal_sources.running_connstr(tenant_id, timeline_id),
        Some(connstr2.clone())
    );
    assert_eq!(
        expect(a, "GET", &path, None, 200).json()["wal_source"],
        connstr2.as_str()
    );

    // DELETE stops it and removes the file; it stays gone after a restart.
    let r = expect(a, "DELETE", &ws, None, 200);
    assert_eq!(r.json()["wal_source"], Value::Null);
    assert!(!file.exists());
    assert_eq!(srv.wal_sources.running_count(), 0);
    assert_eq!(
        expect(a, "GET", &path, None, 200).json()["wal_source"],
        Value::Null
    );
    expect(a, "DELETE", &ws, None, 200);
    srv.stop();
    let srv = Server::start(dir.path(), pg_conf());
    assert_eq!(srv.wal_sources.running_count(), 0);
    srv.stop();
}

/// Wait until the timeline has ingested everything the primary has written.
fn wait_caught_up(addr: SocketAddr, tl_path: &str, primary: &common::Server) -> Lsn {
    let target: Lsn = primary
        .psql("postgres", "SELECT pg_current_wal_insert_lsn()")
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = expect(addr, "GET", tl_path, None, 200).json();
        let at = lsn(&d["last_record_lsn"]);
        if at >= target {
            return at;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {target}, at {at}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether tmp_install's postgres has the `--wal-redo` mode (vendor/postgres
/// patches); image layers need it to reconstruct pages from WAL records.
fn wal_redo_available() -> bool {
    let out = Command::new(common::pg_install().join("bin/postgres"))
        .arg("--help")
        .env("LD_LIBRARY_PATH", common::pg_install().join("lib"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("--wal-redo")
}

/// A pageserver in process with a timeline imported from a fresh initdb,
/// following a stock primary on that data directory (through slot `ps`),
/// with three batches of tables each flushed to its own layer.
struct Following {
    dir: tempfile::TempDir,
    conf: PageServerConf,
    srv: Server,
    primary: common::Server,
    tenant: String,
    tl_id: TimelineId,
    tl_path: String,
}

impl Following {
    fn start(conf: PageServerConf) -> Following {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = common::initdb(dir.path());
        let srv = Server::start(&dir.path().join("pageserver"), conf.clone());
        let tenant = create_tenant(srv.addr);
        // A timeline of the primary's own system (bootstrap would make a new one).
        let tl_id = TimelineId::generate();
        srv.mgr
            .get(tenant.parse().unwrap())
            .unwrap()
            .import_timeline(tl_id, &pgdata)
            .unwrap();
        let primary =
            common::Server::start(&pgdata, &["wal_level = replica", "max_wal_senders = 4"]);
        primary.psql(
            "postgres",
            "SELECT pg_create_physical_replication_slot('ps')",
        );
        let tl_path = format!("/v1/tenant/{tenant}/timeline/{tl_id}");
        let connstr = format!("host=127.0.0.1 port={} user=postgres slot=ps", primary.port);
        expect(
            srv.addr,
            "PUT",
            &format!("{tl_path}/wal_source"),
            Some(&json!({ "connstr": connstr }).to_string()),
            200,
        );
        let f = Following {
            dir,
            conf,
            srv,
            primary,
            tenant,
            tl_id,
            tl_path,
        };
        for i in 0..3 {
            f.run_and_flush(&format!(
                "CREATE TABLE t{i} AS SELECT g, md5(g::text) AS m FROM generate_series(1, 20000) g"
            ));
        }
        f
    }

    /// Run `sql` on the primary, wait until the timeline has it, flush it.
    fn run_and_flush(&self, sql: &str) {
        self.primary.psql("postgres", sql);
        let at = wait_caught_up(self.srv.addr, &self.tl_path, &self.primary);
        let r = self.put("checkpoint", None);
        assert!(lsn(&r["disk_consistent_lsn"]) >= at, "{r}");
    }

    fn put(&self, action: &str, body: Option<&str>) -> Value {
        let path = format!("{}/{action}", self.tl_path);
        expect(self.srv.addr, "PUT", &path, body, 200).json()
    }

    fn detail(&self) -> Value {
        expect(self.srv.addr, "GET", &self.tl_path, None, 200).json()
    }
}

#[test]
fn wal_source_follows_a_primary_across_restarts_and_compaction_merges_layers() {
    // No image layers here (they need `postgres --wal-redo`, see the next test).
    let mut conf = pg_conf();
    conf.tenant_config.image_creation_threshold = 1000;
    let f = Following::start(conf);
    let Following {
        dir,
        conf,
        srv,
        primary,
        tl_path,
        ..
    } = f;
    // After a restart the stored source is followed again.
    srv.stop();
    let srv = Server::start(&dir.path().join("pageserver"), conf);
    let a = srv.addr;
    primary.psql(
        "postgres",
        "INSERT INTO t0 SELECT g, 'x' FROM generate_series(1, 5000) g",
    );
    let at = wait_caught_up(a, &tl_path, &primary);
    let r = expect(a, "PUT", &format!("{tl_path}/checkpoint"), None, 200).json();
    assert_eq!(lsn(&r["disk_consistent_lsn"]), at);

    // Compaction merges the level-0 layers (one per flush and the import).
    let before = expect(a, "GET", &tl_path, None, 200).json();
    let r = expect(a, "PUT", &format!("{tl_path}/compact"), None, 200).json();
    assert!(r["l1_layers_written"].as_u64().unwrap() >= 1, "{r}");
    // Fewer deltas than image_creation_threshold above no image: none made.
    assert_eq!(r["image_layer"], Value::Null, "{r}");
    let after = expect(a, "GET", &tl_path, None, 200).json();
    assert_eq!(
        after["current_logical_size"],
        before["current_logical_size"]
    );
    assert!(after["current_logical_size"].as_u64().unwrap() > 0);
    // Nothing is covered by an image yet: GC moves the cutoff, removes nothing.
    let r = expect(
        a,
        "PUT",
        &format!("{tl_path}/do_gc"),
        Some(r#"{"gc_horizon": 0, "pitr_interval": "0s"}"#),
        200,
    )
    .json();
    assert_eq!(r["layers_removed"], 0, "{r}");
    assert_eq!(r["cutoff"], after["disk_consistent_lsn"]);

    expect(a, "DELETE", &format!("{tl_path}/wal_source"), None, 200);
    srv.stop();
    primary.stop();
}

#[test]
fn gc_removes_layers_covered_by_an_image_and_reads_still_work() {
    assert!(
        wal_redo_available(),
        "{}/bin/postgres has no --wal-redo mode: run `make postgres`",
        common::pg_install().display()
    );
    let mut conf = pg_conf();
    conf.tenant_config.image_creation_threshold = 1;
    let f = Following::start(conf);
    let a = f.srv.addr;

    // Compaction merges the level-0 layers and images the result (unless
    // the tenant's background maintenance made the image first).
    let r = f.put("compact", None);
    assert!(r["l1_layers_written"].as_u64().unwrap() >= 1, "{r}");

    // New WAL above the image, flushed; then GC keeps no history.
    f.run_and_flush("UPDATE t1 SET m = 'updated' WHERE g % 10 = 0");
    let before = f.detail();
    let r = f.put("do_gc", Some(r#"{"gc_horizon": 0, "pitr_interval": "0s"}"#));
    assert!(r["layers_removed"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["bytes_removed"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["cutoff"], before["disk_consistent_lsn"], "{r}");
    let after = f.detail();
    assert_eq!(after["latest_gc_cutoff_lsn"], r["cutoff"]);
    assert!(
        after["current_physical_size"].as_u64() < before["current_physical_size"].as_u64(),
        "{before} -> {after}"
    );
    // Reads at the last LSN still work and see the same data.
    assert!(before["current_logical_size"].as_u64().unwrap() > 0);
    assert_eq!(
        after["current_logical_size"],
        before["current_logical_size"]
    );
    // A branch below the cutoff is refused now.
    let r = expect(
        a,
        "POST",
        &format!("/v1/tenant/{}/timeline", f.tenant),
        Some(
            &json!({
                "ancestor_timeline_id": f.tl_id.to_string(),
                "ancestor_start_lsn": before["initdb_lsn"],
            })
            .to_string(),
        ),
        400,
    );
    assert!(r.msg().contains("GC cutoff"), "{}", r.msg());
    f.srv.stop();
    f.primary.stop();
}

#[test]
fn errors_are_json_with_the_right_status() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), PageServerConf::default());
    let a = srv.addr;
    let t = create_tenant(a);
    let tl = TimelineId::generate();

    // Unknown paths.
    for p in [
        "/",
        "/v2/status",
        "/v1/tenant/x/y",
        &format!("/v1/tenant/{t}/timeline/{tl}/nope"),
    ] {
        let r = expect(a, "GET", p, None, 404);
        assert!(r.msg().contains("no such path"), "{}", r.msg());
    }
    // Wrong methods: 405 with Allow.
    let r = expect(a, "DELETE", "/v1/tenant", None, 405);
    assert_eq!(r.headers["allow"], "GET, POST");
    assert!(r.msg().contains("DELETE"));
    let r = expect(
        a,
        "POST",
        &format!("/v1/tenant/{t}/timeline/{tl}/checkpoint"),
        None,
        405,
    );
    assert_eq!(r.headers["allow"], "PUT");
    r.msg();
    expect(a, "PUT", "/v1/status", None, 405).msg();
    // Bad bodies.
    for body in ["{", "[1]", r#"{"bogus": 1}"#, "null x"] {
        expect(a, "POST", "/v1/tenant", Some(body), 400).msg();
    }
    // A body over the limit: refused from its declared length, before it is sent.
    let r = request_raw(
        a,
        b"POST /v1/tenant HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n",
    );
    assert_eq!(r.status, 413, "{}", r.body);
    r.msg();
    // Bad and unknown ids.
    let r = expect(a, "GET", "/v1/tenant/nothex/timeline", None, 400);
    assert!(r.msg().contains("invalid tenant id"), "{}", r.msg());
    let r = expect(a, "GET", &format!("/v1/tenant/{t}/timeline/123"), None, 400);
    assert!(r.msg().contains("invalid timeline id"), "{}", r.msg());
    let unknown = TenantId::generate();
    let r = expect(
        a,
        "GET",
        &format!("/v1/tenant/{unknown}/timeline"),
        None,
        404,
    );
    assert!(r.msg().contains(&unknown.to_string()), "{}", r.msg());
    let r = expect(
        a,
        "GET",
        &format!("/v1/tenant/{t}/timeline/{tl}"),
        None,
        404,
    );
    assert!(r.msg().contains(&tl.to_string()), "{}", r.msg());
    for (m, action) in [
        ("PUT", "checkpoint"),
        ("DELETE", "wal_source"),
        ("PUT", "compact"),
    ] {
        expect(
            a,
            m,
            &format!("/v1/tenant/{t}/timeline/{tl}/{action}"),
            None,
            404,
        )
        .msg();
    }
    expect(
        a,
        "DELETE",
        &format!("/v1/tenant/{t}/timeline/{tl}"),
        None,
        404,
    )
    .msg();
    // Not HTTP at all: hyper answers 400 and the server keeps going.
    let r = request_raw(a, b"NONSENSE\r\n\r\n");
    assert_eq!(r.status, 400);

    // Status and the spec.
    let s = expect(a, "GET", "/v1/status", None, 200).json();
    assert_eq!(s["id"], std::process::id());
    assert!(s["version"].is_string());
    let spec = expect(a, "GET", "/v1/openapi.yml", None, 200);
    assert!(spec.body.starts_with("openapi: "));

    // Metrics: content type, request counters, process metrics.
    let m = expect(a, "GET", "/metrics", None, 200);
    assert_eq!(
        m.headers["content-type"],
        zenith_metrics::METRICS_CONTENT_TYPE
    );
    assert!(
        m.body.contains(
            r#"pageserver_http_requests_total{method="POST",route="/v1/tenant",status="201"}"#
        ),
        "{}",
        m.body
    );
    assert!(m.body.contains(r#"route="unknown",status="404""#));
    assert!(m
        .body
        .contains("pageserver_http_request_duration_seconds_bucket"));
    assert!(m.body.contains("pageserver_tenants"));
    assert!(m.body.contains("process_resident_memory_bytes"));
    // Every metric is listed from the start (docs/monitoring.md), each label value of the
    // labelled histograms too.
    for series in [
        r#"pageserver_smgr_query_seconds_count{query="get_page"}"#,
        r#"pageserver_smgr_query_seconds_count{query="db_size"}"#,
        "pageserver_wait_lsn_seconds_count",
        r#"pageserver_wal_redo_seconds_count{path="postgres"}"#,
        r#"pageserver_storage_operation_seconds_count{operation="gc"}"#,
        "pageserver_wal_ingest_bytes_total",
        "pageserver_wal_ingest_records_total",
        "pageserver_wal_ingest_errors_total",
        "pageserver_flush_errors_total",
        "pageserver_broken_timelines",
    ] {
        assert!(m.body.contains(series), "{series} not in {}", m.body);
    }
    srv.stop();
}

#[test]
fn metrics_report_timeline_positions() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), pg_conf());
    let a = srv.addr;
    let t = create_tenant(a);
    let tl = expect(a, "POST", &format!("/v1/tenant/{t}/timeline"), None, 201).json();
    let id = tl["timeline_id"].as_str().unwrap();
    let last = lsn(&tl["last_record_lsn"]);
    let m = expect(a, "GET", "/metrics", None, 200).body;
    let line = format!(
        r#"pageserver_last_record_lsn{{tenant_id="{t}",timeline_id="{id}"}} {}"#,
        last.0
    );
    assert!(m.contains(&line), "{line} not in {m}");
    assert!(m.contains(&format!(
        r#"pageserver_current_physical_size_bytes{{tenant_id="{t}",timeline_id="{id}"}} {}"#,
        tl["current_physical_size"]
    )));
    let ids = [("tenant_id", t.as_str()), ("timeline_id", id)];
    assert_eq!(
        common::metric_sample(&m, "pageserver_timeline_broken", &ids),
        Some(0.0)
    );
    // The bootstrap wrote layer files; both kinds are reported, with their bytes.
    let kind = |k| [ids[0], ids[1], ("kind", k)];
    let layers =
        ["delta", "image"].map(|k| common::metric_sample(&m, "pageserver_layers", &kind(k)));
    let bytes =
        ["delta", "image"].map(|k| common::metric_sample(&m, "pageserver_layer_bytes", &kind(k)));
    assert!(layers.iter().all(Option::is_some), "{m}");
    assert!(layers.iter().flatten().sum::<f64>() >= 1.0, "{m}");
    let total: f64 = bytes.iter().flatten().sum();
    assert_eq!(total, tl["current_physical_size"].as_f64().unwrap(), "{m}");
    // A broken timeline is 1 in its gauge and counted.
    let tenant_id: TenantId = t.parse().unwrap();
    let timeline_id: TimelineId = id.parse().unwrap();
    srv.mgr
        .get(tenant_id)
        .and_then(|tenant| tenant.get_timeline(timeline_id))
        .unwrap()
        .set_broken("broken by the test".into());
    let m = expect(a, "GET", "/metrics", None, 200).body;
    assert_eq!(
        common::metric_sample(&m, "pageserver_timeline_broken", &ids),
        Some(1.0),
        "{m}"
    );
    assert!(common::metric_sample(&m, "pageserver_broken_timelines", &[]).unwrap() >= 1.0);
    // A deleted timeline disappears from the gauges.
    expect(
        a,
        "DELETE",
        &format!("/v1/tenant/{t}/timeline/{id}"),
        None,
        200,
    );
    let m = expect(a, "GET", "/metrics", None, 200).body;
    assert!(!m.contains(&format!(r#"timeline_id="{id}""#)));
    srv.stop();
}
