"""JWT auth (`zenith init --auth`): the laptop flow works with every daemon checking tokens, and
tokens that are missing, malformed, expired, signed by another key or for another tenant are
refused with a clear error while everyone else keeps being served.

Tokens here are made by PyJWT with the repository's private key (or a key of the test's own), so
the daemons' checks are held against an implementation nobody here wrote."""

import time

import psycopg2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fixtures.pageserver import PageserverApiError
from fixtures.zenith_env import ZenithEnv, ZenithEnvBuilder


@pytest.fixture
def auth_env(zenith_env_builder: ZenithEnvBuilder) -> ZenithEnv:
    zenith_env_builder.auth = True
    return zenith_env_builder.init_start()


def foreign_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def http_error(env: ZenithEnv, method: str, path: str, token, **kwargs) -> PageserverApiError:
    with pytest.raises(PageserverApiError) as e:
        # `token=""` would fall back to the fixture's own token: send a header-less request then.
        if token is None:
            import requests

            r = requests.request(method, f"{env.pageserver.http_base}{path}", timeout=30, **kwargs)
            raise PageserverApiError(r.status_code, r.json()["msg"])
        env.pageserver.http(method, path, token=token, **kwargs)
    return e.value


def test_laptop_flow_with_auth(auth_env: ZenithEnv):
    env = auth_env
    pg = env.postgres.create_start("main")
    pg.safe_psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
    lsn = pg.safe_psql("SELECT pg_current_wal_flush_lsn()")[0][0]
    pg.safe_psql("INSERT INTO t SELECT generate_series(1001, 1500)")
    # Branches and time travel: a branch at the earlier LSN, and a read-only compute at it.
    env.zenith_cli(["branch", "past", f"main@{lsn}"])
    past = env.postgres.create_start("past_node", branch="past")
    assert past.safe_psql("SELECT count(*) FROM t")[0][0] == 1000
    ro = env.postgres.create_start("ro", lsn=lsn)
    assert ro.safe_psql("SELECT count(*) FROM t")[0][0] == 1000
    # A restart of the compute reads everything back through the pageserver.
    env.zenith_cli(["pg", "stop", "main"])
    env.zenith_cli(["pg", "start", "main"])
    assert pg.safe_psql("SELECT count(*) FROM t")[0][0] == 1500
    status = env.zenith_cli(["status"]).stdout
    assert "walkeeper 1: term" in status, status
    # The proxy: the CLI creates an endpoint through the console, the proxy asks the console.
    env.zenith_cli(["branch", "app", "main"])
    env.proxy.create_endpoint("app", "app")
    env.proxy.create_role("app", "alice", "s3cret")
    with psycopg2.connect(env.proxy.connstr("alice", "s3cret", endpoint="app")) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, sum(x) FROM generate_series(1, 10) AS x")
            assert cur.fetchone() == ("alice", 55)
    assert [e["name"] for e in env.proxy.endpoints()] == ["app"]
    # No daemon needs a token in a file the compute reads: postgresql.conf has none.
    conf = (env.repo_dir / "pgdatadirs" / "tenants").rglob("postgresql.conf")
    for path in conf:
        assert "eyJ" not in path.read_text(), path


