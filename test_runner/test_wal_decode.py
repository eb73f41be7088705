"""Our WAL decoder (`waldecode`, postgres_ffi) against pg_waldump, the oracle nobody here wrote.

test_wal_decoding_matches_pg_waldump: a stock PostgreSQL 15 generates WAL of every resource
manager we know how to provoke (pgbench, DDL, both CREATE DATABASE strategies, tablespaces,
TRUNCATE, subtransactions, two-phase commit, multixacts, sequences, six index AMs, VACUUM, relmap,
WAL switches, a crash restart, full-page images uncompressed and compressed with pglz/lz4/zstd,
images for WAL verification); then both decoders read the same pg_wal and every record must match.

test_waldecode_rejects_corrupt_wal: damaged copies of a segment make waldecode stop exactly where
pg_waldump stops, name an LSN in its error, and never panic.
"""

import shutil
from collections import Counter
from pathlib import Path
from typing import List

import pytest

from fixtures.utils import (
    WAL_SEGMENT_SIZE,
    XLOG_BLCKSZ,
    format_lsn,
    log,
    lsns_in,
    page_header_size,
    record_byte_end,
    wait_until,
    wal_segment_name,
    wal_segment_start,
    zenith_binary,
)
from fixtures.waldecode import (
    check_end_lsns,
    compare_records,
    is_panic,
    parse_waldecode,
    run_waldecode,
)
from fixtures.waldump import parse_waldump_stats_total, run_pg_waldump
from fixtures.zenith_fixtures import VanillaPostgres

MIN_RECORDS = 50_000

# Server settings: keep every WAL segment from the first record on (no removal, no recycling), no
# checkpoints we did not ask for, and 2PC/commit timestamps enabled so those records appear.
WAL_KEEPING_CONFIG = [
    "wal_level = replica",
    "full_page_writes = on",
    "wal_keep_size = '100GB'",
    "max_wal_size = '100GB'",
    "min_wal_size = '32MB'",
    "wal_recycle = off",
    "checkpoint_timeout = '1d'",
    "max_prepared_transactions = 10",
    "track_commit_timestamp = on",
    "fsync = off",
    "synchronous_commit = off",
]


def wal_segments(pg_wal: Path) -> List[str]:
    names = sorted(p.name for p in pg_wal.iterdir() if len(p.name) == 24 and p.is_file())
    assert names, f"no WAL segments in {pg_wal}"
    return names


def set_wal_compression(pg: VanillaPostgres, method: str) -> None:
    """Switch wal_compression and start a checkpoint so that the next change of every page
    writes a full-page image compressed with `method`."""
    pg.safe_psql(f"ALTER SYSTEM SET wal_compression = '{method}'")
    pg.reload()
    wait_until(
        f"wal_compression to become {method}",
        lambda: pg.safe_psql("SHOW wal_compression")[0][0] == method,
        timeout=30,
    )
    pg.safe_psql("CHECKPOINT")


def run_in_one_session(pg: VanillaPostgres, statements: List[str], dbname: str = "postgres"):
    conn = pg.connect(dbname)
    try:
        with conn.cursor() as cur:
            for stmt in statements:
                cur.execute(stmt)
    finally:
        conn.close()


