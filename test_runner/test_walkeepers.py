"""Walkeepers: a quorum makes every commit durable; a compute can die at any moment and nothing
acknowledged is lost. Real processes: three walkeepers, the pageserver and computes with the
walproposer, driven through the zenith CLI; faults by kill -9, SIGSTOP/SIGCONT and a second
compute on the same timeline.

ZENITH_TEST_CHAOS_SECONDS sets the length of the ledger chaos phase (default 60).
"""

import logging
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import List, Optional

import psycopg2
import pytest

from fixtures.utils import parse_lsn, wait_until
from fixtures.zenith_env import Postgres, ZenithEnv, _alive

log = logging.getLogger("test_walkeepers")

CHAOS_SECONDS = int(os.environ.get("ZENITH_TEST_CHAOS_SECONDS", "60"))
ACCOUNTS = 100
INITIAL_BALANCE = 1000


def compute_dir(env: ZenithEnv, name: str) -> Path:
    return env.repo_dir / "pgdatadirs" / "tenants" / env.initial_tenant / name


def postmaster_pid(env: ZenithEnv, name: str) -> int:
    return int((compute_dir(env, name) / "pgdata" / "postmaster.pid").read_text().split()[0])


def kill9_compute(env: ZenithEnv, name: str) -> None:
    """kill -9 the postmaster and every backend of the compute."""
    pgdata = str(compute_dir(env, name) / "pgdata")
    pid = postmaster_pid(env, name)
    children = [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and _ppid(int(p)) == pid
    ]
    for p in [pid] + children:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(f"compute {name} ({pgdata}) to die", lambda: not any(_alive(p) for p in [pid] + children))


