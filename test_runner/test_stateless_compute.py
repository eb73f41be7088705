"""Stateless computes: PostgreSQL with no files of permanent relations, every such page read from
the pageserver (contrib/zenith's storage manager, core patches 0010-0014).

Most tests force pages out of shared buffers with zenith_test_utils' clear_buffer_cache(), so the
next read goes to the pageserver, and check that what comes back is what the compute had: tuples
with their command ids in the middle of a transaction, visibility and free-space maps, indexes
built without WAL, databases copied either way, subtransactions, prepared transactions,
sequences, truncation and rewrites. Every start makes a fresh data directory from a slim
basebackup, so stop/start is the other way to read everything back.
"""

import os
import threading
import time
from pathlib import Path
from typing import List

import psycopg2
import pytest

from fixtures.utils import log, wait_until


def start(zenith_env_builder, *settings: str, name: str = "main"):
    env = zenith_env_builder.init_start()
    pg = env.postgres.create_start(name, settings=settings)
    pg.safe_psql("CREATE EXTENSION zenith_test_utils")
    return env, pg


def pgdata(env, name: str = "main") -> Path:
    return env.repo_dir / "pgdatadirs" / "tenants" / env.initial_tenant / name / "pgdata"


def one(pg, sql: str, dbname: str = "postgres"):
    return pg.safe_psql(sql, dbname=dbname)[0][0]


def clear(cur_or_pg) -> int:
    """Evict every unpinned buffer (from a cursor: inside its transaction)."""
    if hasattr(cur_or_pg, "execute"):
        cur_or_pg.execute("SELECT clear_buffer_cache()")
        return cur_or_pg.fetchone()[0]
    return one(cur_or_pg, "SELECT clear_buffer_cache()")


def permanent_relation_files(pg, dbname: str = "postgres") -> List[str]:
    return [
        r[0]
        for r in pg.safe_psql(
            "SELECT pg_relation_filepath(oid) FROM pg_class "
            "WHERE relpersistence = 'p' AND pg_relation_filepath(oid) IS NOT NULL",
            dbname=dbname,
        )
    ]


def test_no_files_of_permanent_relations(zenith_env_builder):
    env, pg = start(zenith_env_builder)
    pg.safe_psql("CREATE TABLE p(id int PRIMARY KEY, v text)")
    pg.safe_psql("INSERT INTO p SELECT g, repeat('p', 200) FROM generate_series(1, 20000) g")
    pg.safe_psql("CREATE UNLOGGED TABLE u(id int PRIMARY KEY)")
    pg.safe_psql("INSERT INTO u SELECT generate_series(1, 1000)")
    temp = pg.connect()
    with temp.cursor() as cur:
        cur.execute("CREATE TEMP TABLE tt AS SELECT generate_series(1, 1000) AS id")
        cur.execute("SELECT pg_relation_filepath('tt')")
        temp_path = cur.fetchone()[0]
    pg.safe_psql("CHECKPOINT")

    data = pgdata(env)
    files = permanent_relation_files(pg)
    assert len(files) > 100, files
    present = [f for f in files if (data / f).exists()]
    assert present == [], f"files of permanent relations in the compute's data directory: {present}"
    # Unlogged and temporary relations live on local disk.
    u_path = one(pg, "SELECT pg_relation_filepath('u')")
    assert (data / u_path).exists() and (data / (u_path + "_init")).exists()
    assert (data / temp_path).exists()
    assert one(pg, "SELECT count(*) FROM u") == 1000
    temp.close()
    # Sizes come from the pageserver and the size cache.
    assert one(pg, "SELECT pg_relation_size('p')") >= 20000 * 200
    pg.safe_psql("CREATE EXTENSION zenith")
    assert one(pg, "SELECT pg_cluster_size()") >= one(pg, "SELECT pg_database_size('postgres')") > 20000 * 200

    pg.stop()
    pg.start()
    # A fresh directory: everything permanent is there, unlogged tables are empty.
    assert one(pg, "SELECT count(*), sum(id) FROM p") == 20000
    assert pg.safe_psql("SELECT count(*), sum(length(v)) FROM p")[0] == (20000, 20000 * 200)
    assert one(pg, "SELECT count(*) FROM u") == 0
    assert [f for f in permanent_relation_files(pg) if (pgdata(env) / f).exists()] == []
    assert not (pgdata(env) / temp_path).exists()
    pg.safe_psql("INSERT INTO u SELECT generate_series(1, 10)")
    assert one(pg, "SELECT count(*) FROM u") == 10


