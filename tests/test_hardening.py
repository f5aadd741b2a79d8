"""The hardened surface, tried by breaking in: headers on every route, NUL in every
parameter, Host and CORS, content types, nesting, UTF-8, body and upload sizes, the
gateway's rate limit and quota, live stream caps, downloads, error bodies.

Against the session's real services (`runstream serve`), or an app in this process built
from the same settings when a test needs other limits.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from runstream import Experiment, LimitError, Workspace
from runstream.ingest import gateway
from runstream.query_api import app as query_app
from runstream.query_api.errors import error_middleware
from runstream.schemas.limits import MAX_REQUEST_BYTES
from runstream.settings import Settings
from tests.support import events as made
from tests.support.names import unique
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(120)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture(scope="module")
def target(workspace: Workspace) -> Iterator[dict[str, Any]]:
    """One completed run with a metric, a table, a tag and files of every kind of type."""
    experiment = Experiment(workspace, unique("harden"))
    run = experiment.start_logging(name="target")
    run.log("mse", 1.0)
    run.log("mse", 2.0)
    run.log_row("tbl", a=1, b=2)
    run.tag("team", "a")
    run.upload_file("page.html", b"<script>alert(1)</script>")
    run.upload_file("pic.svg", b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>")
    run.upload_file("img.png", PNG)
    run.upload_file('r\u00e9sum\u00e9 "q".txt', b"text")
    run.complete()
    yield {"experiment": experiment.name, "run": str(run.id)}


def url(settings: Settings, path: str) -> URL:
    """``path`` on the API, taken as already percent-encoded (so %00 reaches the server)."""
    return URL(settings.api_url.rstrip("/") + path, encoded=True)


# ---------------------------------------------------------------- headers, route by route


MLFLOW_PREFIXES = ("/api/2.0/mlflow/", "/ajax-api/2.0/mlflow/")


def sample_paths(target: dict[str, Any]) -> dict[str, str]:
    """One request per route of the query API's router: its canonical path -> a URL path."""
    run, exp = target["run"], target["experiment"]
    return {
        "/api/health": "/api/health",
        "/api/ready": "/api/ready",
        "/api/openapi.json": "/api/openapi.json",
        "/api/experiments": "/api/experiments",
        "/api/experiments/{name}/runs": f"/api/experiments/{exp}/runs",
        "/api/runs": "/api/runs",
        "/api/runs/{run_id}": f"/api/runs/{run}",
        "/api/runs/{run_id}/metrics": f"/api/runs/{run}/metrics",
        "/api/runs/{run_id}/metrics/{name}": f"/api/runs/{run}/metrics/mse",
        "/api/runs/{run_id}/tables/{name}": f"/api/runs/{run}/tables/tbl",
        "/api/runs/{run_id}/files": f"/api/runs/{run}/files",
        "/api/runs/{run_id}/files/{path}": f"/api/runs/{run}/files/page.html",
        "/api/runs/{run_id}/events": f"/api/runs/{run}/events",
        "/api/runs/{run_id}/logs": f"/api/runs/{run}/logs",
        "/api/runs/{run_id}/live": f"/api/runs/{run}/live",
        "/api/runs/{run_id}/history": f"/api/runs/{run}/history",
        "/api/runs/{run_id}/metrics.csv": f"/api/runs/{run}/metrics.csv?name=mse",
        "/api/experiments/{name}/runs.csv": f"/api/experiments/{exp}/runs.csv",
        "/api/experiments/{name}/groups": f"/api/experiments/{exp}/groups?name=mse&group_by=tag:team",
        "/api/login": "/api/login",  # POST routes: a GET is a 405, with the headers
        "/api/logout": "/api/logout",
        "/api/whoami": "/api/whoami",
        "/api/runs/{run_id}/delete": f"/api/runs/{run}/delete",  # POST routes: a GET is a 405, with the headers
        "/api/runs/{run_id}/restore": f"/api/runs/{run}/restore",
        "/api/2.0/mlflow-artifacts/artifacts": "/api/2.0/mlflow-artifacts/artifacts",
        "/api/2.0/mlflow-artifacts/artifacts/{path}": "/api/2.0/mlflow-artifacts/artifacts/0/x/artifacts/f",
        "/api/compare": f"/api/compare?run={run}",
        "/": "/",
        "/experiments/{name}": f"/experiments/{exp}",
        "/runs/{run_id}": f"/runs/{run}",
        "/compare": f"/compare?run={run}",
        "/assets/{name}": "/assets/missing.js",
    }