def _ppid(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().split(")")[-1].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def commit_end_lsn(env: ZenithEnv, pg_name: str, xid: int, start: int) -> int:
    """End LSN of the COMMIT record of `xid` in the compute's own pg_wal (per pg_waldump), which
    holds WAL from `start` (where the compute started)."""
    wal_dir = compute_dir(env, pg_name) / "pgdata" / "pg_wal"
    out = env.pg_bin.run_capture(
        ["pg_waldump", "-p", str(wal_dir), "-s", "%X/%X" % (start >> 32, start & 0xFFFFFFFF), "-r", "Transaction"],
        check=False,
    ).stdout
    for line in out.splitlines():
        m = re.search(r"len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*(\d+), lsn: ([0-9A-F]+/[0-9A-F]+)", line)
        if m and int(m.group(2)) == xid and "COMMIT" in line:
            return parse_lsn(m.group(3)) + int(m.group(1))
    raise AssertionError(f"no COMMIT of xid {xid} in {wal_dir}")


def compute_wal(env: ZenithEnv, pg_name: str, start: int, end: int) -> bytes:
    wal_dir = compute_dir(env, pg_name) / "pgdata" / "pg_wal"
    seg = 16 << 20
    out = bytearray()
    pos = start
    while pos < end:
        segno = pos // seg
        with open(wal_dir / ("%08X%08X%08X" % (1, segno // 0x100, segno % 0x100)), "rb") as f:
            f.seek(pos % seg)
            n = min(end - pos, seg - pos % seg)
            out += f.read(n)
            pos += n
    return bytes(out)


def test_no_quorum_no_commit(zenith_env_builder):
    env = zenith_env_builder.init_start()
    pg = env.postgres.create_start("main")
    pg.safe_psql("CREATE TABLE t(x int)")
    tl = env.branch_timeline("main")
    wks = env.walkeepers
    assert len(wks) == 3

    wks[1].kill9()
    wks[2].kill9()
    result: dict = {}

    def commit():
        try:
            conn = pg.connect(autocommit=False)
            with conn.cursor() as cur:
                cur.execute("INSERT INTO t VALUES (1)")
                cur.execute("SELECT txid_current()")
                result["xid"] = cur.fetchone()[0]
            conn.commit()
            result["done"] = time.monotonic()
            conn.close()
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e

    th = threading.Thread(target=commit)
    th.start()
    # The commit must not return while only one walkeeper has its WAL: give it every chance.
    wait_until("the INSERT's WAL to reach walkeeper 1", lambda: "xid" in result, timeout=30)
    th.join(5)
    assert th.is_alive() and "done" not in result, f"a commit returned without a majority: {result}"
    st = wks[0].timeline_status(tl)
    assert parse_lsn(st["commit_lsn"]) < parse_lsn(st["flush_lsn"]), st

    restarted = time.monotonic()
    wks[1].start()
    th.join(60)
    assert "done" in result, f"the commit did not return once a majority was back: {result}"
    log.info("commit returned %.2fs after the second walkeeper came back", result["done"] - restarted)

    # The acknowledged commit is on both live walkeepers' disks, byte for byte as the compute wrote it.
    start = max(parse_lsn(w.timeline_status(tl)["term_history"][-1][1]) for w in wks[:2])
    end = commit_end_lsn(env, "main", result["xid"], start)
    theirs = compute_wal(env, "main", start, end)
    for w in wks[:2]:
        st = w.timeline_status(tl)
        assert parse_lsn(st["flush_lsn"]) >= end, st
        assert w.read_wal(tl, start, end) == theirs, f"walkeeper {w.id} WAL differs"
    wks[2].start()
    assert pg.safe_psql("SELECT count(*) FROM t")[0][0] == 1


class Ledger:
    """Bank transfers between ACCOUNTS accounts; every transfer acknowledged by COMMIT is recorded."""

    def __init__(self, pg: Postgres):
        self.pg = pg
        self.acked: List[int] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.errors = 0

    def create(self) -> None:
        self.pg.safe_psql(
            "CREATE TABLE accounts(id int PRIMARY KEY, balance bigint NOT NULL);"
            "CREATE TABLE transfers(id bigint PRIMARY KEY, src int, dst int, amount int);"
            f"INSERT INTO accounts SELECT g, {INITIAL_BALANCE} FROM generate_series(1, {ACCOUNTS}) g"
        )

    def client(self, n: int) -> None:
        rng = random.Random(n)
        seq = 0
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = self.pg.connect(autocommit=False, connect_timeout=5)
                src, dst = rng.sample(range(1, ACCOUNTS + 1), 2)
                amount = rng.randint(1, 100)
                tid = n * 10_000_000 + seq
                seq += 1
                with conn.cursor() as cur:
                    cur.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, src))
                    cur.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, dst))
                    cur.execute("INSERT INTO transfers VALUES (%s, %s, %s, %s)", (tid, src, dst, amount))
                conn.commit()
                with self.lock:
                    self.acked.append(tid)
            except psycopg2.Error:
                self.errors += 1
                try:
                    if conn is not None:
                        conn.close()
                except psycopg2.Error:
                    pass
                conn = None
                time.sleep(0.1)

    def run(self, clients: int) -> List[threading.Thread]:
        threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        return threads

    def check(self, pg: Postgres) -> None:
        total = pg.safe_psql("SELECT sum(balance), count(*) FROM accounts")[0]
        assert total == (ACCOUNTS * INITIAL_BALANCE, ACCOUNTS), f"balances not conserved: {total}"
        present = {r[0] for r in pg.safe_psql("SELECT id FROM transfers")}
        lost = [t for t in self.acked if t not in present]
        assert not lost, f"{len(lost)} acknowledged transfers lost, e.g. {lost[:5]}"
        # Each account's balance is what its transfers say.
        bad = pg.safe_psql(
            "SELECT a.id FROM accounts a LEFT JOIN ("
            " SELECT id, sum(d) s FROM ("
            "  SELECT src id, -amount d FROM transfers UNION ALL SELECT dst, amount FROM transfers) x"
            " GROUP BY id) t ON t.id = a.id"
            f" WHERE a.balance <> {INITIAL_BALANCE} + coalesce(t.s, 0)"
        )
        assert not bad, f"accounts whose balance does not match their transfers: {bad[:5]}"


