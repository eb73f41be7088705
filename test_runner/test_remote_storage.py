"""The pageserver over object storage, end to end: layer files and indexes reach a real S3 server
(moto) and the local directory backend, `remote_consistent_lsn` follows, and the walkeepers keep
WAL until it (docs/remote_storage.md)."""

import json
from pathlib import Path

import pytest

from fixtures.utils import parse_lsn, wait_until


def index_files(keys):
    return sorted(k for k in keys if k.rsplit("/", 1)[-1].startswith("index_part.json-"))


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_layers_and_indexes_reach_object_storage(zenith_env_builder, request, backend):
    b = zenith_env_builder
    moto = None
    if backend == "s3":
        moto = request.getfixturevalue("moto_s3")
        b.pageserver_config += moto.pageserver_config(prefix="ps")
    env = b.init_start()
    tenant = env.initial_tenant
    tl = env.branch_timeline("main")
    pg = env.postgres.create_start("main")
    pg.safe_psql("CREATE TABLE t (id int PRIMARY KEY, v text)")
    pg.safe_psql("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
    env.wait_branch_caught_up(pg)
    env.pageserver.checkpoint(tenant, tl)

    # remote_consistent_lsn reaches the checkpoint's disk_consistent_lsn.
    disk = parse_lsn(env.pageserver.timeline_detail(tenant, tl)["disk_consistent_lsn"])
    wait_until(
        "the index of the checkpoint uploaded",
        lambda: parse_lsn(env.pageserver.timeline_detail(tenant, tl)["remote_consistent_lsn"]) >= disk,
        timeout=60,
    )

    # The newest index lists exactly the local layer files, each uploaded with its size.
    prefix = f"tenants/{tenant}/timelines/{tl}/"
    if backend == "s3":
        keys = [k[len("ps/"):] for k in moto.objects("ps/" + prefix)]
        read = lambda key: moto.get("ps/" + key)  # noqa: E731
    else:
        root = Path(env.repo_dir) / "remote_storage"
        keys = [str(p.relative_to(root)) for p in (root / prefix).iterdir()]
        read = lambda key: (root / key).read_bytes()  # noqa: E731
    newest = index_files(keys)[-1]
    index = json.loads(read(newest))
    assert index["version"] == 1
    assert parse_lsn(index["disk_consistent_lsn"]) >= disk
    local_dir = Path(env.repo_dir) / "pageserver" / "tenants" / tenant / "timelines" / tl
    local = {p.name: p.stat().st_size for p in local_dir.iterdir() if "__" in p.name}
    assert {n: m["file_size"] for n, m in index["layers"].items()} == local
    for name, meta in index["layers"].items():
        key = f"{prefix}{name}-{meta['generation']:08x}"
        assert key in keys, f"{key} not uploaded"
        assert len(read(key)) == meta["file_size"]

    # The walkeeper the pageserver streams from hears of remote_consistent_lsn as the
    # pageserver's flush LSN; no walkeeper holds a higher one (they keep the WAL above it).
    remote = parse_lsn(env.pageserver.timeline_detail(tenant, tl)["remote_consistent_lsn"])
    wait_until(
        "the walkeeper to hear of remote_consistent_lsn",
        lambda: any(
            parse_lsn(w.timeline_status(tl)["remote_consistent_lsn"]) >= remote
            for w in env.walkeepers
        ),
        timeout=30,
    )
    for w in env.walkeepers:
        assert parse_lsn(w.timeline_status(tl)["remote_consistent_lsn"]) <= parse_lsn(
            env.pageserver.timeline_detail(tenant, tl)["remote_consistent_lsn"]
        )

    # A restart uploads no layer again: the next generation writes only a new index.
    def generation(key):
        return int(key.rsplit("/", 1)[-1].split("-")[1], 16)

    first = max(generation(k) for k in index_files(keys))
    env.pageserver.stop()
    env.pageserver.start()
    after = wait_until(
        "an index of the next generation",
        lambda: [k for k in _keys(backend, env, moto, prefix)
                 if k in index_files([k]) and generation(k) > first] and
        _keys(backend, env, moto, prefix),
        timeout=60,
    )
    second = max(generation(k) for k in index_files(after))
    assert second == first + 1
    relayered = [k for k in after if k not in index_files(after) and k.endswith(f"-{second:08x}")]
    assert relayered == [], "layers uploaded again after a restart"


def _keys(backend, env, moto, prefix):
    if backend == "s3":
        return [k[len("ps/"):] for k in moto.objects("ps/" + prefix)]
    root = Path(env.repo_dir) / "remote_storage"
    return [str(p.relative_to(root)) for p in (root / prefix).iterdir()]
