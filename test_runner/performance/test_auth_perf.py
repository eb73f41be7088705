"""JWT auth on vs off, same run, same machine: GetPage@LSN latency (pagebench, 1 client, p50 and
p99) and pgbench select-only TPS through a compute. Goal: overhead <= 3%. A token is checked once
per connection (an RSA signature check, ~0.1 ms), so steady-state requests should not see it.

Tiny by default (scale 1, 5 s runs, 5000 GetPage requests); ZENITH_BENCH_SIZE=full: scale 10, 30 s
runs, 100000 requests.
"""

import json
import re
import subprocess

from fixtures.benchmark import write_result
from fixtures.utils import log, pg_env, zenith_binary
from fixtures.zenith_env import ZenithEnvBuilder


def measure(builder: ZenithEnvBuilder, auth: bool, scale: int, seconds: int, requests: int) -> dict:
    builder.auth = auth
    env = builder.init_start()
    pg = env.postgres.create_start("main", settings=["shared_buffers=128MB"])
    pg.pgbench("-i", "-q", "-s", str(scale))
    tenant, timeline = env.initial_tenant, env.branch_timeline("main")
    env.wait_branch_caught_up(pg)
    relnode, dboid = pg.safe_psql(
        "SELECT c.relfilenode, d.oid FROM pg_class c, pg_database d "
        "WHERE c.relname = 'pgbench_accounts' AND d.datname = 'postgres'"
    )[0]
    extra = {"ZENITH_PAGESERVER_TOKEN": env.token("tenant", tenant)} if auth else {}

    def pagebench() -> dict:
        out = subprocess.run(
            [str(zenith_binary("pagebench")), "--page-service", f"127.0.0.1:{env.pageserver.pg_port}",
             "--tenant", tenant, "--timeline", timeline, "--rels", f"1663/{dboid}/{relnode}",
             "--clients", "1", "--pipeline", "1", "--requests", str(requests), "--json"],
            check=True, capture_output=True, text=True, env=pg_env(extra),
        )
        return json.loads(out.stdout)

    pagebench()  # warm the page cache
    getpage = pagebench()
    pg.pgbench("-S", "-n", "-c", "4", "-j", "4", "-T", "2")  # warm the compute
    p = pg.pgbench("-S", "-n", "-c", "4", "-j", "4", "-T", str(seconds))
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", p.stdout)
    assert m, p.stdout
    builder.teardown()
    builder.env = None
    return {"getpage": getpage, "select_only_tps": float(m.group(1))}


def test_auth_overhead(zenith_env_builder, port_distributor, pg_bin, test_output_dir, bench_size):
    full = bench_size == "full"
    scale, seconds, requests = (10, 30, 100000) if full else (1, 5, 5000)
    off = measure(zenith_env_builder, False, scale, seconds, requests)
    on_builder = ZenithEnvBuilder(test_output_dir / "repo_auth", port_distributor, pg_bin)
    try:
        on = measure(on_builder, True, scale, seconds, requests)
    finally:
        on_builder.teardown()

    def us(r: dict, key: str) -> float:
        return r["getpage"]["latency_us"][key]

    lines = []
    ratios = {}
    for key in ("p50", "p99"):
        ratios[key] = us(on, key) / us(off, key)
        lines.append(f"GetPage 1 client {key}: auth off {us(off, key):.1f} us, on {us(on, key):.1f} us = {ratios[key]:.3f}x")
    ratios["tps"] = on["select_only_tps"] / off["select_only_tps"]
    lines.append(f"pgbench -S -c4 scale {scale} {seconds}s: auth off {off['select_only_tps']:.0f} tps, "
                 f"on {on['select_only_tps']:.0f} tps = {ratios['tps']:.3f}x (goal >= 0.97)")
    for line in lines:
        log.info(line)
        print(line)
    write_result("auth_overhead", {"size": bench_size, "scale": scale, "seconds": seconds,
                                   "requests": requests, "off": off, "on": on, "ratios": ratios})
