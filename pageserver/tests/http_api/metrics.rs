//! `/metrics` reports the timelines' positions.

use zenith_utils::id::{TenantId, TimelineId};

use crate::common;
use crate::common::http_client::{create_tenant, expect};
use crate::{lsn, pg_conf, Server};

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