def test_bad_tokens_are_refused(auth_env: ZenithEnv):
    env = auth_env
    tenant_a = env.initial_tenant
    timeline_a = env.branch_timeline("main")
    tenant_b = env.pageserver.tenant_create()
    route_a = f"/v1/tenant/{tenant_a}/timeline"
    now = int(time.time())
    bad = {
        "missing": (None, 401, "no token"),
        "malformed": ("not-a-token", 401, "malformed token"),
        "expired": (env.token("pageserverapi", exp=now - 3600), 401, "expired"),
        "foreign": (env.token("pageserverapi", private_key=foreign_key()), 401, "signature"),
        "unknown scope": (env.token("superuser"), 401, "invalid claims"),
    }
    for what, (token, status, needle) in bad.items():
        e = http_error(env, "GET", route_a, token)
        assert (e.status, needle in e.msg) == (status, True), (what, e.status, e.msg)
        # The page service: FATAL at login (28P01 invalid_password).
        with pytest.raises(psycopg2.OperationalError, match=needle if token else "password"):
            env.pageserver.connect(password=token or "")
    # The daemons keep serving good tokens.
    assert env.pageserver.http("GET", route_a)

    # A tenant token for A: A's routes and pages, nothing of B, no management routes.
    token_a = env.token("tenant", tenant_a)
    assert env.pageserver.http("GET", route_a, token=token_a)
    e = http_error(env, "GET", f"/v1/tenant/{tenant_b}/timeline", token_a)
    assert e.status == 403 and f"not {tenant_b}" in e.msg, e.msg
    for method, path, body in [
        ("GET", "/v1/tenant", None),
        ("POST", "/v1/tenant", {}),
        ("PUT", "/v1/failpoints", [{"name": "x", "actions": "off"}]),
        ("PUT", f"{route_a}/{timeline_a}/do_gc", {"gc_horizon": 0}),
        ("PUT", f"{route_a}/{timeline_a}/wal_source", {"connstr": "host=127.0.0.1 port=1"}),
    ]:
        e = http_error(env, method, path, token_a, json=body)
        assert e.status == 403 and "pageserverapi" in e.msg, (path, e.msg)
    conn = env.pageserver.connect(password=token_a)
    try:
        tar = __import__("io").BytesIO()
        conn.cursor().copy_expert(f"basebackup {tenant_a} {timeline_a}", tar)
        assert len(tar.getvalue()) > 0
        timeline_b = env.pageserver.timeline_create(tenant_b)["timeline_id"]
        for query in [f"basebackup {tenant_b} {timeline_b}", f"pagestream {tenant_b} {timeline_b}"]:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege, match=f"not {tenant_b}"):
                conn.cursor().execute(query)
    finally:
        conn.close()
    # A walkeeperdata token reads no pages.
    conn = env.pageserver.connect(password=env.token("walkeeperdata"))
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="walkeeperdata"):
            conn.cursor().execute(f"pagestream {tenant_a} {timeline_a}")
    finally:
        conn.close()


def test_dangerous_requests_need_config(auth_env: ZenithEnv, tmp_path):
    """Even the operator's token cannot import an arbitrary directory or point a WAL source at an
    arbitrary host: the pageserver's config has to allow it."""
    env = auth_env
    tenant = env.initial_tenant
    timeline = env.branch_timeline("main")
    e = http_error(env, "POST", f"/v1/tenant/{tenant}/timeline", env.token("pageserverapi"),
                   json={"import_pgdata": str(tmp_path)})
    assert e.status == 403 and "import_pgdata_dirs" in e.msg, e.msg
    e = http_error(env, "PUT", f"/v1/tenant/{tenant}/timeline/{timeline}/wal_source",
                   env.token("pageserverapi"), json={"connstr": "host=10.1.2.3 port=5432"})
    assert e.status == 403 and "wal_source_allowed_hosts" in e.msg, e.msg


def test_walkeeper_needs_walkeeperdata(auth_env: ZenithEnv):
    env = auth_env
    # The compute's walproposer pushes WAL with its token: the timeline is on the walkeepers then.
    env.postgres.create_start("main").safe_psql("CREATE TABLE t (x int)")
    wk = env.walkeepers[0]
    host, port = wk.pg_addr.rsplit(":", 1)
    tenant = env.initial_tenant
    timeline = env.branch_timeline("main")
    options = f"-c tenant_id={tenant} -c timeline_id={timeline}"

    def connect(password):
        return psycopg2.connect(host=host, port=port, user="x", dbname="postgres", options=options,
                                password=password, connect_timeout=10)

    with pytest.raises(psycopg2.OperationalError, match="password"):
        connect("")
    with pytest.raises(psycopg2.OperationalError, match="malformed token"):
        connect("garbage")
    for token in [env.token("tenant", tenant), env.token("pageserverapi"),
                  env.token("walkeeperdata", env.pageserver.tenant_create())]:
        conn = connect(token)
        conn.autocommit = True
        with pytest.raises(psycopg2.Error, match="permission denied"):
            conn.cursor().execute("START_WAL_PUSH")
        conn.close()
    # walkeeperdata (for every tenant, or bound to this one) is served.
    for token in [env.token("walkeeperdata"), env.token("walkeeperdata", tenant)]:
        conn = connect(token)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("IDENTIFY_SYSTEM")
        assert str(cur.fetchone()[1]) == "1"
        conn.close()
