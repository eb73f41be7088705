"""The pageserver follows a busy primary with bounded resources, and stores it compactly.

A stock PostgreSQL primary runs `pgbench -i -s SCALE` and then `pgbench -c 4` for DURATION
seconds; the pageserver follows it through a replication slot with a small checkpoint_distance, so
flushes, compaction, image layers and GC all run in the background during the load. Sampled every
0.1 s throughout:

- the pageserver's RSS stays under page_cache_size + 512 MiB;
- its open file descriptors stay under 300;
- `last_record_lsn` never stands still for more than 1 s while the primary has flushed WAL
  beyond it (ingest never waits for a flush, an image or GC).

At the end every block of every relation served over GetPage@latest equals the primary's
(masked; fixtures/pages_match.py). Then storage: with `pitr_interval=1h` GC keeps the history and
the ratio physical/logical is printed; compaction and GC with a zero horizon bring the physical
size (the timeline's layer files) to at most the logical size (the databases' relation sizes).

CI size: scale 5 for 60 s. Full size (scale 100 for 10 minutes): ZENITH_TEST_SCALE=100 (duration
ZENITH_TEST_DURATION, default 600 s when the scale is above 5), or `make bench`.
"""

import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional

import psycopg2
import requests
from fixtures.benchmark import write_result
from fixtures.pages_match import checkpoint_lsn, compare_all, follow_new_primary, list_relations, wait_ingested
from fixtures.pageserver import Pageserver
from fixtures.utils import format_lsn, parse_lsn
from fixtures.zenith_env import ZenithEnvBuilder
from fixtures.zenith_fixtures import VanillaPostgres

FULL = os.environ.get("ZENITH_BENCH_SIZE") == "full"
SCALE = int(os.environ.get("ZENITH_TEST_SCALE", "100" if FULL else "5"))
DURATION = int(os.environ.get("ZENITH_TEST_DURATION", "600" if SCALE > 5 else "60"))
MiB = 1024 * 1024
PAGE_CACHE_PAGES = 8192  # 64 MiB (the default)
RSS_LIMIT = PAGE_CACHE_PAGES * 8192 + 512 * MiB
FD_LIMIT = 300
STALL_LIMIT = 1.0


@dataclass
class Samples:
    max_rss: int = 0
    max_fds: int = 0
    max_stall: float = 0.0
    stall_at: str = ""
    count: int = 0
    lsn_samples: int = 0
    behind_samples: int = 0
    errors: List[str] = field(default_factory=list)


def metric(text: str, name: str, timeline: str) -> Optional[int]:
    m = re.search(rf'^{name}{{[^}}]*timeline_id="{timeline}"[^}}]*}} (\S+)$', text, re.M)
    return int(float(m.group(1))) if m else None


