"""The test harness itself: what a passed test's output directory keeps.

A straggler process of a stopped server (an orphaned child still finishing its work) can add or
remove files while the directory is pruned; pruning must not fail the test for that.
"""

import os
import shutil
from pathlib import Path

import fixtures.zenith_fixtures as zf


def test_prune_keeps_logs_and_drops_data(tmp_path: Path):
    (tmp_path / "pageserver" / "tenants" / "t1").mkdir(parents=True)
    (tmp_path / "pageserver" / "pageserver.log").write_text("log\n")
    (tmp_path / "pageserver" / "tenants" / "t1" / "layer").write_bytes(b"\0" * 100)
    zf._prune_passed_output(tmp_path)
    assert (tmp_path / "pageserver" / "pageserver.log").exists()
    assert not (tmp_path / "pageserver" / "tenants").exists()


def test_prune_survives_entries_vanishing_underneath(tmp_path: Path, monkeypatch):
    """The CI failure of an earlier run: a redo initdb orphaned by the stopped pageserver removed
    its own temporary directory while the prune walked it (FileNotFoundError from rmdir)."""
    gone = tmp_path / "tenants" / "t1" / "wal-redo-datadir.initdb.___temp"
    (gone / "pg_commit_ts").mkdir(parents=True)
    (gone / "base").mkdir()
    (gone / "PG_VERSION").write_text("15\n")
    real_walk = os.walk

    def racing_walk(top, topdown=True, **kw):
        for root, dirs, files in real_walk(top, topdown=topdown, **kw):
            if Path(root) == gone:
                # Between the listing and the removals, the other process removes it all.
                shutil.rmtree(gone)
            yield root, dirs, files

    monkeypatch.setattr(zf.os, "walk", racing_walk)
    zf._prune_passed_output(tmp_path)
    assert not gone.exists()
