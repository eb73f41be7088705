"""Crash the pageserver at each failpoint under a pgbench load, restart it, and check that nothing
was lost (docs/testing.md, "Fault injection").

Each case: a compute on `main` runs pgbench; two quiet moments are recorded (LSN + the compute's
pg_dumpall), a branch is taken at the first; then, with pgbench running, one failpoint is armed with
`panic` (a testing build exits at once, like a crash) and the operation that reaches it is started.
After the pageserver has died it is started again through the CLI, and:

- it starts, and every timeline is active (none broken);
- it catches up with the compute's WAL again, and a full basebackup at each recorded LSN, and at
  the end of the load, starts a stock PostgreSQL that dumps exactly like the compute did then
  (and passes pg_amcheck);
- the branch still reads exactly as `main` did at the branch point;
- the interrupted operation either happened completely or not at all, and can be done again.

The pageserver must be a testing build (`make rust-testing`, which `make pytest` runs).
"""

import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import psycopg2
import pytest
import requests
from fixtures.pageserver import PageserverApiError
from fixtures.snapshot import check_snapshot, dumpall
from fixtures.utils import parse_lsn, wait_until
from fixtures.zenith_env import Postgres, ZenithCliError, ZenithEnv, ZenithEnvBuilder, processes_under
from fixtures.zenith_fixtures import PgBin, PortDistributor

NEW_TENANT = "c0ffee00c0ffee00c0ffee00c0ffee00"
NEW_TIMELINE = "facade00facade00facade00facade00"


def arm(env: ZenithEnv, name: str, actions: str = "panic") -> None:
    try:
        env.pageserver.http("PUT", "/v1/failpoints", json=[{"name": name, "actions": actions}])
    except PageserverApiError as e:
        if e.status == 400 and "without failpoints" in e.msg:
            pytest.fail("the pageserver is not a testing build: run `make rust-testing` (make pytest does)")
        raise


def expect_crash(env: ZenithEnv, what: str, op: Callable[[], object]) -> None:
    """Run `op`, which must kill the pageserver; wait until it is gone."""
    pid = env.pageserver.pid
    assert pid is not None
    try:
        op()
    except (requests.ConnectionError, requests.Timeout, PageserverApiError, ZenithCliError, psycopg2.Error, OSError) as e:
        # The request that reached the failpoint loses its connection (or the CLI reports it).
        print(f"{what}: {type(e).__name__}: {str(e)[:200]}")
    wait_until(
        f"the pageserver to crash at {what}",
        lambda: pid not in processes_under(env.pageserver.workdir),
        timeout=60,
    )
    log = env.pageserver.logfile.read_text(errors="replace")
    assert "failpoint" in log or "panicked" in log, "the pageserver died, but not at the failpoint"


class Load:
    """pgbench against the compute in a thread until stopped. While the pageserver is down, a
    stateless compute cannot read pages it does not have in shared buffers: such a run fails with
    a clear error (SQLSTATE 08006, "the pageserver is unreachable"), counted in `unreachable`;
    any other failure is an error of the test."""

    def __init__(self, pg: Postgres):
        self.pg = pg
        self.stop = threading.Event()
        self.errors: List[str] = []
        self.runs = 0
        self.unreachable = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.pg.pgbench("-c", "4", "-T", "2", "-n")
                self.runs += 1
            except Exception as e:  # noqa: BLE001 - reported by finish()
                if "the pageserver is unreachable" in str(e):
                    self.unreachable += 1
                    time.sleep(0.2)
                    continue
                self.errors.append(str(e))
                return

    def __enter__(self) -> "Load":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=120)
        assert not self.errors, self.errors


def quiet_snapshot(env: ZenithEnv, pg: Postgres, pg_bin: PgBin) -> Tuple[str, str]:
    """The compute's flush LSN and pg_dumpall with no writes going on, once the pageserver has
    received that WAL."""
    lsn = pg.safe_psql("SELECT pg_current_wal_flush_lsn()::text")[0][0]
    dump = dumpall(pg, pg_bin)
    env.wait_branch_caught_up(pg)
    return lsn, dump


# Failpoint -> (what reaches it). Each trigger gets the environment and the main timeline id.
def _checkpoint(env: ZenithEnv, tl: str) -> None:
    env.pageserver.checkpoint(env.initial_tenant, tl)


def _compact(env: ZenithEnv, tl: str) -> None:
    env.pageserver.checkpoint(env.initial_tenant, tl)
    env.pageserver.compact(env.initial_tenant, tl)


def _gc(env: ZenithEnv, tl: str) -> None:
    # A horizon wider than all the WAL: the recorded LSNs stay readable.
    env.pageserver.http(
        "PUT",
        f"/v1/tenant/{env.initial_tenant}/timeline/{tl}/do_gc",
        json={"gc_horizon": 1 << 40, "pitr_interval": "0s"},
    )


def _branch(env: ZenithEnv, tl: str) -> None:
    env.zenith_cli(["branch", "b2", "main"])


def _tenant(env: ZenithEnv, tl: str) -> None:
    env.zenith_cli(["tenant", "create", "--tenant-id", NEW_TENANT])


