//! A pageserver following a stock primary: across restarts, compaction
//! merging its layers, GC removing what an image covers.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use pageserver::config::PageServerConf;
use serde_json::{json, Value};
use zenith_utils::id::TimelineId;
use zenith_utils::lsn::Lsn;

use crate::common;
use crate::common::http_client::{create_tenant, expect};
use crate::{lsn, pg_conf, Server};

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
