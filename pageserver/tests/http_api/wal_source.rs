//! A timeline's WAL source: validated, persisted, restarted with the
//! pageserver.

use pageserver::wal_sources::WAL_SOURCE_FILE_NAME;
use serde_json::{json, Value};
use zenith_utils::id::{TenantId, TimelineId};

use crate::common;
use crate::common::http_client::{create_tenant, expect, get};
use crate::{pg_conf, Server};

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
