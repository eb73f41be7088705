"""The pageserver daemon following a stock PostgreSQL 15 primary (docs/architecture.md §7, §8).

The pageserver is the one of a ZenithEnv (started and stopped through the zenith CLI); a tenant's
timeline is imported from the primary's data directory, the primary streams WAL to the
pageserver through a physical replication slot, and at noted moments a stock PostgreSQL started
from `basebackup --full` at the noted LSN must dump exactly like the primary did then, and pass
pg_amcheck. The pageserver is killed with -9 in the middle of ingest and must resume from
disk_consistent_lsn with nothing lost.
"""

import os
from pathlib import Path

from fixtures.pageserver import Pageserver
from fixtures.snapshot import check_compute_snapshot, check_snapshot, dumpall
from fixtures.zenith_env import ZenithEnvBuilder
from fixtures.utils import format_lsn, parse_lsn, wait_until
from fixtures.zenith_fixtures import PgBin, PortDistributor, VanillaPostgres

SCALE = int(os.environ.get("ZENITH_TEST_PGBENCH_SCALE", "1"))


def wait_ingested(ps: Pageserver, tenant: str, timeline: str, lsn: int) -> None:
    wait_until(
        f"the pageserver to ingest up to {lsn:X}",
        lambda: parse_lsn(ps.timeline_detail(tenant, timeline)["last_record_lsn"]) >= lsn,
        timeout=120,
    )


def test_follow_primary_snapshots_and_restart(
    zenith_env_builder: ZenithEnvBuilder,
    vanilla_pg: VanillaPostgres,
    pg_bin: PgBin,
    test_output_dir: Path,
    port_distributor: PortDistributor,
):
    ps = zenith_env_builder.init_start().pageserver
    primary = vanilla_pg
    primary.initdb()
    tenant = ps.tenant_create()
    timeline = ps.timeline_create(tenant, import_pgdata=str(primary.pgdata))["timeline_id"]
    primary.configure(["wal_level = replica", "max_wal_senders = 4", "max_prepared_transactions = 4"])
    primary.start()
    primary.safe_psql("SELECT pg_create_physical_replication_slot('pageserver')")
    ps.set_wal_source(
        tenant, timeline, f"host=127.0.0.1 port={primary.port} user={primary.user} slot=pageserver"
    )

    primary.pgbench("-i", "-s", str(SCALE))
    primary.pgbench("-t", "200", "-c", "2")
    for sql in [
        "CREATE DATABASE extra STRATEGY wal_log",
        "CREATE DATABASE copied STRATEGY file_copy",
        "CREATE DATABASE dropped",
        "DROP DATABASE dropped",
        "CREATE SEQUENCE seq",
        "SELECT nextval('seq') FROM generate_series(1, 7)",
        "CREATE TABLE t (id int primary key, v text)",
        "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 3000) g",
        "TRUNCATE pgbench_history",
        "BEGIN; INSERT INTO t VALUES (-1, 'sub'); SAVEPOINT a; INSERT INTO t VALUES (-2, 'rolled back'); "
        "ROLLBACK TO a; INSERT INTO t VALUES (-3, 'kept'); COMMIT;",
        "BEGIN; INSERT INTO t VALUES (-4, 'prepared'); PREPARE TRANSACTION 'gx1';",
        "COMMIT PREPARED 'gx1'",
        "BEGIN; INSERT INTO t VALUES (-5, 'still prepared'); PREPARE TRANSACTION 'gx2';",
    ]:
        primary.safe_psql(sql)

    snapshots = []
    for i in range(2):
        lsn = primary.safe_psql("SELECT pg_current_wal_insert_lsn()")[0][0]
        snapshots.append((lsn, dumpall(primary, pg_bin)))
        wait_ingested(ps, tenant, timeline, parse_lsn(lsn))
        primary.pgbench("-t", "100", "-c", "2")
        primary.safe_psql(f"INSERT INTO t SELECT g, 'round {i}' FROM generate_series(10000 * {i + 1}, 10000 * {i + 1} + 500) g")
        if i == 0:
            # Crash the pageserver in the middle of ingest; it must resume.
            ps.stop(immediate=True)
            primary.pgbench("-t", "100", "-c", "2")
            ps.start()

    lsn = primary.safe_psql("SELECT pg_current_wal_insert_lsn()")[0][0]
    snapshots.append((lsn, dumpall(primary, pg_bin)))
    wait_ingested(ps, tenant, timeline, parse_lsn(lsn))
    detail = ps.timeline_detail(tenant, timeline)
    assert parse_lsn(detail["disk_consistent_lsn"]) <= parse_lsn(detail["last_record_lsn"])

    for n, (lsn, expected) in enumerate(snapshots):
        check_snapshot(ps, tenant, timeline, lsn, expected, test_output_dir, pg_bin, port_distributor, str(n))


