"""Authentication, authorization and workspace isolation against the real services with
authentication ON (issue 11): every route of the query API and the gateway enumerated
from their routers, revocation seen by another process, forged events through the
gateway and straight onto the topic, the refused public bind, and the newcomer story."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestServer

from runstream.devstack.stack import free_ports
from runstream.ingest.gateway import create_app as create_gateway
from runstream.query_api import tokens
from runstream.query_api.app import create_app as create_api
from runstream.query_api.auth import needed_scope
from runstream.query_api.mlflow_shapes import experiment_id
from runstream.settings import Settings
from tests.support.events import event, new_run_id, points, produce, started
from tests.support.names import unique
from tests.support.waiting import eventually

PUBLIC = {
    ("GET", "/api/health"), ("GET", "/api/ready"), ("GET", "/api/openapi.json"), ("POST", "/api/login"),
    ("POST", "/api/logout"), ("GET", "/"), ("GET", "/experiments/{name}"), ("GET", "/runs/{run_id}"),
    ("GET", "/compare"), ("GET", "/assets/{name}"), ("GET", "/api/v1/health"), ("HEAD", "/api/v1/health"),
    ("GET", "/api/v1/openapi.json"), ("HEAD", "/api/v1/openapi.json"),
}
"""The only routes open without a token (static UI pages hold no data). A new public route fails the test."""

MLFLOW_PREFIXES = ("/api/2.0/mlflow/", "/ajax-api/2.0/mlflow/", "/api/2.0/mlflow-artifacts/")
MANAGE_ROUTES = {("PATCH", "/api/runs/{run_id}"), ("POST", "/api/runs/{run_id}/delete"),
                 ("POST", "/api/runs/{run_id}/restore")}
"""Routes checked by their own test (MLflow's JSON requests, run management's writes)."""

BLOB = b"secret model bytes"
SHA = hashlib.sha256(BLOB).hexdigest()


@dataclass
class Stack:
    """The query API and the gateway in this process with authentication on, and the
    workspace A's run (with a metric, a table, a file, a tag) the routes are asked about."""

    api: str
    gateway: str
    conn: asyncpg.Connection
    a: str  # workspace names
    b: str
    read_a: str
    write_a: str
    admin_b: str
    write_b: str
    revoked_a: str
    expired_a: str
    experiment: str
    run_id: str


async def _token(conn: asyncpg.Connection, workspace: str, scope: str) -> str:
    token, _ = await tokens.create(conn, workspace, scope, name="test")
    return token


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture()
async def secured(services: Settings, session: aiohttp.ClientSession) -> AsyncIterator[Stack]:
    # The route walks below send hundreds of failing tokens from one address: a budget that
    # lets them all be answered (the limit itself: tests/test_auth_limits.py).
    secured = replace(services, auth="on", auth_failure_burst=100_000)
    api, gateway = TestServer(create_api(secured)), TestServer(create_gateway(secured))
    await api.start_server()
    await gateway.start_server()
    conn = await asyncpg.connect(services.database_url)
    try:
        a, b = unique("ws-a"), unique("ws-b")
        s = Stack(str(api.make_url("")), str(gateway.make_url("")), conn, a, b,
                  await _token(conn, a, "read"), await _token(conn, a, "write"), await _token(conn, b, "admin"),
                  await _token(conn, b, "write"), await _token(conn, a, "admin"), await _token(conn, a, "read"),
                  unique("secret-exp"), new_run_id())
        assert await tokens.revoke(conn, s.revoked_a)
        await conn.execute("UPDATE tokens SET expires_at = now() - interval '1 second' WHERE token_id = $1",
                           tokens.parse(s.expired_a)[0])
        async with session.put(f"{s.gateway}/api/v1/blobs/{SHA}", data=BLOB, headers=_auth(s.write_a)) as resp:
            assert resp.status in (200, 201), await resp.text()
        batch = [started(s.run_id, s.experiment), points(s.run_id, 1, "mse", [0, 1]),
                 event(s.run_id, 2, "metric.table", {"name": "t", "columns": {"x": [1]}}),
                 event(s.run_id, 3, "artifact.recorded", {"path": "outputs/model.pkl", "sha256": SHA,
                                                          "size": len(BLOB)}),
                 event(s.run_id, 4, "tag.set", {"key": "owner", "value": "alice"}),
                 event(s.run_id, 5, "run.status", {"status": "completed"})]
        status, _ = await _post_events(session, s, s.write_a, batch)
        assert status == 202
        await eventually(lambda: conn.fetchval("SELECT last_seq = 5 FROM runs WHERE run_id = $1", s.run_id),
                         "workspace A's run materialized")
        yield s
    finally:
        await conn.close()
        await api.close()
        await gateway.close()


