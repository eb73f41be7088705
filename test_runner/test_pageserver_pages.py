"""Page-level checks of the pageserver against the primary it follows.

test_pages_match: every block of every relation of the database pgbench ran in, read straight
from the primary's data files after a CHECKPOINT, equals the block the pageserver serves over the
pagestream protocol (GetPage@latest), after the masking PostgreSQL's wal_consistency_checking
applies (fixtures/pagemask.py).

test_ingest_bounded_memory: with a small checkpoint_distance the pageserver ingests many times
that much WAL, writes delta and image layer files, and its peak RSS stays far below the WAL volume.
"""

import os
import re
from pathlib import Path
from typing import List, Tuple

from fixtures.pagemask import mask_page
from fixtures.pages_match import (
    Relation,
    checkpoint_lsn,
    compare_fork,
    follow_new_primary,
    list_relations,
    primary_blocks,
    wait_ingested,
    ForkStats,
)
from fixtures.pageserver import Pageserver
from fixtures.zenith_env import ZenithEnvBuilder
from fixtures.pagestream import (
    FSM_FORKNUM,
    MAIN_FORKNUM,
    PAGE_SIZE,
    VISIBILITYMAP_FORKNUM,
    PagestreamClient,
    PagestreamError,
    RelTag,
    PageServiceError,
)
from fixtures.utils import format_lsn, log, parse_lsn
from fixtures.zenith_fixtures import PortDistributor, VanillaPostgres

if os.environ.get("ZENITH_TEST_PGBENCH_SCALE"):
    SCALE = int(os.environ["ZENITH_TEST_PGBENCH_SCALE"])
else:
    SCALE = 10 if os.environ.get("ZENITH_BENCH_SIZE") == "full" else 1

SHOW_MISMATCHES = int(os.environ.get("ZENITH_TEST_SHOW_MISMATCHES", "10"))


# ------------------------------------------------------------------------------------ test_pages_match


def check_masks_are_selective(rels: List[Relation]) -> None:
    """The masks hide what PostgreSQL lets differ and nothing else: on a real heap page and a
    real btree leaf page of the primary, changing a masked field leaves the masked page equal,
    changing one byte of tuple data does not."""
    by_name = {r.name: r for r in rels}
    for name, kind in (("pgbench_accounts", "heap"), ("pgbench_accounts_pkey", "btree")):
        r = by_name[name]
        blocks = primary_blocks(r.path, MAIN_FORKNUM)
        blkno = 1  # a heap page full of tuples / the first btree leaf
        page = bytearray(blocks[blkno])
        masked = mask_page(kind, bytes(page), blkno)
        assert masked != mask_page(kind, blocks[blkno + 1], blkno), f"{name}: two blocks mask equal"

        hidden = bytearray(page)
        hidden[0:8] = b"\x01" * 8  # pd_lsn
        # The first line pointer to a stored tuple (LP_NORMAL): concurrent
        # updates may have left the first ones redirected or dead.
        lp_at = next(
            24 + 4 * i for i in range(64)
            if (int.from_bytes(page[24 + 4 * i:28 + 4 * i], "little") >> 15) & 3 == 1
        )
        lp = int.from_bytes(page[lp_at:lp_at + 4], "little")
        off, length = lp & 0x7FFF, lp >> 17
        if kind == "heap":
            hidden[off + 21] ^= 0x08  # t_infomask (LE u16 at 20): HEAP_XMAX_INVALID (0x0800) hint
        else:
            hidden[lp_at:lp_at + 4] = (lp | (3 << 15)).to_bytes(4, "little")  # LP_DEAD, set by _bt_killitems
        assert mask_page(kind, bytes(hidden), blkno) == masked, f"{name}: a masked field shows"

        changed = bytearray(page)
        changed[off + length - 1] ^= 0xFF  # last byte of the first item's data
        assert mask_page(kind, bytes(changed), blkno) != masked, f"{name}: a data change is masked"