def amcheck(env: ZenithEnv, pg: Postgres) -> None:
    p = env.pg_bin.run_capture(
        ["pg_amcheck", *pg.cli_args(), "--install-missing", "--heapallindexed", "postgres"], check=False
    )
    assert p.returncode == 0, f"pg_amcheck: {p.stdout}\n{p.stderr}"


@pytest.mark.timeout(CHAOS_SECONDS + 600)
def test_ledger_under_walkeeper_chaos(zenith_env_builder):
    env = zenith_env_builder.init_start()
    pg = env.postgres.create_start("main")
    ledger = Ledger(pg)
    ledger.create()
    threads = ledger.run(8)
    rng = random.Random(42)
    deadline = time.monotonic() + CHAOS_SECONDS
    kills = 0
    while time.monotonic() < deadline:
        victim = rng.choice(env.walkeepers)
        log.info("kill -9 walkeeper %d", victim.id)
        victim.kill9()
        kills += 1
        time.sleep(5)  # the chaos schedule: down for 5 s ...
        victim.start()
        time.sleep(5)  # ... and up for 5 s, every 10 s
    acked_during_chaos = len(ledger.acked)
    # Then the compute and the pageserver die too, mid-load.
    kill9_compute(env, "main")
    env.pageserver.kill9()
    ledger.stop.set()
    for t in threads:
        t.join(30)
    log.info("%d walkeeper kills, %d transfers acknowledged, %d client errors", kills, acked_during_chaos, ledger.errors)
    assert acked_during_chaos > 100, "the ledger made almost no progress under chaos"

    env.zenith_cli(["start"])
    p = env.zenith_cli(["pg", "start", "main"])
    assert "sync-walkeepers" in p.stdout
    ledger.check(pg)
    amcheck(env, pg)


def test_compute_restart_keeps_every_acknowledged_commit(zenith_env_builder):
    env = zenith_env_builder.init_start()
    pg = env.postgres.create_start("main")
    ledger = Ledger(pg)
    ledger.create()
    threads = ledger.run(4)
    wait_until("some transfers", lambda: len(ledger.acked) >= 200, timeout=60)
    kill9_compute(env, "main")
    ledger.stop.set()
    for t in threads:
        t.join(30)
    p = env.zenith_cli(["pg", "start", "main"])
    m = re.search(r"sync-walkeepers (\d+) ms, basebackup (\d+) ms, start (\d+) ms", p.stdout)
    assert m, p.stdout
    log.info("restart: %s", m.group(0))
    ledger.check(pg)
    # The restarted compute writes on.
    pg.safe_psql("UPDATE accounts SET balance = balance WHERE id = 1")


def test_second_compute_fences_the_first(zenith_env_builder):
    env = zenith_env_builder.init_start()
    pg = env.postgres.create_start("main")
    ledger = Ledger(pg)
    ledger.create()
    threads = ledger.run(2)
    wait_until("some transfers", lambda: len(ledger.acked) >= 50, timeout=60)

    # A second compute on the same branch, "by hand": the CLI refuses to create one, so copy the
    # first one's definition under another name and port, and start that.
    src = compute_dir(env, "main")
    dst = compute_dir(env, "intruder")
    dst.mkdir()
    port = env.port_distributor.get_port()
    spec = (src / "compute.toml").read_text()
    spec = re.sub(r'name = "main"', 'name = "intruder"', spec)
    spec = re.sub(r"port = \d+", f"port = {port}", spec)
    (dst / "compute.toml").write_text(spec)
    with pytest.raises(Exception):
        env.zenith_cli(["pg", "create", "intruder2", "--branch", "main"])
    env.zenith_cli(["pg", "start", "intruder"])
    intruder = Postgres(env, "intruder", port, "main")

    # The first compute is deposed: its commits fail and it shuts down.
    wait_until("the old compute to shut down", lambda: not _alive(postmaster_pid_or_zero(env, "main")), timeout=60)
    log_text = (src / "compute.log").read_text()
    assert "deposed" in log_text and "another compute has taken over" in log_text
    ledger.stop.set()
    for t in threads:
        t.join(30)
    with pytest.raises(psycopg2.Error):
        pg.safe_psql("INSERT INTO transfers VALUES (-1, 1, 2, 0)")
    # The ledger is consistent on the new compute, which has every acknowledged transfer.
    ledger.check(intruder)
    intruder.safe_psql("UPDATE accounts SET balance = balance + 0 WHERE id = 1")