class Monitor:
    """Samples the pageserver's RSS, fds and last_record_lsn, and the primary's flush LSN."""

    def __init__(self, ps: Pageserver, pid: int, primary: VanillaPostgres, timeline: str):
        self.ps, self.pid, self.timeline = ps, pid, timeline
        self.conn = psycopg2.connect(**primary.conn_options())
        self.conn.autocommit = True
        self.samples = Samples()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample_process(self) -> None:
        s = self.samples
        for line in open(f"/proc/{self.pid}/status"):
            if line.startswith("VmRSS:"):
                s.max_rss = max(s.max_rss, int(line.split()[1]) * 1024)
        s.max_fds = max(s.max_fds, len(os.listdir(f"/proc/{self.pid}/fd")))

    def _run(self) -> None:
        s = self.samples
        last_lsn, since = -1, None  # since: first time WAL was seen waiting with last_lsn unchanged
        session = requests.Session()
        try:
            while not self.stop.is_set():
                t = time.monotonic()
                self._sample_process()
                with self.conn.cursor() as cur:
                    cur.execute("SELECT pg_current_wal_flush_lsn()")
                    primary_lsn = parse_lsn(cur.fetchone()[0])
                text = session.get(f"{self.ps.http_base}/metrics", timeout=30).text
                lsn = metric(text, "pageserver_last_record_lsn", self.timeline)
                s.count += 1
                if lsn is not None:
                    s.lsn_samples += 1
                    s.behind_samples += primary_lsn > lsn
                    if lsn != last_lsn:
                        last_lsn, since = lsn, None
                    if primary_lsn > lsn:
                        if since is None:
                            since = t
                        elif t - since > s.max_stall:
                            s.max_stall = t - since
                            s.stall_at = f"{format_lsn(lsn)} (primary at {format_lsn(primary_lsn)})"
                    else:
                        since = None
                self.stop.wait(max(0.0, 0.1 - (time.monotonic() - t)))
        except Exception as e:  # noqa: BLE001 - reported by the test
            s.errors.append(repr(e))
        finally:
            self.conn.close()

    def __enter__(self) -> "Monitor":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def test_follow_busy_primary_with_bounded_resources(zenith_env_builder: ZenithEnvBuilder, vanilla_pg: VanillaPostgres):
    zenith_env_builder.pageserver_config += [
        f"page_cache_size={PAGE_CACHE_PAGES}",
        "wait_lsn_timeout='60s'",
        "tenant_config.checkpoint_distance=16777216",
        "tenant_config.checkpoint_timeout='10s'",
        "tenant_config.compaction_threshold=4",
        "tenant_config.gc_period='10s'",
        "tenant_config.gc_horizon=67108864",
        "tenant_config.pitr_interval='0s'",
    ]
    env = zenith_env_builder.init_start()
    ps = env.pageserver
    primary = vanilla_pg
    # No autovacuum: after the final CHECKPOINT nothing may change a page in shared buffers that
    # the pageserver has not seen (see test_pages_match).
    tenant, timeline = follow_new_primary(ps, primary, ["autovacuum = off", "max_wal_size = '1GB'"])
    pid = ps.pid
    assert pid is not None
    start_lsn = parse_lsn(primary.safe_psql("SELECT pg_current_wal_insert_lsn()")[0][0])

    t0 = time.monotonic()
    with Monitor(ps, pid, primary, timeline) as mon:
        primary.pgbench("-i", "-s", str(SCALE), "-q")
        t_init = time.monotonic() - t0
        primary.pgbench("-c", "4", "-j", "2", "-T", str(DURATION), "-n")
        end_lsn = checkpoint_lsn(primary)
        wait_ingested(ps, tenant, timeline, end_lsn, timeout=600)
    elapsed = time.monotonic() - t0
    s = mon.samples
    assert not s.errors, s.errors
    assert s.lsn_samples > 0.9 * s.count, f"last_record_lsn missing from /metrics in {s.count - s.lsn_samples} samples"
    wal = end_lsn - start_lsn

    dboid, rels = list_relations(primary, "postgres")
    main, vm, fsm = compare_all(ps, tenant, timeline, rels)

    # Storage: history kept for an hour, then none.
    ps.checkpoint(tenant, timeline)
    gc_path = f"/v1/tenant/{tenant}/timeline/{timeline}/do_gc"
    ps.http("PUT", gc_path, json={"gc_horizon": 0, "pitr_interval": "1h"})
    d = ps.timeline_detail(tenant, timeline)
    pitr_ratio = d["current_physical_size"] / d["current_logical_size"]
    ps.compact(tenant, timeline)
    gc = ps.http("PUT", gc_path, json={"gc_horizon": 0, "pitr_interval": "0s"})
    d = ps.timeline_detail(tenant, timeline)
    physical, logical = d["current_physical_size"], d["current_logical_size"]
    ratio = physical / logical

    layers = list((ps.workdir / "tenants" / tenant / "timelines" / timeline).iterdir())
    figures = {
        "scale": SCALE,
        "duration_seconds": DURATION,
        "init_seconds": round(t_init, 1),
        "wal_bytes": wal,
        "samples": s.count,
        "samples_with_wal_waiting": s.behind_samples,
        "max_rss_bytes": s.max_rss,
        "rss_limit_bytes": RSS_LIMIT,
        "max_open_fds": s.max_fds,
        "max_ingest_stall_seconds": round(s.max_stall, 3),
        "blocks_compared": main.blocks + vm.blocks,
        "mismatches": len(main.mismatches) + len(vm.mismatches),
        "physical_bytes": physical,
        "logical_bytes": logical,
        "physical_to_logical": round(ratio, 3),
        "physical_to_logical_pitr_1h": round(pitr_ratio, 3),
        "files_in_timeline_dir": len(layers),
        "gc": gc,
    }
    write_result(f"pageserver_scale_{SCALE}", figures)
    print(
        f"\nscale {SCALE}, {DURATION} s of pgbench -c 4 after init ({t_init:.0f} s); {wal / MiB:.0f} MiB of WAL "
        f"ingested in {elapsed:.0f} s ({s.count} samples, WAL waiting in {s.behind_samples})\n"
        f"peak RSS {s.max_rss / MiB:.0f} MiB (limit {RSS_LIMIT / MiB:.0f}), peak fds {s.max_fds} (limit {FD_LIMIT}), "
        f"longest ingest stall with WAL waiting {s.max_stall:.2f} s (limit {STALL_LIMIT}) at {s.stall_at}\n"
        f"pages: {main.blocks + vm.blocks} blocks compared, {len(main.mismatches) + len(vm.mismatches)} mismatches "
        f"(fsm, not asserted: {len(fsm.mismatches)})\n"
        f"storage: physical {physical / MiB:.1f} MiB / logical {logical / MiB:.1f} MiB = {ratio:.3f} after GC "
        f"with zero horizon; {pitr_ratio:.3f} with pitr_interval=1h; GC {gc}"
    )
    problems = main.mismatches + vm.mismatches
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:20])
    assert main.blocks > 0
    assert s.max_rss < RSS_LIMIT, figures
    assert s.max_fds < FD_LIMIT, figures
    assert s.max_stall <= STALL_LIMIT, figures
    assert ratio <= 1.0, figures