async def _post_events(session: aiohttp.ClientSession, s: Stack, token: str | None,
                       batch: list[bytes]) -> tuple[int, Any]:
    async with session.post(f"{s.gateway}/api/v1/events", data=b"[" + b",".join(batch) + b"]",
                            headers={"Content-Type": "application/json", **_auth(token)}) as resp:
        return resp.status, await resp.json()


def _api_case(s: Stack, path: str) -> tuple[str, dict[str, str], bool]:
    """(concrete URL path, query, whether it names A's run or experiment) of a query API route."""
    run = f"/api/runs/{s.run_id}"
    cases: dict[str, tuple[str, dict[str, str], bool]] = {
        "/api/experiments": ("/api/experiments", {}, False),
        "/api/experiments/{name}/runs": (f"/api/experiments/{s.experiment}/runs", {}, True),
        "/api/runs": ("/api/runs", {}, False),
        "/api/runs/{run_id}": (run, {}, True),
        "/api/runs/{run_id}/metrics": (f"{run}/metrics", {}, True),
        "/api/runs/{run_id}/metrics/{name}": (f"{run}/metrics/mse", {}, True),
        "/api/runs/{run_id}/tables/{name}": (f"{run}/tables/t", {}, True),
        "/api/runs/{run_id}/files": (f"{run}/files", {}, True),
        "/api/runs/{run_id}/files/{path}": (f"{run}/files/outputs/model.pkl", {}, True),
        "/api/runs/{run_id}/events": (f"{run}/events", {}, True),
        "/api/runs/{run_id}/logs": (f"{run}/logs", {}, True),
        "/api/runs/{run_id}/live": (f"{run}/live", {}, True),
        "/api/compare": ("/api/compare", {"run": s.run_id}, True),
        "/api/whoami": ("/api/whoami", {}, False),
        "/api/runs/{run_id}/history": (f"{run}/history", {}, True),
        "/api/runs/{run_id}/metrics.csv": (f"{run}/metrics.csv", {"name": "mse"}, True),
        "/api/experiments/{name}/runs.csv": (f"/api/experiments/{s.experiment}/runs.csv", {}, True),
        "/api/experiments/{name}/groups": (f"/api/experiments/{s.experiment}/groups", {"name": "mse"}, True),
    }
    assert path in cases, f"route {path} has no case in tests/test_auth.py: say how it is protected"
    return cases[path]


def _routes(app: Any) -> list[tuple[str, str, Any]]:
    return [(r.method, r.resource.canonical, r.handler) for r in app.router.routes()
            if r.resource is not None and r.method != "HEAD"]


async def _call(session: aiohttp.ClientSession, method: str, url: str, token: str | None, query: dict[str, str],
                body: bytes | None = None) -> tuple[int, aiohttp.ClientResponse, bytes]:
    headers = {"Content-Type": "application/json", **_auth(token)}
    async with session.request(method, url, params=query, data=body, headers=headers) as resp:
        return resp.status, resp, await resp.read()