def postmaster_pid_or_zero(env: ZenithEnv, name: str) -> int:
    try:
        return postmaster_pid(env, name)
    except (FileNotFoundError, ValueError, IndexError):
        return 0


def test_divergent_wal_is_truncated(zenith_env_builder):
    env = zenith_env_builder.init_start()
    pg = env.postgres.create_start("main")
    pg.safe_psql("CREATE TABLE t(x int); INSERT INTO t VALUES (1)")
    tl = env.branch_timeline("main")
    w1, w2, w3 = env.walkeepers

    # Only walkeeper 1 gets the next transaction's WAL: it is never committed. (The others are
    # killed, not frozen: a frozen walkeeper would find the WAL in its socket buffer when thawed.)
    w2.kill9()
    w3.kill9()
    before = parse_lsn(w1.timeline_status(tl)["flush_lsn"])
    result: dict = {}

    def doomed():
        try:
            pg.safe_psql("INSERT INTO t SELECT 100 FROM generate_series(1, 1000)")
            result["acked"] = True
        except psycopg2.Error as e:
            result["error"] = e

    th = threading.Thread(target=doomed, daemon=True)
    th.start()
    wait_until("divergent WAL on walkeeper 1", lambda: parse_lsn(w1.timeline_status(tl)["flush_lsn"]) > before)
    kill9_compute(env, "main")
    th.join(30)
    assert "acked" not in result
    divergent_end = parse_lsn(w1.timeline_status(tl)["flush_lsn"])

    # The others move on while walkeeper 1 is frozen.
    w1.signal(signal.SIGSTOP)
    w2.start()
    w3.start()
    env.zenith_cli(["pg", "start", "main"])
    pg.safe_psql("INSERT INTO t SELECT 2 FROM generate_series(1, 500)")
    moved_on = parse_lsn(w2.timeline_status(tl)["flush_lsn"])
    assert moved_on > before

    # Walkeeper 1 returns: its divergent WAL is truncated and it catches up.
    w1.signal(signal.SIGCONT)

    def caught_up():
        s1, s2 = w1.timeline_status(tl), w2.timeline_status(tl)
        return s1["term"] == s2["term"] and s1["flush_lsn"] == s2["flush_lsn"] and s1["epoch"] == s2["epoch"]

    wait_until("walkeeper 1 to catch up", caught_up, timeout=90)
    s1, s2 = w1.timeline_status(tl), w2.timeline_status(tl)
    start = max(parse_lsn(s1["local_start_lsn"]), parse_lsn(s2["local_start_lsn"]))
    end = parse_lsn(s2["flush_lsn"])
    assert w1.read_wal(tl, start, end) == w2.read_wal(tl, start, end), "walkeeper 1's WAL differs from the majority's"
    log.info("walkeeper 1 had divergent WAL up to %X, now equals the majority up to %X", divergent_end, end)
    assert pg.safe_psql("SELECT count(*), sum(x) FROM t")[0] == (501, 1 + 2 * 500)


def start_with_write_lag(zenith_env_builder, lag: str):
    """A compute with zenith.max_replication_write_lag = lag, in effect."""
    env = zenith_env_builder.init_start()
    pg = env.postgres.create_start("main")
    pg.safe_psql(f"ALTER SYSTEM SET zenith.max_replication_write_lag = '{lag}'")
    pg.safe_psql("SELECT pg_reload_conf()")
    wait_until(
        "the setting to be in effect",
        lambda: pg.safe_psql("SHOW zenith.max_replication_write_lag")[0][0] == lag,
    )
    return env, pg