def generate_varied_wal(pg: VanillaPostgres, output_dir: Path) -> None:
    sql = pg.safe_psql

    # --- uncompressed images: pgbench initialization (COPY FREEZE multi-inserts, btree builds)
    pg.pgbench("-i", "-s", "5", "-q")
    sql("CHECKPOINT")

    # --- lz4: OLTP updates after a checkpoint, then indexes of every kind
    set_wal_compression(pg, "lz4")
    pg.pgbench("-c", "2", "-j", "2", "-t", "2000")
    sql(
        "CREATE TABLE idx_t (id int, tags int[], pt point, body text, rng int4range);"
        "INSERT INTO idx_t SELECT i, ARRAY[i % 10, i % 7, i], point(i % 100, i / 100), md5(i::text),"
        " int4range(i, i + 10) FROM generate_series(1, 3000) i"
    )
    for stmt in [
        "CREATE INDEX idx_btree ON idx_t (id)",
        "CREATE INDEX idx_gin ON idx_t USING gin (tags)",
        "CREATE INDEX idx_gist_rng ON idx_t USING gist (rng)",
        "CREATE INDEX idx_gist_pt ON idx_t USING gist (pt)",
        "CREATE INDEX idx_brin ON idx_t USING brin (id) WITH (pages_per_range = 4)",
        "CREATE INDEX idx_hash ON idx_t USING hash (body)",
        "CREATE INDEX idx_spgist_pt ON idx_t USING spgist (pt)",
        "CREATE INDEX idx_spgist_txt ON idx_t USING spgist (body)",
    ]:
        sql(stmt)
    # inserts into the existing indexes (GiST/SP-GiST/GIN builds are WAL-logged as page images;
    # these produce their own record types)
    sql(
        "INSERT INTO idx_t SELECT i, ARRAY[i % 10, i % 7, i], point(i % 100, i / 100), md5(i::text),"
        " int4range(i, i + 10) FROM generate_series(3001, 8000) i"
    )
    sql("SELECT pg_switch_wal()")

    # --- pglz: DDL, transactions of every shape; part of it with images for WAL verification
    set_wal_compression(pg, "pglz")
    sql("CREATE DATABASE zdb_wal STRATEGY wal_log")
    sql("CREATE DATABASE zdb_copy STRATEGY file_copy")
    sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i", dbname="zdb_wal")
    sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i", dbname="zdb_copy")
    sql("DROP DATABASE zdb_wal")
    sql("DROP DATABASE zdb_copy")

    tblspc = output_dir / "tblspc"
    tblspc.mkdir()
    sql(f"CREATE TABLESPACE ztbs LOCATION '{tblspc}'")
    sql("CREATE TABLE tbs_t (i int, t text) TABLESPACE ztbs")
    sql("INSERT INTO tbs_t SELECT i, repeat('x', 100) FROM generate_series(1, 2000) i")
    sql("CREATE DATABASE zdb_tbs TABLESPACE ztbs")
    sql("DROP DATABASE zdb_tbs")
    sql("DROP TABLE tbs_t")
    sql("DROP TABLESPACE ztbs")

    sql("CREATE TABLE trunc_t (i int, t text)")
    sql("INSERT INTO trunc_t SELECT i, md5(i::text) FROM generate_series(1, 10000) i")
    sql("TRUNCATE trunc_t")
    sql("INSERT INTO trunc_t SELECT i, md5(i::text) FROM generate_series(1, 10000) i")
    sql("DELETE FROM trunc_t WHERE i > 100")
    sql("VACUUM trunc_t")  # truncates the heap: Storage TRUNCATE

    sql("ALTER SYSTEM SET wal_consistency_checking = 'all'")
    pg.reload()
    wait_until(
        "wal_consistency_checking to become all",
        lambda: pg.safe_psql("SHOW wal_consistency_checking")[0][0] == "all",
        timeout=30,
    )

    sql("CREATE TABLE subx (i int)")
    run_in_one_session(
        pg,
        [
            "BEGIN",
            "INSERT INTO subx VALUES (1)",
            "SAVEPOINT a",
            "INSERT INTO subx VALUES (2)",
            "ROLLBACK TO a",
            "SAVEPOINT b",
            "INSERT INTO subx VALUES (3)",
            "RELEASE b",
            "COMMIT",
        ],
    )
    # more than 64 subtransactions with xids: XACT_ASSIGNMENT records, aborted subxacts
    sql(
        "DO $$ BEGIN FOR i IN 1..100 LOOP BEGIN INSERT INTO subx VALUES (i);"
        " IF i % 3 = 0 THEN RAISE EXCEPTION 'roll back %', i; END IF;"
        " EXCEPTION WHEN raise_exception THEN NULL; END; END LOOP; END $$"
    )

    sql("CREATE TABLE twophase (i int)")
    run_in_one_session(
        pg,
        [
            "BEGIN",
            "INSERT INTO twophase VALUES (1)",
            "SAVEPOINT s",
            "INSERT INTO twophase VALUES (2)",
            "PREPARE TRANSACTION 'zenith_p1'",
            "COMMIT PREPARED 'zenith_p1'",
            "BEGIN",
            "INSERT INTO twophase VALUES (3)",
            "PREPARE TRANSACTION 'zenith_p2'",
            "ROLLBACK PREPARED 'zenith_p2'",
        ],
    )

    sql("CREATE TABLE mx (id int PRIMARY KEY, v int)")
    sql("INSERT INTO mx SELECT i, 0 FROM generate_series(1, 10) i")
    c1 = pg.connect(autocommit=False)
    c2 = pg.connect(autocommit=False)
    try:
        c1.cursor().execute("SELECT * FROM mx WHERE id = 1 FOR SHARE")
        c2.cursor().execute("SELECT * FROM mx WHERE id = 1 FOR SHARE")
        c1.commit()
        c2.commit()
        # a key-share lock and a non-key update of the same row: multixact with an updater
        c1.cursor().execute("SELECT * FROM mx WHERE id = 2 FOR KEY SHARE")
        c2.cursor().execute("UPDATE mx SET v = v + 1 WHERE id = 2")
        c1.commit()
        c2.commit()
    finally:
        c1.close()
        c2.close()

    sql("ALTER SYSTEM RESET wal_consistency_checking")
    pg.reload()
    wait_until(
        "wal_consistency_checking to be reset",
        lambda: pg.safe_psql("SHOW wal_consistency_checking")[0][0] == "",
        timeout=30,
    )

    sql("CREATE SEQUENCE zseq")
    sql("SELECT nextval('zseq') FROM generate_series(1, 200)")
    sql("ALTER SEQUENCE zseq RESTART WITH 1000")
    sql("SELECT nextval('zseq')")

    sql("SELECT pg_logical_emit_message(true, 'zenith', 'transactional message')")
    sql("SELECT pg_logical_emit_message(false, 'zenith', 'non-transactional message')")
    sql("SELECT pg_create_restore_point('zenith_restore_point')")
    sql("SELECT pg_replication_origin_create('zenith_origin')")
    sql("SELECT pg_replication_origin_advance('zenith_origin', '0/1000')")
    run_in_one_session(
        pg,
        [
            "SELECT pg_replication_origin_session_setup('zenith_origin')",
            "BEGIN",
            "SELECT pg_replication_origin_xact_setup('0/12345678', now())",
            "INSERT INTO twophase VALUES (100)",
            "COMMIT",
            "SELECT pg_replication_origin_session_reset()",
        ],
    )
    sql("SELECT pg_replication_origin_drop('zenith_origin')")
    sql("VACUUM FULL pg_class")  # mapped catalog: RelMap UPDATE
    sql("SELECT pg_switch_wal()")

    # --- zstd: more OLTP, deletes and VACUUM of every index kind, freezing
    set_wal_compression(pg, "zstd")
    pg.pgbench("-c", "2", "-j", "2", "-t", "2000")
    sql("DELETE FROM idx_t WHERE id % 3 = 0")
    sql("VACUUM idx_t")
    sql("VACUUM (FREEZE) pgbench_branches, pgbench_tellers, subx")
    sql("VACUUM ANALYZE")

    # --- a parameter change and a crash restart in the middle of the WAL
    pg.stop("fast")
    pg.configure(["max_connections = 50"])  # XLOG PARAMETER_CHANGE at startup
    pg.start()
    set_wal_compression(pg, "off")
    pg.pgbench("-c", "2", "-j", "2", "-t", "300")
    pg.stop("immediate")
    pg.start()
    pg.pgbench("-c", "2", "-j", "2", "-t", "300")
    sql("CHECKPOINT")