async def test_every_query_api_route_is_authenticated_and_scoped(secured: Stack, services: Settings,
                                                                 session: aiohttp.ClientSession) -> None:
    s = secured
    checked = 0
    for method, canonical, handler in _routes(create_api(replace(services, auth="on"))):
        if needed_scope(method, handler) is None:
            assert (method, canonical) in PUBLIC, f"{method} {canonical} is public but not listed as such"
            continue
        if canonical.startswith(MLFLOW_PREFIXES) or (method, canonical) in MANAGE_ROUTES:
            continue  # test_mlflow_and_run_management_routes_are_authenticated_and_scoped
        assert method == "GET", f"{method} {canonical}: a query API write route needs its own case"
        path, query, names_a = _api_case(s, canonical)
        url = s.api + path
        for token, why in ((None, "no token"), (s.revoked_a, "revoked"), (s.expired_a, "expired"),
                           ("rs_000000000000_" + "x" * 43, "unknown"), ("garbage", "malformed")):
            status, resp, body = await _call(session, method, url, token, query)
            assert status == 401, (canonical, why, body)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer"), canonical
            assert orjson.loads(body)["error"]["status"] == 401
        status, _, body = await _call(session, method, url, s.read_a, query)
        assert status == 200, (canonical, body)
        own = body
        status, _, body = await _call(session, method, url, s.admin_b, query)
        if names_a:
            assert status == 404, (canonical, "another workspace", body)
            # (an experiment's routes echo the name asked for: "experiment '...' not found")
            assert s.experiment.encode() not in body or canonical.startswith("/api/experiments/{name}/")
        else:
            assert status == 200 and s.run_id.encode() not in body and s.experiment.encode() not in body, canonical
            assert own != body, canonical
        checked += 1
    assert checked >= 14
    # The cookie the web UI logs in with works like the header; a missing run answers B as A's does.
    status, _, body = await _call(session, "GET", f"{s.api}/api/runs/{new_run_id()}", s.admin_b, {})
    assert status == 404 and b"not found" in body


async def test_every_gateway_route_is_authenticated_and_scoped(secured: Stack, services: Settings,
                                                               session: aiohttp.ClientSession) -> None:
    s = secured
    tag = event(s.run_id, 6, "tag.set", {"key": "owner", "value": "mallory"})
    cases = {
        ("POST", "/api/v1/events"): (b"[" + tag + b"]", "write"),
        ("PUT", "/api/v1/blobs/{sha256}"): (BLOB, "write"),
        ("HEAD", "/api/v1/blobs/{sha256}"): (None, "read"),
    }
    routes = [(r.method, r.resource.canonical, r.handler) for r in create_gateway(replace(services, auth="on"))
              .router.routes() if r.resource is not None]
    seen = set()
    for method, canonical, handler in routes:
        needed = needed_scope(method, handler)
        if needed is None:
            assert (method, canonical) in PUBLIC, f"{method} {canonical} is public but not listed as such"
            continue
        assert (method, canonical) in cases, f"gateway route {method} {canonical} has no case here"
        body, scope = cases[(method, canonical)]
        assert needed == scope, canonical
        seen.add((method, canonical))
        url = s.gateway + canonical.replace("{sha256}", SHA)
        for token in (None, s.revoked_a, s.expired_a, "garbage"):
            status, resp, _ = await _call(session, method, url, token, {}, body)
            assert status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer"), (canonical, token)
        if scope == "write":
            status, _, text = await _call(session, method, url, s.read_a, {}, body)
            assert status == 403 and b"scope" in text, canonical
    assert seen == set(cases)
    # Another workspace's token cannot write into A's run: refused naming it, nothing produced.
    status, answer = await _post_events(session, s, s.write_b, [tag])
    assert status == 404 and s.run_id in answer["error"]["message"]
    # Nor move it with a second run.started, whatever the body claims as workspace.
    forged = event(s.run_id, 7, "run.started", {"experiment": unique("elsewhere")}, workspace=s.a)
    status, answer = await _post_events(session, s, s.write_b, [forged])
    assert status == 404
    row = await s.conn.fetchrow("SELECT experiment, workspace, last_seq FROM runs WHERE run_id = $1", s.run_id)
    assert tuple(row) == (s.experiment, s.a, 5)
    assert await s.conn.fetchval("SELECT value FROM tags WHERE run_id = $1 AND key = 'owner'", s.run_id) == "alice"