def assert_hardened(headers: Any, what: str) -> None:
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("X-Frame-Options") == "DENY", what
    assert headers.get("Referrer-Policy") == "same-origin", what
    assert "frame-ancestors 'none'" in headers.get("Content-Security-Policy", ""), what


async def test_every_query_api_route_answers_with_the_security_headers(
    local_api: TestServer, services: Settings, target: dict[str, Any], session: aiohttp.ClientSession,
) -> None:
    samples = sample_paths(target)
    canonical = {r.resource.canonical for r in local_api.app.router.routes() if r.resource is not None}
    # MLflow's tracking API: dozens of routes under two prefixes, each sampled as its own path
    # (its JSON requests come as query or body; a GET of a POST route is a 405 with the headers).
    samples.update({c: c.replace("{tail}", "x") for c in canonical if c.startswith(MLFLOW_PREFIXES)})
    assert canonical == set(samples), "a route without a sample here is not checked: add it"
    for route, path in samples.items():
        async with session.get(url(services, path)) as resp:
            if route.endswith("/live"):
                assert resp.status == 200 and resp.content_type == "text/event-stream"
            assert resp.status < 500, (route, resp.status)
            assert_hardened(resp.headers, route)
            if resp.content_type == "text/html":
                csp = resp.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, route


async def test_gateway_routes_answer_with_the_security_headers(services: Settings, session: aiohttp.ClientSession) -> None:
    base = services.ingest_url
    sha = hashlib.sha256(b"headers").hexdigest()
    for method, path, kwargs in [
        ("GET", "/api/v1/health", {}), ("GET", "/api/v1/openapi.json", {}),
        ("POST", "/api/v1/events", {"data": b"[]", "headers": {"Content-Type": "application/json"}}),
        ("POST", "/api/v1/events", {"data": b"nope", "headers": {"Content-Type": "text/plain"}}),
        ("PUT", f"/api/v1/blobs/{sha}", {"data": b"headers"}), ("HEAD", f"/api/v1/blobs/{sha}", {}),
        ("GET", "/api/v1/nothing", {}),
    ]:
        async with session.request(method, base + path, **kwargs) as resp:
            assert resp.status < 500, (method, path)
            assert_hardened(resp.headers, f"{method} {path}")


# ---------------------------------------------------------------- NUL everywhere