def test_branch_at_lsn_and_gc(
    test_output_dir: Path,
    zenith_env_builder: ZenithEnvBuilder,
    vanilla_pg: VanillaPostgres,
    pg_bin: PgBin,
    port_distributor: PortDistributor,
):
    """A branch at an LSN reads its parent as of that LSN; later parent writes are invisible; GC with
    a small horizon removes layers (physical size drops), keeps what the branch needs, and refuses
    reads below the cutoff with a clear error."""
    zenith_env_builder.pageserver_config += [
        "wait_lsn_timeout='5s'",
        "tenant_config.checkpoint_distance=1048576",
        "tenant_config.image_creation_threshold=2",
        "tenant_config.compaction_threshold=4",
    ]
    ps = zenith_env_builder.init_start().pageserver
    primary = vanilla_pg
    primary.initdb()
    tenant = ps.tenant_create()
    main = ps.timeline_create(tenant, import_pgdata=str(primary.pgdata))["timeline_id"]
    primary.configure(["wal_level = replica", "max_wal_senders = 4"])
    primary.start()
    primary.safe_psql("SELECT pg_create_physical_replication_slot('pageserver')")
    ps.set_wal_source(tenant, main, f"host=127.0.0.1 port={primary.port} user={primary.user} slot=pageserver")

    primary.pgbench("-i", "-s", str(SCALE))
    branch_lsn = primary.safe_psql("SELECT pg_current_wal_insert_lsn()")[0][0]
    at_branch = dumpall(primary, pg_bin)
    wait_ingested(ps, tenant, main, parse_lsn(branch_lsn))
    import_lsn = parse_lsn(ps.timeline_detail(tenant, main)["initdb_lsn"])
    mid_time = primary.safe_psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    )[0][0]

    # Enough later writes for several layers, compaction and images.
    for _ in range(4):
        primary.pgbench("-t", "300", "-c", "2")
    primary.safe_psql("CREATE TABLE after_branch AS SELECT generate_series(1, 1000) g")
    end = primary.safe_psql("SELECT pg_current_wal_insert_lsn()")[0][0]
    wait_ingested(ps, tenant, main, parse_lsn(end))

    # get_lsn_by_timestamp: the last commit before mid_time is pgbench's initialization.
    found = ps.http("GET", f"/v1/tenant/{tenant}/timeline/{main}/get_lsn_by_timestamp",
                    params={"timestamp": mid_time})
    assert found["kind"] == "present", found
    assert import_lsn < parse_lsn(found["lsn"]) <= parse_lsn(end), (found, mid_time)

    branch = ps.timeline_create(tenant, ancestor_timeline_id=main, ancestor_start_lsn=branch_lsn)
    assert branch["ancestor_lsn"] == branch_lsn or parse_lsn(branch["ancestor_lsn"]) == parse_lsn(branch_lsn)
    check_snapshot(ps, tenant, branch["timeline_id"], branch_lsn, at_branch, test_output_dir, pg_bin,
                   port_distributor, "branch")

    ps.checkpoint(tenant, main)
    ps.compact(tenant, main)
    ps.checkpoint(tenant, main)
    ps.compact(tenant, main)
    before = ps.timeline_detail(tenant, main)["current_physical_size"]
    gc = ps.http("PUT", f"/v1/tenant/{tenant}/timeline/{main}/do_gc", json={"gc_horizon": 0, "pitr_interval": "0s"})
    after = ps.timeline_detail(tenant, main)["current_physical_size"]
    assert gc["layers_removed"] > 0, gc
    assert after < before, (before, after, gc)

    # The branch still reads its data as of the branch point.
    check_snapshot(ps, tenant, branch["timeline_id"], branch_lsn, at_branch, test_output_dir, pg_bin,
                   port_distributor, "branch-after-gc")
    # Reading the parent below the cutoff is a clear error.
    try:
        ps.basebackup(tenant, main, branch_lsn, full=True)
        raise AssertionError("basebackup below the GC cutoff succeeded")
    except Exception as e:  # noqa: BLE001
        assert "GC cutoff" in str(e) or "gc cutoff" in str(e).lower(), e