def test_command_ids_survive_eviction(zenith_env_builder):
    """cmin/cmax of tuples the current transaction wrote, after their page was evicted and read
    back from the pageserver: a cursor opened earlier must see exactly what it saw."""
    env, pg = start(zenith_env_builder)
    pg.safe_psql("CREATE TABLE t(id int, v int)")
    conn = pg.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO t SELECT g, 0 FROM generate_series(1, 1000) g")
        cur.execute("DECLARE before_second CURSOR FOR SELECT count(*) FROM t")
        cur.execute("INSERT INTO t SELECT g, 0 FROM generate_series(1001, 2000) g")
        cur.execute("DECLARE before_delete CURSOR FOR SELECT count(*), sum(v) FROM t")
        cur.execute("DELETE FROM t WHERE id <= 500")
        cur.execute("UPDATE t SET v = 1 WHERE id > 1500")
        cur.execute("DECLARE after_all CURSOR FOR SELECT count(*), sum(v) FROM t")
        assert clear(cur) > 0
        cur.execute("FETCH ALL FROM before_second")
        assert cur.fetchone()[0] == 1000
        cur.execute("FETCH ALL FROM before_delete")
        assert cur.fetchone() == (2000, 0)
        cur.execute("FETCH ALL FROM after_all")
        assert cur.fetchone() == (1500, 500)
        cur.execute("SELECT count(*), sum(v) FROM t")
        assert cur.fetchone() == (1500, 500)
    conn.commit()
    conn.close()
    clear(pg)
    assert pg.safe_psql("SELECT count(*), sum(v) FROM t")[0] == (1500, 500)


def test_visibility_and_free_space_maps_survive_eviction(zenith_env_builder):
    env, pg = start(zenith_env_builder)
    pg.safe_psql("CREATE EXTENSION pg_visibility")
    pg.safe_psql("CREATE EXTENSION pg_freespacemap")
    pg.safe_psql("CREATE TABLE t(id int, v text) WITH (autovacuum_enabled = off)")
    pg.safe_psql("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 50000) g")
    pg.safe_psql("DELETE FROM t WHERE id % 3 = 0")
    pg.safe_psql("VACUUM t")
    pg.safe_psql("UPDATE t SET v = 'y' WHERE id % 1000 = 1")  # clears some VM bits
    vm = pg.safe_psql("SELECT * FROM pg_visibility_map_summary('t')")[0]
    fsm = pg.safe_psql("SELECT count(*), sum(avail) FROM pg_freespace('t')")[0]
    assert vm[0] > 0 and fsm[1] > 0, (vm, fsm)
    for _ in range(2):
        clear(pg)
        assert pg.safe_psql("SELECT * FROM pg_visibility_map_summary('t')")[0] == vm
        assert pg.safe_psql("SELECT count(*), sum(avail) FROM pg_freespace('t')")[0] == fsm
        # Nothing the visibility map says is all-visible has a tuple that is not.
        assert pg.safe_psql("SELECT * FROM pg_check_visible('t')") == []
    pg.stop()
    pg.start()
    assert pg.safe_psql("SELECT * FROM pg_visibility_map_summary('t')")[0] == vm
    assert pg.safe_psql("SELECT count(*), sum(avail) FROM pg_freespace('t')")[0] == fsm
    # An index-only scan trusts the visibility map.
    pg.safe_psql("CREATE INDEX ON t(id)")
    pg.safe_psql("VACUUM t")
    with pg.connect() as conn, conn.cursor() as cur:
        cur.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        cur.execute("SELECT count(*) FROM t WHERE id > 0")
        assert cur.fetchone()[0] == 50000 - 50000 // 3