def test_pages_match(zenith_env_builder: ZenithEnvBuilder, vanilla_pg: VanillaPostgres):
    ps = zenith_env_builder.init_start().pageserver
    primary = vanilla_pg
    # No autovacuum: after the final CHECKPOINT nothing may change a page in shared buffers (a
    # pruning or freezing autovacuum would be in the WAL the pageserver has, but not yet in the
    # data files we read).
    tenant, timeline = follow_new_primary(ps, primary, ["autovacuum = off"])

    dbname = "postgres"
    primary.pgbench("-i", "-s", str(SCALE), dbname=dbname)
    primary.pgbench("-c", "2", "-T", "3", dbname=dbname)
    # VACUUM sets visibility-map bits (and prunes/freezes) so the VM fork has content to compare;
    # the UPDATE then clears some of them again.
    primary.safe_psql("VACUUM", dbname=dbname)
    primary.safe_psql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 997 = 0", dbname=dbname)

    dboid, rels = list_relations(primary, dbname)
    assert any(r.relkind == "t" for r in rels) and any(r.rel.dbnode == 0 for r in rels)

    end_lsn = checkpoint_lsn(primary, dbname)
    wait_ingested(ps, tenant, timeline, end_lsn)
    log.info("comparing at %s: %d relations of database %s (oid %d)", format_lsn(end_lsn), len(rels), dbname, dboid)

    main, vm, fsm = ForkStats(), ForkStats(), ForkStats()
    with PagestreamClient("127.0.0.1", ps.pg_port, tenant, timeline) as client:
        # A block beyond the end is a zero page (a compute's extension with
        # empty pages is in WAL only once something is written into them).
        accounts = next(r for r in rels if r.name == "pgbench_accounts")
        n = client.nblocks(accounts.rel)
        assert client.get_page(accounts.rel, MAIN_FORKNUM, n) == bytes(8192)
        # Error responses raise PagestreamError and leave the stream usable.
        missing = RelTag(accounts.rel.spcnode, accounts.rel.dbnode, accounts.rel.relnode + 1000000)
        try:
            client.get_page(missing, MAIN_FORKNUM, 0)
            raise AssertionError("get_page of a relation that does not exist succeeded")
        except PagestreamError as e:
            assert "does not exist" in e.message, e
        assert client.nblocks(accounts.rel) == n
        for r in rels:
            compare_fork(client, r, MAIN_FORKNUM, r.kind, main)
            if r.kind == "heap":
                compare_fork(client, r, VISIBILITYMAP_FORKNUM, "vm", vm)
            # FSM: see the note below; compared for the figures only.
            compare_fork(client, r, FSM_FORKNUM, "fsm", fsm)

    # FSM forks are compared but NOT asserted: the free space map is not WAL-logged. The primary
    # updates FSM pages as hints (MarkBufferDirtyHint: no WAL without checksums/wal_log_hints) and
    # creates/extends the FSM fork without WAL (VACUUM's RecordPageWithFreeSpace/fsm_extend); redo
    # on a standby maintains it only roughly (XLogRecordPageWithFreeSpace for nearly full pages),
    # and PostgreSQL treats an FSM as possibly stale and self-correcting after recovery. So the
    # pageserver only has what the import and the WAL carry (FSM truncations), and it differs for
    # good reasons. What we see (scale 1): the catalogs' FSM pages imported at initdb are stale
    # (the primary's VACUUM rewrote the leaf values, e.g. 0x9b vs 0xca), and the pgbench tables'
    # FSM forks, created by VACUUM without WAL, do not exist on the pageserver at all. A compute
    # reading such an FSM only gets a worse guess of where free space is, never wrong data.
    for name, s in (("main", main), ("vm", vm), ("fsm", fsm)):
        print(f"\n{name} forks: {s.forks}, blocks compared: {s.blocks}, mismatches: {len(s.mismatches)}")
        for m in s.mismatches[:SHOW_MISMATCHES]:
            print(f"  {name}: {m}")
    # A page service error (unknown timeline) raises PageServiceError.
    try:
        PagestreamClient("127.0.0.1", ps.pg_port, tenant, "0" * 32).close()
        raise AssertionError("pagestream on an unknown timeline succeeded")
    except PageServiceError as e:
        assert "not found" in e.message, e
    print(f"total blocks compared (main + vm, asserted): {main.blocks + vm.blocks} "
          f"in {len(rels)} relations at {format_lsn(end_lsn)}, scale {SCALE}")
    assert main.blocks > 0 and vm.blocks > 0
    check_masks_are_selective(rels)
    problems = main.mismatches + vm.mismatches
    assert len(problems) == 0, f"{len(problems)} mismatches:\n" + "\n".join(problems[:40])


# ------------------------------------------------------------------------------------ test_ingest_bounded_memory

DELTA_RE = re.compile(r"^[0-9A-F]{36}-[0-9A-F]{36}__([0-9A-F]{16})-([0-9A-F]{16})$")
IMAGE_RE = re.compile(r"^[0-9A-F]{36}-[0-9A-F]{36}__([0-9A-F]{16})$")


