"""PostgreSQL's own regression suite against a compute, and the database it leaves checked against
oracles nobody here wrote.

pg_regress runs the parallel schedule of the PostgreSQL build under test (`src/test/regress` in
the build directory, installcheck mode: it creates the database `regression` itself) against a
compute started by `zenith pg start`. Then pg_dumpall of the compute must equal that of a stock
PostgreSQL started from a full basebackup at the compute's last LSN, and pg_amcheck
--heapallindexed must find nothing on either. It runs twice: with the default shared_buffers, and
with 1MB, so that nearly every page goes through GetPage@LSN.

The only alternative expected output is `sequence_1.out`, added by patch 0006: sequences log every
value (docs/build.md), so a fresh sequence has nothing pre-logged (log_cnt 0, not 31 or 32).
"""

import os
from pathlib import Path

import pytest

from fixtures.snapshot import check_compute_snapshot
from fixtures.utils import base_dir, log

PG_BUILD = Path(os.environ.get("PG_BUILD_DIR", base_dir / "build" / "postgres")) / "src"
REGRESS = PG_BUILD / "src" / "test" / "regress"


# 1MB is the smallest power of two a stock server (this build, without the zenith extension)
# passes the parallel schedule with: at 512kB three tests fail for want of buffers. With it, nearly
# every page a test touches is evicted and read back from the pageserver.
# With 1MB nearly every page is read back from the pageserver: 2.5 minutes alone, 6 beside the
# rest of the suite on 3 pytest workers, 10 on 4 (past pytest's default limit of 10 minutes).
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("shared_buffers", ["default", "1MB"])
def test_pg_regress(zenith_env_builder, pg_bin, test_output_dir, port_distributor, shared_buffers):
    env = zenith_env_builder.init_start()
    settings = [] if shared_buffers == "default" else [f"shared_buffers={shared_buffers}"]
    pg = env.postgres.create_start("main", settings=settings)
    out = test_output_dir / "regress"
    out.mkdir()
    p = pg_bin.run_capture(
        [
            REGRESS / "pg_regress",
            f"--host={pg.host}",
            f"--port={pg.port}",
            f"--user={pg.user}",
            f"--inputdir={REGRESS}",
            f"--outputdir={out}",
            f"--bindir={pg_bin.bindir}",
            f"--dlpath={REGRESS}",
            "--max-concurrent-tests=20",
            f"--schedule={REGRESS / 'parallel_schedule'}",
        ],
        check=False,
        timeout=1800,
    )
    log.info("pg_regress: %s", p.stdout[-600:])
    diffs = out / "regression.diffs"
    assert p.returncode == 0, diffs.read_text()[:20000] if diffs.exists() else p.stdout
    assert " tests passed" in p.stdout or "All " in p.stdout, p.stdout[-2000:]

    # The compute's own check of every table and index.
    r = pg_bin.run_capture(
        ["pg_amcheck", *pg.cli_args(), "--all", "--heapallindexed", "--install-missing"], check=False
    )
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr

    # What the pageserver has at the compute's last LSN, in a stock PostgreSQL.
    pg.safe_psql("CHECKPOINT")
    check_compute_snapshot(env, pg, "after-regress", test_output_dir, pg_bin, port_distributor)
