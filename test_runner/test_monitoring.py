"""Monitoring (issue 13): `zenith monitoring start` runs a real Prometheus on every daemon's /metrics
and a prometheus-postgres-exporter per running compute; every PromQL expression of every shipped
Grafana dashboard has data after a short pgbench; a broken timeline shows in the metrics and in
`zenith status` within one scrape interval. Prometheus and the exporters are Debian's packages
(`make test-apt-deps` installs them)."""

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, List

import psycopg2
import pytest

from fixtures.pageserver import PageserverApiError
from fixtures.utils import base_dir, wait_until
from fixtures.zenith_env import ZenithEnv, ZenithEnvBuilder

MONITORING = base_dir / "monitoring"
SCRAPE_INTERVAL = 1.0  # the shipped and generated configurations' scrape_interval
PASSWORD = "pw-for-monitoring-Q4z"


@pytest.fixture(autouse=True)
def need_prometheus():
    for prog in ("prometheus", "promtool", "prometheus-postgres-exporter"):
        if shutil.which(prog) is None:
            pytest.fail(f"{prog} is not installed: run `make test-apt-deps` (apt-get install prometheus prometheus-postgres-exporter)")


def promtool_check(config: Path) -> None:
    p = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"promtool rejects {config}:\n{p.stdout}\n{p.stderr}"
    assert "SUCCESS" in p.stdout + p.stderr


class Prometheus:
    def __init__(self, env: ZenithEnv):
        self.url = f"http://127.0.0.1:{env.config['monitoring']['listen_http_addr'].rsplit(':', 1)[1]}"

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> List[dict]:
        return self.api("query", query=expr)["result"]

    def targets(self) -> List[dict]:
        return self.api("targets", state="active")["activeTargets"]

    def all_up(self, jobs: Dict[str, int]) -> bool:
        """Whether exactly `jobs` (job name -> number of targets) are scraped, all of them up."""
        targets = self.targets()
        found: Dict[str, int] = {}
        for t in targets:
            found[t["labels"]["job"]] = found.get(t["labels"]["job"], 0) + 1
        return found == jobs and all(t["health"] == "up" for t in targets)


