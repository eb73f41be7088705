"""Stateless computes against what a user would run instead, same machine, same run, same build.

- pgbench tpcb-like, 4 clients: a stateless compute (commits wait for 2 of 3 walkeepers) vs stock
  PostgreSQL with synchronous replication to three pg_receivewal, ANY 2 (goal >= 0.8x).
- pgbench select-only, 4 clients, default shared_buffers, warm: vs the same stock server (goal
  >= 0.95x); and cold, shared_buffers at 1/10 of the data (every miss a GetPage; the stock server
  reads from the OS page cache; goal >= 0.5x).
- A sequential scan of a table ten times shared_buffers, cold: with and without read-ahead, vs
  stock PostgreSQL (goal <= 2x its time with read-ahead).
- `zenith pg start` (command to accepting connections) at several scales (goal <= 150 ms, flat
  in data size).

Tiny by default (scale 1, seconds); ZENITH_BENCH_SIZE=full: scale 10 (and 100 for the start
time), 60 s runs, a 1 GB table.
"""

import time

from fixtures.benchmark import write_result
from fixtures.utils import log
from test_walkeeper_perf import SyncReplicationBaseline, pgbench_tps


def ratio(ours: float, theirs: float) -> float:
    return round(ours / theirs, 3)


def restart_with(vanilla, shared_buffers: str) -> None:
    vanilla.stop()
    vanilla.configure([f"shared_buffers = {shared_buffers}"])
    vanilla.start()


def test_compute_pgbench(zenith_env_builder, pg_bin, port_distributor, test_output_dir, bench_size):
    full = bench_size == "full"
    scale = 10 if full else 1
    seconds = 60 if full else 5
    env = zenith_env_builder.init_start()
    ours = env.postgres.create_start("main")
    ours.pgbench("-i", "-s", str(scale), "-q")
    base = SyncReplicationBaseline(test_output_dir, pg_bin, port_distributor)
    theirs = base.start()
    results = {"scale": scale, "seconds": seconds, "clients": 4}
    try:
        theirs.pgbench("-i", "-s", str(scale), "-q")
        data_mb = theirs.safe_psql("SELECT pg_database_size('postgres') / 1048576")[0][0]

        t_base = pgbench_tps(theirs, 4, seconds, "-b", "tpcb-like")
        t_ours = pgbench_tps(ours, 4, seconds, "-b", "tpcb-like")
        results["tpcb"] = {"compute_tps": t_ours, "sync_replication_tps": t_base, "ratio": ratio(t_ours, t_base)}

        # Warm select-only: one untimed run each, then the measured ones.
        for c in (theirs, ours):
            pgbench_tps(c, 4, 2, "-S")
        s_base = pgbench_tps(theirs, 4, seconds, "-S")
        s_ours = pgbench_tps(ours, 4, seconds, "-S")
        results["select_only_warm"] = {"compute_tps": s_ours, "stock_tps": s_base, "ratio": ratio(s_ours, s_base)}

        # Cold: shared_buffers at a tenth of the data, on both; a branch's compute for ours.
        small = f"{max(data_mb // 10, 1)}MB"
        env.wait_branch_caught_up(ours)
        env.zenith_cli(["branch", "cold", "main"])
        cold = env.postgres.create_start("cold", branch="cold", settings=[f"shared_buffers={small}"])
        restart_with(theirs, small)
        for c in (theirs, cold):
            pgbench_tps(c, 4, 2, "-S")
        c_base = pgbench_tps(theirs, 4, seconds, "-S")
        c_ours = pgbench_tps(cold, 4, seconds, "-S")
        results["select_only_cold"] = {
            "shared_buffers": small,
            "data_mb": data_mb,
            "compute_tps": c_ours,
            "stock_tps": c_base,
            "ratio": ratio(c_ours, c_base),
        }
    finally:
        base.stop()
    for k in ("tpcb", "select_only_warm", "select_only_cold"):
        log.info("%s: %s", k, results[k])
    print(results)
    write_result("compute_pgbench", results)


def scan_seconds(client, readahead=None) -> float:
    """Best of three cold scans (the compute's buffers cleared before each)."""
    best = None
    for _ in range(3):
        with client.connect() as conn, conn.cursor() as cur:
            if readahead is not None:
                cur.execute("SELECT clear_buffer_cache()")
                cur.execute(f"SET zenith.readahead_buffer_size = {readahead}")
            cur.execute("SET max_parallel_workers_per_gather = 0")
            t0 = time.perf_counter()
            cur.execute("SELECT count(*) FROM t")
            cur.fetchone()
            s = time.perf_counter() - t0
        best = s if best is None else min(best, s)
    return best


def test_compute_seqscan(zenith_env_builder, pg_bin, port_distributor, test_output_dir, bench_size):
    from fixtures.zenith_fixtures import VanillaPostgres

    full = bench_size == "full"
    rows = 7_000_000 if full else 500_000  # ~1 GB / ~70 MB
    shared = "100MB" if full else "7MB"
    create = f"CREATE TABLE t AS SELECT g AS id, repeat('x', 100) AS v FROM generate_series(1, {rows}) g"
    env = zenith_env_builder.init_start()
    ours = env.postgres.create_start("main", settings=[f"shared_buffers={shared}"])
    ours.safe_psql("CREATE EXTENSION zenith_test_utils")
    ours.safe_psql(create)
    ours.safe_psql("VACUUM t")  # hint bits and visibility, as the stock table gets below
    with VanillaPostgres(test_output_dir / "stock", pg_bin, port_distributor.get_port()) as theirs:
        theirs.initdb()
        theirs.configure([f"shared_buffers = {shared}"])
        theirs.start()
        theirs.safe_psql(create)
        theirs.safe_psql("VACUUM t")
        mb = theirs.safe_psql("SELECT pg_relation_size('t') / 1048576")[0][0]
        s_base = scan_seconds(theirs)
        s_plain = scan_seconds(ours, 0)
        s_ahead = scan_seconds(ours, 128)
    results = {
        "table_mb": mb,
        "shared_buffers": shared,
        "stock_seconds": round(s_base, 3),
        "compute_no_readahead_seconds": round(s_plain, 3),
        "compute_readahead_seconds": round(s_ahead, 3),
        "ratio_readahead": round(s_ahead / s_base, 2),
        "ratio_no_readahead": round(s_plain / s_base, 2),
    }
    log.info("seqscan: %s", results)
    print(results)
    write_result("compute_seqscan", results)
    # At CI size, beside the rest of the suite on parallel workers, two scans of a few seconds
    # differ by noise (readahead lost by 3.07 s to 2.75 s once on a clean clone): the comparison
    # is an oracle at full size only (`make bench`).
    if bench_size == "full":
        assert s_ahead < s_plain, results


def test_compute_start_time(zenith_env_builder, bench_size):
    scales = (1, 10, 100) if bench_size == "full" else (1,)
    env = zenith_env_builder.init_start()
    results = {}
    for scale in scales:
        name = f"s{scale}"
        env.zenith_cli(["branch", name, "main"])
        pg = env.postgres.create_start(name, branch=name)
        pg.pgbench("-i", "-s", str(scale), "-q")
        pg.stop()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            pg.start()
            times.append(time.perf_counter() - t0)
            assert pg.safe_psql("SELECT count(*) FROM pgbench_branches")[0][0] == scale
            pg.stop()
        results[f"scale_{scale}"] = {"best_ms": round(min(times) * 1000), "all_ms": [round(t * 1000) for t in times]}
        log.info("zenith pg start at scale %d: %s", scale, results[f"scale_{scale}"])
    print(results)
    write_result("compute_start_time", results)