async def test_gateway_stamps_the_principals_workspace_over_the_body(secured: Stack,
                                                                      session: aiohttp.ClientSession) -> None:
    s = secured
    run_id = new_run_id()
    status, _ = await _post_events(session, s, s.write_b, [event(run_id, 0, "run.started",
                                                                 {"experiment": s.experiment}, workspace=s.a)])
    assert status == 202
    owner = await eventually(lambda: s.conn.fetchval("SELECT workspace FROM runs WHERE run_id = $1", run_id),
                             "the run materialized")
    assert owner == s.b  # not the body's s.a: B's experiment of the same name, A's untouched
    async with session.get(f"{s.api}/api/experiments/{s.experiment}/runs", headers=_auth(s.read_a)) as resp:
        assert [r["run_id"] for r in (await resp.json())["runs"]] == [s.run_id]


async def test_a_forged_event_straight_onto_the_topic_is_dead_lettered(secured: Stack, services: Settings) -> None:
    s = secured
    forged = [event(s.run_id, 6, "tag.set", {"key": "owner", "value": "mallory"}, workspace=s.b),
              event(s.run_id, 7, "run.status", {"status": "failed", "error": "pwned"}),  # no workspace: default
              event(s.run_id, 8, "run.started", {"experiment": unique("moved")}, workspace=s.b)]
    await produce(services, [(s.run_id, raw) for raw in forged])
    await eventually(lambda: s.conn.fetchval("SELECT count(*) = 3 FROM dead_letters WHERE run_id = $1", s.run_id),
                     "three dead letters")
    reasons = await s.conn.fetch("SELECT seq, reason FROM dead_letters WHERE run_id = $1 ORDER BY seq", s.run_id)
    assert [r["seq"] for r in reasons] == [6, 7, 8]
    assert all(r["reason"].startswith("workspace:") and repr(s.a) in r["reason"] for r in reasons)
    row = await s.conn.fetchrow("SELECT experiment, status, last_seq FROM runs WHERE run_id = $1", s.run_id)
    assert tuple(row) == (s.experiment, "completed", 5)
    assert await s.conn.fetchval("SELECT value FROM tags WHERE run_id = $1 AND key = 'owner'", s.run_id) == "alice"
    assert await s.conn.fetchval("SELECT count(*) FROM events WHERE run_id = $1", s.run_id) == 6


async def test_login_sets_an_httponly_strict_cookie_that_reads_and_logout_clears_it(secured: Stack) -> None:
    s = secured
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(f"{s.api}/api/login", json={"token": "rs_000000000000_" + "x" * 43}) as resp:
            assert resp.status == 401
        async with browser.post(f"{s.api}/api/login", json={"token": s.read_a}) as resp:
            assert resp.status == 200 and (await resp.json())["workspace"] == s.a
            cookie = resp.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
            assert "Secure" not in cookie  # plain http here
        async with browser.get(f"{s.api}/api/runs/{s.run_id}") as resp:
            assert resp.status == 200
        async with browser.post(f"{s.api}/api/logout") as resp:
            assert resp.status == 200
        async with browser.get(f"{s.api}/api/runs/{s.run_id}") as resp:
            assert resp.status == 401
    # The gateway never takes the cookie: a web page cannot write with a browser's login.
    async with aiohttp.ClientSession(cookies={"runstream_token": s.write_a}) as page:
        async with page.post(f"{s.gateway}/api/v1/events", data=b"[]",
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 401


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {**os.environ, **settings.to_env(), **extra}


async def test_revocation_reaches_another_process_within_a_second(secured: Stack, services: Settings,
                                                                  session: aiohttp.ClientSession,
                                                                  tmp_path: Any) -> None:
    s = secured
    (port,) = free_ports(1)
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "runstream.cli", "api"], stdout=log, stderr=subprocess.STDOUT,
                               env=_env(services, RUNSTREAM_AUTH="on", RUNSTREAM_API_PORT=str(port)))
    url = f"http://127.0.0.1:{port}/api/runs/{s.run_id}"
    token = await _token(s.conn, s.a, "read")
    try:
        async def answers(expected: int) -> bool:
            try:
                async with session.get(url, headers=_auth(token)) as resp:
                    return resp.status == expected
            except aiohttp.ClientConnectionError:
                return False

        await eventually(lambda: answers(200), "the second API process serves the token", timeout=60)
        await eventually(lambda: answers(200), "cached there")
        revoked_at = time.monotonic()
        assert await tokens.revoke(s.conn, token)
        await eventually(lambda: answers(401), "the revocation seen by the other process", timeout=1.0)
        assert time.monotonic() - revoked_at < 1.0
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@pytest.mark.parametrize("command", [["api"], ["gateway"], ["serve", "--processors", "0"]])
def test_binding_a_public_address_without_auth_refuses_to_start(services: Settings, command: list[str]) -> None:
    env = _env(services, RUNSTREAM_AUTH="off", RUNSTREAM_API_HOST="0.0.0.0", RUNSTREAM_GATEWAY_HOST="0.0.0.0")
    done = subprocess.run([sys.executable, "-m", "runstream.cli", *command], env=env, capture_output=True,
                          timeout=60, text=True)
    assert done.returncode != 0
    assert "refusing to serve with authentication off" in done.stderr and "0.0.0.0" in done.stderr