def test_dropped_tablespace_leaves_no_trace(
    zenith_env_builder: ZenithEnvBuilder, pg_bin: PgBin, test_output_dir: Path, port_distributor: PortDistributor
):
    """DROP TABLESPACE removes the tablespace's database directories from the pageserver: a full
    basebackup afterwards works and dumps like the compute. (The drop record used to be ignored,
    and every later basebackup failed: "tablespace N is not supported by basebackup yet"; found by
    PostgreSQL's regression suite, test_pg_regress.py.)"""
    env = zenith_env_builder.init_start()
    pg = env.postgres.create_start("main")
    location = test_output_dir / "tblspc"
    location.mkdir()
    pg.safe_psql(f"CREATE TABLESPACE ts LOCATION '{location}'")
    pg.safe_psql("CREATE TABLE t(x int) TABLESPACE ts")
    pg.safe_psql("INSERT INTO t VALUES (1)")
    pg.safe_psql("DROP TABLE t")
    pg.safe_psql("DROP TABLESPACE ts")
    pg.safe_psql("CREATE TABLE u AS SELECT 1 AS x")
    check_compute_snapshot(env, pg, "after-drop", test_output_dir, pg_bin, port_distributor)


def test_full_basebackup_has_unlogged_relations(
    zenith_env_builder: ZenithEnvBuilder, pg_bin: PgBin, test_output_dir: Path, port_distributor: PortDistributor
):
    """A stock PostgreSQL started from a full basebackup (a clean shutdown: it does not reset
    unlogged relations) finds the main fork of every unlogged table, index and sequence, empty as
    after a reset, copied from its init fork. (It failed with "could not open file" on the first
    unlogged relation read; found by PostgreSQL's regression suite, test_pg_regress.py.)"""
    env = zenith_env_builder.init_start()
    pg = env.postgres.create_start("main")
    pg.safe_psql("CREATE UNLOGGED TABLE ut(id int PRIMARY KEY GENERATED ALWAYS AS IDENTITY, v text)")
    pg.safe_psql("INSERT INTO ut(v) SELECT 'x' FROM generate_series(1, 100)")
    pg.safe_psql("CREATE UNLOGGED SEQUENCE us")
    pg.safe_psql("CREATE TABLE t AS SELECT 1 AS x")
    lsn = env.wait_branch_caught_up(pg)
    tar = env.pageserver.basebackup(env.initial_tenant, env.branch_timeline("main"), format_lsn(lsn), full=True)
    restored = test_output_dir / "restored"
    env.pageserver.unpack_basebackup(tar, restored)
    with VanillaPostgres(restored, pg_bin, port_distributor.get_port(), test_output_dir) as stock:
        stock.initialized = True
        stock.user = pg.user
        stock.configure(
            [
                f"port = {stock.port}",
                "listen_addresses = '127.0.0.1'",
                f"unix_socket_directories = '{stock.socket_dir}'",
            ]
        )
        stock.start()
        # Unlogged data is gone, as after a crash; the relations are there, and work.
        assert stock.safe_psql("SELECT count(*) FROM ut") == [(0,)]
        assert stock.safe_psql("SELECT nextval('us')") == [(1,)]
        stock.safe_psql("INSERT INTO ut(v) VALUES ('y')")
        assert stock.safe_psql("SELECT id, v FROM ut") == [(1, "y")]
        assert stock.safe_psql("SELECT x FROM t") == [(1,)]
