"""The compute's pagestream client (contrib/zenith, pagestore_client.c) and zenith_test_utils.

get_raw_page_at_lsn() reads a page from the pageserver through the C client the compute's storage
manager uses: the page at the newest LSN equals (masked as wal_consistency_checking does) the one
in the compute's shared buffers, older LSNs give older versions, a block beyond the end is a zero
page, bad requests give clear errors and the session goes on, and a request survives a pageserver restart (the client
reconnects) or fails with SQLSTATE 08006 when the pageserver stays away.
"""

import threading

import psycopg2
import pytest

from fixtures.pagemask import describe_difference, mask_page
from fixtures.utils import log, wait_until


def query(pg, sql, args=None, **conn_options):
    conn = psycopg2.connect(**{**pg.conn_options(), **conn_options})
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description is not None else []
    finally:
        conn.close()


def start(zenith_env_builder):
    env = zenith_env_builder.init_start()
    pg = env.postgres.create_start("main")
    pg.safe_psql("CREATE EXTENSION zenith_test_utils")
    pg.safe_psql("CREATE EXTENSION pageinspect")
    return env, pg


def test_get_raw_page_at_lsn_reads_the_pageserver(zenith_env_builder):
    env, pg = start(zenith_env_builder)
    lsn0 = pg.safe_psql("SELECT pg_current_wal_flush_lsn()")[0][0]
    pg.safe_psql("CREATE TABLE t(id int, v text)")
    pg.safe_psql("INSERT INTO t SELECT g, 'one' FROM generate_series(1, 50) g")
    lsn1 = pg.safe_psql("SELECT pg_current_wal_flush_lsn()")[0][0]
    pg.safe_psql("UPDATE t SET v = 'two'")
    pg.safe_psql("CHECKPOINT")
    lsn2 = pg.safe_psql("SELECT pg_current_wal_flush_lsn()")[0][0]
    env.wait_branch_caught_up(pg)

    def items(lsn):
        return query(
            pg,
            "SELECT count(*) FROM heap_page_items(get_raw_page_at_lsn('t', 'main', 0, %s, NULL))",
            (lsn,),
        )[0][0]

    # The insert, then the insert and the update's new versions.
    assert items(lsn1) == 50
    assert items(lsn2) == 100
    assert items(None) == 100

    # The newest page equals the compute's own (hint bits, LSN and checksum masked).
    ours = bytes(pg.safe_psql("SELECT get_raw_page('t', 0)")[0][0])
    theirs = bytes(pg.safe_psql("SELECT get_raw_page_at_lsn('t', 'main', 0, NULL, NULL)")[0][0])
    a, b = mask_page("heap", ours, 0), mask_page("heap", theirs, 0)
    assert a == b, describe_difference(a, b)

    # A block beyond the end is a zero page (a compute may extend a relation with empty pages
    # that reach WAL only once something is written into them).
    assert bytes(pg.safe_psql("SELECT get_raw_page_at_lsn('t', 'main', 1000, NULL, NULL)")[0][0]) == bytes(8192)

    # Bad requests: a clear error, and the session (and its pageserver connection) goes on.
    conn = pg.connect()
    conn.autocommit = True
    cur = conn.cursor()
    bad = [
        (f"SELECT get_raw_page_at_lsn('t', 'main', 0, '{lsn0}', NULL)", "58030", "does not exist"),
        ("SELECT get_raw_page_at_lsn('t', 'main', 0, '0/0', NULL)", "58030", "invalid request LSN"),
        ("SELECT get_raw_page_at_lsn('t', 'main', 0, %s, %s)", "58030", "not_modified_since"),
        ("SELECT get_raw_page_at_lsn('t', 'main', -1, NULL, NULL)", "22023", "invalid block number"),
        ("SELECT get_raw_page_at_lsn('t', 'nofork', 0, NULL, NULL)", "22023", "invalid fork name"),
    ]
    for sql, sqlstate, text in bad:
        args = (lsn1, lsn2) if "%s" in sql else None
        with pytest.raises(psycopg2.Error) as e:
            cur.execute(sql, args)
        log.info("%s -> %s %s", sql, e.value.pgcode, e.value.pgerror.strip())
        assert e.value.pgcode == sqlstate and text in e.value.pgerror, e.value.pgerror
        cur.execute("SELECT count(*) FROM heap_page_items(get_raw_page_at_lsn('t', 'main', 0, NULL, NULL))")
        assert cur.fetchone()[0] == 100
    cur.execute("CREATE TEMP TABLE tmp(x int)")
    with pytest.raises(psycopg2.Error) as e:
        cur.execute("SELECT get_raw_page_at_lsn('tmp', 'main', 0, NULL, NULL)")
    assert e.value.pgcode == "0A000", e.value.pgerror
    conn.close()

    # Only superusers.
    pg.safe_psql("CREATE ROLE alice LOGIN")
    with pytest.raises(psycopg2.Error) as e:
        query(pg, "SELECT get_raw_page_at_lsn('t', 'main', 0, NULL, NULL)", user="alice")
    assert e.value.pgcode == "42501", e.value.pgerror