async def test_newcomer_creates_a_token_a_script_logs_with_it_another_workspace_sees_nothing(
        secured: Stack, services: Settings, session: aiohttp.ClientSession) -> None:
    s = secured
    team = unique("team")

    async def cli(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "runstream.cli", *args,
                                                    env=_env(services), stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        return out.decode().strip()

    token = await cli("token", "create", "--workspace", team, "--scope", "write", "--name", "teammate")
    assert token.startswith("rs_")
    script = (
        "from runstream import Experiment, Workspace\n"
        "ws = Workspace.from_config()\n"
        "run = Experiment(ws, 'newcomer').start_logging()\n"
        "run.log('mse', 0.25)\n"
        "run.complete()\n"
        "print(run.id)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=_env(replace(services, transport="http", api_url=s.api.rstrip("/"), ingest_url=s.gateway.rstrip("/"),
                         token=token)))
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    run_id = out.decode().split()[-1]
    async with session.get(f"{s.api}/api/runs/{run_id}/metrics", headers=_auth(token)) as resp:
        assert resp.status == 200 and (await resp.json())["mse"] == 0.25
    for path in ("/api/experiments", "/api/runs"):
        async with session.get(s.api + path, headers=_auth(s.admin_b)) as resp:
            assert resp.status == 200 and run_id not in await resp.text() and "newcomer" not in await resp.text()
    async with session.get(f"{s.api}/api/runs/{run_id}", headers=_auth(s.admin_b)) as resp:
        assert resp.status == 404
    listed = await cli("token", "list", "--workspace", team)
    assert "teammate" in listed and "write" in listed and token[16:] not in listed
    assert (await cli("token", "revoke", token.split("_")[1])).startswith("revoked")
    async with session.get(f"{s.api}/api/runs/{run_id}", headers=_auth(token)) as resp:
        assert resp.status == 401


async def test_revoking_a_token_ends_its_open_live_stream(secured: Stack, session: aiohttp.ClientSession) -> None:
    s = secured
    run_id = new_run_id()
    status, _ = await _post_events(session, s, s.write_a, [started(run_id, s.experiment)])
    assert status == 202
    await eventually(lambda: s.conn.fetchval("SELECT 1 FROM runs WHERE run_id = $1", run_id), "the run materialized")
    token = await _token(s.conn, s.a, "read")
    async with session.get(f"{s.api}/api/runs/{run_id}/live", headers=_auth(token)) as resp:
        assert resp.status == 200
        assert (await resp.content.readuntil(b"\n\n")).startswith(b"retry:")
        assert await tokens.revoke(s.conn, token)
        rest = await asyncio.wait_for(resp.content.read(), timeout=1.0)  # the stream ends, not at a heartbeat
        assert b"event: end" not in rest
    async with session.get(f"{s.api}/api/runs/{run_id}/live", headers=_auth(token)) as resp:
        assert resp.status == 401  # the client's reconnection is refused