INDEX_KINDS = [
    ("btree", "CREATE INDEX i ON t(id)", "id BETWEEN 100 AND 5000"),
    ("hash", "CREATE INDEX i ON t USING hash(id)", "id = 4242"),
    ("gin", "CREATE INDEX i ON t USING gin(tags)", "tags @> ARRAY[7]"),
    ("gist", "CREATE INDEX i ON t USING gist(p)", "p <@ box '((0,0),(300,300))'"),
    ("gist_buffering", "CREATE INDEX i ON t USING gist(p) WITH (buffering = on)",
     "p <@ box '((0,0),(300,300))'"),
    ("spgist", "CREATE INDEX i ON t USING spgist(p)", "p <@ box '((0,0),(300,300))'"),
    ("brin", "CREATE INDEX i ON t USING brin(id) WITH (pages_per_range = 2)",
     "id BETWEEN 100 AND 5000"),
]


def test_index_builds_with_tiny_shared_buffers(zenith_env_builder):
    """GIN, GiST and SP-GiST build without WAL and log every page at the end; with 1 MB of shared
    buffers most pages are evicted before that (kept locally until then). Each index answers as a
    sequential scan does, after eviction and after a restart."""
    env, pg = start(zenith_env_builder, "shared_buffers=1MB")
    pg.safe_psql(
        "CREATE TABLE t AS SELECT g AS id, ARRAY[g % 10, g % 7, g % 1000] AS tags, "
        "point(g % 1000, g / 100) AS p FROM generate_series(1, 60000) g"
    )
    for kind, create, where in INDEX_KINDS:
        pg.safe_psql("DROP INDEX IF EXISTS i")
        pg.safe_psql(create)
        expected = one(pg, f"SET enable_indexscan = off; SET enable_bitmapscan = off; "
                           f"SELECT count(*) FROM t WHERE {where}")
        assert expected > 0, kind
        for attempt in ("built", "evicted"):
            if attempt == "evicted":
                clear(pg)
            got = one(pg, f"SET enable_seqscan = off; SELECT count(*) FROM t WHERE {where}")
            assert got == expected, f"{kind} index ({attempt}): {got} rows, not {expected}"
        log.info("%s index: %d rows", kind, expected)
    pg.safe_psql("CREATE INDEX keep_gin ON t USING gin(tags)")
    pg.safe_psql("CREATE INDEX keep_gist ON t USING gist(p)")
    pg.safe_psql("CREATE INDEX keep_spgist ON t USING spgist(p)")
    pg.stop()
    pg.start()
    for where in ("tags @> ARRAY[7]", "p <@ box '((0,0),(300,300))'"):
        seq = one(pg, f"SET enable_indexscan = off; SET enable_bitmapscan = off; "
                      f"SELECT count(*) FROM t WHERE {where}")
        idx = one(pg, f"SET enable_seqscan = off; SELECT count(*) FROM t WHERE {where}")
        assert seq == idx > 0, where
    pg.safe_psql("CREATE EXTENSION amcheck")
    pg.safe_psql("CREATE INDEX keep_btree ON t(id)")
    clear(pg)
    pg.safe_psql("SELECT bt_index_check('keep_btree', true)")


def test_create_database_both_strategies(zenith_env_builder):
    env, pg = start(zenith_env_builder)
    pg.safe_psql("CREATE DATABASE src")
    pg.safe_psql("CREATE TABLE t AS SELECT generate_series(1, 10000) AS id", dbname="src")
    pg.safe_psql("CREATE INDEX ON t(id)", dbname="src")
    pg.safe_psql("CREATE DATABASE by_file_copy TEMPLATE src STRATEGY file_copy")
    pg.safe_psql("CREATE DATABASE by_wal_log TEMPLATE src STRATEGY wal_log")
    for rounds in range(2):
        for db in ("src", "by_file_copy", "by_wal_log"):
            assert pg.safe_psql("SELECT count(*), sum(id) FROM t", dbname=db)[0] == (10000, 50005000), db
            assert one(pg, "SET enable_seqscan = off; SELECT count(*) FROM t WHERE id < 100", dbname=db) == 99
            assert one(pg, "SELECT pg_database_size(current_database())", dbname=db) > 0
        clear(pg)
        if rounds == 0:
            pg.stop()
            pg.start()
    pg.safe_psql("DROP DATABASE by_file_copy")
    assert "by_file_copy" not in [r[0] for r in pg.safe_psql("SELECT datname FROM pg_database")]


