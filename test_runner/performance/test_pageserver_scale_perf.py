"""Pageserver benchmarks at scale (issue 9), each next to its baseline in the same run:

- test_ingest_vs_standby: WAL ingest MB/s of the pageserver next to a stock PostgreSQL streaming
  standby (started from a base backup taken before the load) replaying the same WAL. The goal is
  at least 2x the standby: the pageserver files records, it does not apply them.
- test_getpage_many_layers: GetPage@latest with pagebench when the working set exceeds the page
  cache (1 client p50/p99, 8 clients x 8 in flight), on a timeline with a long history of small
  layers (TARGET_LAYERS layer files), and again after GC has removed that history (about a
  hundred layers left, the same newest layers above): the read latency with many layers must stay
  close to the few-layers case.

Sizes: tiny (CI, default) or full (ZENITH_BENCH_SIZE=full: pgbench scale 100, 10,000 layers).
"""

import json
import subprocess
import time
from pathlib import Path

import pytest

from fixtures.benchmark import write_result
from fixtures.pages_match import wait_ingested
from fixtures.pageserver import Pageserver
from fixtures.utils import format_lsn, parse_lsn, pg_env, wait_until, zenith_binary
from fixtures.zenith_fixtures import PgBin, PortDistributor, VanillaPostgres

MB = 1e6


def start_pageserver(test_output_dir: Path, port_distributor: PortDistributor, overrides=()) -> Pageserver:
    ps = Pageserver(
        test_output_dir / "pageserver",
        port_distributor.get_port(),
        port_distributor.get_port(),
        overrides=["wait_lsn_timeout='60s'", *overrides],
    )
    ps.init()
    ps.start()
    return ps


def import_primary(ps: Pageserver, primary: VanillaPostgres, conf=()) -> tuple:
    """initdb the primary, import it as a new tenant's timeline, start it with a slot for the
    pageserver (not yet streaming). Returns (tenant, timeline, start LSN)."""
    primary.initdb()
    tenant = ps.tenant_create()
    tl = ps.timeline_create(tenant, import_pgdata=str(primary.pgdata))["timeline_id"]
    start = parse_lsn(ps.timeline_detail(tenant, tl)["last_record_lsn"])
    primary.configure(["wal_level = replica", "max_wal_senders = 4", "max_wal_size = '8GB'",
                       "checkpoint_timeout = '1h'", "autovacuum = off", *conf])
    primary.start()
    # Reserving WAL now (from the last checkpoint's redo point, the import LSN): a checkpoint
    # before the pageserver first connects must not remove what it needs.
    primary.safe_psql("SELECT pg_create_physical_replication_slot('pageserver', true)")
    return tenant, tl, start


def stream_to(ps: Pageserver, tenant: str, tl: str, primary: VanillaPostgres) -> None:
    ps.set_wal_source(tenant, tl, f"host=127.0.0.1 port={primary.port} user={primary.user} slot=pageserver")


