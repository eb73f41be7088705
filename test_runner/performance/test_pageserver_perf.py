"""Pageserver benchmarks (issue 3): WAL ingest throughput next to pg_waldump on the same WAL,
GetPage@LSN latency and throughput with pagebench (hot and cold), and physical vs logical size
before and after compaction and GC. Each prints its figures and writes
performance/results/pageserver_*.json. CI runs them tiny (ZENITH_BENCH_SIZE=tiny)."""

import json
import subprocess
import time
from pathlib import Path

from fixtures.benchmark import write_result
from fixtures.pageserver import Pageserver
from fixtures.utils import parse_lsn, pg_env, wait_until, zenith_binary
from fixtures.zenith_fixtures import PgBin, PortDistributor, VanillaPostgres


def _setup(test_output_dir: Path, port_distributor: PortDistributor, overrides=()) -> Pageserver:
    ps = Pageserver(
        test_output_dir / "pageserver",
        port_distributor.get_port(),
        port_distributor.get_port(),
        # "Hot" means the pages read are in the page cache: 64K pages (512 MiB) hold the
        # full-size pgbench_accounts (about 16.6K blocks) and every metadata key.
        overrides=["wait_lsn_timeout='30s'", "page_cache_size=65536", *overrides],
    )
    ps.init()
    ps.start()
    return ps


def test_pageserver_ingest_getpage_storage(
    bench_size: str,
    test_output_dir: Path,
    vanilla_pg: VanillaPostgres,
    pg_bin: PgBin,
    port_distributor: PortDistributor,
):
    scale, txns = (1, 500) if bench_size == "tiny" else (10, 20000)
    ps = _setup(test_output_dir, port_distributor)
    try:
        primary = vanilla_pg
        primary.initdb()
        tenant = ps.tenant_create()
        tl = ps.timeline_create(tenant, import_pgdata=str(primary.pgdata))["timeline_id"]
        start_lsn = parse_lsn(ps.timeline_detail(tenant, tl)["last_record_lsn"])
        primary.configure(["wal_level = replica", "max_wal_senders = 4", "max_wal_size = 4GB", "checkpoint_timeout = 1h"])
        primary.start()
        primary.safe_psql("SELECT pg_create_physical_replication_slot('pageserver')")
        # Generate the WAL first, then let the pageserver ingest the backlog.
        primary.pgbench("-i", "-s", str(scale))
        primary.pgbench("-t", str(txns // 4), "-c", "4")
        end_lsn = parse_lsn(primary.safe_psql("SELECT pg_current_wal_insert_lsn()")[0][0])
        wal_mb = (end_lsn - start_lsn) / 1e6

        t0 = time.perf_counter()
        ps.set_wal_source(tenant, tl, f"host=127.0.0.1 port={primary.port} user={primary.user} slot=pageserver")
        wait_until(
            "ingest of the backlog",
            lambda: parse_lsn(ps.timeline_detail(tenant, tl)["last_record_lsn"]) >= end_lsn,
            timeout=1800,
            interval=0.02,
        )
        ps.checkpoint(tenant, tl)  # durably stored
        ingest_s = time.perf_counter() - t0

        primary.safe_psql("CHECKPOINT")
        wal_dir = primary.pg_wal
        t0 = time.perf_counter()
        pg_bin.run_capture(
            ["pg_waldump", "--quiet", "-p", str(wal_dir), "-s", f"{start_lsn >> 32:X}/{start_lsn & 0xFFFFFFFF:X}",
             "-e", f"{end_lsn >> 32:X}/{end_lsn & 0xFFFFFFFF:X}"],
            check=False,
        )
        waldump_s = time.perf_counter() - t0

        # GetPage@latest on pgbench_accounts with pagebench.
        relnode, dboid = primary.safe_psql(
            "SELECT c.relfilenode, d.oid FROM pg_class c, pg_database d "
            "WHERE c.relname = 'pgbench_accounts' AND d.datname = 'postgres'"
        )[0]
        rels = f"1663/{dboid}/{relnode}"

        def pagebench(clients: int, pipeline: int, requests: int) -> dict:
            out = subprocess.run(
                [str(zenith_binary("pagebench")), "--page-service", f"127.0.0.1:{ps.pg_port}",
                 "--tenant", tenant, "--timeline", tl, "--rels", rels, "--clients", str(clients),
                 "--pipeline", str(pipeline), "--requests", str(requests), "--json"],
                check=True, capture_output=True, text=True, env=pg_env(),
            )
            return json.loads(out.stdout)

        n = 2000 if bench_size == "tiny" else 100000
        ps.stop()
        ps.start()
        cold = pagebench(1, 1, n)
        hot = pagebench(1, 1, n)
        many = pagebench(8, 8, n * 4)

        detail = ps.timeline_detail(tenant, tl)
        logical = detail["current_logical_size"]
        phys_before = detail["current_physical_size"]
        ps.compact(tenant, tl)
        ps.http("PUT", f"/v1/tenant/{tenant}/timeline/{tl}/do_gc", json={"gc_horizon": 0, "pitr_interval": "0s"})
        phys_after = ps.timeline_detail(tenant, tl)["current_physical_size"]

        result = {
            "size": bench_size,
            "wal_mb": wal_mb,
            "ingest": {"seconds": ingest_s, "mb_per_s": wal_mb / ingest_s},
            "pg_waldump_quiet": {"seconds": waldump_s, "mb_per_s": wal_mb / waldump_s},
            "ingest_vs_pg_waldump": waldump_s / ingest_s,
            "getpage_1_client_cold": cold,
            "getpage_1_client_hot": hot,
            "getpage_8_clients_pipelined": many,
            "storage": {
                "logical_bytes": logical,
                "physical_before": phys_before,
                "physical_after_compact_gc": phys_after,
                "ratio_before": phys_before / logical if logical else None,
                "ratio_after": phys_after / logical if logical else None,
            },
        }
        print(f"\nWAL ingest: {wal_mb:.1f} MB in {ingest_s:.2f} s = {wal_mb / ingest_s:.1f} MB/s "
              f"(pg_waldump --quiet on the same WAL: {wal_mb / waldump_s:.1f} MB/s; ratio {waldump_s / ingest_s:.2f}x)")
        for name, r in (("1 client cold", cold), ("1 client hot", hot), ("8 clients x 8 in flight", many)):
            lat = r["latency_us"]
            print(f"GetPage {name}: {r['requests_per_s']:.0f} req/s, p50 {lat['p50']} us, p99 {lat['p99']} us, "
                  f"p99.9 {lat['p99_9']} us, errors {r['errors']}")
        print(f"Storage: logical {logical / 1e6:.1f} MB, physical {phys_before / 1e6:.1f} MB before, "
              f"{phys_after / 1e6:.1f} MB after compaction+GC")
        write_result("pageserver", result)
        assert cold["errors"] == 0 and hot["errors"] == 0 and many["errors"] == 0
    finally:
        ps.stop(immediate=True)