def test_transactions_sequences_truncate_rewrite_after_eviction(zenith_env_builder):
    env, pg = start(zenith_env_builder, "max_prepared_transactions=5")
    pg.safe_psql("CREATE TABLE t(id int PRIMARY KEY, v int)")
    pg.safe_psql("CREATE SEQUENCE s")

    # Subtransactions: a rolled-back savepoint's rows stay invisible after eviction.
    conn = pg.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO t SELECT g, 1 FROM generate_series(1, 1000) g")
        cur.execute("SAVEPOINT a")
        cur.execute("INSERT INTO t SELECT g, 2 FROM generate_series(1001, 2000) g")
        cur.execute("ROLLBACK TO SAVEPOINT a")
        cur.execute("SAVEPOINT b")
        cur.execute("UPDATE t SET v = 3 WHERE id <= 10")
        cur.execute("RELEASE SAVEPOINT b")
        clear(cur)
        cur.execute("SELECT count(*), sum(v) FROM t")
        assert cur.fetchone() == (1000, 1000 + 20)
    conn.commit()
    conn.close()

    # Two-phase commit, prepared before eviction and committed after a restart.
    conn = pg.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO t SELECT g, 5 FROM generate_series(2001, 2100) g")
        cur.execute("PREPARE TRANSACTION 'p1'")
    conn.close()
    clear(pg)

    # Sequences: every value is WAL-logged, so an evicted sequence page goes on from there.
    vals = [one(pg, "SELECT nextval('s')") for _ in range(5)]
    clear(pg)
    vals.append(one(pg, "SELECT nextval('s')"))
    assert vals == [1, 2, 3, 4, 5, 6]

    pg.stop()
    pg.start()
    assert one(pg, "SELECT count(*) FROM pg_prepared_xacts") == 1
    pg.safe_psql("COMMIT PREPARED 'p1'")
    assert pg.safe_psql("SELECT count(*), sum(v) FROM t")[0] == (1100, 1020 + 500)
    assert one(pg, "SELECT nextval('s')") == 7

    # TRUNCATE, then new rows; VACUUM FULL rewrites into a new relation.
    pg.safe_psql("CREATE TABLE big AS SELECT generate_series(1, 50000) AS id")
    pg.safe_psql("TRUNCATE big")
    clear(pg)
    assert one(pg, "SELECT count(*) FROM big") == 0
    pg.safe_psql("INSERT INTO big SELECT generate_series(1, 100)")
    pg.safe_psql("DELETE FROM t WHERE id % 2 = 0")
    pg.safe_psql("VACUUM FULL t")
    clear(pg)
    assert one(pg, "SELECT count(*) FROM big") == 100
    assert pg.safe_psql("SELECT count(*), sum(id) FROM t")[0] == (550, sum(range(1, 1001, 2)) + sum(range(2001, 2101, 2)))
    assert one(pg, "SET enable_seqscan = off; SELECT count(*) FROM t WHERE id < 100") == 50
    pg.stop()
    pg.start()
    assert one(pg, "SELECT count(*) FROM big") == 100
    assert one(pg, "SELECT count(*) FROM t") == 550