@pytest.mark.timeout(7200)
def test_ingest_vs_standby(
    bench_size: str,
    test_output_dir: Path,
    vanilla_pg: VanillaPostgres,
    pg_bin: PgBin,
    port_distributor: PortDistributor,
):
    scale, txns = (10, 20000) if bench_size == "tiny" else (100, 100000)
    ps = start_pageserver(test_output_dir, port_distributor)
    standby = None
    try:
        primary = vanilla_pg
        tenant, tl, ps_start = import_primary(ps, primary)
        # The standby's base backup, taken before the load, with its own slot.
        primary.safe_psql("SELECT pg_create_physical_replication_slot('standby')")
        standby_dir = test_output_dir / "standby"
        pg_bin.run(["pg_basebackup", *primary.cli_args(), "-D", standby_dir, "-X", "stream", "-S", "standby",
                    "-c", "fast"])
        label = (standby_dir / "backup_label").read_text()
        sb_start = parse_lsn(label.split("START WAL LOCATION: ")[1].split()[0])

        # The same WAL for both: generated first, then each consumes the backlog alone.
        primary.pgbench("-i", "-s", str(scale), "-q")
        primary.pgbench("-c", "4", "-j", "2", "-t", str(txns // 4), "-n")
        end = parse_lsn(primary.safe_psql("SELECT pg_current_wal_insert_lsn()")[0][0])

        t0 = time.perf_counter()
        stream_to(ps, tenant, tl, primary)
        wait_ingested(ps, tenant, tl, end, timeout=3600)
        ps.checkpoint(tenant, tl)  # durable, like the standby's restartpoint below
        ps_s = time.perf_counter() - t0

        standby = VanillaPostgres(standby_dir, pg_bin, port_distributor.get_port(), test_output_dir)
        standby.initialized = True
        standby.configure([
            f"port = {standby.port}",
            f"unix_socket_directories = '{standby.socket_dir}'",
            "hot_standby = on",
            f"primary_conninfo = 'host=127.0.0.1 port={primary.port} user={primary.user}'",
            "primary_slot_name = 'standby'",
        ])
        (standby_dir / "standby.signal").touch()
        t0 = time.perf_counter()
        standby.start()
        wait_until(
            "the standby to replay the backlog",
            lambda: parse_lsn(standby.safe_psql("SELECT pg_last_wal_replay_lsn()")[0][0]) >= end,
            timeout=3600,
            interval=0.02,
        )
        replay_s = time.perf_counter() - t0
        standby.safe_psql("CHECKPOINT")  # a restartpoint: the replayed pages on disk
        sb_s = time.perf_counter() - t0

        ps_mb, sb_mb = (end - ps_start) / MB, (end - sb_start) / MB
        result = {
            "size": bench_size, "scale": scale, "transactions": txns,
            "pageserver": {"wal_mb": ps_mb, "seconds": ps_s, "mb_per_s": ps_mb / ps_s},
            "standby_replay": {"wal_mb": sb_mb, "seconds": replay_s, "mb_per_s": sb_mb / replay_s},
            "standby_replay_and_restartpoint": {"seconds": sb_s, "mb_per_s": sb_mb / sb_s},
            "ratio_vs_replay": (ps_mb / ps_s) / (sb_mb / replay_s),
            "ratio_vs_replay_and_restartpoint": (ps_mb / ps_s) / (sb_mb / sb_s),
        }
        write_result(f"pageserver_ingest_vs_standby_{bench_size}", result)
        print(f"\nWAL {format_lsn(ps_start)}..{format_lsn(end)} (scale {scale}, {txns} transactions)\n"
              f"pageserver ingest (to durable): {ps_mb:.0f} MB in {ps_s:.2f} s = {ps_mb / ps_s:.1f} MB/s\n"
              f"stock standby replay:           {sb_mb:.0f} MB in {replay_s:.2f} s = {sb_mb / replay_s:.1f} MB/s "
              f"({sb_mb / sb_s:.1f} MB/s with its restartpoint)\n"
              f"ratio {result['ratio_vs_replay']:.2f}x the standby's replay rate "
              f"({result['ratio_vs_replay_and_restartpoint']:.2f}x with the restartpoint)")
    finally:
        if standby is not None:
            standby.cleanup()
        ps.stop(immediate=True)


def layer_count(ps: Pageserver, tenant: str, tl: str) -> int:
    d = ps.workdir / "tenants" / tenant / "timelines" / tl
    return sum(1 for f in d.iterdir() if "__" in f.name and not f.name.endswith("___temp"))


@pytest.mark.timeout(14400)
def test_getpage_many_layers(
    bench_size: str,
    test_output_dir: Path,
    vanilla_pg: VanillaPostgres,
    port_distributor: PortDistributor,
):
    if bench_size == "tiny":
        scale, target_layers, cache_pages, distance, n = 5, 1000, 1024, 256 * 1024, 3000
    else:
        scale, target_layers, cache_pages, distance, n = 100, 10000, 8192, 256 * 1024, 50000
    ps = start_pageserver(test_output_dir, port_distributor, [
        f"page_cache_size={cache_pages}",
        f"tenant_config.checkpoint_distance={distance}",
        "tenant_config.gc_period='1h'",
        "tenant_config.pitr_interval='7d'",
    ])
    try:
        primary = vanilla_pg
        tenant, tl, _ = import_primary(ps, primary)
        stream_to(ps, tenant, tl, primary)
        primary.pgbench("-i", "-s", str(scale), "-q")
        # History: small layers, compacted and imaged as usual, never collected.
        deadline = time.monotonic() + (900 if bench_size == "tiny" else 7200)
        while layer_count(ps, tenant, tl) < target_layers and time.monotonic() < deadline:
            primary.pgbench("-c", "4", "-j", "2", "-T", "5", "-n")
        end = parse_lsn(primary.safe_psql("SELECT pg_current_wal_insert_lsn()")[0][0])
        wait_ingested(ps, tenant, tl, end, timeout=1800)
        ps.checkpoint(tenant, tl)
        ps.compact(tenant, tl)
        relnode, dboid = primary.safe_psql(
            "SELECT c.relfilenode, d.oid FROM pg_class c, pg_database d "
            "WHERE c.relname = 'pgbench_accounts' AND d.datname = 'postgres'"
        )[0]
        blocks = primary.safe_psql("SELECT pg_relation_size('pgbench_accounts') / 8192")[0][0]
        rels = f"1663/{dboid}/{relnode}"

        def pagebench(clients: int, pipeline: int, requests: int) -> dict:
            out = subprocess.run(
                [str(zenith_binary("pagebench")), "--page-service", f"127.0.0.1:{ps.pg_port}",
                 "--tenant", tenant, "--timeline", tl, "--rels", rels, "--clients", str(clients),
                 "--pipeline", str(pipeline), "--requests", str(requests), "--json"],
                check=True, capture_output=True, text=True, env=pg_env(),
            )
            r = json.loads(out.stdout)
            assert r["errors"] == 0, r
            return r

        def measure() -> dict:
            return {"layers": layer_count(ps, tenant, tl), "one": pagebench(1, 1, n), "many": pagebench(8, 8, n * 4)}

        many_layers = measure()
        gc = ps.http("PUT", f"/v1/tenant/{tenant}/timeline/{tl}/do_gc", json={"gc_horizon": 0, "pitr_interval": "0s"})
        few_layers = measure()
        ratio_p50 = many_layers["one"]["latency_us"]["p50"] / few_layers["one"]["latency_us"]["p50"]
        ratio_p99 = many_layers["one"]["latency_us"]["p99"] / few_layers["one"]["latency_us"]["p99"]
        ratio_rps = many_layers["many"]["requests_per_s"] / few_layers["many"]["requests_per_s"]
        result = {
            "size": bench_size, "scale": scale, "page_cache_pages": cache_pages, "accounts_blocks": blocks,
            "checkpoint_distance": distance, "many_layers": many_layers, "gc": gc, "few_layers": few_layers,
            "p50_ratio_many_vs_few": ratio_p50, "p99_ratio_many_vs_few": ratio_p99,
            "req_per_s_ratio_many_vs_few": ratio_rps,
        }
        write_result(f"pageserver_getpage_many_layers_{bench_size}", result)
        print(f"\npgbench_accounts: {blocks} blocks ({blocks * 8192 / 2**20:.0f} MiB), page cache {cache_pages} pages "
              f"({cache_pages * 8192 / 2**20:.0f} MiB), scale {scale}")
        for name, m in (("many layers", many_layers), ("few layers", few_layers)):
            one, many = m["one"], m["many"]
            print(f"{name} ({m['layers']} layer files): 1 client p50 {one['latency_us']['p50']} us, "
                  f"p99 {one['latency_us']['p99']} us; 8x8 {many['requests_per_s']:.0f} req/s")
        print(f"many/few: p50 {ratio_p50:.3f}, p99 {ratio_p99:.3f}, 8x8 req/s {ratio_rps:.3f}")
        assert many_layers["layers"] >= target_layers * 0.9 or bench_size == "tiny", many_layers["layers"]
        assert many_layers["layers"] > 5 * few_layers["layers"], (many_layers["layers"], few_layers["layers"])
    finally:
        ps.stop(immediate=True)