# Record types the workload above must produce; if one is missing the workload, not the decoder,
# is broken and the comparison would prove less than it claims.
EXPECTED_RMGRS = {
    "XLOG", "Transaction", "Storage", "Database", "Tablespace", "MultiXact", "RelMap", "Standby",
    "Heap2", "Heap", "Btree", "Hash", "Gin", "Gist", "Sequence", "SPGist", "BRIN", "CommitTs",
    "ReplicationOrigin", "LogicalMessage",
}  # fmt: skip
EXPECTED_TYPES = {
    "Database/CREATE_WAL_LOG", "Database/CREATE_FILE_COPY", "Database/DROP",
    "Transaction/PREPARE", "Transaction/COMMIT_PREPARED", "Transaction/ABORT_PREPARED",
    "Transaction/ASSIGNMENT", "Transaction/ABORT", "Storage/TRUNCATE", "Storage/CREATE",
    "XLOG/SWITCH", "XLOG/FPI", "XLOG/FPI_FOR_HINT", "XLOG/RESTORE_POINT", "XLOG/PARAMETER_CHANGE",
    "XLOG/CHECKPOINT_ONLINE", "XLOG/CHECKPOINT_SHUTDOWN", "MultiXact/CREATE_ID", "Heap/LOCK",
    "Heap2/MULTI_INSERT+INIT", "Heap/HOT_UPDATE", "Heap2/PRUNE", "Heap2/FREEZE_PAGE", "Heap2/VISIBLE",
    "RelMap/UPDATE", "ReplicationOrigin/SET", "Sequence/LOG", "LogicalMessage/MESSAGE",
}  # fmt: skip


