"""A run's state as of an event or a time (``GET /api/runs/{id}?as_of_seq=N`` / ``?as_of=T``,
``GET /api/runs/{id}/metrics?as_of_seq=N``), end to end: SDK → Kafka → processors →
``events`` archive → query API folding it with ``processors.materialize``.

Conditions are waited on with deadlines (the SDK's read-your-writes), never with sleeps.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from runstream import Experiment, Run, Workspace
from runstream.processors.materialize import to_datetime
from runstream.query_api import asof
from runstream.query_api.app import create_app
from runstream.settings import Settings
from tests.support.names import unique
from tests.support.waiting import wait_for


class Api:
    """GETs of the query API: (status, X-Cache, JSON body)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def get(self, path: str, params: dict[str, Any] | list[tuple[str, Any]] | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, str | None, Any]:
        query = "?" + urllib.parse.urlencode(params) if params else ""
        request = urllib.request.Request(self.base + path + query, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, resp.headers.get("X-Cache"), json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("X-Cache"), json.load(exc)

    def ok(self, path: str, params: Any = None) -> Any:
        status, _, body = self.get(path, params)
        assert status == 200, body
        return body

    def error(self, path: str, params: Any, status: int) -> str:
        got, _, body = self.get(path, params)
        assert got == status, body
        return str(body["error"]["message"])


def checkpoint(run: Run) -> int:
    """Flush, and the seq of the run's last event sent (the SDK's own read-your-writes figure)."""
    run.flush()
    return run._seq - 1


@pytest.fixture(scope="module")
def history(workspace: Workspace) -> dict[str, Any]:
    """One run logged in four steps, each ending at a known seq: s0 started, s1 a tag and a
    point, s2 two more points and a second tag, s3 a tag removed, new metrics, a row and
    a list, s4 the run failed."""
    run = Experiment(workspace, unique("asof")).start_logging(name="r", lr=0.1, layers=3, opt="adam")
    s0 = checkpoint(run)
    run.tag("a", "1")
    run.log("loss", 3.0)
    s1 = checkpoint(run)
    run.log("loss", 1.0)
    run.log("loss", 2.0)
    run.tag("b", "x")
    s2 = checkpoint(run)
    run.remove_tag("a")
    run.log("loss", 0.5)
    run.log("acc", 0.9)
    run.log_row("t", x=1, y="one")
    run.log_row("t", x=2, y="two")
    run.log_list("lst", [1, 2, 3])
    for i in range(200):  # long enough for materialize's columnar path
        run.log("long", float(i % 50) - 10.0)
    s3 = checkpoint(run)
    run.fail("boom")
    s4 = run._seq - 1
    run.get_metrics()  # waits until the API has materialized every event sent
    return {"run": run, "seqs": [s0, s1, s2, s3, s4], "api": Api(workspace.settings.api_url)}


def test_the_state_as_of_each_seq(history: dict[str, Any]) -> None:
    run, (s0, s1, s2, s3, s4), api = history["run"], history["seqs"], history["api"]
    assert s0 < s1 < s2 < s3 < s4
    path = f"/api/runs/{run.id}"

    at0 = api.ok(path, {"as_of_seq": s0})
    assert at0["as_of"]["seq"] == s0 == at0["last_seq"]
    assert at0["status"] == "running" and at0["ended_at"] is None and at0["duration_s"] is None
    assert at0["tags"] == {} and at0["metrics"] == {} and at0["children"] == []
    assert at0["properties"] == {"lr": 0.1, "layers": 3, "opt": "adam"} and at0["name"] == "r"

    at1 = api.ok(path, {"as_of_seq": s1})
    assert at1["as_of"]["seq"] == s1 == at1["last_seq"]
    assert at1["tags"] == {"a": "1"}
    loss = at1["metrics"]["loss"]
    assert (loss["count"], loss["last"], loss["min"], loss["max"], loss["last_step"]) == (1, 3.0, 3.0, 3.0, 0)

    at2 = api.ok(path, {"as_of_seq": s2})
    assert at2["tags"] == {"a": "1", "b": "x"}
    loss = at2["metrics"]["loss"]
    assert (loss["count"], loss["last"], loss["min"], loss["max"], loss["last_step"]) == (3, 2.0, 1.0, 3.0, 2)
    assert at2["status"] == "running" and set(at2["metrics"]) == {"loss"}

    at3 = api.ok(path, {"as_of_seq": s3})
    assert at3["tags"] == {"b": "x"}  # "a" removed
    loss = at3["metrics"]["loss"]
    assert (loss["count"], loss["last"], loss["min"], loss["max"]) == (4, 0.5, 0.5, 3.0)
    assert at3["metrics"]["acc"]["count"] == 1 and at3["metrics"]["acc"]["last"] == 0.9
    assert at3["metrics"]["t"]["kind"] == "table" and at3["metrics"]["t"]["count"] == 2
    assert at3["metrics"]["lst"]["kind"] == "list" and at3["metrics"]["lst"]["count"] == 3
    long = at3["metrics"]["long"]
    assert (long["count"], long["last"], long["min"], long["max"], long["last_step"]) == (200, 39.0, -10.0, 39.0, 199)
    assert at3["status"] == "running" and at3["error"] is None and at3["ended_at"] is None

    at4 = api.ok(path, {"as_of_seq": s4})
    assert at4["status"] == "failed" and at4["error"] == "boom" and at4["ended_at"] is not None
    live = api.ok(path)
    assert "as_of" not in live
    assert at4.pop("as_of") == {"seq": s4, "ts": live_ts(api, run, s4)}
    assert at4 == live  # as of the last seq: the live detail


def live_ts(api: Api, run: Run, seq: int) -> float:
    events = api.ok(f"/api/runs/{run.id}/events", {"after_seq": seq - 1, "limit": 1})["events"]
    return float(events[0]["ts"])


def test_metrics_as_of_a_seq(history: dict[str, Any]) -> None:
    run, (s0, s1, s2, s3, s4), api = history["run"], history["seqs"], history["api"]
    path = f"/api/runs/{run.id}/metrics"
    assert api.ok(path, {"as_of_seq": s0})["metrics"] == {}
    assert api.ok(path, {"as_of_seq": s1}) == {"metrics": {"loss": 3.0},
                                               "as_of": {"seq": s1, "ts": live_ts(api, run, s1)}}
    assert api.ok(path, {"as_of_seq": s2})["metrics"] == {"loss": [3.0, 1.0, 2.0]}
    at3 = api.ok(path, {"as_of_seq": s3})["metrics"]
    assert at3 == {"loss": [3.0, 1.0, 2.0, 0.5], "acc": 0.9, "t": {"x": [1, 2], "y": ["one", "two"]}, "lst": [1, 2, 3],
                   "long": [float(i % 50) - 10.0 for i in range(200)]}
    assert api.ok(path, [("as_of_seq", s3), ("name", "loss"), ("name", "t")])["metrics"] == {
        "loss": [3.0, 1.0, 2.0, 0.5], "t": {"x": [1, 2], "y": ["one", "two"]}}
    assert api.ok(path, {"as_of_seq": s4})["metrics"] == api.ok(path) == run.get_metrics()


def test_the_state_as_of_a_time(history: dict[str, Any]) -> None:
    run, seqs, api = history["run"], history["seqs"], history["api"]
    path = f"/api/runs/{run.id}"
    events = api.ok(f"/api/runs/{run.id}/events", {"limit": 1000})["events"]
    assert [e["seq"] for e in events] == list(range(seqs[-1] + 1))
    stamped = [(e["seq"], to_datetime(e["ts"])) for e in events]

    def expected(when: datetime) -> int:
        """The last seq of the longest prefix stamped at or before ``when``."""
        last = -1
        for seq, ts in stamped:
            if ts > when:
                break
            last = seq
        return last

    for seq in seqs[1:]:
        when = stamped[seq][1]
        by_seq = api.ok(path, {"as_of_seq": expected(when)})
        # ISO 8601 in UTC, in another zone, and epoch seconds: one instant, one answer.
        for raw in (when.isoformat(), when.astimezone(timezone(timedelta(hours=2))).isoformat(),
                    when.isoformat().replace("+00:00", "Z"), repr(when.timestamp())):
            assert api.ok(path, {"as_of": raw}) == by_seq, raw
    # A "+" left unencoded in the URL arrives as a space: read as "+".
    when = stamped[seqs[2]][1]
    status, _, body = api.get(path + "?as_of=" + when.isoformat())  # not urlencoded
    assert status == 200 and body["as_of"]["seq"] == expected(when)
    # After the last event: the latest state; before the first: 404 naming the parameter.
    latest = api.ok(path, {"as_of": (stamped[-1][1] + timedelta(days=1)).isoformat()})
    assert latest["as_of"]["seq"] == seqs[-1] and latest["status"] == "failed"
    message = api.error(path, {"as_of": (stamped[0][1] - timedelta(seconds=1)).isoformat()}, 404)
    assert "as_of=" in message and str(run.id) in message


def test_bad_parameters_are_400_naming_them(history: dict[str, Any]) -> None:
    run, seqs, api = history["run"], history["seqs"], history["api"]
    path = f"/api/runs/{run.id}"
    for params, name in (
        ({"as_of_seq": "-1"}, "as_of_seq"), ({"as_of_seq": "two"}, "as_of_seq"), ({"as_of_seq": "1.5"}, "as_of_seq"),
        ({"as_of": "yesterday"}, "as_of"), ({"as_of": "2026-01-01T00:00:00"}, "as_of"), ({"as_of": "nan"}, "as_of"),
        ({"as_of": "1e400"}, "as_of"),
    ):
        for p in (path, path + "/metrics"):
            message = api.error(p, params, 400)
            assert f"{name}=" in message, (params, message)
    message = api.error(path, {"as_of_seq": 1, "as_of": "2026-01-01T00:00:00Z"}, 400)
    assert "as_of_seq=" in message and "as_of=" in message
    message = api.error(path + "/metrics", {"as_of_seq": 1, "recursive": "true"}, 400)
    assert "recursive" in message and "as_of_seq=1" in message
    # A seq beyond the run's last: 404 naming it and the last one (min_seq waits for it).
    beyond = seqs[-1] + 1
    message = api.error(path, {"as_of_seq": beyond}, 404)
    assert f"as_of_seq={beyond}" in message and f"seq {seqs[-1]}" in message
    assert api.get(path, {"as_of_seq": beyond, "min_seq": beyond, "wait_ms": 0})[0] == 504
    # An unknown run.
    unknown = f"/api/runs/{uuid.uuid4()}"
    assert "not found" in api.error(unknown, {"as_of_seq": 0}, 404)
    assert "not found" in api.error(unknown + "/metrics", {"as_of_seq": 0}, 404)


def test_as_of_answers_are_cached_apart_from_the_live_detail(history: dict[str, Any]) -> None:
    run, (_, s1, s2, _, _), api = history["run"], history["seqs"], history["api"]
    path = f"/api/runs/{run.id}"
    first = api.ok(path, {"as_of_seq": s1})

    def hit(params: Any) -> Any:
        status, cache, body = api.get(path, params)
        return status == 200 and cache == "hit" and (body,)

    (cached,) = wait_for(lambda: hit({"as_of_seq": s1}), what="a cache hit for as_of_seq")
    assert cached == first
    (live,) = wait_for(lambda: hit(None), what="a cache hit for the live detail")
    assert "as_of" not in live and live["status"] == "failed"
    assert api.ok(path, {"as_of_seq": s2})["as_of"]["seq"] == s2  # its own entry
    status, cache, body = api.get(path, {"as_of_seq": s1}, headers={"Cache-Control": "no-cache"})
    assert (status, cache, body) == (200, "miss", first)


def test_children_as_of(workspace: Workspace) -> None:
    api = Api(workspace.settings.api_url)
    parent = Experiment(workspace, unique("asof")).start_logging(name="parent")
    parent.log("x", 1.0)
    before = checkpoint(parent)
    child = parent.child_run("child")
    child.log("y", 1.0)
    child.flush()
    parent.log("x", 2.0)
    after = checkpoint(parent)
    child.get_metrics()
    parent.get_metrics()
    path = f"/api/runs/{parent.id}"
    assert api.ok(path, {"as_of_seq": before})["children"] == []
    assert api.ok(path, {"as_of_seq": after})["children"] == [child.id]
    child_state = api.ok(f"/api/runs/{child.id}", {"as_of_seq": 0})
    assert child_state["parent_run_id"] == parent.id and child_state["kind"] == "child"
    child.complete()
    parent.complete()


async def test_a_fold_past_the_bounds_is_refused_naming_its_size(
    history: dict[str, Any], services: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process (the limits lowered): 422 naming the events and bytes, before any body is read."""
    run, (_, s1, _, _, s4) = history["run"], history["seqs"]
    async with TestClient(TestServer(create_app(services))) as client:
        async def get(params: dict[str, Any]) -> tuple[int, Any]:
            async with client.get(f"/api/runs/{run.id}", params=params) as resp:
                return resp.status, await resp.json()

        monkeypatch.setattr(asof, "MAX_EVENTS", s1 + 1)
        assert (await get({"as_of_seq": s1}))[0] == 200
        status, body = await get({"as_of_seq": s4})
        assert status == 422, body
        message = body["error"]["message"]
        assert f"as_of_seq={s4}" in message and f"{s4 + 1} events" in message and str(asof.MAX_EVENTS) in message
        monkeypatch.setattr(asof, "MAX_EVENTS", 10**6)
        monkeypatch.setattr(asof, "MAX_BYTES", 10)
        status, body = await get({"as_of": "9999-01-01T00:00:00Z"})
        assert status == 422 and "bytes" in body["error"]["message"], body
        async with client.get("/api/openapi.json") as resp:
            doc = await resp.json()
        params = {p["name"] for p in doc["paths"]["/api/runs/{run_id}"]["get"]["parameters"]}
        assert {"as_of_seq", "as_of"} <= params
        assert "422" in doc["paths"]["/api/runs/{run_id}/metrics"]["get"]["responses"]


async def test_at_most_folds_at_once_run_together(history: dict[str, Any], services: Settings,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: five as-of reads at once; the folds run FOLDS_AT_ONCE at a time (the rest
    wait their turn) and every read is answered."""
    run, seqs = history["run"], history["seqs"]
    lock, active, peak, release = threading.Lock(), [0], [0], threading.Event()
    real_fold = asof._fold

    def counted(*args: Any) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            release.wait(30)
            return real_fold(*args)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(asof, "_fold", counted)
    async with TestClient(TestServer(create_app(services))) as client:
        async def get(seq: int) -> int:
            async with client.get(f"/api/runs/{run.id}", params={"as_of_seq": seq},
                                  headers={"Cache-Control": "no-cache"}) as resp:
                return resp.status

        reads = [asyncio.ensure_future(get(seq)) for seq in seqs]
        deadline = time.monotonic() + 30
        while active[0] < asof.FOLDS_AT_ONCE:  # the first folds have started and hold their slots
            assert time.monotonic() < deadline, "no fold started"
            await asyncio.sleep(0.01)  # yield to the server on this loop while polling the counter
        release.set()
        assert await asyncio.gather(*reads) == [200] * len(seqs)
    assert peak[0] == asof.FOLDS_AT_ONCE
