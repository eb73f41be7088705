"""The zenith CLI as people use it: the laptop flow through `make run`, time travel, and clear errors
that leave no orphan process behind."""

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg2
import pytest

from fixtures.utils import base_dir, format_lsn, pg_env, wait_until, zenith_binary, zenith_binpath
from fixtures.zenith_env import ZenithCliError, ZenithEnv, processes_under


def count(pg, table: str = "t") -> int:
    return pg.safe_psql(f"SELECT count(*) FROM {table}")[0][0]


def test_laptop_flow(zenith_env_builder, test_output_dir: Path):
    """A new user: `make run`, psql, a table of 100,000 rows, a branch, more writes on main, a compute
    on the branch that sees exactly the branch point, then stop/start with every committed row kept."""
    b = zenith_env_builder
    env = ZenithEnv(b)
    b.env = env  # teardown stops whatever make run started
    run_env = pg_env(
        {
            "ZENITH_REPO_DIR": str(b.repo_dir),
            "ZENITH_INIT_CONFIG": str(b.init_config_file()),
            # The binaries under test: `make run` would otherwise build the release profile, a
            # second whole build of the workspace inside the suite.
            "ZENITH_RUN_BIN": str(zenith_binpath),
        }
    )
    # Run as from a fresh shell, not as a sub-make of `make test`.
    for var in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        run_env.pop(var, None)
    out = subprocess.run(
        ["make", "-s", "run"], cwd=base_dir, env=run_env, capture_output=True, text=True, timeout=1800
    )
    (test_output_dir / "make_run.stdout").write_text(out.stdout)
    (test_output_dir / "make_run.stderr").write_text(out.stderr)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Zenith is running" in out.stdout
    # ... and the endpoint `app` answered through the proxy (TLS, SCRAM).
    assert "through the proxy" in out.stdout, out.stdout
    m = re.search(r"(postgresql://\S+)", out.stdout)
    assert m, out.stdout
    connstr = m.group(1)

    # psql connects; a table of 100,000 rows.
    psql = [str(env.pg_bin.bindir / "psql"), "-X", "-At", connstr]
    env.pg_bin.run([*psql, "-c", "CREATE TABLE t (id int PRIMARY KEY, v text)"])
    env.pg_bin.run(
        [*psql, "-c", "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100000) g"]
    )

    # Branch, noting the time; then more writes on main.
    started = time.monotonic()
    env.zenith_cli(["branch", "dev", "main"])
    branch_ms = (time.monotonic() - started) * 1000
    print(f"zenith branch dev main took {branch_ms:.0f} ms")
    env.pg_bin.run(
        [*psql, "-c", "INSERT INTO t SELECT g, 'more' FROM generate_series(100001, 120000) g"]
    )
    env.pg_bin.run([*psql, "-c", "DELETE FROM t WHERE id <= 10"])

    dev = env.postgres.create_start("dev_node", branch="dev")
    assert count(dev) == 100000
    assert dev.safe_psql("SELECT min(id), max(id) FROM t")[0] == (1, 100000)
    # The branch is writable on its own.
    dev.safe_psql("INSERT INTO t VALUES (0, 'dev only')")
    assert count(dev) == 100001

    tree = env.zenith_cli(["branch"]).stdout
    assert re.search(r"main .*\n(.*\n)*.*dev @", tree), tree

    # Stop everything, start again: every committed row is there.
    env.zenith_cli(["stop"])
    assert processes_under(b.repo_dir) == []
    env.zenith_cli(["start"])
    env.zenith_cli(["pg", "start", "main"])
    rows = subprocess.run(
        [*psql, "-c", "SELECT count(*), min(id), max(id) FROM t"],
        env=env.pg_bin.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert rows == "119990|11|120000", rows
    env.zenith_cli(["pg", "start", "dev_node"])
    assert count(dev) == 100001


def test_time_travel(zenith_env: ZenithEnv):
    """Read-only computes at an LSN and at a time between two batches show exactly the first."""
    env = zenith_env
    pg = env.postgres.create_start("main")
    pg.safe_psql("CREATE TABLE t (id int)")
    pg.safe_psql("INSERT INTO t SELECT generate_series(1, 1000)")
    lsn = pg.safe_psql("SELECT pg_current_wal_flush_lsn()::text")[0][0]
    between = pg.safe_psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")[0][0]
    # The second batch commits strictly later than `between`.
    wait_until(
        "the clock to move past the noted time",
        lambda: pg.safe_psql(
            f"SELECT clock_timestamp() > '{between}'::timestamptz + interval '1 millisecond'"
        )[0][0],
    )
    pg.safe_psql("INSERT INTO t SELECT generate_series(1001, 1500)")
    assert count(pg) == 1500

    at_lsn = env.postgres.create_start("ro_lsn", lsn=lsn)
    assert count(at_lsn) == 1000
    at_time = env.postgres.create_start("ro_time", lsn=between)
    assert count(at_time) == 1000
    with pytest.raises(psycopg2.Error, match="read-only"):
        at_time.safe_psql("INSERT INTO t VALUES (0)")
    # The listing says what they are.
    listing = env.zenith_cli(["pg", "list"]).stdout
    assert re.search(rf"ro_lsn .* read-only at {re.escape(lsn)}", listing), listing
    assert "read-write" in listing
    # A branch at the time sees the same.
    env.zenith_cli(["branch", "past", f"main@{between}"])
    past = env.postgres.create_start("past_node", branch="past")
    assert count(past) == 1000


def cli_error(env: ZenithEnv, args, expect: str) -> str:
    """Run a zenith command that must fail with one clear line containing `expect`."""
    p = env.zenith_cli(args, check=False)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    assert expect in lines[0], lines[0]
    return lines[0]


def test_cli_errors_leave_no_orphans(zenith_env_builder, port_distributor):
    b = zenith_env_builder
    env = b.init_start()
    repo = b.repo_dir

    def live():
        return sorted(processes_under(repo))

    # zenith start twice: the second says it is already running.
    before = live()
    cli_error(env, ["start"], "already running (pid")
    assert live() == before

    # zenith init over an existing repo.
    cli_error(env, ["init"], "already exists")

    # pg start of an unknown branch: nothing starts, nothing is created.
    cli_error(env, ["pg", "start", "x", "--branch", "nope"], 'unknown branch "nope"')
    assert live() == before
    assert "x " not in env.zenith_cli(["pg", "list"]).stdout

    # A compute port taken by another process.
    port = port_distributor.get_port()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        cli_error(env, ["pg", "start", "busy", "--port", str(port)], f"port 127.0.0.1:{port}")
    assert live() == before

    # A second read-write compute on a branch is refused.
    pg = env.postgres.create_start("main")
    cli_error(env, ["pg", "create", "second"], "already writes to branch")

    # Stop with the pageserver already killed -9: stop still works and says so.
    env.pageserver.kill9()
    p = env.zenith_cli(["stop"])
    assert "pageserver was not running" in p.stdout
    assert live() == []

    # A stale pid file (process gone) does not block start.
    (repo / "pageserver" / "pageserver.pid").write_text("999999\n")
    env.zenith_cli(["start"])
    assert env.pageserver.pid != 999999
    pg.start()
    assert pg.safe_psql("SELECT 1") == [(1,)]

    # The pageserver's port taken by another process: start refuses, nothing is left running.
    env.zenith_cli(["stop"])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", b.pageserver_http_port))
        s.listen()
        cli_error(env, ["start"], "is in use by another process")
    assert live() == []

    # A corrupted config file.
    cfg = repo / "config"
    good = cfg.read_text()
    cfg.write_text(good + "\n[[[ not toml\n")
    cli_error(env, ["start"], "is corrupted")
    cli_error(env, ["status"], "is corrupted")
    assert live() == []
    cfg.write_text(good)

    # The repository was left usable by all of this.
    env.zenith_cli(["start"])
    pg.start()
    assert pg.safe_psql("SELECT 1") == [(1,)]


def test_pageserver_start_failure_leaves_no_orphan(zenith_env_builder):
    """A pageserver that cannot come up (its config broken) is reported with its log, not left
    behind."""
    b = zenith_env_builder
    env = b.init()
    toml_path = b.repo_dir / "pageserver" / "pageserver.toml"
    toml_path.write_text(toml_path.read_text() + "\nno_such_setting = 1\n")
    msg = cli_error(env, ["start"], "pageserver")
    assert "pageserver.log" in msg
    assert processes_under(b.repo_dir) == []


def test_export_writes_a_stock_data_directory(zenith_env: ZenithEnv, pg_bin, port_distributor, test_output_dir: Path):
    """`zenith pg export` writes a branch, at its end or at an LSN, as a data directory a stock
    PostgreSQL starts from; a directory that is not empty is refused."""
    from fixtures.zenith_env import Postgres
    from fixtures.zenith_fixtures import VanillaPostgres

    env = zenith_env
    pg = env.postgres.create_start("main")
    pg.safe_psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id")
    lsn = pg.safe_psql("SELECT pg_current_wal_flush_lsn()::text")[0][0]
    pg.safe_psql("INSERT INTO t SELECT generate_series(1001, 1500)")
    out = env.zenith_cli(["pg", "export", str(test_output_dir / "now")]).stdout
    assert "exported" in out, out
    env.zenith_cli(["pg", "export", str(test_output_dir / "then"), "--lsn", lsn])
    for d, n in (("now", 1500), ("then", 1000)):
        with VanillaPostgres(test_output_dir / d, pg_bin, port_distributor.get_port(), test_output_dir) as v:
            v.initialized = True
            v.user = Postgres.USER
            v.configure([f"port = {v.port}", "listen_addresses = '127.0.0.1'",
                         f"unix_socket_directories = '{v.socket_dir}'"])
            v.start()
            assert v.safe_psql("SELECT count(*) FROM t")[0][0] == n, d
    cli_error(env, ["pg", "export", str(test_output_dir / "now")], "is not empty")


def test_start_right_after_kill9(zenith_env_builder):
    """`zenith start` straight after a kill -9 of the pageserver starts it again. The killed
    pageserver's main thread shows as a zombie while its other threads still exit and hold the pid
    file's lock (seen in half of 30 kills); the CLI used to call that "already running"."""
    env = zenith_env_builder.init_start()
    for _ in range(5):
        pid = env.pageserver.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # As a user would: wait only for the process to stop running, not for its pid file.
        wait_until("the pageserver to stop running", lambda: pid not in processes_under(env.pageserver.workdir))
        env.zenith_cli(["start"])
        assert env.pageserver.pid != pid


def test_json_logs_carry_tenant_and_timeline(zenith_env_builder):
    """`zenith init --log-format json`: every daemon writes one JSON object per line, and the
    pageserver's and walkeepers' lines about a timeline carry its tenant_id and timeline_id."""
    zenith_env_builder.log_format = "json"
    env = zenith_env_builder.init_start()
    pg = env.postgres.create_start("main")
    pg.safe_psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
    env.wait_branch_caught_up(pg)
    tenant, timeline = env.initial_tenant, env.branch_timeline("main")
    logs = {
        "pageserver": env.repo_dir / "pageserver" / "pageserver.log",
        "walkeeper": env.repo_dir / "walkeepers" / "1" / "walkeeper.log",
        "console": env.repo_dir / "console" / "console.log",
        "proxy": env.repo_dir / "proxy" / "proxy.log",
    }
    for daemon, path in logs.items():
        events = []
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))  # any JSON line that does not parse fails here
        assert events, f"{daemon}: no JSON log lines in {path}"
        for e in events:
            assert {"timestamp", "level", "fields"} <= e.keys(), (daemon, e)
        if daemon in ("pageserver", "walkeeper"):
            tagged = [
                e for e in events
                if any(s.get("tenant_id") == tenant and s.get("timeline_id") == timeline
                       for s in e.get("spans", []) + [e.get("span", {})])
            ]
            assert tagged, f"{daemon}: no line names tenant {tenant} timeline {timeline}"


def run_on_terminal(env, args) -> bytes:
    """`zenith ARGS` with stderr on a pseudo-terminal; what it drew there."""
    import pty

    master, slave = pty.openpty()
    try:
        p = subprocess.run([str(zenith_binary("zenith")), *args], env=env.cli_env(),
                           stdout=subprocess.PIPE, stderr=slave, timeout=300, cwd=env.repo_dir.parent)
        os.close(slave)
        slave = -1
        assert p.returncode == 0, p.stdout
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_progress_on_a_terminal_only(zenith_env, test_output_dir):
    """Long operations draw progress on a terminal (indicatif) and print nothing extra otherwise."""
    env = zenith_env
    pg = env.postgres.create_start("main")
    pg.safe_psql("CREATE TABLE t AS SELECT generate_series(1, 200000) AS x")
    drawn = run_on_terminal(env, ["pg", "export", str(test_output_dir / "tty")])
    assert b"basebackup of" in drawn, drawn[-500:]
    drawn = run_on_terminal(env, ["tenant", "create"])
    assert b"creating a tenant" in drawn, drawn[-500:]
    quiet = env.zenith_cli(["pg", "export", str(test_output_dir / "pipe")])
    assert quiet.stderr == "", quiet.stderr
