//! Tenants, timelines and branches: creation, listing, details, and
//! what is refused.

use serde_json::{json, Value};
use zenith_utils::id::{TenantId, TimelineId};
use zenith_utils::lsn::Lsn;

use crate::common::http_client::{create_tenant, expect, request};
use crate::{lsn, pg_conf, Server};

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
