"""The proxy against connecting to the compute directly, same machine, same run.

- pgbench -S, 4 clients, through the proxy (TLS, SCRAM once per connection) vs directly to the
  endpoint's compute (SCRAM, no TLS: what a user on the same host would do); goal >= 0.9x. The
  proxy without TLS (options=endpoint=) is printed too.
- The same with -C (a new connection, with its SCRAM exchange, per transaction): both and the
  ratio.
- Wake time of a suspended endpoint: psql connect to first row (goal <= 300 ms at scale 10).

Tiny by default (scale 1, 5 s runs); ZENITH_BENCH_SIZE=full: scale 10, 30 s runs.
"""

import re
import subprocess
import time

from fixtures.benchmark import write_result
from fixtures.utils import log, pg_env, wait_until

PASSWORD = "bench-pw-4Qe"


def pgbench(env, connstr: str, *args: str) -> float:
    p = subprocess.run(
        [str((env.pg_bin.bindir / "pgbench")), *args, connstr],
        env=pg_env({"PGPASSWORD": PASSWORD}),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stderr
    m = re.search(r"tps = ([0-9.]+) \((?:without initial connection time|including reconnection times)\)", p.stdout)
    assert m, p.stdout
    return float(m.group(1))


def test_proxy_pgbench_and_wake(zenith_env_builder, bench_size):
    full = bench_size == "full"
    scale = 10 if full else 1
    seconds = 30 if full else 5
    env = zenith_env_builder.init_start()
    env.proxy.create_endpoint("bench", "main", "--suspend-timeout", "0")
    env.proxy.create_role("bench", "alice", PASSWORD)
    env.zenith_cli(["db", "create", "bench", "bench", "--owner", "alice"])
    ep = env.proxy.endpoint("bench")
    direct = f"host=127.0.0.1 port={ep['port']} user=alice dbname=bench sslmode=disable"
    tls = env.proxy.connstr("alice", None, "bench", dbname="bench")
    plain = env.proxy.connstr("alice", None, "bench", how="plain", dbname="bench")
    init = subprocess.run(
        [str((env.pg_bin.bindir / "pgbench")), "-i", "-q", "-s", str(scale), tls],
        env=pg_env({"PGPASSWORD": PASSWORD}),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert init.returncode == 0, init.stderr
    results = {"scale": scale, "seconds": seconds, "clients": 4}
    for label, extra in (("select_only", ()), ("select_only_reconnect", ("-C",))):
        args = ("-S", "-n", "-c", "4", "-j", "4", *extra)
        pgbench(env, direct, *args, "-T", "2")  # warm the compute's cache
        d = pgbench(env, direct, *args, "-T", str(seconds))
        t = pgbench(env, tls, *args, "-T", str(seconds))
        p = pgbench(env, plain, *args, "-T", str(seconds))
        results[label] = {
            "direct_tps": d,
            "proxy_tls_tps": t,
            "proxy_plain_tps": p,
            "ratio_tls": round(t / d, 3),
            "ratio_plain": round(p / d, 3),
        }
        log.info("%s: %s", label, results[label])

    # Wake time: suspend (a short timeout from now on), then connect to the first row.
    env.zenith_cli(["endpoint", "delete", "bench"])
    env.proxy.create_endpoint("sleepy", "main", "--suspend-timeout", "1s")
    env.proxy.create_role("sleepy", "alice", PASSWORD)
    # The role and the database are in the branch already: the console gives the role this password.
    c = env.proxy.connstr("alice", PASSWORD, "sleepy", dbname="bench")
    wakes = []
    for _ in range(3):
        wait_until("the endpoint to be suspended", lambda: env.proxy.endpoint("sleepy")["state"] == "suspended", timeout=60)
        t0 = time.perf_counter()
        out = subprocess.run(
            [str((env.pg_bin.bindir / "psql")), "-X", "-A", "-t", "-d", c, "-c", "SELECT count(*) FROM pgbench_branches"],
            env=pg_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        wakes.append(round((time.perf_counter() - t0) * 1000))
        assert out.returncode == 0 and out.stdout.strip() == str(scale), out.stderr
    results["wake_ms"] = wakes
    results["wake_ms_best"] = min(wakes)
    print(results)
    write_result("proxy", results)
