"""`postgres --wal-redo` (vendor/postgres patches 0002-0005) against a stock PostgreSQL's pages.

test_wal_redo_reconstructs_pages_like_the_server: a stock PostgreSQL 15 from the same installation
runs a workload on a table with two btree indexes (inserts, HOT and non-HOT updates, deletes, a
page pruned by hundreds of updates of one row, index page splits, VACUUM that sets the visibility
map), between checkpoints. For every page of the table, of its visibility map and of both indexes,
the WAL records that reference the page (decoded by our `waldecode`) are replayed by one redo
process in three ways: from the record that first initialized the page, from the last full-page
image, and in two requests where the second starts from the page the first returned ('P'). Each
result must equal the page the server wrote at its final checkpoint, masked the way PostgreSQL's
wal_consistency_checking masks pages (src/backend/access/common/bufmask.c, heap_mask, btree_mask),
and carry the server's page LSN. The same test checks that a page survives eviction from a
16-buffer pool while every other record of the WAL is applied around it, that two processes run on
one data directory, and that a record modifying a page nobody gave an image of is an error.

test_wal_redo_rejects_bad_input: malformed messages, requests for pages nobody gave an image of and
records it must not apply end the process with an error on stderr, never with a crash or a page.
"""

import json
import os
import select
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from fixtures.utils import (
    BLCKSZ,
    format_lsn,
    log,
    parse_lsn,
    rmtree_if_exists,
    test_runner_dir,
    wait_until,
)
from fixtures.pagemask import mask_page, page_lsn
from fixtures.waldecode import run_waldecode
from fixtures.zenith_fixtures import PgBin, VanillaPostgres

DEFAULTTABLESPACE_OID = 1663
FORKS = {"main": 0, "fsm": 1, "vm": 2, "init": 3}

# Server settings: keep all WAL, no checkpoint or autovacuum we did not ask for.
SERVER_CONFIG = [
    "wal_level = replica",
    "full_page_writes = on",
    "wal_keep_size = '1GB'",
    "max_wal_size = '1GB'",
    "checkpoint_timeout = '1d'",
    "autovacuum = off",
    "fsync = off",
]


# ----------------------------------------------------------------------------------------- protocol


# Size of a packed buffer tag (BufferTag.pack).
TAG_SIZE = 17


@dataclass(frozen=True)
class BufferTag:
    spc: int
    db: int
    rel: int
    fork: int
    blk: int

    def pack(self) -> bytes:
        """u8 forknum, u32 spcnode, u32 dbnode, u32 relnode, u32 blkno (big-endian)."""
        return struct.pack(">BIIII", self.fork, self.spc, self.db, self.rel, self.blk)

    def __str__(self) -> str:
        return f"{self.spc}/{self.db}/{self.rel} fork {self.fork} blk {self.blk}"


def message(msgtype: bytes, payload: bytes) -> bytes:
    """u8 type, i32 length (big-endian, counts itself and the payload), payload."""
    return msgtype + struct.pack(">i", len(payload) + 4) + payload


def begin_msg(tag: BufferTag) -> bytes:
    return message(b"B", tag.pack())


def push_msg(tag: BufferTag, page: bytes) -> bytes:
    assert len(page) == BLCKSZ
    return message(b"P", tag.pack() + page)


def apply_msg(end_lsn: int, record: bytes) -> bytes:
    return message(b"A", struct.pack(">Q", end_lsn) + record)


def get_msg(tag: BufferTag) -> bytes:
    return message(b"G", tag.pack())


