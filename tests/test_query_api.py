"""The query API against a real PostgreSQL, rows written as the processors would write them.

Each test makes its own experiment and runs (fresh UUIDs), so tests share the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from runstream.query_api.app import create_app, init_connection
from runstream.query_api.downsample import Point, downsample
from runstream.query_api.errors import error_middleware
from runstream.schemas.blobs import blob_path
from runstream.settings import Settings
from tests.support import events as made
from tests.support.sql import EXAMPLE_PARAMS, STATEMENTS

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NAN, INF = math.nan, math.inf
NONFINITE = {"NaN": NAN, "Infinity": INF, "-Infinity": -INF}


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def kind_of(v: Any) -> int:
    return 2 if isinstance(v, bool) else 1 if isinstance(v, int) else 0 if isinstance(v, float) else 3


class Store:
    """Writes projection rows directly, as processors/store.py would."""

    def __init__(self, pool: asyncpg.Pool, blob_dir: str) -> None:
        self.pool, self.blob_dir = pool, blob_dir

    async def run(
        self, experiment: str, *, name: str | None = None, status: str = "running", parent: uuid.UUID | None = None,
        started: datetime = T0, ended: datetime | None = None, last_seq: int = 0,
        properties: dict[str, Any] | None = None, tags: dict[str, str | None] | None = None,
        run_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        run_id = run_id or uuid.uuid4()
        await self.pool.execute(
            "INSERT INTO experiments (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING", experiment, T0
        )
        await self.pool.execute(
            "INSERT INTO runs (run_id, experiment, name, parent_run_id, kind, status, properties, started_at,"
            " ended_at, updated_at, last_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            run_id, experiment, name, parent, "child" if parent else "interactive", status, properties or {},
            started, ended, ended or started, last_seq,
        )
        for key, value in (tags or {}).items():
            await self.pool.execute("INSERT INTO tags VALUES ($1, $2, $3, $4)", run_id, key, value, T0)
        return run_id

    async def summary(self, run_id: uuid.UUID, name: str, kind: str, count: int, **cols: Any) -> None:
        await self.pool.execute(
            "INSERT INTO metric_summaries (run_id, name, kind, count, last_seq, last_step, last_value, last_text,"
            " last_kind, min_value, max_value, description, updated_at)"
            " VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9, $10, $11, $12)",
            run_id, name, kind, count, cols.get("last_step"), cols.get("last_value"), cols.get("last_text"),
            cols.get("last_kind"), cols.get("min_value"), cols.get("max_value"), cols.get("description"), T0,
        )

    async def points(
        self, run_id: uuid.UUID, name: str, values: Sequence[Any], steps: Sequence[int] | None = None,
        kind: str = "scalar",
    ) -> None:
        steps = list(range(len(values))) if steps is None else list(steps)
        records = [
            (run_id, name, s, T0 + timedelta(milliseconds=s), None if isinstance(v, str) else float(v),
             v if isinstance(v, str) else None, kind_of(v))
            for s, v in zip(steps, values)
        ]
        await self.pool.copy_records_to_table(
            "metric_points", records=records, columns=["run_id", "name", "step", "ts", "value", "text", "kind"]
        )
        numbers = [float(v) for v in values if not isinstance(v, str) and not math.isnan(float(v))]
        last = values[-1]
        await self.summary(
            run_id, name, kind, len(values), last_step=steps[-1],
            last_value=None if isinstance(last, str) else float(last),
            last_text=last if isinstance(last, str) else None, last_kind=kind_of(last),
            min_value=min(numbers, default=None), max_value=max(numbers, default=None),
        )

    async def table(self, run_id: uuid.UUID, name: str, rows: list[dict[str, Any]]) -> None:
        for i, cells in enumerate(rows):
            await self.pool.execute(
                "INSERT INTO table_rows VALUES ($1, $2, $3, $4, $5, $6)", run_id, name, 10 + i // 2, i % 2, T0, cells
            )
        await self.summary(run_id, name, "table", len(rows))

    async def file(self, run_id: uuid.UUID, path: str, data: bytes, content_type: str = "text/plain") -> str:
        sha = hashlib.sha256(data).hexdigest()
        blob = blob_path(self.blob_dir, sha)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        await self.pool.execute(
            "INSERT INTO artifacts VALUES ($1, $2, $3, $4, $5, $6)", run_id, path, sha, len(data), content_type, T0
        )
        return sha

    async def events(self, run_id: uuid.UUID, count: int) -> None:
        for seq in range(count):
            body = made.body(str(run_id), seq, "metric.points",
                             made.series("x", [seq], [{"f": "NaN"} if seq == 3 else seq], [1767225600.0 + seq]),
                             event_id=str(uuid.uuid4()), ts=1767225600.0 + seq)
            await self.pool.execute(
                "INSERT INTO events VALUES ($1, $2, $3, $4, 1, $5, $6, 'runstream.events', 0, $7)",
                run_id, seq, T0 + timedelta(seconds=seq), body["type"], uuid.UUID(str(body["event_id"])),
                orjson.dumps(body), seq,
            )


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(settings.database_url, min_size=1, max_size=4, init=init_connection) as p:
        yield p


@pytest.fixture(scope="session")
async def client(settings: Settings) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


@pytest.fixture(scope="session")
def store(pool: asyncpg.Pool, settings: Settings) -> Store:
    return Store(pool, settings.blob_dir)


Params = dict[str, Any] | list[tuple[str, Any]] | None


async def get(client: TestClient[Any, Any], path: str, params: Params = None, status: int = 200) -> Any:
    response = await client.get(path, params=params)
    body = await response.read()
    assert response.status == status, body
    assert response.content_type == "application/json"
    return orjson.loads(body)


async def error(client: TestClient[Any, Any], path: str, params: Params, status: int) -> str:
    body = await get(client, path, params, status)
    assert body["error"]["status"] == status
    return str(body["error"]["message"])


# ---------------------------------------------------------------- service


async def test_health_ready_and_openapi_lists_every_route(client: TestClient[Any, Any]) -> None:
    assert await get(client, "/api/health") == {"status": "ok"}
    assert await get(client, "/api/ready") == {"status": "ready"}
    doc = await get(client, "/api/openapi.json")
    assert doc["openapi"].startswith("3.1")
    # MLflow's API (/api/2.0/...) is MLflow's own contract, listed in docs/MLFLOW.md.
    routes = {r.canonical for r in client.app.router.resources()
              if r.canonical.startswith("/api/") and not r.canonical.startswith("/api/2.0/")}
    assert {"/api/runs/{run_id}", "/api/runs/{run_id}/metrics/{name}", "/api/compare"} <= routes
    assert routes == set(doc["paths"]), routes ^ set(doc["paths"])


async def test_not_ready_when_the_database_is_down(settings: Settings) -> None:
    down = Settings.from_env({}, database_url="postgresql://nobody@127.0.0.1:1/none", blob_dir=settings.blob_dir)
    async with TestClient(TestServer(create_app(down))) as c:
        assert await get(c, "/api/health") == {"status": "ok"}
        assert "database unavailable" in await error(c, "/api/ready", None, 503)


async def test_errors_are_json_and_unexpected_ones_leak_nothing() -> None:
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("password=hunter2")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/boom", boom)
    async with TestClient(TestServer(app)) as c:
        response = await c.get("/boom")
        assert response.status == 500
        assert await response.json() == {"error": {"status": 500, "message": "internal server error"}}
        assert "hunter2" not in await response.text()
        assert (await c.get("/nowhere")).status == 404
        response = await c.post("/boom")
        assert response.status == 405 and (await response.json())["error"]["status"] == 405


async def test_every_statement_runs_with_its_example_params(pool: asyncpg.Pool) -> None:
    assert set(STATEMENTS) <= set(EXAMPLE_PARAMS)
    for name, sql in STATEMENTS.items():
        await pool.fetch(sql, *EXAMPLE_PARAMS[name])


# ---------------------------------------------------------------- experiments and runs


async def make_sweep(store: Store) -> tuple[str, dict[str, uuid.UUID]]:
    exp = new_name("sweep")
    ids = {
        "a": await store.run(exp, name="a", status="completed", started=T0, ended=T0 + timedelta(seconds=90),
                             tags={"team": "x", "lr": "0.1"}),
        "b": await store.run(exp, name="b", status="failed", started=T0 + timedelta(minutes=1),
                             tags={"team": "y", "lr": "0.01"}),
        "c": await store.run(exp, name="c", status="running", started=T0 + timedelta(minutes=2), tags={"team": None}),
        "d": await store.run(exp, name="d", status="completed", started=T0 + timedelta(minutes=3)),
    }
    ids["c1"] = await store.run(exp, name="c1", parent=ids["c"], started=T0 + timedelta(minutes=4))
    await store.points(ids["a"], "mse", [0.5, 0.2])
    await store.points(ids["b"], "mse", [0.4])
    await store.points(ids["c"], "mse", [0.9, NAN])  # NaN last value: sorts with the missing ones
    await store.points(ids["d"], "mse", [0.05])
    await store.points(ids["a"], "acc", [0.9])
    await store.points(ids["d"], "acc", [0.7])
    return exp, ids


async def test_experiments_have_run_count_and_last_activity(client: TestClient[Any, Any], store: Store) -> None:
    exp, _ = await make_sweep(store)
    listed = {e["name"]: e for e in (await get(client, "/api/experiments"))["experiments"]}
    assert listed[exp]["run_count"] == 5
    assert listed[exp]["last_activity"] == (T0 + timedelta(minutes=4)).isoformat()


async def test_runs_filters(client: TestClient[Any, Any], store: Store) -> None:
    exp, ids = await make_sweep(store)
    path = f"/api/experiments/{exp}/runs"
    by_name = {v: k for k, v in ids.items()}

    async def names(params: Params) -> list[str]:
        body = await get(client, path, params)
        assert body["total"] == len(body["runs"])
        return [by_name[uuid.UUID(r["run_id"])] for r in body["runs"]]

    assert await names(None) == ["c1", "d", "c", "b", "a"]  # newest first by default
    assert await names([("status", "completed")]) == ["d", "a"]
    assert await names([("status", "failed,running")]) == ["c1", "c", "b"]
    assert await names([("status", "failed"), ("status", "completed")]) == ["d", "b", "a"]
    assert await names([("tag", "team")]) == ["c", "b", "a"]
    assert await names([("tag", "team:x")]) == ["a"]
    assert await names([("tag", "team"), ("tag", "lr:0.01")]) == ["b"]
    assert await names([("metric", "mse<0.3")]) == ["d", "a"]
    assert await names([("metric", "mse>=0.2"), ("metric", "mse<=0.4")]) == ["b", "a"]
    assert await names([("metric", "mse<0.3"), ("metric", "acc>0.8")]) == ["a"]
    assert await names([("metric", "acc!=0.9")]) == ["d"]
    assert await names([("parent", "none")]) == ["d", "c", "b", "a"]
    assert await names([("parent", str(ids["c"]))]) == ["c1"]


async def test_runs_ordering_paging_and_shape(client: TestClient[Any, Any], store: Store) -> None:
    exp, ids = await make_sweep(store)
    path = f"/api/experiments/{exp}/runs"
    by_name = {v: k for k, v in ids.items()}

    async def names(params: Params) -> list[str]:
        return [by_name[uuid.UUID(r["run_id"])] for r in (await get(client, path, params))["runs"]]

    best_first = await names({"order_by": "metric:mse"})
    assert best_first[:3] == ["d", "a", "b"] and set(best_first[3:]) == {"c", "c1"}  # NULL/NaN last
    worst_first = await names({"order_by": "metric:mse", "order": "desc"})
    assert worst_first[:3] == ["b", "a", "d"] and set(worst_first[3:]) == {"c", "c1"}
    assert await names({"order_by": "name"}) == ["a", "b", "c", "c1", "d"]
    assert await names({"order_by": "name", "order": "desc"}) == ["d", "c1", "c", "b", "a"]
    assert (await names({"order_by": "status"}))[0] in ("a", "d")
    assert await names({"order_by": "started_at", "order": "asc"}) == ["a", "b", "c", "d", "c1"]

    page = await get(client, path, {"order_by": "name", "limit": 2, "offset": 2})
    assert [r["name"] for r in page["runs"]] == ["c", "c1"] and page["total"] == 5
    past_the_end = await get(client, path, {"limit": 2, "offset": 10})
    assert past_the_end == {"runs": [], "total": 5}

    runs = {r["name"]: r for r in (await get(client, path))["runs"]}
    a = runs["a"]
    assert a["experiment"] == exp and a["status"] == "completed" and a["kind"] == "interactive"
    assert a["started_at"] == T0.isoformat() and a["duration_s"] == 90.0 and runs["b"]["duration_s"] is None
    assert a["tags"] == {"team": "x", "lr": "0.1"} and runs["c"]["tags"] == {"team": None}
    assert a["metrics"]["mse"] == {"kind": "scalar", "last": 0.2, "min": 0.2, "max": 0.5, "count": 2,
                                   "last_step": 1, "description": None}
    assert runs["c"]["metrics"]["mse"]["last"] == {"f": "NaN"}
    assert runs["c1"]["parent_run_id"] == str(ids["c"])
    only_acc = await get(client, path, {"columns": "acc", "order_by": "name"})
    assert [sorted(r["metrics"]) for r in only_acc["runs"]] == [["acc"], [], [], [], ["acc"]]


async def test_run_detail(client: TestClient[Any, Any], store: Store) -> None:
    exp = new_name("detail")
    parent = await store.run(exp, name="p", properties={"lr": 0.1, "x": {"f": "NaN"}}, tags={"k": "v"})
    kids = [await store.run(exp, parent=parent, started=T0 + timedelta(seconds=i)) for i in range(2)]
    await store.points(parent, "loss", [3, 2, 1])
    body = await get(client, f"/api/runs/{parent}")
    assert body["run_id"] == str(parent) and body["name"] == "p" and body["experiment"] == exp
    assert body["properties"] == {"lr": 0.1, "x": {"f": "NaN"}}
    assert body["tags"] == {"k": "v"}
    assert body["children"] == [str(k) for k in kids]
    assert body["metrics"]["loss"]["last"] == 1 and isinstance(body["metrics"]["loss"]["last"], int)
    assert body["parent_run_id"] is None and body["status"] == "running"


# ---------------------------------------------------------------- get_metrics


async def test_get_metrics_shapes(client: TestClient[Any, Any], store: Store) -> None:
    exp = new_name("shapes")
    run = await store.run(exp)
    await store.points(run, "once", [0.5])
    await store.points(run, "int_once", [7])
    await store.points(run, "flag", [True])
    await store.points(run, "note", ["hello"])
    await store.points(run, "repeated", [3, 1, 2], steps=[0, 2, 1])  # listed in step order
    await store.points(run, "as_list", [1.5], kind="list")
    await store.points(run, "weird", [NAN, INF, -INF, 1.0])
    await store.table(run, "pr", [{"p": 1.0, "r": 0.5}, {"p": {"f": "NaN"}}, {"r": 0.1, "t": "x"}])
    sha = await store.file(run, "images/cm.png", b"\x89PNG...", "image/png")
    await store.summary(run, "cm", "image", 1, last_text="images/cm.png")
    metrics = await get(client, f"/api/runs/{run}/metrics")
    assert metrics == {
        "once": 0.5,
        "int_once": 7,
        "flag": True,
        "note": "hello",
        "repeated": [3, 2, 1],
        "as_list": [1.5],
        "weird": [{"f": "NaN"}, {"f": "Infinity"}, {"f": "-Infinity"}, 1.0],
        "pr": {"p": [1.0, {"f": "NaN"}, None], "r": [0.5, None, 0.1], "t": [None, None, "x"]},
        "cm": {"artifact": "images/cm.png", "sha256": sha},
    }
    assert await get(client, f"/api/runs/{run}/metrics", {"name": "once"}) == {"once": 0.5}
    assert await get(client, f"/api/runs/{run}/metrics", [("name", "once"), ("name", "pr")]) == {
        "once": 0.5, "pr": metrics["pr"]}
    assert await get(client, f"/api/runs/{run}/metrics", {"name": "nothing"}) == {}


async def test_get_metrics_recursive(client: TestClient[Any, Any], store: Store) -> None:
    exp = new_name("tree")
    root = await store.run(exp)
    child = await store.run(exp, parent=root)
    grandchild = await store.run(exp, parent=child)
    other = await store.run(exp)
    await store.points(root, "loss", [1.0, 0.5])
    await store.points(grandchild, "loss", [0.25])
    await store.points(other, "loss", [9.0])
    body = await get(client, f"/api/runs/{root}/metrics", {"recursive": "true"})
    assert body == {str(root): {"loss": [1.0, 0.5]}, str(child): {}, str(grandchild): {"loss": 0.25}}
    assert await get(client, f"/api/runs/{child}/metrics", {"recursive": "false"}) == {}


# ---------------------------------------------------------------- vectors


async def test_vector_values_round_trip_and_step_range(client: TestClient[Any, Any], store: Store) -> None:
    run = await store.run(new_name("vec"))
    values = [1.0, NAN, INF, -INF, 2.5, 0.0]
    await store.points(run, "m", values, steps=[0, 10, 20, 30, 40, 50])
    await store.points(run, "ints", [1, 2, 3])
    await store.points(run, "train/loss", [0.3, 0.2])
    body = await get(client, f"/api/runs/{run}/metrics/m")
    assert body["name"] == "m" and body["kind"] == "scalar" and body["count"] == 6 and not body["downsampled"]
    assert body["steps"] == [0, 10, 20, 30, 40, 50]
    assert body["values"] == [1.0, {"f": "NaN"}, {"f": "Infinity"}, {"f": "-Infinity"}, 2.5, 0.0]
    assert body["times"][1] - body["times"][0] == pytest.approx(0.010)
    assert body["times"][0] == pytest.approx(T0.timestamp())
    decoded = [NONFINITE[v["f"]] if isinstance(v, dict) else v for v in body["values"]]
    assert all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(decoded, values))
    part = await get(client, f"/api/runs/{run}/metrics/m", {"from_step": 10, "to_step": 30})
    assert part["steps"] == [10, 20, 30] and part["count"] == 3
    assert (await get(client, f"/api/runs/{run}/metrics/m", {"from_step": 51}))["steps"] == []
    ints = await get(client, f"/api/runs/{run}/metrics/ints")
    assert ints["values"] == [1, 2, 3] and all(isinstance(v, int) for v in ints["values"])
    slashed = await get(client, f"/api/runs/{run}/metrics/train%2Floss")
    assert slashed["values"] == [0.3, 0.2]
    assert (await get(client, f"/api/runs/{run}/metrics/train/loss"))["values"] == [0.3, 0.2]


async def test_vector_of_strings_is_not_downsampled(client: TestClient[Any, Any], store: Store) -> None:
    run = await store.run(new_name("strings"))
    await store.points(run, "phase", [f"epoch {i}" for i in range(10)])
    message = await error(client, f"/api/runs/{run}/metrics/phase", {"max_points": 4}, 400)
    assert "max_points" in message and "strings" in message
    whole = await get(client, f"/api/runs/{run}/metrics/phase", {"max_points": 10})
    assert whole["values"][3] == "epoch 3" and not whole["downsampled"]


async def test_downsampling_a_million_points_keeps_the_shape(client: TestClient[Any, Any], store: Store) -> None:
    run = await store.run(new_name("big"))
    n = 1_000_000
    rng = random.Random(42)
    values = [math.sin(i / 20_000) + rng.random() * 0.01 for i in range(n)]
    values[123_457], values[654_321] = 1e6, -1e6  # one-point spikes
    values[500_000], values[700_001] = NAN, INF
    await store.points(run, "loss", values)
    started = time.perf_counter()
    body = await get(client, f"/api/runs/{run}/metrics/loss", {"max_points": 1000})
    elapsed = time.perf_counter() - started
    print(f"\n1,000,000 points -> {len(body['steps'])} points in {elapsed * 1000:.0f} ms (API, SQL path)")
    assert body["downsampled"] and body["count"] == n and len(body["steps"]) <= 1000
    steps, got = body["steps"], body["values"]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == n - 1
    assert 1e6 in got and -1e6 in got and {"f": "NaN"} in got and {"f": "Infinity"} in got
    # Exactly the reference implementation's choice.
    points = [Point(i, 0.0, v, None, 0) for i, v in enumerate(values)]
    expected, _ = downsample(points, 1000)
    assert steps == [p.step for p in expected]
    window = await get(client, f"/api/runs/{run}/metrics/loss",
                       {"max_points": 100, "from_step": 100_000, "to_step": 199_999})
    assert window["count"] == 100_000 and len(window["steps"]) <= 100
    assert window["steps"][0] == 100_000 and window["steps"][-1] == 199_999 and 1e6 in window["values"]


# ---------------------------------------------------------------- tables, files, events, logs


async def test_table(client: TestClient[Any, Any], store: Store) -> None:
    run = await store.run(new_name("table"))
    await store.table(run, "roc", [{"fpr": 0.0, "tpr": 0.0}, {"fpr": 0.5, "tpr": 0.9}, {"fpr": 1, "tpr": True}])
    body = await get(client, f"/api/runs/{run}/tables/roc")
    assert body == {"name": "roc", "columns": {"fpr": [0.0, 0.5, 1], "tpr": [0.0, 0.9, True]}, "rows": 3}
    await store.points(run, "loss", [1.0])
    assert "not a table" in await error(client, f"/api/runs/{run}/tables/loss", None, 404)
    assert "tables/roc" in await error(client, f"/api/runs/{run}/metrics/roc", None, 404)


async def test_files_list_and_download(client: TestClient[Any, Any], store: Store, settings: Settings) -> None:
    run = await store.run(new_name("files"))
    data = bytes(range(256)) * 1000
    sha = await store.file(run, "outputs/model ä.bin", data, "application/x-model")
    await store.file(run, "a.txt", b"hello\n")
    listed = (await get(client, f"/api/runs/{run}/files"))["files"]
    assert [f["path"] for f in listed] == ["a.txt", "outputs/model ä.bin"]
    assert listed[1] == {"path": "outputs/model ä.bin", "size": len(data), "sha256": sha,
                         "content_type": "application/x-model", "created_at": T0.isoformat()}
    response = await client.get(f"/api/runs/{run}/files/outputs/model%20%C3%A4.bin")
    assert response.status == 200 and await response.read() == data
    assert response.headers["Content-Type"] == "application/x-model"
    assert "filename*=UTF-8''model%20%C3%A4.bin" in response.headers["Content-Disposition"]
    assert await (await client.get(f"/api/runs/{run}/files/a.txt")).read() == b"hello\n"
    assert "no file" in await error(client, f"/api/runs/{run}/files/missing.txt", None, 404)
    blob_path(settings.blob_dir, sha).unlink()
    gone = await error(client, f"/api/runs/{run}/files/outputs/model ä.bin", None, 404)
    assert "missing from the blob store" in gone


async def test_events_are_paginated(client: TestClient[Any, Any], store: Store) -> None:
    run = await store.run(new_name("events"), last_seq=6)
    await store.events(run, 7)
    first = await get(client, f"/api/runs/{run}/events", {"limit": 3})
    assert [e["seq"] for e in first["events"]] == [0, 1, 2] and first["next_after_seq"] == 2
    event = first["events"][1]
    assert event["type"] == "metric.points" and event["run_id"] == str(run) and event["v"] == 1
    assert event["payload"]["series"][0]["values"] == [1]
    second = await get(client, f"/api/runs/{run}/events", {"limit": 3, "after_seq": 2})
    assert [e["seq"] for e in second["events"]] == [3, 4, 5]
    assert second["events"][0]["payload"]["series"][0]["values"] == [{"f": "NaN"}]
    last = await get(client, f"/api/runs/{run}/events", {"limit": 3, "after_seq": 5})
    assert [e["seq"] for e in last["events"]] == [6] and last["next_after_seq"] is None


async def test_logs_are_paginated(client: TestClient[Any, Any], store: Store, pool: asyncpg.Pool) -> None:
    run = await store.run(new_name("logs"))
    rows = [(run, seq, idx, T0, "stdout", f"line {seq}.{idx}") for seq in (1, 2) for idx in range(3)]
    await pool.executemany("INSERT INTO log_lines VALUES ($1, $2, $3, $4, $5, $6)", rows)
    page = await get(client, f"/api/runs/{run}/logs", {"limit": 4})
    assert [line["line"] for line in page["lines"]] == ["line 1.0", "line 1.1", "line 1.2", "line 2.0"]
    assert page["lines"][0]["stream"] == "stdout" and page["lines"][0]["ts"] == T0.isoformat()
    cursor = {"after_seq": page["next_after_seq"], "after_idx": page["next_after_idx"], "limit": 4}
    rest = await get(client, f"/api/runs/{run}/logs", cursor)
    assert [line["line"] for line in rest["lines"]] == ["line 2.1", "line 2.2"] and rest["next_after_seq"] is None
    assert len((await get(client, f"/api/runs/{run}/logs", {"after_seq": 1}))["lines"]) == 3


async def test_compare(client: TestClient[Any, Any], store: Store) -> None:
    exp = new_name("compare")
    a, b = await store.run(exp, name="a"), await store.run(exp, name="b")
    await store.points(a, "loss", [float(i % 10) for i in range(100)])
    await store.points(b, "loss", [1.0, 0.5])
    await store.points(a, "acc", [0.9])
    params = [("run", str(a)), ("run", str(b)), ("metric", "loss"), ("vectors", "true"), ("max_points", "10")]
    body = await get(client, "/api/compare", params)
    runs = body["runs"]
    assert [r["run_id"] for r in runs] == [str(a), str(b)] and [r["name"] for r in runs] == ["a", "b"]
    assert set(runs[0]["metrics"]) == {"loss"} and runs[1]["metrics"]["loss"]["last"] == 0.5
    assert runs[0]["vectors"]["loss"]["downsampled"] and len(runs[0]["vectors"]["loss"]["steps"]) <= 10
    assert runs[1]["vectors"]["loss"]["values"] == [1.0, 0.5]
    plain = await get(client, "/api/compare", {"run": f"{a},{b}"})
    assert set(plain["runs"][0]["metrics"]) == {"loss", "acc"} and "vectors" not in plain["runs"][0]
    missing = uuid.uuid4()
    assert str(missing) in await error(client, "/api/compare", [("run", str(a)), ("run", str(missing))], 404)


# ---------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"limit": "abc"}, "limit='abc'"),
        ({"limit": "0"}, "limit='0'"),
        ({"limit": "1001"}, "limit='1001'"),
        ({"offset": "-1"}, "offset='-1'"),
        ({"order_by": "color"}, "order_by='color'"),
        ({"order_by": "metric:"}, "order_by='metric:'"),
        ({"order": "up"}, "order='up'"),
        ({"metric": "mse"}, "metric='mse'"),
        ({"metric": "mse<abc"}, "metric='mse<abc'"),
        ({"metric": "<0.3"}, "metric='<0.3'"),
        ({"status": "done"}, "status='done'"),
        ({"tag": ":v"}, "tag=':v'"),
        ({"parent": "not-a-uuid"}, "parent='not-a-uuid'"),
    ],
)
async def test_bad_runs_parameters(client: TestClient[Any, Any], store: Store, params: Params, named: str) -> None:
    exp = new_name("bad")
    await store.run(exp)
    assert named in await error(client, f"/api/experiments/{exp}/runs", params, 400)


async def test_bad_run_parameters_and_not_found(client: TestClient[Any, Any], store: Store) -> None:
    run = await store.run(new_name("bad"))
    await store.points(run, "m", [1.0, 2.0])
    assert "run_id='nope'" in await error(client, "/api/runs/nope", None, 400)
    assert "run_id='nope'" in await error(client, "/api/runs/nope/metrics/m", None, 400)
    unknown = uuid.uuid4()
    for suffix in ("", "/metrics", "/metrics/m", "/tables/t", "/files", "/files/x", "/events", "/logs"):
        assert str(unknown) in await error(client, f"/api/runs/{unknown}{suffix}", None, 404)
    assert "experiment" in await error(client, f"/api/experiments/{new_name('none')}/runs", None, 404)
    assert "no metric 'zzz'" in await error(client, f"/api/runs/{run}/metrics/zzz", None, 404)
    vector = f"/api/runs/{run}/metrics/m"
    assert "max_points='2'" in await error(client, vector, {"max_points": 2}, 400)
    assert "max_points='100001'" in await error(client, vector, {"max_points": 100001}, 400)
    assert "to_step='1'" in await error(client, vector, {"from_step": 5, "to_step": 1}, 400)
    assert "from_step='x'" in await error(client, vector, {"from_step": "x"}, 400)
    assert "recursive='maybe'" in await error(client, f"/api/runs/{run}/metrics", {"recursive": "maybe"}, 400)
    assert "after_seq='x'" in await error(client, f"/api/runs/{run}/events", {"after_seq": "x"}, 400)
    assert "min_seq='-1'" in await error(client, f"/api/runs/{run}", {"min_seq": -1}, 400)
    assert "wait_ms='40000'" in await error(client, f"/api/runs/{run}", {"min_seq": 1, "wait_ms": 40000}, 400)
    assert "run='x'" in await error(client, "/api/compare", {"run": "x"}, 400)
    assert "run=''" in await error(client, "/api/compare", None, 400)


# ---------------------------------------------------------------- read your writes


async def test_min_seq_waits_for_a_concurrent_write(
    client: TestClient[Any, Any], store: Store, pool: asyncpg.Pool
) -> None:
    run = await store.run(new_name("wait"), last_seq=3)

    async def processor_catches_up() -> None:
        await asyncio.sleep(0.2)
        await store.points(run, "loss", [0.1])
        await pool.execute("UPDATE runs SET last_seq = 5 WHERE run_id = $1", run)

    started = time.perf_counter()
    writer = asyncio.create_task(processor_catches_up())
    body = await get(client, f"/api/runs/{run}/metrics", {"min_seq": 5, "wait_ms": 5000})
    await writer
    assert body == {"loss": 0.1} and time.perf_counter() - started >= 0.2
    assert (await get(client, f"/api/runs/{run}", {"min_seq": 5}))["last_seq"] == 5  # no wait: already there


async def test_min_seq_waits_for_a_run_not_materialized_yet(client: TestClient[Any, Any], store: Store) -> None:
    exp, run = new_name("late"), uuid.uuid4()  # the SDK picks the id before any event lands

    async def late_run() -> None:
        await asyncio.sleep(0.1)
        await store.run(exp, run_id=run, last_seq=0)

    writer = asyncio.create_task(late_run())
    body = await get(client, f"/api/runs/{run}", {"min_seq": 0, "wait_ms": 5000})
    await writer
    assert body["experiment"] == exp
    unknown = uuid.uuid4()
    started = time.perf_counter()
    message = await error(client, f"/api/runs/{unknown}", {"min_seq": 0, "wait_ms": 100}, 504)
    assert "does not exist yet" in message and time.perf_counter() - started >= 0.1


async def test_min_seq_times_out_with_504(client: TestClient[Any, Any], store: Store) -> None:
    run = await store.run(new_name("timeout"), last_seq=3)
    started = time.perf_counter()
    for suffix in ("", "/metrics", "/events"):
        message = await error(client, f"/api/runs/{run}{suffix}", {"min_seq": 10, "wait_ms": 100}, 504)
        assert "min_seq=10" in message and "seq 3" in message and "wait_ms=100" in message
    assert time.perf_counter() - started >= 0.3