def check_workload_coverage(records: List[dict]) -> None:
    types = Counter(f"{r['rmgr']}/{r['identify']}" for r in records)
    rmgrs = {r["rmgr"] for r in records}
    methods = Counter()
    not_applied = 0
    for r in records:
        for b in r["blocks"]:
            if b["image"]:
                methods[b["image"]["method"] or "none"] += 1
                not_applied += not b["image"]["apply"]
    log.info("record types in the WAL: %s", dict(sorted(types.items())))
    log.info(
        "full-page images by compression: %s; for WAL verification only: %d",
        dict(methods),
        not_applied,
    )
    missing = sorted(EXPECTED_RMGRS - rmgrs) + sorted(EXPECTED_TYPES - set(types))
    missing += [f"images compressed with {m}" for m in ("none", "pglz", "lz4", "zstd") if not methods[m]]
    if not not_applied:
        missing.append("images for WAL verification")
    assert not missing, f"the workload did not produce: {missing}"


def test_wal_decoding_matches_pg_waldump(vanilla_pg: VanillaPostgres, pg_bin, test_output_dir: Path):
    zenith_binary("waldecode")  # fail early, with a hint, when it has not been built

    pg = vanilla_pg
    pg.initdb("--data-checksums")
    pg.configure(WAL_KEEPING_CONFIG)
    pg.start()
    generate_varied_wal(pg, test_output_dir)
    pg.stop("fast")

    segments = wal_segments(pg.pg_wal)
    log.info("%d WAL segments: %s .. %s", len(segments), segments[0], segments[-1])
    assert segments[0] == wal_segment_name(WAL_SEGMENT_SIZE), "the first WAL segment was removed"
    starts = [wal_segment_start(s) for s in segments]
    assert starts == [starts[0] + i * WAL_SEGMENT_SIZE for i in range(len(starts))], (
        "WAL segments are not contiguous"
    )

    # the copy keeps the evidence intact for debugging; both decoders read it
    wal_dir = test_output_dir / "pg_wal_copy"
    shutil.copytree(pg.pg_wal, wal_dir, ignore=shutil.ignore_patterns("archive_status"))

    waldump = run_pg_waldump(
        pg_bin, ["-p", wal_dir, segments[0], segments[-1]], test_output_dir / "pg_waldump.out"
    )
    assert waldump.end_message, f"pg_waldump ended without an end-of-WAL message: {waldump.stderr}"
    log.info("pg_waldump: %d records, %s", len(waldump.records), waldump.end_message)
    # our parser of its output lost nothing: pg_waldump's own count agrees
    stats = pg_bin.run_capture(
        ["pg_waldump", "--stats", "-p", wal_dir, segments[0], segments[-1]], check=False
    )
    assert parse_waldump_stats_total(stats.stdout)["count"] == len(waldump.records)

    decoded = run_waldecode(["--json", wal_dir], test_output_dir / "waldecode.out")
    assert not is_panic(decoded.returncode, decoded.stderr), f"waldecode panicked:\n{decoded.stderr}"

    comparison = compare_records(waldump.records, decoded.records)
    log.info("comparison: %s", comparison.report())
    print(
        f"\ncompared {comparison.compared} WAL records "
        f"(pg_waldump {len(waldump.records)}, waldecode {len(decoded.records)}), "
        f"{comparison.mismatched} mismatched; waldecode: {decoded.stderr.strip()[-300:]}"
    )

    failures = []
    if decoded.returncode != 0:
        failures.append(f"waldecode exited with {decoded.returncode} on valid WAL")
    if not decoded.stderr.strip():
        failures.append("waldecode printed no end-of-WAL message on stderr")
    if comparison.mismatched:
        failures.append(comparison.report())
    problems = check_end_lsns(decoded.records)
    if problems:
        failures.append("waldecode's end_lsn/fpi_len are inconsistent:\n" + "\n".join(problems))
    # both stop at the same place: pg_waldump names the position where no valid record starts
    last_end = decoded.records[-1]["end_lsn"] if decoded.records else None
    expected_stop = {last_end}
    if last_end is not None and last_end % XLOG_BLCKSZ == 0:
        expected_stop.add(last_end + page_header_size(last_end))
    if waldump.end_lsn not in expected_stop:
        failures.append(
            f"pg_waldump stopped at {format_lsn(waldump.end_lsn)} ({waldump.end_message}), "
            f"waldecode's last record ends at {format_lsn(last_end) if last_end else None}"
        )
    if failures:
        pytest.fail(
            f"waldecode stderr: {decoded.stderr.strip()[-2000:]}\n" + "\n\n".join(failures)
        )
    assert comparison.compared >= MIN_RECORDS, (
        f"only {comparison.compared} records compared, the test wants at least {MIN_RECORDS}"
    )
    check_workload_coverage(waldump.records)


