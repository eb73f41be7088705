"""WAL decoding throughput: our `waldecode --stats` against pg_waldump on the same WAL files.

pgbench generates the WAL (ZENITH_BENCH_SIZE=tiny: a few MB, full: >= 100 MB), then both tools
decode the same LSN range [start, end) of the stopped server's pg_wal, best of N runs each after a
warm-up run (so the files are in the page cache). pg_waldump runs three ways: printing records to
/dev/null (its normal use), --quiet (decodes, prints nothing: the fair baseline) and --stats.
Prints MB/s of each and the ratios, and writes performance/results/wal_decode.json.
"""

import json
import os
from pathlib import Path

from fixtures.benchmark import best_of, write_result
from fixtures.utils import format_lsn, log, parse_lsn, zenith_binary
from fixtures.waldecode import is_panic, run_waldecode
from fixtures.waldump import parse_waldump_stats_total
from fixtures.zenith_fixtures import VanillaPostgres

SIZES = {
    # pgbench scale, transactions per client (2 clients), repetitions, minimum WAL bytes
    "tiny": {"scale": 1, "transactions": 500, "repetitions": 5, "min_wal_bytes": 2_000_000},
    "full": {"scale": 10, "transactions": 5000, "repetitions": 5, "min_wal_bytes": 100_000_000},
}


def test_wal_decode_throughput(
    vanilla_pg: VanillaPostgres, pg_bin, test_output_dir: Path, bench_size: str
):
    zenith_binary("waldecode")
    params = SIZES[bench_size]

    pg = vanilla_pg
    pg.configure(
        [
            "wal_level = replica",
            "wal_keep_size = '100GB'",
            "max_wal_size = '100GB'",
            "wal_recycle = off",
            "checkpoint_timeout = '1d'",
            "fsync = off",
            "synchronous_commit = off",
        ]
    )
    pg.start()
    start = parse_lsn(pg.safe_psql("SELECT pg_current_wal_insert_lsn()")[0][0])
    pg.pgbench("-i", "-s", str(params["scale"]), "-q")
    pg.safe_psql("CHECKPOINT")
    pg.pgbench("-c", "2", "-j", "2", "-t", str(params["transactions"]))
    end = parse_lsn(pg.safe_psql("SELECT pg_current_wal_insert_lsn()")[0][0])
    pg.stop("fast")

    wal_bytes = end - start
    mb = wal_bytes / 1e6
    log.info("WAL to decode: %s .. %s, %.1f MB", format_lsn(start), format_lsn(end), mb)
    assert wal_bytes >= params["min_wal_bytes"], f"the workload wrote only {mb:.1f} MB of WAL"

    range_args = ["--start", format_lsn(start), "--end", format_lsn(end)]
    waldump_base = ["pg_waldump", "-p", pg.pg_wal, *range_args]

    # correctness first: both decode the same number of records in the range
    stats = pg_bin.run_capture([*waldump_base, "--stats"])
    waldump_records = parse_waldump_stats_total(stats.stdout)["count"]
    out = test_output_dir / "waldecode-stats.json"
    decoded = run_waldecode(["--stats", *range_args, pg.pg_wal], out, parse=False)
    assert not is_panic(decoded.returncode, decoded.stderr), decoded.stderr
    assert decoded.returncode == 0, f"waldecode failed: {decoded.stderr}"
    own = json.loads(out.read_text().strip().splitlines()[-1])
    assert own["records"] == waldump_records, (
        f"waldecode decoded {own['records']} records, pg_waldump {waldump_records}"
    )

    reps = params["repetitions"]
    runs = {
        "pg_waldump_text": lambda: pg_bin.run_capture(waldump_base, stdout_path=Path(os.devnull)),
        "pg_waldump_quiet": lambda: pg_bin.run_capture([*waldump_base, "--quiet"]),
        "pg_waldump_stats": lambda: pg_bin.run_capture([*waldump_base, "--stats"]),
        "waldecode_stats": lambda: _run_waldecode_checked(range_args, pg.pg_wal, out),
    }
    timings = {}
    for name, run in runs.items():
        t = best_of(reps, run)
        t["mb_per_sec"] = mb / t["best_seconds"]
        timings[name] = t
    own = json.loads(out.read_text().strip().splitlines()[-1])

    ours = timings["waldecode_stats"]["mb_per_sec"]
    ratios = {
        f"waldecode_vs_{name}": ours / t["mb_per_sec"]
        for name, t in timings.items()
        if name.startswith("pg_waldump")
    }
    result = {
        "size": bench_size,
        "start_lsn": format_lsn(start),
        "end_lsn": format_lsn(end),
        "wal_bytes": wal_bytes,
        "records": waldump_records,
        "repetitions": reps,
        "timings": timings,
        "waldecode_self_reported": own,
        "ratios": ratios,
    }
    path = write_result("wal_decode", result)

    lines = [f"\nWAL decode throughput, {mb:.1f} MB, {waldump_records} records, best of {reps}:"]
    for name, t in timings.items():
        lines.append(f"  {name:18s} {t['best_seconds']:8.3f} s {t['mb_per_sec']:10.1f} MB/s")
    lines.append(f"  waldecode's own figure (decode only): {own.get('mb_per_sec', 0):.1f} MB/s")
    for name, r in ratios.items():
        lines.append(f"  {name}: {r:.2f}x")
    lines.append(f"  result: {path}")
    print("\n".join(lines))
    log.info("\n".join(lines))


def _run_waldecode_checked(range_args, pg_wal: Path, out: Path) -> None:
    decoded = run_waldecode(["--stats", *range_args, pg_wal], out, parse=False)
    assert decoded.returncode == 0, f"waldecode failed: {decoded.stderr}"