def dashboard_exprs() -> List[tuple]:
    """(dashboard file, panel title, expr) of every target of every panel of every dashboard."""
    out = []
    for path in sorted((MONITORING / "dashboards").glob("*.json")):
        d = json.loads(path.read_text())
        for panel in d["panels"]:
            for t in panel.get("targets", []):
                out.append((path.name, panel["title"], t["expr"]))
    return out


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name{labels}` (labels: a subset) in a /metrics body; summed."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        base = series.split("{", 1)[0]
        if base != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
            found = True
    assert found, f"no sample {name}{labels}"
    return total


def get_metrics(addr: str) -> str:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        return r.read().decode()


def test_shipped_config_and_dashboards_are_valid():
    promtool_check(MONITORING / "prometheus.yml")
    names = {p.name for p in (MONITORING / "dashboards").glob("*.json")}
    assert names == {"pageserver.json", "walkeepers.json", "proxy.json", "computes.json"}
    exprs = dashboard_exprs()
    assert len(exprs) >= 30
    for name, title, expr in exprs:
        assert "$" not in expr, f"{name} / {title}: variables make the expression untestable: {expr}"


def test_every_dashboard_expression_has_data(zenith_env_builder: ZenithEnvBuilder):
    env = zenith_env_builder.init_start()
    main = env.postgres.create_start("main_node")
    # An endpoint behind the proxy: a compute the console starts, a session, a refused password.
    env.zenith_cli(["branch", "ep_branch", "main"])
    env.proxy.create_endpoint("ep1", "ep_branch")
    env.proxy.create_role("ep1", "alice", PASSWORD)

    out = env.zenith_cli(["monitoring", "start"]).stdout
    prom = Prometheus(env)
    assert prom.url in out, out
    promtool_check(env.repo_dir / "monitoring" / "prometheus.yml")

    # A compute started after monitoring is picked up too.
    env.zenith_cli(["branch", "late", "main"])
    late = env.postgres.create_start("late_node", branch="late")
    with psycopg2.connect(env.proxy.connstr("alice", PASSWORD, "ep1")) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
    conn.close()
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(env.proxy.connstr("alice", "wrong-password", "ep1")).close()

    computes = 3  # main_node, late_node, ep1's
    jobs = {"pageserver": 1, "walkeeper": 3, "proxy": 1, "console": 1, "compute": computes}
    wait_until("every target to be up", lambda: prom.all_up(jobs), timeout=60)
    labels = {t["labels"].get("compute") for t in prom.targets() if t["labels"]["job"] == "compute"}
    assert labels == {"main_node", "late_node", "ep1"}, labels

    main.pgbench("-i", "-s", "1", "-q")
    main.pgbench("-c", "2", "-T", "5", "-n")
    late.safe_psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i")
    env.wait_branch_caught_up(main)
    # A restarted compute reads every page again: images plus the records pgbench wrote on them,
    # put together by WAL redo. Its exporter is replaced.
    main.stop()
    main.start()
    main.safe_psql("SELECT sum(abalance) FROM pgbench_accounts")

    # The new metrics saw this work (read straight from the daemons).
    ps = get_metrics(env.config["pageserver"]["listen_http_addr"])
    assert metric(ps, "pageserver_smgr_query_seconds_count", query="get_page") > 0
    assert metric(ps, "pageserver_smgr_query_seconds_count", query="nblocks") > 0
    assert metric(ps, "pageserver_wal_ingest_records_total") > 1000
    assert metric(ps, "pageserver_wal_ingest_bytes_total") > 1_000_000
    assert metric(ps, "pageserver_wait_lsn_seconds_count") > 0
    assert metric(ps, "pageserver_wal_redo_seconds_count") > 0
    main_tl = env.branch_timeline("main")
    assert metric(ps, "pageserver_timeline_broken", timeline_id=main_tl) == 0
    assert metric(ps, "pageserver_layers", timeline_id=main_tl) >= 1
    assert metric(ps, "pageserver_layer_bytes", timeline_id=main_tl) > 0
    for w in env.walkeepers:
        wk = get_metrics(w.http_addr)
        assert metric(wk, "walkeeper_wal_bytes_written_total") > 1_000_000
        assert metric(wk, "walkeeper_write_wal_seconds_count") > 0
        assert metric(wk, "walkeeper_flush_wal_seconds_count") > 0
        assert metric(wk, "walkeeper_connected_proposers") == computes
        flush = metric(wk, "walkeeper_flush_lsn", timeline_id=main_tl)
        commit = metric(wk, "walkeeper_commit_lsn", timeline_id=main_tl)
        assert 0 < commit <= flush

    # Every expression of every dashboard returns data, the workload's rates are non-zero.
    missing = {}
    for name, title, expr in dashboard_exprs():
        try:
            wait_until(f"data for {expr}", lambda: prom.query(expr), timeout=10 * SCRAPE_INTERVAL)
        except TimeoutError:
            missing[f"{name} / {title}"] = expr
    assert missing == {}, f"dashboard expressions without data: {json.dumps(missing, indent=2)}"
    for expr in [
        'sum(rate(pageserver_smgr_query_seconds_count{query="get_page"}[1m])) > 0',
        "rate(pageserver_wal_ingest_records_total[1m]) > 0",
        "sum(rate(walkeeper_wal_bytes_written_total[1m])) > 0",
        'sum(rate(pg_stat_database_xact_commit{compute="main_node"}[1m])) > 0',
        "pg_up == 1",
        "proxy_sessions_total > 0",
        'proxy_auth_failures_total{reason="wrong_password"} > 0',
    ]:
        wait_until(expr, lambda: prom.query(expr), timeout=10 * SCRAPE_INTERVAL)

    status = env.zenith_cli(["status"]).stdout
    assert "monitoring: running (Prometheus pid" in status and prom.url in status, status
    assert f"{computes} compute exporter(s)" in status, status

    # A stopped compute leaves Prometheus' targets (its exporter stops with it).
    late.stop()
    jobs["compute"] = computes - 1
    wait_until("late_node's exporter to leave the targets", lambda: prom.all_up(jobs), timeout=30)

    out = env.zenith_cli(["stop"]).stdout
    assert "Prometheus" in out and "postgres_exporter" in out, out
    assert "monitoring: stopped" in env.zenith_cli(["status"]).stdout


def test_broken_timeline_shows_in_metrics_and_status(zenith_env_builder: ZenithEnvBuilder):
    env = zenith_env_builder.init_start()
    main = env.postgres.create_start("main_node")
    main.safe_psql("CREATE TABLE t (i int)")
    env.wait_branch_caught_up(main)
    env.zenith_cli(["monitoring", "start"])
    prom = Prometheus(env)
    tenant, tl = env.initial_tenant, env.branch_timeline("main")
    series = f'pageserver_timeline_broken{{tenant_id="{tenant}",timeline_id="{tl}"}}'
    wait_until("the timeline's gauge in Prometheus", lambda: prom.query(f"{series} == 0"), timeout=30)

    # The next WAL record main's compute writes cannot be filed: the timeline breaks.
    try:
        env.pageserver.http("PUT", "/v1/failpoints", json=[{"name": "wal-ingest-record", "actions": "return"}])
    except PageserverApiError as e:
        if e.status == 400 and "without failpoints" in e.msg:
            pytest.fail("the pageserver is not a testing build: run `make rust-testing` (make pytest does)")
        raise
    main.safe_psql("INSERT INTO t VALUES (1)")
    detail = wait_until(
        "main to be broken",
        lambda: (d := env.pageserver.timeline_detail(tenant, tl))["state"] == "broken" and d,
        timeout=60,
    )
    broken_at = time.monotonic()
    env.pageserver.http("PUT", "/v1/failpoints", json=[{"name": "wal-ingest-record", "actions": "off"}])
    assert "failpoint wal-ingest-record" in detail["broken_reason"], detail

    # /metrics at once, Prometheus within a scrape interval (plus the time to ask it).
    ps = get_metrics(env.config["pageserver"]["listen_http_addr"])
    assert metric(ps, "pageserver_timeline_broken", tenant_id=tenant, timeline_id=tl) == 1
    assert metric(ps, "pageserver_broken_timelines") >= 1
    wait_until("Prometheus to see the broken timeline", lambda: prom.query(f"{series} == 1"), timeout=SCRAPE_INTERVAL + 1)
    assert prom.query("pageserver_broken_timelines >= 1")
    assert time.monotonic() - broken_at < SCRAPE_INTERVAL + 1.5

    status = env.zenith_cli(["status"]).stdout
    line = next(ln for ln in status.splitlines() if f"timeline {tl}" in ln)
    assert "BROKEN: " in line and "failpoint wal-ingest-record" in line, status