async def test_the_kafka_transport_stamps_its_tokens_workspace(secured: Stack, services: Settings,
                                                               session: aiohttp.ClientSession) -> None:
    """A script producing to Kafka directly with a token: its runs land in the token's
    workspace (learnt from /api/whoami), readable with the token, invisible to another's."""
    s = secured
    script = (
        "from runstream import Experiment, Workspace\n"
        "run = Experiment(Workspace.from_config(), 'direct').start_logging()\n"
        "run.log('mse', 0.5)\n"
        "run.complete()\n"
        "print(run.id)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=_env(replace(services, transport="kafka", api_url=s.api.rstrip("/"), token=s.write_a)))
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    run_id = out.decode().split()[-1]
    assert await s.conn.fetchval("SELECT workspace FROM runs WHERE run_id = $1", run_id) == s.a
    async with session.get(f"{s.api}/api/runs/{run_id}/metrics", headers=_auth(s.read_a)) as resp:
        assert resp.status == 200 and (await resp.json())["mse"] == 0.5
    assert not await s.conn.fetchval("SELECT count(*) FROM dead_letters WHERE run_id = $1", run_id)
    async with session.get(f"{s.api}/api/runs/{run_id}", headers=_auth(s.admin_b)) as resp:
        assert resp.status == 404


async def test_http_basic_with_the_token_as_password_authenticates(secured: Stack,
                                                                    session: aiohttp.ClientSession) -> None:
    """What MLflow clients send (MLFLOW_TRACKING_USERNAME/PASSWORD): any user, the token as password."""
    s = secured
    url = f"{s.api}/api/runs/{s.run_id}"
    for token, status in ((s.read_a, 200), (s.revoked_a, 401)):
        basic = "Basic " + base64.b64encode(f"anyone:{token}".encode()).decode()
        async with session.get(url, headers={"Authorization": basic}) as resp:
            assert resp.status == status
    async with session.get(url, headers={"Authorization": "Token abc"}) as resp:
        assert resp.status == 401 and "Bearer" in (await resp.json())["error"]["message"]


@pytest.mark.parametrize(("args", "says"), [
    (["--workspace", "bad name", "--scope", "read"], "invalid workspace"),
    (["--workspace", "w", "--scope", "root"], "invalid scope 'root'"),
    (["--workspace", "w", "--scope", "read", "--expires", "0"], "invalid expiry"),
    (["--workspace", "w", "--scope", "read", "--name", "a\x1b[31mb"], "invalid name"),
])
def test_token_create_refuses_bad_arguments_naming_them(services: Settings, args: list[str], says: str) -> None:
    done = subprocess.run([sys.executable, "-m", "runstream.cli", "token", "create", *args], env=_env(services),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and says in done.stderr and not done.stdout


def test_revoking_an_unknown_token_says_so(services: Settings) -> None:
    done = subprocess.run([sys.executable, "-m", "runstream.cli", "token", "revoke", "0123456789ab"],
                          env=_env(services), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no active token" in done.stderr


def test_an_auth_setting_that_is_neither_on_nor_off_is_refused(services: Settings) -> None:
    done = subprocess.run([sys.executable, "-m", "runstream.cli", "api"], env=_env(services, RUNSTREAM_AUTH="false"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "RUNSTREAM_AUTH='false' is neither 'on' nor 'off'" in done.stderr


async def test_mlflow_and_run_management_routes_are_authenticated_and_scoped(
        secured: Stack, services: Settings, session: aiohttp.ClientSession) -> None:
    """Every MLflow and run-management route: no or revoked token 401, a read token writing
    403; then, as workspace B, every way of reading or changing workspace A's run through
    them is a 404 (existence not revealed) and A's run is unchanged."""
    s = secured
    hex_id = uuid.UUID(s.run_id).hex
    checked = 0
    for method, canonical, handler in _routes(create_api(replace(services, auth="on"))):
        if not (canonical.startswith(MLFLOW_PREFIXES) or (method, canonical) in MANAGE_ROUTES):
            continue
        call = "GET" if method == "*" else method  # MLflow's catch-all for paths it does not serve
        url = s.api + canonical.replace("{tail}", "x").replace("{run_id}", s.run_id).replace(
            "{path}", f"0/{hex_id}/artifacts/outputs/model.pkl")
        for token in (None, s.revoked_a):
            status, _, body = await _call(session, call, url, token, {}, b"{}")
            assert status == 401, (method, canonical, body)
        if needed_scope(call, handler) == "write":
            status, _, body = await _call(session, call, url, s.read_a, {}, b"{}")
            assert status == 403, (method, canonical, body)
        checked += 1
    assert checked >= 55  # both MLflow prefixes (27 routes each), the artifact store and run management

    exp_id = experiment_id(s.experiment)
    store = f"/api/2.0/mlflow-artifacts/artifacts/{exp_id}/{hex_id}/artifacts/outputs/model.pkl"
    attempts: list[tuple[str, str, dict[str, str], dict[str, Any] | None]] = [
        ("GET", "/api/2.0/mlflow/runs/get", {"run_id": hex_id}, None),
        ("GET", "/api/2.0/mlflow/metrics/get-history", {"run_id": hex_id, "metric_key": "mse"}, None),
        ("GET", "/api/2.0/mlflow/artifacts/list", {"run_id": hex_id}, None),
        ("GET", "/api/2.0/mlflow/experiments/get", {"experiment_id": exp_id}, None),
        ("GET", "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": s.experiment}, None),
        ("GET", store, {}, None),
        ("POST", "/api/2.0/mlflow/runs/set-tag", {}, {"run_id": hex_id, "key": "owner", "value": "mallory"}),
        ("POST", "/api/2.0/mlflow/runs/log-metric", {}, {"run_id": hex_id, "key": "mse", "value": 9, "timestamp": 0}),
        ("POST", "/api/2.0/mlflow/runs/update", {}, {"run_id": hex_id, "status": "FAILED"}),
        ("POST", "/api/2.0/mlflow/runs/delete", {}, {"run_id": hex_id}),
        ("POST", "/api/2.0/mlflow/experiments/delete", {}, {"experiment_id": exp_id}),
        ("PATCH", f"/api/runs/{s.run_id}", {}, {"name": "pwned", "tags": {"owner": "mallory"}}),
        ("POST", f"/api/runs/{s.run_id}/delete", {}, None),
    ]
    for method, path, query, doc in attempts:
        status, _, body = await _call(session, method, s.api + path, s.admin_b, query,
                                      orjson.dumps(doc) if doc is not None else None)
        assert status == 404, (method, path, body)
    status, _, body = await _call(session, "PUT", s.api + store, s.admin_b, {}, b"attacker's bytes")
    assert status == 404, body
    # Searching A's experiment from B finds nothing of it.
    status, _, body = await _call(session, "POST", s.api + "/api/2.0/mlflow/runs/search", s.admin_b, {},
                                  orjson.dumps({"experiment_ids": [exp_id]}))
    assert hex_id.encode() not in body, body
    # A's own token reads its run through MLflow's API; nothing B tried changed it.
    status, _, body = await _call(session, "GET", s.api + "/api/2.0/mlflow/runs/get", s.read_a, {"run_id": hex_id})
    assert status == 200, body
    run = orjson.loads(body)["run"]
    assert run["info"]["status"] == "FINISHED" and run["info"]["lifecycle_stage"] == "active"
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["owner"] == "alice"
    assert await s.conn.fetchval("SELECT count(*) FROM tags WHERE run_id = $1 AND value = 'mallory'", s.run_id) == 0