def _timeline(env: ZenithEnv, tl: str) -> None:
    env.pageserver.http(
        "POST", f"/v1/tenant/{env.initial_tenant}/timeline", json={"new_timeline_id": NEW_TIMELINE}
    )


def _read(env: ZenithEnv, tl: str) -> None:
    env.pageserver.basebackup(env.initial_tenant, tl, full=True)


CASES: Dict[str, Callable[[ZenithEnv, str], None]] = {
    "layer-before-rename": _checkpoint,
    "flush-after-layer-write": _checkpoint,
    "flush-frozen": _checkpoint,
    "metadata-save": _checkpoint,
    "compaction-group": _compact,
    "image-layer-write": _compact,
    "gc-before-remove": _gc,
    "branch-create-before-rename": _branch,
    "tenant-create": _tenant,
    "timeline-create-before-rename": _timeline,
    "read-after-snapshot": _read,
}


@pytest.mark.parametrize("failpoint", list(CASES))
def test_crash_at_failpoint(
    failpoint: str,
    zenith_env_builder: ZenithEnvBuilder,
    pg_bin: PgBin,
    test_output_dir: Path,
    port_distributor: PortDistributor,
):
    zenith_env_builder.pageserver_config += [
        # Images are made from one delta up, so compaction reaches image creation.
        "tenant_config.image_creation_threshold=1",
        # Background GC keeps everything: only the armed GC may cut.
        "tenant_config.gc_horizon=1099511627776",
    ]
    env = zenith_env_builder.init_start()
    tenant, main_tl = env.initial_tenant, env.branch_timeline("main")
    ps = env.pageserver
    pg = env.postgres.create_start("main_node")
    pg.pgbench("-i", "-s", "1", "-q")
    pg.pgbench("-c", "2", "-t", "100", "-n")

    # Some history on disk: layers, an L1 level and images, and a branch.
    env.wait_branch_caught_up(pg)
    _compact(env, main_tl)
    lsn1, dump1 = quiet_snapshot(env, pg, pg_bin)
    env.zenith_cli(["branch", "b1", f"main@{lsn1}"])
    b1_tl = env.branch_timeline("b1")
    pg.pgbench("-c", "2", "-t", "200", "-n")
    lsn2, dump2 = quiet_snapshot(env, pg, pg_bin)
    ps.checkpoint(tenant, main_tl)

    with Load(pg) as load:
        wait_until("pgbench to run", lambda: load.runs >= 1, timeout=60)
        arm(env, failpoint)
        expect_crash(env, failpoint, lambda: CASES[failpoint](env, main_tl))
        # The compute keeps serving (clear errors at most) and goes on once the pageserver is back.
        runs = load.runs
        ps.start()
        wait_until("more pgbench", lambda: load.runs > runs + 1, timeout=60)

    # Every timeline loads and is active.
    for t in ps.http("GET", f"/v1/tenant/{tenant}/timeline"):
        assert t["state"] == "active", t
    lsn3, dump3 = quiet_snapshot(env, pg, pg_bin)

    checks = [("main-1", main_tl, lsn1, dump1), ("main-2", main_tl, lsn2, dump2),
              ("main-end", main_tl, lsn3, dump3), ("b1", b1_tl, lsn1, dump1)]
    for name, tl, lsn, expected in checks:
        check_snapshot(ps, tenant, tl, lsn, expected, test_output_dir, pg_bin, port_distributor,
                       name, user=Postgres.USER, amcheck=(name == "main-end"))

    # The interrupted operation happened completely or not at all, and can be done (again).
    if failpoint == "branch-create-before-rename":
        try:
            env.branch_timeline("b2")
        except KeyError:
            env.zenith_cli(["branch", "b2", "main"])
        b2 = env.postgres.create_start("b2_node", branch="b2")
        assert b2.safe_psql("SELECT count(*) FROM pgbench_accounts")[0][0] == 100000
    elif failpoint == "tenant-create":
        try:
            env.zenith_cli(["tenant", "create", "--tenant-id", NEW_TENANT])
        except ZenithCliError as e:
            assert "already exists" in str(e), e
        pg_t = env.postgres.create_start("t_node", branch="main", tenant_id=NEW_TENANT)
        pg_t.safe_psql("CREATE TABLE t AS SELECT 1 AS x")
    elif failpoint == "timeline-create-before-rename":
        ids = [t["timeline_id"] for t in ps.http("GET", f"/v1/tenant/{tenant}/timeline")]
        if NEW_TIMELINE not in ids:
            _timeline(env, main_tl)
        assert ps.timeline_detail(tenant, NEW_TIMELINE)["state"] == "active"
    elif failpoint == "gc-before-remove":
        r = ps.http("PUT", f"/v1/tenant/{tenant}/timeline/{main_tl}/do_gc",
                    json={"gc_horizon": 1 << 40, "pitr_interval": "0s"})
        assert parse_lsn(r["cutoff"]) <= parse_lsn(lsn1), r
    else:
        ps.checkpoint(tenant, main_tl)
        ps.compact(tenant, main_tl)
        detail = ps.timeline_detail(tenant, main_tl)
        assert parse_lsn(detail["disk_consistent_lsn"]) >= parse_lsn(lsn3), detail