def test_sequential_scan_reads_ahead(zenith_env_builder):
    """A table ten times shared_buffers, scanned cold with and without read-ahead: same answer,
    and read-ahead is faster (ZENITH_BENCH_SIZE=full: 1 GB, as the benchmark of issue 11)."""
    full = os.environ.get("ZENITH_BENCH_SIZE") == "full"
    rows = 7_000_000 if full else 400_000  # ~1 GB / ~56 MB of 140-byte rows
    shared = "100MB" if full else "4MB"
    env, pg = start(zenith_env_builder, f"shared_buffers={shared}")
    pg.safe_psql(f"CREATE TABLE t AS SELECT g AS id, repeat('x', 100) AS v FROM generate_series(1, {rows}) g")
    size = one(pg, "SELECT pg_relation_size('t')")
    log.info("table of %d MB, shared_buffers %s", size // 2**20, shared)
    times = {}
    for readahead in (0, 128, 0, 128):
        clear(pg)
        with pg.connect() as conn, conn.cursor() as cur:
            cur.execute(f"SET zenith.readahead_buffer_size = {readahead}")
            cur.execute("SET max_parallel_workers_per_gather = 0")
            t0 = time.monotonic()
            cur.execute("SELECT count(*), sum(id) FROM t")
            assert cur.fetchone() == (rows, rows * (rows + 1) // 2)
            times.setdefault(readahead, []).append(time.monotonic() - t0)
    best = {k: min(v) for k, v in times.items()}
    log.info("seqscan of %d MB: %.3f s without read-ahead, %.3f s with (%.2fx)", size // 2**20,
             best[0], best[128], best[0] / best[128])
    print(f"seqscan {size // 2**20} MB: no read-ahead {best[0]:.3f} s, read-ahead {best[128]:.3f} s")
    assert best[128] < best[0], best


def test_pageserver_killed_under_load(zenith_env_builder):
    """kill -9 the pageserver while clients run transactions that read evicted pages: the compute
    does not crash, clients see at most clear errors while it is down, and normal service after
    it is back."""
    env, pg = start(zenith_env_builder, "shared_buffers=2MB", "zenith.pageserver_retry_timeout=2s")
    postmaster = (pgdata(env) / "postmaster.pid").read_text().split()[0]
    pg.safe_psql("CREATE TABLE acct(id int PRIMARY KEY, bal int)")
    pg.safe_psql("INSERT INTO acct SELECT g, 100 FROM generate_series(1, 100000) g")
    stop = threading.Event()
    stats = {"ok": 0, "errors": []}
    lock = threading.Lock()

    def client(seed: int):
        import random

        rnd = random.Random(seed)
        conn = None
        while not stop.is_set():
            try:
                if conn is None:
                    conn = pg.connect(autocommit=False)
                with conn.cursor() as cur:
                    a, b = rnd.randint(1, 100000), rnd.randint(1, 100000)
                    cur.execute("UPDATE acct SET bal = bal - 1 WHERE id = %s", (a,))
                    cur.execute("UPDATE acct SET bal = bal + 1 WHERE id = %s", (b,))
                conn.commit()
                with lock:
                    stats["ok"] += 1
            except psycopg2.Error as e:
                with lock:
                    stats["errors"].append((e.pgcode, str(e).strip().splitlines()[0]))
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    wait_until("transactions before the kill", lambda: stats["ok"] > 200, timeout=60)
    env.pageserver.kill9()
    # Reads that miss shared buffers fail once zenith.pageserver_retry_timeout (2s) has passed.
    wait_until("a client to see the pageserver gone", lambda: len(stats["errors"]) > 0, timeout=60)
    during = len(stats["errors"])
    env.pageserver.start()
    ok_after_restart = stats["ok"]
    wait_until("transactions after the restart", lambda: stats["ok"] > ok_after_restart + 200, timeout=120)
    stop.set()
    for t in threads:
        t.join()
    log.info("%d transactions, %d errors (%d while the pageserver was down): %s", stats["ok"],
             len(stats["errors"]), during, sorted(set(stats["errors"]))[:5])
    # The errors are the pageserver's absence, said clearly (SQLSTATE 08006).
    for code, msg in stats["errors"]:
        assert code == "08006" and "pageserver" in msg, (code, msg)
    # The compute never restarted, and the money is all there.
    assert (pgdata(env) / "postmaster.pid").read_text().split()[0] == postmaster
    assert pg.safe_psql("SELECT count(*), sum(bal) FROM acct")[0] == (100000, 100 * 100000)