def pause_ingest(env) -> None:
    """The pageserver goes on serving pages (a stateless compute reads every page from it) but
    takes no more WAL: its WAL source points at a port nobody listens on."""
    nowhere = env.port_distributor.get_port()
    env.pageserver.set_wal_source(env.initial_tenant, env.branch_timeline("main"), f"walkeepers=127.0.0.1:{nowhere}")


def resume_ingest(env) -> None:
    addrs = ",".join(w.pg_addr for w in env.walkeepers)
    env.pageserver.set_wal_source(env.initial_tenant, env.branch_timeline("main"), f"walkeepers={addrs}")


def insert_waits(pg) -> bool:
    """Whether one INSERT is waiting for the pageserver (backpressure)."""
    rows = pg.safe_psql(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND query LIKE 'INSERT%'"
    )
    return rows[0][0] == 1


def test_backpressure_waits_for_the_pageserver(zenith_env_builder):
    """With zenith.max_replication_write_lag set, statements that write wait while the
    pageserver has ingested that much less WAL than the compute flushed, and go on when it
    catches up."""
    env, pg = start_with_write_lag(zenith_env_builder, "1MB")
    pg.safe_psql("CREATE TABLE t(x int)")
    pause_ingest(env)
    done = []
    stop = threading.Event()

    def writer():
        conn = pg.connect()
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("INSERT INTO t SELECT g FROM generate_series(1, 20000) g")  # ~1.1 MB of WAL
                done.append(time.monotonic())
        conn.close()

    th = threading.Thread(target=writer, daemon=True)
    th.start()

    wait_until("a writer to wait for the pageserver", lambda: insert_waits(pg), timeout=60)
    n = len(done)
    assert n <= 3, f"{n} statements ran with the pageserver taking no WAL"
    # It stays waiting while the pageserver takes no WAL ...
    th.join(3)
    assert len(done) == n and insert_waits(pg)
    # ... and goes on once the pageserver has caught up.
    resume_ingest(env)
    wait_until("the writer to go on", lambda: len(done) >= n + 3, timeout=60)
    stop.set()
    th.join(60)


def test_backpressure_throttles_inside_one_statement(zenith_env_builder):
    """One statement writing far more WAL than zenith.max_replication_write_lag (an insert of
    ~100 MB of WAL, 50 times the allowed lag) with the pageserver taking no WAL waits part-way through,
    with the compute's WAL no more than about the allowed lag ahead of where the pageserver
    stopped; it finishes, whole, once the pageserver is back."""
    env, pg = start_with_write_lag(zenith_env_builder, "2MB")
    pg.safe_psql("CREATE TABLE t(x int, pad text)")
    stopped_at = env.wait_branch_caught_up(pg)
    pause_ingest(env)
    rows = 700_000
    result = []

    def writer():
        conn = pg.connect()
        with conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, {rows}) g"
            )
            result.append(cur.rowcount)
        conn.close()

    th = threading.Thread(target=writer, daemon=True)
    th.start()

    wait_until("the insert to wait for the pageserver", lambda: insert_waits(pg), timeout=120)
    ahead = pg.flush_lsn() - stopped_at
    log.info("the insert waits with the compute's WAL %d bytes past the pageserver's", ahead)
    # 2 MB allowed; one record and what autovacuum and checkpoints write go past it.
    assert ahead < 6 * 1024 * 1024, f"{ahead} bytes of WAL written with the pageserver taking no WAL"
    # It stays waiting while the pageserver takes no WAL ...
    th.join(3)
    assert not result and insert_waits(pg)
    assert pg.flush_lsn() - stopped_at < 6 * 1024 * 1024
    # ... and finishes once the pageserver takes WAL again.
    resume_ingest(env)
    th.join(300)
    assert result == [rows]
    assert pg.safe_psql("SELECT count(*) FROM t")[0][0] == rows
