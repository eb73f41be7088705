"""Commit latency and WAL throughput through the walkeepers, against what a user would run instead:
stock PostgreSQL 15 with synchronous replication to three `pg_receivewal --synchronous`
(synchronous_standby_names = 'ANY 2 (w1,w2,w3)': a commit waits until two of three have fsynced
it, like our quorum).

- pgbench -N (scale 10 full, 1 tiny), 1 and 4 clients: TPS of each, ratio ours / baseline.
- Bulk insert (>= 500 MB of WAL full, 32 MB tiny): WAL MB/s of each.

Same machine, same run, same PostgreSQL build and settings (fsync on, synchronous_commit on,
shared_buffers 128MB). ZENITH_BENCH_SIZE=full for real figures (`make bench`).
"""

import re
import subprocess
from pathlib import Path
from typing import List

from fixtures.benchmark import write_result
from fixtures.utils import log, parse_lsn
from fixtures.zenith_fixtures import VanillaPostgres


def pgbench_tps(client, clients: int, seconds: int, *args: str) -> float:
    """TPS of pgbench with `args` (default: -N, the simple-update script)."""
    p = client.pgbench(*(args or ("-N",)), "-c", str(clients), "-j", str(clients), "-T", str(seconds), "-n")
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", p.stdout)
    assert m, p.stdout
    return float(m.group(1))


def bulk_insert_mb_per_s(client, mb: int) -> dict:
    rows = mb * 1024 * 1024 // 160  # ~165 bytes of WAL per row of this table: a little over `mb`
    client.safe_psql("DROP TABLE IF EXISTS bulk; CREATE TABLE bulk(id int, pad text)")
    conn = client.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_flush_lsn()::text")
            start = parse_lsn(cur.fetchone()[0])
            import time

            t0 = time.perf_counter()
            cur.execute(f"INSERT INTO bulk SELECT g, repeat('x', 100) FROM generate_series(1, {rows}) g")
            seconds = time.perf_counter() - t0
            cur.execute("SELECT pg_current_wal_flush_lsn()::text")
            end = parse_lsn(cur.fetchone()[0])
    finally:
        conn.close()
    wal_mb = (end - start) / (1024 * 1024)
    return {"wal_mb": round(wal_mb, 1), "seconds": round(seconds, 2), "mb_per_s": round(wal_mb / seconds, 1)}


class SyncReplicationBaseline:
    """Stock PostgreSQL with three synchronous pg_receivewal; ANY 2 of them acknowledge commits."""

    def __init__(self, test_output_dir: Path, pg_bin, port_distributor):
        self.pg = VanillaPostgres(test_output_dir / "baseline", pg_bin, port_distributor.get_port())
        self.pg_bin = pg_bin
        self.dir = test_output_dir
        self.receivers: List[subprocess.Popen] = []

    def start(self) -> VanillaPostgres:
        self.pg.initdb()
        self.pg.configure(
            [
                "shared_buffers = 128MB",
                "wal_level = replica",
                "max_wal_senders = 10",
                "fsync = on",
                "synchronous_commit = on",
                "synchronous_standby_names = 'ANY 2 (w1,w2,w3)'",
            ]
        )
        self.pg.start()
        for i in (1, 2, 3):
            d = self.dir / f"receivewal{i}"
            d.mkdir()
            self.receivers.append(
                self.pg_bin.popen(
                    [
                        "pg_receivewal",
                        "-D",
                        d,
                        "--synchronous",
                        "-d",
                        f"host=127.0.0.1 port={self.pg.port} user={self.pg.user} application_name=w{i}",
                    ]
                )
            )
        # Wait until two receivers are synchronous standbys.
        from fixtures.utils import wait_until

        wait_until(
            "pg_receivewal to connect as synchronous standbys",
            lambda: self.pg.safe_psql("SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync','quorum')")[0][0]
            >= 2,
        )
        return self.pg

    def stop(self) -> None:
        for r in self.receivers:
            r.terminate()
            r.wait(30)
        self.pg.cleanup()


def test_walkeeper_commit_and_throughput(zenith_env_builder, pg_bin, port_distributor, test_output_dir, bench_size):
    full = bench_size == "full"
    scale = 10 if full else 1
    seconds = 60 if full else 5
    bulk_mb = 512 if full else 32

    env = zenith_env_builder.init_start()
    ours = env.postgres.create_start("main")
    ours.pgbench("-i", "-s", str(scale), "-q")
    base = SyncReplicationBaseline(test_output_dir, pg_bin, port_distributor)
    theirs = base.start()
    try:
        theirs.pgbench("-i", "-s", str(scale), "-q")
        results = {"scale": scale, "seconds": seconds}
        for clients in (1, 4):
            # Alternate, so that neither side gets the machine's quieter half.
            t_base = pgbench_tps(theirs, clients, seconds)
            t_ours = pgbench_tps(ours, clients, seconds)
            results[f"pgbench_N_{clients}_clients"] = {
                "walkeepers_tps": t_ours,
                "sync_replication_tps": t_base,
                "ratio": round(t_ours / t_base, 3),
            }
            log.info(
                "pgbench -N %d clients: walkeepers %.1f tps, sync replication %.1f tps, ratio %.3f",
                clients,
                t_ours,
                t_base,
                t_ours / t_base,
            )
        b_base = bulk_insert_mb_per_s(theirs, bulk_mb)
        b_ours = bulk_insert_mb_per_s(ours, bulk_mb)
        results["bulk_insert"] = {
            "walkeepers": b_ours,
            "sync_replication": b_base,
            "ratio": round(b_ours["mb_per_s"] / b_base["mb_per_s"], 3),
        }
        log.info("bulk insert: walkeepers %s, sync replication %s", b_ours, b_base)
        write_result("walkeeper_commit_and_throughput", results)
        print(results)
    finally:
        base.stop()
