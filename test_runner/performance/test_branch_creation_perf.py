"""Branch creation time (POST /v1/tenant/{tenant}/timeline with an ancestor) at two database sizes.

Branching is meant to be O(1) in the size of the ancestor (docs/architecture.md §7, docs/pageserver.md):
a new timeline directory with a metadata file pointing at the ancestor and the branch LSN, nothing
copied. So the time should not grow with the data: the benchmark follows a primary, times branch
creation (best and median of N, after one untimed warm-up branch) with the ancestor holding a
pgbench database of the small scale, then re-initializes pgbench at the large scale on the same
timeline and times it again. ZENITH_BENCH_SIZE=tiny (CI): scale 1 vs 2; full: scale 1 vs 10.

The measured time is the whole HTTP request as a client sees it, including the timeline detail
in the response (whose current_logical_size is computed on each request from the relation sizes,
so it grows with the number of relations, not with their size). Prints both figures and the ratio
and writes performance/results/branch_creation.json.
"""

import statistics
import time
from pathlib import Path

from fixtures.benchmark import write_result
from fixtures.pageserver import Pageserver
from fixtures.utils import parse_lsn, wait_until
from fixtures.zenith_fixtures import PortDistributor, VanillaPostgres

SIZES = {
    # (small scale, large scale, timed branches per scale)
    "tiny": (1, 2, 5),
    "full": (1, 10, 20),
}


def test_branch_creation_time(
    bench_size: str,
    test_output_dir: Path,
    vanilla_pg: VanillaPostgres,
    port_distributor: PortDistributor,
):
    small_scale, large_scale, reps = SIZES[bench_size]
    ps = Pageserver(
        test_output_dir / "pageserver",
        port_distributor.get_port(),
        port_distributor.get_port(),
        overrides=["wait_lsn_timeout='30s'"],
    )
    ps.init()
    ps.start()
    try:
        primary = vanilla_pg
        primary.initdb()
        tenant = ps.tenant_create()
        main = ps.timeline_create(tenant, import_pgdata=str(primary.pgdata))["timeline_id"]
        primary.configure(["wal_level = replica", "max_wal_senders = 4", "max_wal_size = 4GB"])
        primary.start()
        primary.safe_psql("SELECT pg_create_physical_replication_slot('pageserver')")
        ps.set_wal_source(tenant, main, f"host=127.0.0.1 port={primary.port} user={primary.user} slot=pageserver")

        def measure(scale: int) -> dict:
            primary.pgbench("-i", "-s", str(scale))
            end = parse_lsn(primary.safe_psql("SELECT pg_current_wal_insert_lsn()")[0][0])
            wait_until(
                f"ingest at scale {scale}",
                lambda: parse_lsn(ps.timeline_detail(tenant, main)["last_record_lsn"]) >= end,
                timeout=600,
            )
            ps.checkpoint(tenant, main)  # branch from a durable ancestor at both scales
            parent = ps.timeline_detail(tenant, main)
            times = []
            branch = None
            for i in range(reps + 1):
                t0 = time.perf_counter()
                branch = ps.timeline_create(tenant, ancestor_timeline_id=main)
                elapsed = time.perf_counter() - t0
                if i > 0:  # the first one is the warm-up
                    times.append(elapsed)
                assert branch["ancestor_timeline_id"] == main, branch
                assert parse_lsn(branch["ancestor_lsn"]) == parse_lsn(parent["last_record_lsn"]), (branch, parent)
            # The branch sees the ancestor's data: same logical size at the branch point.
            assert branch["current_logical_size"] == parent["current_logical_size"], (branch, parent)
            # How much of that is the detail in the response (logical size computed per request).
            detail_times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                ps.timeline_detail(tenant, branch["timeline_id"])
                detail_times.append(time.perf_counter() - t0)
            return {
                "scale": scale,
                "logical_size_bytes": parent["current_logical_size"],
                "ancestor_physical_size_bytes": parent["current_physical_size"],
                "best_seconds": min(times),
                "median_seconds": statistics.median(times),
                "all_seconds": times,
                "branch_detail_get_median_seconds": statistics.median(detail_times),
            }

        small = measure(small_scale)
        large = measure(large_scale)
        ratio_best = large["best_seconds"] / small["best_seconds"]
        ratio_median = large["median_seconds"] / small["median_seconds"]
        result = {
            "size": bench_size,
            "repetitions": reps,
            "small": small,
            "large": large,
            "ratio_best_large_vs_small": ratio_best,
            "ratio_median_large_vs_small": ratio_median,
        }
        path = write_result("branch_creation", result)
        lines = [f"\nBranch creation via HTTP, best / median of {reps}:"]
        for r in (small, large):
            lines.append(
                f"  pgbench scale {r['scale']:3d} (logical {r['logical_size_bytes'] / 1e6:7.1f} MB, ancestor "
                f"physical {r['ancestor_physical_size_bytes'] / 1e6:7.1f} MB): "
                f"{r['best_seconds'] * 1e3:7.2f} ms / {r['median_seconds'] * 1e3:7.2f} ms "
                f"(GET of the branch's detail alone: median {r['branch_detail_get_median_seconds'] * 1e3:.2f} ms)"
            )
        lines.append(f"  ratio scale {large_scale} / scale {small_scale}: best {ratio_best:.2f}x, median {ratio_median:.2f}x")
        lines.append(f"  result: {path}")
        print("\n".join(lines))
    finally:
        ps.stop(immediate=True)