# ------------------------------------------------------------------------------------------ corruption


def _flip(data: bytearray, offset: int, length: int = 4) -> None:
    for k in range(offset, offset + length):
        data[k] ^= 0xFF


def _set_u32(data: bytearray, offset: int, value: int) -> None:
    data[offset : offset + 4] = value.to_bytes(4, "little")


def _set_u64(data: bytearray, offset: int, value: int) -> None:
    data[offset : offset + 8] = value.to_bytes(8, "little")


def test_waldecode_rejects_corrupt_wal(vanilla_pg: VanillaPostgres, pg_bin, test_output_dir: Path):
    """Damage one record or page of a segment in several ways. waldecode must decode exactly the
    records before the damage (the ones pg_waldump decodes), stop there, name an LSN near the
    damage in its message, and never panic."""
    zenith_binary("waldecode")

    pg = vanilla_pg
    pg.configure(WAL_KEEPING_CONFIG)
    pg.start()
    pg.pgbench("-i", "-s", "1", "-q")
    pg.pgbench("-c", "2", "-t", "500")
    pg.stop("fast")

    segment = wal_segments(pg.pg_wal)[0]
    seg_start = wal_segment_start(segment)
    pristine = (pg.pg_wal / segment).read_bytes()
    assert len(pristine) == WAL_SEGMENT_SIZE

    clean_dir = test_output_dir / "clean"
    clean_dir.mkdir()
    (clean_dir / segment).write_bytes(pristine)
    clean = run_pg_waldump(pg_bin, [clean_dir / segment], test_output_dir / "clean.waldump").records
    # records that lie entirely inside this segment
    seg_end = seg_start + WAL_SEGMENT_SIZE
    clean = [r for r in clean if record_byte_end(r["lsn"], r["total_len"]) <= seg_end]
    assert len(clean) > 1000, f"only {len(clean)} records in {segment}"

    def pick(predicate, start_fraction: float) -> dict:
        """A record at or after `start_fraction` of the segment's records matching `predicate`."""
        for r in clean[int(len(clean) * start_fraction) :]:
            if predicate(r):
                return r
        raise AssertionError("no suitable record to damage")

    def in_one_page(r) -> bool:
        return r["lsn"] // XLOG_BLCKSZ == (r["lsn"] + r["total_len"] - 1) // XLOG_BLCKSZ

    def off(lsn: int) -> int:
        return lsn - seg_start

    cases = []  # (name, damaged bytes, LSN of the damaged spot, the first record that is hit)

    r = pick(lambda r: in_one_page(r) and r["total_len"] >= 64, 0.5)
    data = bytearray(pristine)
    _flip(data, off(r["lsn"]) + r["total_len"] // 2)
    cases.append(("record body bytes flipped (CRC mismatch)", data, r["lsn"] + r["total_len"] // 2, r))

    r = pick(in_one_page, 0.55)
    data = bytearray(pristine)
    _set_u32(data, off(r["lsn"]), 0xFFFFFFF0)  # xl_tot_len
    cases.append(("xl_tot_len = 0xFFFFFFF0", data, r["lsn"], r))

    r = pick(lambda r: in_one_page(r) and (r["lsn"] % XLOG_BLCKSZ) < XLOG_BLCKSZ - 200, 0.6)
    data = bytearray(pristine)
    _set_u32(data, off(r["lsn"]), r["total_len"] + 3 * XLOG_BLCKSZ)  # runs into the next pages
    cases.append(("xl_tot_len too large by 3 pages", data, r["lsn"], r))

    r = pick(in_one_page, 0.65)
    data = bytearray(pristine)
    _set_u64(data, off(r["lsn"]) + 8, r["prev"] + 8)  # xl_prev
    cases.append(("xl_prev wrong", data, r["lsn"], r))

    r = pick(in_one_page, 0.7)
    data = bytearray(pristine)
    data[off(r["lsn"]) + 17] = 100  # xl_rmid: neither built-in (0..21) nor custom (128..255)
    cases.append(("xl_rmid = 100", data, r["lsn"], r))

    # page header damage: the first page boundary that a record crosses
    r = pick(lambda r: not in_one_page(r), 0.75)
    page = (r["lsn"] // XLOG_BLCKSZ + 1) * XLOG_BLCKSZ
    data = bytearray(pristine)
    _flip(data, off(page), 2)  # xlp_magic
    cases.append(("page header magic", data, page, r))

    r = pick(lambda r: not in_one_page(r), 0.8)
    page = (r["lsn"] // XLOG_BLCKSZ + 1) * XLOG_BLCKSZ
    data = bytearray(pristine)
    _set_u64(data, off(page) + 8, page + XLOG_BLCKSZ)  # xlp_pageaddr
    cases.append(("page header address", data, page, r))

    r = pick(lambda r: not in_one_page(r), 0.85)
    page = (r["lsn"] // XLOG_BLCKSZ + 1) * XLOG_BLCKSZ
    data = bytearray(pristine)
    _set_u32(data, off(page) + 16, 0)  # xlp_rem_len of the continuation
    cases.append(("page header rem_len", data, page, r))

    r = pick(lambda r: in_one_page(r) and r["total_len"] >= 64, 0.9)
    cut = r["lsn"] + r["total_len"] // 2
    cases.append(("file truncated in the middle of a record", bytearray(pristine[: off(cut)]), cut, r))

    failures = []
    for i, (name, data, damaged_at, hit) in enumerate(cases):
        case_dir = test_output_dir / f"case{i}"
        case_dir.mkdir()
        path = case_dir / segment
        path.write_bytes(bytes(data))
        truncated = len(data) < WAL_SEGMENT_SIZE

        oracle = run_pg_waldump(pg_bin, [path], case_dir / "pg_waldump.out", allow_failure=True)
        decoded = run_waldecode(["--json", path], case_dir / "waldecode.out", timeout=120, parse=False)
        problems = []
        try:
            with open(decoded.stdout_path, errors="replace") as f:
                decoded.records = list(parse_waldecode(f))
        except Exception as e:  # noqa: BLE001 - reported with the case
            problems.append(f"unparsable output: {e}")

        if is_panic(decoded.returncode, decoded.stderr):
            problems.append(f"panicked or died (exit {decoded.returncode})")

        # waldecode decodes exactly the undamaged records before the damage. pg_waldump reads whole
        # pages, so for a truncated file it may stop earlier: there waldecode may decode more, but
        # only complete records that end before the cut.
        hit_index = next(k for k, c in enumerate(clean) if c["lsn"] == hit["lsn"])
        before = clean[:hit_index]
        if truncated:
            got = decoded.records
            # exiting 0 means "end of WAL here": then everything pg_waldump read must be there
            lo = len(oracle.records) if decoded.returncode == 0 else 0
            if not (lo <= len(got) <= len(before)):
                problems.append(
                    f"decoded {len(got)} records; expected between {lo} (pg_waldump) and "
                    f"{len(before)} (all before the cut)"
                )
            cmp = compare_records(before[: len(got)], got, max_examples=5)
        else:
            if [c["lsn"] for c in oracle.records] != [c["lsn"] for c in before]:
                problems.append(
                    f"test bug: pg_waldump decoded {len(oracle.records)} records, "
                    f"expected {len(before)} ({oracle.stderr.strip()})"
                )
            cmp = compare_records(before, decoded.records, max_examples=5)
        if cmp.mismatched:
            problems.append("records differ from the undamaged ones:\n" + cmp.report())

        named = lsns_in(decoded.stderr)
        # the record hit, the damaged spot, or (as PostgreSQL's reader does) the last good record
        lo_lsn = min(before[-1]["lsn"] if before else hit["lsn"], damaged_at)
        hi_lsn = damaged_at + XLOG_BLCKSZ
        if not any(lo_lsn <= x <= hi_lsn for x in named):
            problems.append(
                f"stderr names no LSN in {format_lsn(lo_lsn)}..{format_lsn(hi_lsn)}: "
                f"{decoded.stderr.strip()[-500:]!r}"
            )
        if decoded.returncode == 0 and not decoded.stderr.strip():
            problems.append("exit code 0 without any message")

        log.info(
            "case %r at %s: waldecode exit %d, %d records; stderr: %s; pg_waldump: %s",
            name, format_lsn(damaged_at), decoded.returncode, len(decoded.records),
            decoded.stderr.strip()[-300:], oracle.stderr.strip()[-300:],
        )  # fmt: skip
        if problems:
            failures.append(f"{name} (damage at {format_lsn(damaged_at)}, record {hit['lsn_text']} "
                            f"{hit['rmgr']}/{hit['identify']}):\n  " + "\n  ".join(problems))

    if failures:
        pytest.fail(f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures))
