//! Errors are JSON with the right HTTP status.

use pageserver::config::PageServerConf;
use zenith_utils::id::{TenantId, TimelineId};

use crate::common::http_client::{create_tenant, expect, request_raw};
use crate::Server;

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