class WalRedoProcess:
    """One `postgres --wal-redo -D <datadir>` process: requests on its stdin, pages from its stdout,
    its stderr in a file of the test directory."""

    def __init__(
        self, pg_bin: PgBin, datadir: Path, stderr_path: Path, extra_args: Tuple[str, ...] = ()
    ):
        self.stderr_path = stderr_path
        argv = [str(pg_bin.bindir / "postgres"), "--wal-redo", "-D", str(datadir), *extra_args]
        log.info("start: %s (stderr in %s)", " ".join(argv), stderr_path)
        with open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=pg_bin.env,
                cwd=stderr_path.parent,
            )

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read_exact(self, n: int, timeout: float = 60.0) -> bytes:
        """n bytes from stdout; fewer only if the process closes it (exits)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        chunks = []
        got = 0
        while got < n:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError(f"no reply from the WAL redo process within {timeout}s")
            chunk = os.read(fd, n - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def reconstruct(
        self, tag: BufferTag, records: List[dict], base_image: Optional[bytes] = None
    ) -> bytes:
        """One request: B [P] A* G; returns the page."""
        out = [begin_msg(tag)]
        if base_image is not None:
            out.append(push_msg(tag, base_image))
        out += [apply_msg(r["end_lsn"], r["bytes"]) for r in records]
        out.append(get_msg(tag))
        self.send(b"".join(out))
        # The reply names the page it carries: the request's tag, then the page.
        reply = self.read_exact(TAG_SIZE + BLCKSZ)
        if len(reply) != TAG_SIZE + BLCKSZ:
            self.proc.wait(timeout=60)
            raise AssertionError(
                f"WAL redo process exited with {self.proc.returncode} while reconstructing {tag}:\n"
                + self.stderr()
            )
        assert reply[:TAG_SIZE] == tag.pack(), f"a page of {reply[:TAG_SIZE].hex()} for {tag}"
        return reply[TAG_SIZE:]

    def close_input(self) -> None:
        """End of input: the process exits once it has handled what it got."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass

    def finish(self, timeout: float = 60.0) -> int:
        """Close stdin and return the exit status."""
        self.close_input()
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def redo_datadir() -> Path:
    """The small data directory `postgres --wal-redo` runs in, made once by initdb (with the same
    options as the server's, so that both agree on data checksums) and shared by this module's
    tests, in output/test_wal_redo-<xdist worker>/."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    base = test_runner_dir / "output" / f"test_wal_redo-{worker}"
    rmtree_if_exists(base)
    base.mkdir(parents=True)
    path = base / "redo_pgdata"
    PgBin(base).run(["initdb", "-D", path, "-U", VanillaPostgres.SUPERUSER, "--no-sync"])
    return path


@pytest.fixture
def start_redo(pg_bin: PgBin, redo_datadir: Path, test_output_dir: Path) -> Iterator[Callable]:
    """Starts WAL redo processes; kills at teardown those a test left running."""
    procs: List[WalRedoProcess] = []

    def start(*extra_args: str) -> WalRedoProcess:
        p = WalRedoProcess(
            pg_bin,
            redo_datadir,
            test_output_dir / f"walredo-{len(procs) + 1:03d}.stderr",
            extra_args,
        )
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()


# ------------------------------------------------------------------------------------------ masks
#
# What PostgreSQL's wal_consistency_checking masks before comparing a replayed page with the
# primary's: fixtures/pagemask.py (shared with the pageserver's pages-match test).


def heap_mask(page: bytes, blkno: int) -> bytes:
    return mask_page("heap", page, blkno)


def btree_mask(page: bytes, blkno: int) -> bytes:
    return mask_page("btree", page, blkno)


def vm_mask(page: bytes, blkno: int) -> bytes:
    return mask_page("vm", page, blkno)


def describe_difference(expected: bytes, actual: bytes, limit: int = 16) -> str:
    diffs = [i for i in range(BLCKSZ) if expected[i] != actual[i]]
    shown = ", ".join(f"@{i}: {expected[i]:#04x} != {actual[i]:#04x}" for i in diffs[:limit])
    more = f" (and {len(diffs) - limit} more)" if len(diffs) > limit else ""
    return f"{len(diffs)} bytes differ (server != redo): {shown}{more}"


# ----------------------------------------------------------------------------------------- workload


def run_workload(pg: VanillaPostgres) -> int:
    """Returns the insert LSN after the first checkpoint: nothing of the table exists below it."""
    sql = pg.safe_psql
    sql("CHECKPOINT")
    start_lsn = parse_lsn(sql("SELECT pg_current_wal_insert_lsn()::text")[0][0])

    sql("CREATE TABLE t (id int PRIMARY KEY, n int, v text) WITH (fillfactor = 60)")
    sql("CREATE INDEX t_n ON t (n)")
    # enough rows for index page splits and a new root
    sql("INSERT INTO t SELECT g, g % 50, repeat('x', 20) FROM generate_series(1, 600) g")

    # later changes to every page start with a full-page image
    sql("CHECKPOINT")
    sql("UPDATE t SET v = 'hot ' || id WHERE id % 3 = 0")  # HOT: v is not indexed
    sql("UPDATE t SET n = n + 1000 WHERE id % 7 = 0")  # non-HOT: new index entries
    sql("DELETE FROM t WHERE id % 5 = 0")
    conn = pg.connect()
    try:
        with conn.cursor() as cur:
            # hundreds of records on heap page 0: a HOT chain that gets pruned again and again
            for i in range(300):
                cur.execute("UPDATE t SET v = %s WHERE id = 1", (f"again {i}",))
    finally:
        conn.close()
    sql("INSERT INTO t SELECT g, g, 'new ' || g FROM generate_series(601, 700) g")
    # prunes, vacuums heap and indexes, sets all-visible and the visibility map
    sql("VACUUM t")
    sql("CHECKPOINT")
    return start_lsn


def load_records(pg_wal: Path, out_path: Path, start_lsn: int = 0) -> List[dict]:
    result = run_waldecode(["--json", "--include-record", pg_wal], out_path, parse=False)
    assert result.returncode == 0, f"waldecode failed: {result.stderr}"
    records = []
    with open(out_path) as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            lsn = parse_lsn(obj["lsn"])
            if lsn < start_lsn:
                continue
            records.append(
                {
                    "lsn": lsn,
                    "end_lsn": parse_lsn(obj["end_lsn"]),
                    "desc": f"{obj['rmgr']}/{obj['identify']}",
                    "blocks": obj["blocks"],
                    "bytes": bytes.fromhex(obj["record"]),
                }
            )
    return records


def block_refs(record: dict, tag: BufferTag) -> List[dict]:
    return [
        b
        for b in record["blocks"]
        if (b["spc"], b["db"], b["rel"], FORKS[b["fork"]], b["blk"])
        == (tag.spc, tag.db, tag.rel, tag.fork, tag.blk)
    ]


# ------------------------------------------------------------------------------------------ tests


@dataclass
class Relation:
    name: str
    filenode: int
    fork: str
    mask: Callable[[bytes, int], bytes]


def page_history(records: List[dict], tag: BufferTag) -> List[dict]:
    """The records that reference the page, in LSN order."""
    return [r for r in records if block_refs(r, tag)]


def assert_same_page(where: str, blkno: int, server: bytes, redo: bytes, mask) -> None:
    # unmasked, the LSN too must be the server's: the end of the last record that changed the
    # page, which redo stamps on it
    assert page_lsn(redo) == page_lsn(server), (
        f"{where}: page LSN {format_lsn(page_lsn(redo))}, "
        f"the server's is {format_lsn(page_lsn(server))}"
    )
    m_server, m_redo = mask(server, blkno), mask(redo, blkno)
    assert m_server == m_redo, f"{where}: " + describe_difference(m_server, m_redo)


def test_wal_redo_reconstructs_pages_like_the_server(
    vanilla_pg: VanillaPostgres, start_redo, test_output_dir: Path
):
    pg = vanilla_pg
    pg.configure(SERVER_CONFIG)
    pg.start()
    start_lsn = run_workload(pg)

    dboid = pg.safe_psql("SELECT oid FROM pg_database WHERE datname = current_database()")[0][0]

    def filenode(name: str) -> int:
        return pg.safe_psql(f"SELECT pg_relation_filenode('{name}')")[0][0]

    relations = [
        Relation("t", filenode("t"), "main", heap_mask),
        Relation("t", filenode("t"), "vm", vm_mask),
        Relation("t_pkey", filenode("t_pkey"), "main", btree_mask),
        Relation("t_n", filenode("t_n"), "main", btree_mask),
    ]
    pg.stop()  # its shutdown checkpoint writes every page as of the end of WAL

    records = load_records(pg.pg_wal, test_output_dir / "waldecode.jsonl", start_lsn)
    log.info("%d WAL records from %s on", len(records), format_lsn(start_lsn))

    def server_pages(rel: Relation) -> List[bytes]:
        suffix = "" if rel.fork == "main" else f"_{rel.fork}"
        data = (pg.pgdata / "base" / str(dboid) / f"{rel.filenode}{suffix}").read_bytes()
        assert data and len(data) % BLCKSZ == 0, f"{rel.name}: file of {len(data)} bytes"
        return [data[i : i + BLCKSZ] for i in range(0, len(data), BLCKSZ)]

    redo = start_redo()
    checked = from_image = 0
    longest = (0, "")
    for rel in relations:
        for blk, server in enumerate(server_pages(rel)):
            tag = BufferTag(DEFAULTTABLESPACE_OID, dboid, rel.filenode, FORKS[rel.fork], blk)
            where = f"{rel.name} {tag}"
            history = page_history(records, tag)
            assert history, f"{where}: no WAL record references the page"
            longest = max(longest, (len(history), where))

            # 1. the whole history: its first record initializes the page (no 'P')
            page = redo.reconstruct(tag, history)
            assert_same_page(f"{where}, all {len(history)} records", blk, server, page, rel.mask)

            # 2. from the last full-page image on
            images = [
                i
                for i, r in enumerate(history)
                if any(b["image"] and b["image"]["apply"] for b in block_refs(r, tag))
            ]
            if images and images[-1] > 0:
                tail = history[images[-1] :]
                page = redo.reconstruct(tag, tail)
                assert_same_page(f"{where}, from the last image", blk, server, page, rel.mask)
                from_image += 1

            # 3. two requests, the second on top of the page the first returned
            if len(history) >= 2:
                half = len(history) // 2
                middle = redo.reconstruct(tag, history[:half])
                page = redo.reconstruct(tag, history[half:], base_image=middle)
                assert_same_page(f"{where}, on top of a pushed page", blk, server, page, rel.mask)
                # with no record to apply, a pushed page comes back unchanged
                assert redo.reconstruct(tag, [], base_image=middle) == middle
            checked += 1

    log.info(
        "%d pages reconstructed, %d also from a full-page image; longest history: %d records (%s)",
        checked,
        from_image,
        *longest,
    )
    assert checked >= 15, f"only {checked} pages checked"
    assert from_image >= 5, f"only {from_image} pages had a full-page image to start from"
    assert longest[0] >= 300, f"no page has hundreds of records (longest: {longest})"

    heap0 = BufferTag(DEFAULTTABLESPACE_OID, dboid, relations[0].filenode, 0, 0)
    server0 = server_pages(relations[0])[0]
    history0 = page_history(records, heap0)

    # The comparison is not vacuous: stopped before VACUUM's last change to it (later records only
    # set PD_ALL_VISIBLE, which is masked), heap page 0 differs from the server's.
    last_change = max(i for i, r in enumerate(history0) if r["desc"] != "Heap2/VISIBLE")
    assert heap_mask(redo.reconstruct(heap0, history0[:last_change]), 0) != heap_mask(server0, 0)

    # Several processes share one data directory.
    other = start_redo()
    assert other.reconstruct(heap0, history0) == redo.reconstruct(heap0, history0)
    for p in (redo, other):
        assert p.finish() == 0, f"exit status at end of input: {p.stderr()}"
        assert p.stderr().strip() == "", f"unexpected output on stderr: {p.stderr()}"

    # Only the requested page is reconstructed, whatever else the records touch, and the page
    # survives eviction: with 16 buffers (-c works too), every other record of the WAL, initdb's
    # included, applied in the middle of the page's history pushes it out and back.
    others = [
        r
        for r in load_records(pg.pg_wal, test_output_dir / "waldecode-all.jsonl")
        if r["blocks"] and not block_refs(r, heap0)
    ]
    small = start_redo("-c", "shared_buffers=128kB", "-c", "log_min_messages=debug2")
    half = len(history0) // 2
    page = small.reconstruct(heap0, history0[:half] + others + history0[half:])
    assert_same_page(f"heap page 0 amid {len(others)} other records", 0, server0, page, heap_mask)
    assert small.finish() == 0, small.stderr()
    assert "stored evicted block 0" in small.stderr(), "the page was never evicted"
    assert "WARNING" not in small.stderr() and "ERROR" not in small.stderr(), small.stderr()

    # A record that does not initialize the page, applied to no page or to a new (all zeros) one:
    # an error, not a page missing the change.
    insert = history0[1]
    assert insert["desc"] == "Heap/INSERT", insert["desc"]
    for base, error in [
        (None, "no image of block 0"),
        (bytes(BLCKSZ), "modifies a page that does not exist or is new"),
    ]:
        lone = start_redo()
        lone.send(
            begin_msg(heap0)
            + (push_msg(heap0, base) if base is not None else b"")
            + apply_msg(insert["end_lsn"], insert["bytes"])
            + get_msg(heap0)
        )
        assert lone.read_exact(TAG_SIZE + BLCKSZ) == b"", "a page came back"
        assert lone.finish() == 1 and error in lone.stderr(), lone.stderr()


# A record of the XLOG resource manager that references no block (XLOG_NOOP with 4 bytes of data).
def xlog_noop_record(crc_ok: bool = True) -> bytes:
    data = b"\x00\x01\x02\x03"
    body = bytes([255, len(data)]) + data  # XLR_BLOCK_ID_DATA_SHORT
    total = 24 + len(body)
    # xl_tot_len, xl_xid, xl_prev, xl_info (XLOG_NOOP), xl_rmid (RM_XLOG_ID), 2 bytes padding
    header = struct.pack("<IIQBBxx", total, 0, 0x1000028, 0x20, 0)
    crc = crc32c(body + header)
    if not crc_ok:
        crc ^= 1
    return header + struct.pack("<I", crc) + body


def _crc32c_table() -> List[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# page header (LSN, checksum, flags, lower, upper, special, size+version, prune xid) with
# pd_lower above pd_upper
BAD_PAGE = struct.pack("<QHHHHHHI", 0, 0, 0, 100, 50, BLCKSZ, 0x2004, 0).ljust(BLCKSZ, b"\0")
TAG = BufferTag(DEFAULTTABLESPACE_OID, 5, 16384, 0, 0)
OTHER_TAG = BufferTag(DEFAULTTABLESPACE_OID, 5, 16384, 0, 1)
BAD_INPUTS: Dict[str, Tuple[bytes, str]] = {
    "garbage_type": (b"X" + struct.pack(">i", 4), "invalid message type 0x58"),
    "length_below_4": (b"B" + struct.pack(">i", 3), "invalid length 3"),
    "wrong_tag_length": (message(b"B", TAG.pack()[:-1]), "invalid length 20"),
    "huge_length": (b"A" + struct.pack(">i", 0x7FFFFFFF), "invalid length 2147483647"),
    "truncated_message": (begin_msg(TAG)[:-3], "unexpected end of input"),
    "get_before_begin": (get_msg(TAG), "message 'G' before any 'B' message"),
    "apply_before_begin": (apply_msg(0x1000100, xlog_noop_record()), "before any 'B'"),
    "get_of_another_page": (begin_msg(TAG) + get_msg(OTHER_TAG), "not the page of the request"),
    "push_of_another_page": (
        begin_msg(TAG) + push_msg(OTHER_TAG, bytes(BLCKSZ)),
        "not the page of the request",
    ),
    "invalid_fork": (begin_msg(BufferTag(1663, 5, 16384, 9, 0)), "invalid fork number 9"),
    "page_with_no_image": (begin_msg(TAG) + get_msg(TAG), "no image of block 0"),
    "pushed_page_with_bad_header": (
        begin_msg(TAG) + push_msg(TAG, BAD_PAGE),
        "invalid page image",
    ),
    "record_length_mismatch": (
        begin_msg(TAG) + apply_msg(0x1000100, xlog_noop_record() + b"\x00"),
        "has length 30, but the message carries 31 bytes",
    ),
    "record_with_bad_crc": (
        begin_msg(TAG) + apply_msg(0x1000100, xlog_noop_record(crc_ok=False)),
        "incorrect resource manager data checksum",
    ),
    "record_without_blocks": (
        begin_msg(TAG) + apply_msg(0x1000100, xlog_noop_record()),
        "references no page",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_wal_redo_rejects_bad_input(case: str, start_redo):
    data, expected_error = BAD_INPUTS[case]
    redo = start_redo()
    try:
        redo.send(data)
    except BrokenPipeError:
        pass  # it may have exited already
    redo.close_input()
    assert redo.read_exact(BLCKSZ) == b"", f"{case}: something came back on stdout"
    rc = redo.finish()
    stderr = redo.stderr()
    assert rc == 1, f"{case}: exit status {rc} (a signal if negative), stderr: {stderr}"
    assert expected_error in stderr, f"{case}: expected {expected_error!r} on stderr, got: {stderr}"
    assert "FATAL" in stderr and "PANIC" not in stderr, stderr


def test_wal_redo_exits_cleanly_at_end_of_input(start_redo):
    redo = start_redo()
    assert redo.finish() == 0
    assert redo.stderr().strip() == ""


def test_wal_redo_runs_sandboxed(start_redo):
    """Once initialized, the process has no new privileges, a seccomp filter, no core dumps and
    (when started as root) the uid and gid of nobody; a system call outside its allow-list (here
    none can be provoked through the protocol, so the filter's presence is what is checked) would
    end it with a message naming the call."""
    redo = start_redo()
    # A message round trip: the process is past its initialization.
    redo.send(begin_msg(BufferTag(DEFAULTTABLESPACE_OID, 5, 16384, 0, 0)))

    def proc_status() -> dict:
        text = Path(f"/proc/{redo.proc.pid}/status").read_text()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    status = wait_until("the seccomp filter", lambda: (s := proc_status())["Seccomp"].strip() == "2" and s)
    assert status["NoNewPrivs"].strip() == "1"
    if os.geteuid() == 0:
        assert status["Uid"].split()[:2] == ["65534", "65534"], status["Uid"]
        assert status["Gid"].split()[:2] == ["65534", "65534"], status["Gid"]
    limits = Path(f"/proc/{redo.proc.pid}/limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4] == "0", core
    assert redo.finish() == 0, redo.stderr()