def proc_status_kb(pid: int, field_name: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field_name} not in /proc/{pid}/status")


def layer_files(timeline_dir: Path) -> Tuple[List[Tuple[int, int]], List[int]]:
    """(delta LSN ranges, image LSNs) of the layer files in a timeline directory."""
    deltas, images = [], []
    for f in timeline_dir.iterdir():
        if m := DELTA_RE.match(f.name):
            deltas.append((int(m.group(1), 16), int(m.group(2), 16)))
        elif m := IMAGE_RE.match(f.name):
            images.append(int(m.group(1), 16))
    return deltas, images


MiB = 1024 * 1024
INDEX_ENTRY_BYTES_IN_MEMORY = 40  # layer_file::IndexEntry: Key (18 bytes, 4-aligned: 20) + Lsn + offset
INGEST_SCALE = int(os.environ.get("ZENITH_TEST_INGEST_SCALE", str(max(4, SCALE))))


def layer_index_entries(timeline_dir: Path) -> int:
    """Sum of the index entry counts (header bytes 100..108) of the layer files in a timeline."""
    total = 0
    for f in timeline_dir.iterdir():
        if DELTA_RE.match(f.name) or IMAGE_RE.match(f.name):
            with open(f, "rb") as fh:
                total += int.from_bytes(fh.read(128)[100:108], "big")
    return total