def test_page_requests_survive_a_pageserver_restart(zenith_env_builder):
    env, pg = start(zenith_env_builder)
    pg.safe_psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g")
    env.wait_branch_caught_up(pg)
    conn = pg.connect()
    conn.autocommit = True
    cur = conn.cursor()
    count = "SELECT count(*) FROM heap_page_items(get_raw_page_at_lsn('t', 'main', 0, NULL, NULL))"
    cur.execute(count)
    assert cur.fetchone()[0] == 100

    # Watched from a session that has read what it needs (a stateless compute reads catalog
    # pages from the pageserver too, so a new session could not start while it is down).
    waiting_sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Extension' "
        "AND query LIKE '%get_raw_page_at_lsn%'"
    )
    watch = pg.connect()
    watch.autocommit = True
    wcur = watch.cursor()
    wcur.execute(waiting_sql)

    def waiting() -> bool:
        wcur.execute(waiting_sql)
        return wcur.fetchone()[0] == 1

    # Down for longer than the retry timeout: a clear error, the session goes on.
    env.zenith_cli(["pageserver", "stop"])
    cur.execute("SET zenith.pageserver_retry_timeout = '300ms'")
    with pytest.raises(psycopg2.Error) as e:
        cur.execute(count)
    log.info("pageserver down: %s %s", e.value.pgcode, e.value.pgerror.strip())
    assert e.value.pgcode == "08006" and "unreachable" in e.value.pgerror
    cur.execute("SELECT 1")

    # Down while a request waits: it reconnects and gets its answer once the pageserver is back.
    cur.execute("SET zenith.pageserver_retry_timeout = '60s'")
    result = []

    def read():
        cur.execute(count)
        result.append(cur.fetchone()[0])

    th = threading.Thread(target=read, daemon=True)
    th.start()
    wait_until("the request to wait for the pageserver", waiting)
    env.zenith_cli(["pageserver", "start"])
    th.join(60)
    assert result == [100]
    conn.close()
    watch.close()


def test_xlogflush_and_consume_xids(zenith_env_builder):
    env, pg = start(zenith_env_builder)
    before = int(pg.safe_psql("SELECT pg_current_xact_id()::text")[0][0])
    last = int(pg.safe_psql("SELECT test_consume_xids(10000)::text")[0][0])
    assert last >= before + 10000
    after = int(pg.safe_psql("SELECT pg_current_xact_id()::text")[0][0])
    assert after > last
    flushed = pg.safe_psql("SELECT zenith_xlogflush()")[0][0]
    assert query(pg, "SELECT pg_current_wal_flush_lsn() >= %s", (flushed,))[0][0]
    with pytest.raises(psycopg2.Error) as e:
        pg.safe_psql("SELECT zenith_xlogflush('FFFFFFFF/0')")
    assert e.value.pgcode == "22023", e.value.pgerror
    # The consumed xids' clog pages reach the pageserver like any other WAL.
    env.wait_branch_caught_up(pg)
