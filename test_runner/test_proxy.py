"""The proxy and the console (issue 12): routing by SNI, options and the password form, SCRAM end to
end with three real clients (psql, psycopg2 on libpq, asyncpg with its own SCRAM), clear refusals,
cancel, scale to zero and link authentication in a real browser."""

import asyncio
import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Tuple

import asyncpg
import psycopg2
import pytest

from fixtures.utils import pg_env, wait_until
from fixtures.zenith_env import ZenithEnv, processes_under

PASSWORDS = {"ep1": "pw-for-ep1-Zq8", "ep2": "pw-for-ep2-Xk3"}
WRONG = "not-the-password-Jy7"


def psql(env: ZenithEnv, connstr: str, sql: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [str((env.pg_bin.bindir / "psql")), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", connstr, "-c", sql],
        env=pg_env({"PGCONNECT_TIMEOUT": "30"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert p.returncode == 0, p.stderr
    return p


def setup_endpoints(env: ZenithEnv, *extra_args: str) -> None:
    """Endpoints ep1 (branch main) and ep2 (branch b2), each with role alice and its own row."""
    env.zenith_cli(["branch", "b2", "main"])
    for ep, branch in (("ep1", "main"), ("ep2", "b2")):
        env.proxy.create_endpoint(ep, branch, *extra_args)
        env.proxy.create_role(ep, "alice", PASSWORDS[ep])
        env.zenith_cli(["db", "create", ep, "shop", "--owner", "alice"])
        c = env.proxy.connstr("alice", PASSWORDS[ep], ep, dbname="shop")
        psql(env, c, f"CREATE TABLE whoami (name text); INSERT INTO whoami VALUES ('{ep}')")


@pytest.fixture
def proxy_env(zenith_env_builder) -> ZenithEnv:
    env = zenith_env_builder.init_start()
    setup_endpoints(env)
    return env


class SniResolver:
    """Resolves <endpoint>.zenith.localhost to 127.0.0.1 in this process (asyncpg connects by host
    name and sends it as SNI; there is no DNS here)."""

    def __enter__(self):
        self.orig = socket.getaddrinfo

        def getaddrinfo(host, *args, **kwargs):
            if isinstance(host, str) and host.endswith(".zenith.localhost"):
                host = "127.0.0.1"
            return self.orig(host, *args, **kwargs)

        socket.getaddrinfo = getaddrinfo
        return self

    def __exit__(self, *exc):
        socket.getaddrinfo = self.orig


def asyncpg_query(env: ZenithEnv, ep: str, how: str, password: str, sql: str):
    ctx = ssl.create_default_context(cafile=str(env.proxy.ca_cert))
    kwargs = dict(port=env.proxy.port, user="alice", database="shop", timeout=30)
    if how == "sni":
        kwargs.update(host=env.proxy.host(ep), password=password, ssl=ctx)
    else:
        # By address: no SNI; the certificate's name cannot match an address.
        ctx.check_hostname = False
        kwargs.update(host="127.0.0.1", ssl=ctx)
        if how == "options":
            kwargs.update(password=password, server_settings={"options": f"endpoint={ep}"})
        else:
            kwargs.update(password=f"endpoint={ep};{password}")

    async def run():
        conn = await asyncpg.connect(**kwargs)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    with SniResolver():
        return asyncio.run(run())


@pytest.mark.parametrize("how", ["sni", "options", "password"])
def test_three_clients_reach_their_endpoint(proxy_env: ZenithEnv, how: str):
    env = proxy_env
    for ep in ("ep1", "ep2"):
        pw = PASSWORDS[ep]
        extra = {"channel_binding": "require"} if how == "sni" else {}
        c = env.proxy.connstr("alice", pw, ep, how=how, dbname="shop", **extra)
        assert psql(env, c, "SELECT name FROM whoami").stdout.strip() == ep
        with psycopg2.connect(c) as conn, conn.cursor() as cur:
            cur.execute("SELECT name, current_user, current_database() FROM whoami")
            assert cur.fetchone() == (ep, "alice", "shop")
            # The session really is TLS to the proxy.
            assert conn.info.ssl_in_use
        conn.close()
        assert asyncpg_query(env, ep, how, pw, "SELECT name FROM whoami") == ep
    m = env.proxy.metrics()
    assert "proxy_sessions_total" in m and "proxy_bytes_total" in m


def sqlstate_of(env: ZenithEnv, connstr: str) -> Tuple[str, str]:
    try:
        psycopg2.connect(connstr).close()
    except psycopg2.OperationalError as e:
        msg = str(e)
        code = getattr(e, "pgcode", None)
        return code or "", msg
    raise AssertionError(f"connecting with {connstr} succeeded")


def raw_error(port: int, payload: bytes) -> bytes:
    """Sends `payload` as the first bytes of a connection; the server's answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(payload)
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return out
            out += chunk


def error_fields(resp: bytes) -> dict:
    assert resp[:1] == b"E", resp
    fields = {}
    for f in resp[5:].split(b"\0"):
        if f:
            fields[chr(f[0])] = f[1:].decode()
    return fields


def test_refusals_are_clear_and_others_keep_being_served(proxy_env: ZenithEnv):
    env = proxy_env
    env.proxy.configure(startup_timeout_ms=3000, max_auth_failures=3)
    env.proxy.restart()
    good = env.proxy.connstr("alice", PASSWORDS["ep1"], "ep1", dbname="shop")

    # A client that sends nothing holds a connection open: others are served meanwhile, and it
    # gets a timeout error.
    silent = socket.create_connection(("127.0.0.1", env.proxy.port), timeout=30)
    assert psql(env, good, "SELECT name FROM whoami").stdout.strip() == "ep1"

    # psycopg2 reports the server's message; asyncpg gives the SQLSTATE itself.
    cases = {
        "wrong password": (env.proxy.connstr("alice", WRONG, "ep1"), "28P01", "password authentication failed"),
        "unknown role": (env.proxy.connstr("mallory", WRONG, "ep1"), "28000", "role \"mallory\" does not exist"),
        "unknown endpoint": (env.proxy.connstr("alice", WRONG, "nope"), "3D000", "endpoint \"nope\" does not exist"),
        "no endpoint": (env.proxy.connstr("alice", WRONG, None, how="plain"), "28000", "options=endpoint="),
    }
    for what, (c, code, text) in cases.items():
        _, msg = sqlstate_of(env, c)
        assert text in msg, f"{what}: {msg}"
        # The same refusal with its SQLSTATE, seen by asyncpg.
        assert psql(env, good, "SELECT 1").stdout.strip() == "1"
    for ep, how in (("ep1", "sni"), ("nope", "options")):
        try:
            asyncpg_query(env, ep, how, WRONG, "SELECT 1")
            raise AssertionError("asyncpg connected with a wrong password")
        except asyncpg.PostgresError as e:
            assert e.sqlstate == ("28P01" if ep == "ep1" else "3D000"), e
    # The "no endpoint" error names all three ways.
    _, msg = sqlstate_of(env, env.proxy.connstr("alice", WRONG, None, how="plain"))
    for way in ("TLS with SNI", "options=endpoint=", "endpoint=<endpoint>;<password>"):
        assert way in msg, msg

    # Garbage instead of a startup packet: a protocol-violation error.
    f = error_fields(raw_error(env.proxy.port, b"\x00\x00\x00\x08garbage!" + b"x" * 32))
    assert f["C"] in ("08P01", "0A000"), f
    # The silent client gets the startup timeout.
    silent.settimeout(30)
    resp = b""
    while True:
        chunk = silent.recv(4096)
        if not chunk:
            break
        resp += chunk
    silent.close()
    assert error_fields(resp)["C"] == "57014", resp

    # Failed authentications are limited per endpoint and role: alice@ep1 had one above.
    for _ in range(2):
        sqlstate_of(env, env.proxy.connstr("alice", WRONG, "ep1"))
    _, msg = sqlstate_of(env, good)
    assert "too many failed authentications" in msg, msg
    # ... but other roles and endpoints are not affected.
    c2 = env.proxy.connstr("alice", PASSWORDS["ep2"], "ep2", dbname="shop")
    assert psql(env, c2, "SELECT name FROM whoami").stdout.strip() == "ep2"

    m = env.proxy.metrics()
    for reason in ("wrong_password", "unknown_role", "unknown_endpoint", "no_endpoint", "rate_limited"):
        assert f'proxy_auth_failures_total{{reason="{reason}"}}' in m, reason
    # The proxy never wrote a password to its log.
    text = env.proxy.logfile.read_text()
    for secret in (*PASSWORDS.values(), WRONG):
        assert secret not in text, f"the proxy's log holds a password: {secret}"


def test_cancel_reaches_the_compute(proxy_env: ZenithEnv):
    env = proxy_env
    conn = psycopg2.connect(env.proxy.connstr("alice", PASSWORDS["ep1"], "ep1", dbname="shop"))
    result = {}

    def sleeper():
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(60)")
            result["error"] = None
        except psycopg2.Error as e:
            result["error"] = e

    t = threading.Thread(target=sleeper)
    started = time.monotonic()
    t.start()
    admin = psycopg2.connect(env.proxy.connstr("alice", PASSWORDS["ep1"], "ep1", dbname="shop"))
    admin.autocommit = True

    def sleeping() -> bool:
        with admin.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'")
            return cur.fetchone()[0] == 1

    wait_until("pg_sleep to run on the compute", sleeping, timeout=30)
    conn.cancel()  # libpq's PQcancel: a CancelRequest to the proxy, with the key the proxy gave
    t.join(30)
    assert not t.is_alive()
    assert isinstance(result["error"], psycopg2.errors.QueryCanceled), result
    assert time.monotonic() - started < 30
    conn.close()
    admin.close()


def compute_running(env: ZenithEnv, name: str) -> bool:
    return env.proxy.endpoint(name)["state"] == "running"


def test_scale_to_zero_and_wake_on_connect(zenith_env_builder):
    env = zenith_env_builder.init_start()
    env.proxy.create_endpoint("sleepy", "main", "--suspend-timeout", "2s")
    env.proxy.create_role("sleepy", "alice", PASSWORDS["ep1"])
    env.zenith_cli(["db", "create", "sleepy", "app", "--owner", "alice"])
    c = env.proxy.connstr("alice", PASSWORDS["ep1"], "sleepy", dbname="app")
    psql(env, c, "CREATE TABLE t AS SELECT 42 AS x")
    pgdata = env.repo_dir / "pgdatadirs"
    wait_until("the endpoint to be suspended", lambda: not compute_running(env, "sleepy"), timeout=60)
    # No postgres process of the compute is left (the postmaster removes its pid file just before
    # it exits).
    wait_until("the compute's processes to exit", lambda: not processes_under(pgdata), timeout=10)
    started = time.monotonic()
    out = psql(env, c, "SELECT x FROM t").stdout.strip()
    wake_ms = (time.monotonic() - started) * 1000
    assert out == "42"
    print(f"wake time of a suspended endpoint (psql connect to first row): {wake_ms:.0f} ms")
    assert compute_running(env, "sleepy")
    m = env.proxy.metrics()
    assert "proxy_wakeups_total 1" in m, m
    # A connection keeps it awake past the timeout.
    conn = psycopg2.connect(c)
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        time.sleep(0.5)
    assert compute_running(env, "sleepy")
    conn.close()


def test_link_auth_in_a_real_browser(zenith_env_builder, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    env = zenith_env_builder.init_start()
    env.proxy.create_endpoint("linked", "main", "--auth", "link")
    c = env.proxy.connstr("bob", None, "linked", dbname="bobdb")
    p = subprocess.Popen(
        [str((env.pg_bin.bindir / "psql")), "-X", "-A", "-t", "-d", c, "-c", "SELECT current_user || '@' || current_database()"],
        env=pg_env({"PGCONNECT_TIMEOUT": "30"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # psql prints the proxy's notice with the login URL, then waits.
        url = None
        lines = []
        while url is None:
            line = p.stderr.readline()
            assert line, f"psql ended before printing a login URL: {lines}"
            lines.append(line)
            if "/psql_session/" in line:
                url = line.strip().split()[-1]
        assert url.startswith(env.proxy.console_url), url
        assert p.poll() is None, "psql did not wait for the approval"
        # The session is what the client asked for, whatever else its URL says: an approval for
        # another role is refused by the proxy, and a made-up session id by the console.
        session_id = url.rsplit("/", 1)[1]
        forged = json.dumps(
            {"host": "127.0.0.1", "port": 1, "user": "postgres", "dbname": "bobdb", "client_key": "00" * 32, "server_key": "00" * 32}
        ).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{env.proxy.http_port}/v1/link_sessions/{session_id}", data=forged, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{env.proxy.console_url}/psql_session/{'0' * 32}", timeout=30)
        assert e.value.code == 404
        browser.get(url + "?user=postgres&dbname=postgres&endpoint=other")
        assert browser.find_element(By.ID, "user").text == "bob"
        assert browser.find_element(By.ID, "dbname").text == "bobdb"
        browser.find_element(By.ID, "approve").click()
        WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "result") or d.find_elements(By.ID, "error"))
        assert browser.find_elements(By.ID, "result"), browser.page_source
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out.strip() == "bob@bobdb"
    finally:
        if p.poll() is None:
            p.kill()