def test_ingest_bounded_memory(
    test_output_dir: Path,
    vanilla_pg: VanillaPostgres,
    port_distributor: PortDistributor,
):
    """Two pageservers follow the same primary through two slots and ingest the same WAL: `small`
    with checkpoint_distance = 2 MiB, and `control` with the default 256 MiB, which never flushes
    during the test and so keeps all the WAL's values in its in-memory layer. The control shows
    that VmHWM sees WAL held in memory (its growth is comparable to the WAL volume); the small one
    must stay well below that.

    Bound for `small` (peak RSS growth over its RSS before ingest):
      4 x checkpoint_distance   the open in-memory layer plus a frozen one being flushed, each up
                                to checkpoint_distance of values, with 2x for the BTreeMap/Vec and
                                allocator overhead
      + page_cache_size pages   reconstructed pages kept by the page cache
      + 40 B x index entries    every opened layer keeps its index in memory (LayerReader); without
                                GC that grows with the data stored, ~0.1-0.15 B per WAL byte here
      + 16 MiB                  allocator fragmentation, thread stacks, WAL redo I/O buffers
    and, independently, growth < 0.6 x WAL < the control's growth: the WAL is not held. (Measured
    at scale 4: small 0.46x alone and 0.51x beside the parallel suite, control 1.23x; the fixed
    part of the bound is a larger share of a small WAL volume.)
    WAL volume must be >= 3 x checkpoint_distance (~26x at the default scale 4) and large
    enough (>= 32 MiB) that WAL / 2 is above the fixed part of the bound.
    """
    checkpoint_distance = 2 * MiB
    page_cache_pages = 256  # 2 MiB of reconstructed pages (default 8192 = 64 MiB)
    common = ["wait_lsn_timeout='30s'", f"page_cache_size={page_cache_pages}", "tenant_config.gc_period='0s'"]
    servers = {
        "small": Pageserver(
            test_output_dir / "pageserver",
            port_distributor.get_port(),
            port_distributor.get_port(),
            overrides=[
                *common,
                f"tenant_config.checkpoint_distance={checkpoint_distance}",
                "tenant_config.compaction_threshold=4",
                "tenant_config.image_creation_threshold=4",
            ],
        ),
        "control": Pageserver(
            test_output_dir / "pageserver-control",
            port_distributor.get_port(),
            port_distributor.get_port(),
            overrides=[*common, "tenant_config.checkpoint_timeout='1h'"],
        ),
    }
    servers["control"].logfile = test_output_dir / "pageserver-control.stdout"
    try:
        for ps in servers.values():
            ps.init()
            ps.start()
        primary = vanilla_pg
        primary.initdb()
        timelines = {}
        for name, ps in servers.items():
            tenant = ps.tenant_create()
            timelines[name] = (tenant, ps.timeline_create(tenant, import_pgdata=str(primary.pgdata))["timeline_id"])
        primary.configure(["wal_level = replica", "max_wal_senders = 4", "autovacuum = off"])
        primary.start()
        before = {}
        for name, ps in servers.items():
            tenant, timeline = timelines[name]
            primary.safe_psql(f"SELECT pg_create_physical_replication_slot('{name}')")
            detail = ps.timeline_detail(tenant, timeline)
            before[name] = {
                "lsn": parse_lsn(detail["last_record_lsn"]),
                "initdb_lsn": parse_lsn(detail["initdb_lsn"]),
                "rss_kb": proc_status_kb(ps.proc.pid, "VmRSS"),
                "hwm_kb": proc_status_kb(ps.proc.pid, "VmHWM"),
            }
            ps.set_wal_source(tenant, timeline, f"host=127.0.0.1 port={primary.port} user={primary.user} slot={name}")

        primary.pgbench("-i", "-s", str(INGEST_SCALE))
        primary.pgbench("-c", "2", "-t", str(1000 * INGEST_SCALE))
        end_lsn = parse_lsn(primary.safe_psql("SELECT pg_current_wal_insert_lsn()")[0][0])
        start_lsn = before["small"]["lsn"]
        wal_bytes = end_lsn - start_lsn

        figures = {}
        for name, ps in servers.items():
            tenant, timeline = timelines[name]
            wait_ingested(ps, tenant, timeline, end_lsn)
            if name == "small":
                # The final flush and forced compaction count too.
                ps.checkpoint(tenant, timeline)
                compact = ps.compact(tenant, timeline)
            hwm_kb = proc_status_kb(ps.proc.pid, "VmHWM")
            growth = (hwm_kb - before[name]["rss_kb"]) * 1024
            figures[name] = {"hwm_kb": hwm_kb, "growth": growth}
            print(f"\n{name}: RSS {before[name]['rss_kb'] / 1024:.1f} MiB before ingest, peak (VmHWM) "
                  f"{hwm_kb / 1024:.1f} MiB, growth {growth / MiB:.1f} MiB = {growth / wal_bytes:.2f}x the WAL")

        ps = servers["small"]
        tenant, timeline = timelines["small"]
        tl_dir = ps.workdir / "tenants" / tenant / "timelines" / timeline
        deltas, images = layer_files(tl_dir)
        new_images = [lsn for lsn in images if lsn > before["small"]["initdb_lsn"]]
        entries = layer_index_entries(tl_dir)
        growth = figures["small"]["growth"]
        open_fds = len(os.listdir(f"/proc/{ps.proc.pid}/fd"))
        sizes = sorted(f.stat().st_size for f in tl_dir.iterdir() if DELTA_RE.match(f.name))
        bound = (4 * checkpoint_distance + page_cache_pages * PAGE_SIZE
                 + entries * INDEX_ENTRY_BYTES_IN_MEMORY + 16 * MiB)
        print(
            f"WAL ingested: {wal_bytes / MiB:.1f} MiB ({wal_bytes / checkpoint_distance:.1f}x checkpoint_distance "
            f"of {checkpoint_distance / MiB:.0f} MiB), {format_lsn(start_lsn)}..{format_lsn(end_lsn)}, scale {INGEST_SCALE}\n"
            f"small: {len(deltas)} delta and {len(images)} image layer files ({len(new_images)} images above the "
            f"import LSN), {entries} index entries ({entries * INDEX_ENTRY_BYTES_IN_MEMORY / MiB:.1f} MiB in memory); "
            f"final compact: {compact}\n"
            f"small: delta layer sizes min {sizes[0]} / median {sizes[len(sizes) // 2]} / max {sizes[-1]} bytes; "
            f"{open_fds} open file descriptors\n"
            f"small: peak growth {growth / MiB:.1f} MiB, bound {bound / MiB:.1f} MiB, 0.6 x WAL {wal_bytes * 0.6 / MiB:.1f} MiB"
        )
        assert wal_bytes > 3 * checkpoint_distance and wal_bytes >= 32 * MiB, wal_bytes
        assert deltas, "no delta layer files"
        assert new_images, f"no image layer above the import LSN: {images}"
        assert figures["control"]["growth"] > wal_bytes * 0.6, (
            "the control pageserver (everything in memory) did not grow by 0.6x the WAL: "
            "the RSS measurement cannot tell", figures)
        assert growth < wal_bytes * 0.6, f"peak RSS grew by {growth / MiB:.1f} MiB for {wal_bytes / MiB:.1f} MiB of WAL"
        assert growth < bound, f"peak RSS grew by {growth / MiB:.1f} MiB, bound {bound / MiB:.1f} MiB"
    finally:
        for ps in servers.values():
            ps.stop(immediate=True)