def nul_cases(target: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, URL path with a NUL, the name the 400's message must give)."""
    run, exp = target["run"], target["experiment"]
    runs = f"/api/experiments/{exp}/runs"
    return [
        ("experiment name", f"/api/experiments/{exp}%00x/runs", "name"),
        ("tag", f"{runs}?tag=team:a%00", "tag"),
        ("metric filter", f"{runs}?metric=mse%00%3C3", "metric"),
        ("order_by", f"{runs}?order_by=metric:m%00", "order_by"),
        ("columns", f"{runs}?columns=mse%00", "columns"),
        ("filter", "/api/runs?filter=tags.team%20%3D%20%22a%00%22", "filter"),
        ("experiments", "/api/runs?experiments=a%00", "experiments"),
        ("run id", "/api/runs/%00", "run_id"),
        ("as_of", f"/api/runs/{run}?as_of=2026%00", "as_of"),
        ("metric name", f"/api/runs/{run}/metrics?name=m%00", "name"),
        ("vector name", f"/api/runs/{run}/metrics/mse%00", "name"),
        ("table name", f"/api/runs/{run}/tables/tbl%00", "name"),
        ("file path", f"/api/runs/{run}/files/page%00.html", "path"),
        ("events", f"/api/runs/{run}/events?after_seq=1%00", "after_seq"),
        ("live", f"/api/runs/{run}/live?after_seq=%00", "after_seq"),
        ("compare run", "/api/compare?run=%00", "run"),
        ("compare metric", f"/api/compare?run={run}&metric=m%00", "metric"),
        ("parameter name", "/api/experiments?a%00b=1", "a\\x00b"),
        ("asset name", "/assets/main%00.js", "name"),
        ("UI page", f"/experiments/{exp}%00", "name"),
    ]


async def test_a_nul_in_any_parameter_is_a_400_naming_it(
    services: Settings, target: dict[str, Any], session: aiohttp.ClientSession,
) -> None:
    for what, path, name in nul_cases(target):
        async with session.get(url(services, path)) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == 400, (what, resp.status, body)
            message = body["error"]["message"]
            assert "NUL" in message and name in message, (what, message)


async def test_invalid_utf8_and_surrogates_in_the_url_are_never_a_5xx(
    services: Settings, target: dict[str, Any], session: aiohttp.ClientSession,
) -> None:
    run, exp = target["run"], target["experiment"]
    for path in (f"/api/experiments/{exp}%FF/runs", f"/api/runs/{run}/metrics/%ED%A0%80",
                 f"/api/experiments/{exp}/runs?tag=%FF", f"/api/runs/{run}/files/%C0%AF"):
        async with session.get(url(services, path)) as resp:
            assert resp.status < 500, (path, resp.status)  # decoded as U+FFFD: a name that matches nothing


# ---------------------------------------------------------------- Host and CORS


async def test_a_foreign_host_header_is_refused_loopback_and_configured_names_pass(
    services: Settings, session: aiohttp.ClientSession,
) -> None:
    for base in (services.api_url + "/api/health", services.ingest_url + "/api/v1/health"):
        async with session.get(base, headers={"Host": "attacker.example"}) as resp:
            assert resp.status == 400
            assert "attacker.example" in (await resp.json())["error"]["message"]
        for host in ("localhost:1234", "127.0.0.1", "[::1]:80"):
            async with session.get(base, headers={"Host": host}) as resp:
                assert resp.status == 200, host
    app = query_app.create_app(replace(services, allowed_hosts="runstream.internal, other.example"))
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/api/health", headers={"Host": "runstream.internal:8080"})).status == 200
        assert (await client.get("/api/health", headers={"Host": "evil.internal"})).status == 400


async def test_cors_preflights_are_answered_deliberately(services: Settings, session: aiohttp.ClientSession) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    for path in (services.ingest_url + "/api/v1/events", services.api_url + "/api/experiments"):
        async with session.options(path, headers=preflight) as resp:
            assert resp.status == 403
            assert "Access-Control-Allow-Origin" not in resp.headers
    good = "http://ui.example:3000"
    app = gateway.create_app(replace(services, cors_origins=good))
    async with TestClient(TestServer(app)) as client:
        resp = await client.options("/api/v1/events", headers={**preflight, "Origin": good})
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == good  # that origin, never "*"
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        assert (await client.options("/api/v1/events", headers=preflight)).status == 403


# ---------------------------------------------------------------- the gateway's body


async def post(session: aiohttp.ClientSession, settings: Settings, body: bytes,
               content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    async with session.post(settings.ingest_url + "/api/v1/events", data=body,
                            headers={"Content-Type": content_type}) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_gateway_takes_events_only_as_json(services: Settings, session: aiohttp.ClientSession) -> None:
    event = b"[" + made.started(made.new_run_id(), unique("ct")) + b"]"
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        status, body = await post(session, services, event, content_type)
        assert status == 415, content_type
        assert "application/json" in body["error"]["message"]
    assert (await post(session, services, event))[0] == 202


async def test_deep_nesting_and_invalid_utf8_are_4xx_naming_the_problem(
    services: Settings, session: aiohttp.ClientSession,
) -> None:
    status, body = await post(session, services, b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "nested too deeply" in body["error"]["message"]
    event = made.event(made.new_run_id(), 1, "tag.set", {"key": "a", "value": "b"})
    deep = event.replace(b'"b"', b"[" * 3000 + b"]" * 3000)
    status, body = await post(session, services, b"[" + deep + b"]")
    assert 400 <= status < 500 and "nested too deeply" in orjson.dumps(body).decode()
    in_string = made.event(made.new_run_id(), 0, "tag.set", {"key": "k", "value": "VALUE"})
    for bad in (b"\xff", b"\xc3\x28", b"\xed\xa0\x80"):  # invalid byte, bad continuation, encoded surrogate
        status, body = await post(session, services, b"[" + in_string.replace(b"VALUE", bad) + b"]")
        assert status == 422 and "UTF-8" in body["error"]["events"][0]["message"], bad
    status, body = await post(session, services, b"[\xff]")  # outside any string: not JSON
    assert status == 400 and "JSON array" in body["error"]["message"]


async def test_bodies_over_the_limit_are_413_json(services: Settings, session: aiohttp.ClientSession) -> None:
    status, body = await post(session, services, b" " * (MAX_REQUEST_BYTES + 1))
    assert status == 413 and str(MAX_REQUEST_BYTES) in body["error"]["message"]
    async with session.get(services.api_url + "/api/experiments", data=b"x" * (services.api_max_body_bytes + 1)) as resp:
        assert resp.status == 413
        assert "limit" in (await resp.json())["error"]["message"]


async def test_artifact_names_with_control_characters_are_refused_at_the_call_and_the_gateway(
    workspace: Workspace, services: Settings, session: aiohttp.ClientSession,
) -> None:
    run = Experiment(workspace, unique("ctl")).start_logging()
    for name in ("a\r\nSet-Cookie: x=1", "line\nfeed", "bell\x07", "csi\x9b31m", "esc\x1b[31m"):
        with pytest.raises(LimitError, match="control character"):
            run.upload_file(name, b"x")
        event = made.event(str(run.id), 5, "artifact.recorded",
                           {"path": name, "sha256": hashlib.sha256(b"x").hexdigest(), "size": 1})
        status, body = await post(session, services, b"[" + event + b"]")
        assert status == 422 and "control characters" in body["error"]["events"][0]["message"], name
    run.complete()


# ---------------------------------------------------------------- limits (in-process apps)


@pytest.fixture()
async def tight_gateway(services: Settings, tmp_path: Any) -> AsyncIterator[TestClient]:
    settings = replace(services, max_upload_bytes=1000, blob_quota_bytes=2500, blob_dir=str(tmp_path / "blobs"))
    async with TestClient(TestServer(gateway.create_app(settings))) as client:
        yield client


async def test_gateway_rate_limit_is_429_with_retry_after(services: Settings) -> None:
    app = gateway.create_app(replace(services, gateway_rate_per_s=1.0, gateway_rate_burst=3))
    async with TestClient(TestServer(app)) as client:
        await rate_limited(client)


async def rate_limited(tight_gateway: TestClient) -> None:
    sha = hashlib.sha256(b"rate").hexdigest()
    statuses = [(await tight_gateway.head(f"/api/v1/blobs/{sha}")).status for _ in range(3)]
    assert statuses == [404, 404, 404]
    resp = await tight_gateway.head(f"/api/v1/blobs/{sha}")
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    resp = await tight_gateway.post("/api/v1/events", data=b"[]", headers={"Content-Type": "application/json"})
    assert resp.status == 429 and "rate limit" in (await resp.json())["error"]["message"]
    assert (await tight_gateway.get("/api/v1/health")).status == 200  # never limited


async def test_uploads_over_the_cap_are_413_and_store_nothing(tight_gateway: TestClient, tmp_path: Any) -> None:
    data = b"y" * 2000
    sha = hashlib.sha256(data).hexdigest()
    resp = await tight_gateway.put(f"/api/v1/blobs/{sha}", data=data)
    assert resp.status == 413 and "RUNSTREAM_MAX_UPLOAD_BYTES=1000" in (await resp.json())["error"]["message"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(4):
            yield b"y" * 500

    resp = await tight_gateway.put(f"/api/v1/blobs/{sha}", data=chunked())
    assert resp.status == 413
    assert (await tight_gateway.head(f"/api/v1/blobs/{sha}")).status == 404


async def test_workspace_quota_is_507_and_a_blob_counts_once(tight_gateway: TestClient) -> None:
    blobs = [bytes([i]) * 900 for i in range(3)]
    for data in blobs[:2]:
        resp = await tight_gateway.put(f"/api/v1/blobs/{hashlib.sha256(data).hexdigest()}", data=data)
        assert resp.status == 201
    again = await tight_gateway.put(f"/api/v1/blobs/{hashlib.sha256(blobs[0]).hexdigest()}", data=blobs[0])
    assert again.status == 200  # already stored and already charged: not counted twice
    resp = await tight_gateway.put(f"/api/v1/blobs/{hashlib.sha256(blobs[2]).hexdigest()}", data=blobs[2])
    body = await resp.json()
    assert resp.status == 507 and "quota" in body["error"]["message"]
    assert body["error"]["used_bytes"] == 1800 and body["error"]["quota_bytes"] == 2500


async def test_live_streams_are_capped_per_principal_and_in_total(
    services: Settings, workspace: Workspace,
) -> None:
    run = Experiment(workspace, unique("live-cap")).start_logging()
    run.log("x", 1)
    run.flush()
    path = f"/api/runs/{run.id}/live"
    for per, total in ((1, 10), (10, 1)):
        app = query_app.create_app(replace(services, live_streams_per_principal=per, live_streams_max=total))
        async with TestClient(TestServer(app)) as client:
            first = await client.get(path)
            assert first.status == 200
            await first.content.readline()  # the stream is open and counted
            second = await client.get(path)
            body = await second.json()
            assert second.status == 429 and "live streams" in body["error"]["message"], (per, total)
            assert second.headers["Retry-After"]
            first.close()

            async def reopened(client: TestClient = client) -> bool:
                resp = await client.get(path)
                ok = resp.status == 200
                resp.close()
                return ok

            await eventually(reopened, "a slot freed by the closed stream")
    run.complete()


# ---------------------------------------------------------------- downloads


async def test_downloads_are_attachments_unless_a_raster_image_and_never_html(
    services: Settings, target: dict[str, Any], session: aiohttp.ClientSession,
) -> None:
    run = target["run"]
    cases = {
        "page.html": ("application/octet-stream", "attachment"),
        "pic.svg": ("application/octet-stream", "attachment"),
        "img.png": ("image/png", "inline"),
        'r%C3%A9sum%C3%A9%20%22q%22.txt': ("text/plain", "attachment"),
    }
    for path, (content_type, disposition) in cases.items():
        async with session.get(url(services, f"/api/runs/{run}/files/{path}")) as resp:
            assert resp.status == 200, path
            assert resp.content_type == content_type, path
            assert resp.headers["Content-Disposition"].startswith(disposition + ";"), path
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert "sandbox" in resp.headers["Content-Security-Policy"]
    async with session.get(url(services, f"/api/runs/{run}/files/r%C3%A9sum%C3%A9%20%22q%22.txt")) as resp:
        disposition = resp.headers["Content-Disposition"]
        assert 'filename="r_sum_ _q_.txt"' in disposition
        assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22q%22.txt" in disposition


# ---------------------------------------------------------------- error bodies


async def test_error_bodies_carry_no_trace_or_sql(settings: Settings) -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.fetch("SELECT $1::text AS secret_column", "a\x00b")
        finally:
            await conn.close()
    except Exception as exc:  # the real error asyncpg raises for a NUL in a bound text
        nul_error: BaseException = exc
    else:
        pytest.fail("PostgreSQL accepted a NUL")

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError('Traceback (most recent call last): SELECT password FROM "users"')

    async def nul(request: web.Request) -> web.Response:
        raise nul_error

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/boom", boom)
    app.router.add_get("/nul", nul)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/boom")
        assert resp.status == 500 and await resp.json() == {"error": {"status": 500, "message": "internal server error"}}
        resp = await client.get("/nul")
        text = await resp.text()
        assert resp.status == 400, text
        assert not re.search(r"SELECT|secret_column|Traceback", text)


def test_the_cli_shows_user_text_inertly() -> None:
    from runstream.display import inert

    assert inert("run \x1b[2J\x1b[31mred\r\u202eevil\u200b\x85\tend\n") == \
        "run \\x1b[2J\\x1b[31mred\\r\\u202eevil\\u200b\\x85\tend\\n"
    assert inert("plain, caf\u00e9, \u65e5\u672c") == "plain, caf\u00e9, \u65e5\u672c"
