"""zenith CLI benchmarks (issue 4): `zenith pg start` time on a branch at two pgbench scales, next to
`pg_ctl start` of a stock PostgreSQL holding the same data; and `zenith branch` time with few and many
existing branches, next to copying the data directory (how one forks a stock PostgreSQL). Prints the
figures and writes performance/results/zenith_cli.json. CI runs it tiny (ZENITH_BENCH_SIZE=tiny)."""

import subprocess
import time
from pathlib import Path

from fixtures.benchmark import write_result
from fixtures.zenith_env import ZenithEnv


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def test_zenith_cli_perf(bench_size: str, zenith_env_builder, test_output_dir: Path):
    scales = (1, 2) if bench_size == "tiny" else (1, 10)
    branch_counts = (1, 10) if bench_size == "tiny" else (1, 100)
    env: ZenithEnv = zenith_env_builder.init_start()
    pg_bin = env.pg_bin
    result = {"pg_start": [], "branch_create": []}

    # -- zenith pg start on a branch at each scale, and pg_ctl start of a stock copy.
    main = env.postgres.create_start("main")
    for i, scale in enumerate(scales):
        main.pgbench("-i", "-s", str(scale), "-q")
        env.wait_branch_caught_up(main)
        env.zenith_cli(["branch", f"s{scale}", "main"])
        port = env.port_distributor.get_port()
        pg_start = _timed(
            lambda: env.zenith_cli(["pg", "start", f"node_s{scale}", "--branch", f"s{scale}", "--port", str(port)])
        )
        # Second start of the same compute: its data directory already exists.
        env.zenith_cli(["pg", "stop", f"node_s{scale}"])
        pg_restart = _timed(lambda: env.zenith_cli(["pg", "start", f"node_s{scale}"]))
        env.zenith_cli(["pg", "stop", f"node_s{scale}"])
        # Baseline: a stock PostgreSQL on the same data as a stock data directory (`zenith pg
        # export`, a full basebackup), cold start. (A copy of the compute's own directory is no
        # baseline: a stateless compute's directory reads its pages from the pageserver.)
        stock = test_output_dir / f"stock_s{scale}"
        env.zenith_cli(["pg", "export", str(stock), "--branch", f"s{scale}"])
        stock_port = env.port_distributor.get_port()
        with open(stock / "postgresql.conf", "a") as f:
            f.write(f"port = {stock_port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
        stock_start = _timed(
            lambda: pg_bin.run(["pg_ctl", "-D", stock, "-l", test_output_dir / f"stock_s{scale}.log", "-w", "start"])
        )
        pg_bin.run(["pg_ctl", "-D", stock, "-m", "immediate", "-w", "stop"])
        size_mb = sum(f.stat().st_size for f in stock.rglob("*") if f.is_file()) / 1e6
        row = {
            "scale": scale,
            "datadir_mb": round(size_mb, 1),
            "zenith_pg_start_s": round(pg_start, 3),
            "zenith_pg_restart_s": round(pg_restart, 3),
            "stock_pg_ctl_start_s": round(stock_start, 3),
            "ratio_first_start_vs_stock": round(pg_start / stock_start, 2),
        }
        result["pg_start"].append(row)
        print(
            f"scale {scale} ({size_mb:.0f} MB): zenith pg start {pg_start * 1000:.0f} ms (from basebackup), "
            f"restart {pg_restart * 1000:.0f} ms; stock pg_ctl start {stock_start * 1000:.0f} ms "
            f"(ratio {pg_start / stock_start:.1f}x)"
        )

    # -- zenith branch with few and many existing branches; baseline: copying the data directory.
    made = 0
    for n in branch_counts:
        while made < n:
            env.zenith_cli(["branch", f"b{made}", "main"])
            made += 1
        times = [_timed(lambda k=k: env.zenith_cli(["branch", f"probe{n}_{k}", "main"])) for k in range(3)]
        made += 3
        best = min(times)
        result["branch_create"].append({"existing_branches": n, "best_s": round(best, 4), "all_s": times})
        print(f"zenith branch with {n} existing branches: best {best * 1000:.1f} ms of {len(times)}")
    src = env.repo_dir / "pgdatadirs" / "tenants" / env.initial_tenant / f"node_s{scales[-1]}" / "pgdata"
    copy_s = _timed(lambda: subprocess.run(["cp", "-a", str(src), str(test_output_dir / "copy")], check=True))
    result["datadir_copy_s"] = round(copy_s, 3)
    first, last = result["branch_create"][0]["best_s"], result["branch_create"][-1]["best_s"]
    print(
        f"branch creation: {first * 1000:.1f} ms with {branch_counts[0]} branches, {last * 1000:.1f} ms with "
        f"{branch_counts[-1]} (ratio {last / first:.2f}); copying the scale-{scales[-1]} data directory: "
        f"{copy_s * 1000:.0f} ms"
    )
    write_result("zenith_cli", result)
