"""The live endpoint (``GET /api/runs/{run_id}/live``), its client and the notebook widget,
against the real stack: SDK → Kafka → processors → NOTIFY → query API → SSE.

Most tests read from the session's ``runstream serve``; the ones that need the app's
insides (its LISTEN connection, its shutdown) run a second query API in-process.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from runstream import Experiment, Run, Workspace
from runstream.errors import ApiError
from runstream.live import SseParser, follow
from runstream.query_api.app import create_app
from runstream.query_api.live import HEARTBEAT_S, LISTENER
from runstream.settings import Settings
from tests.support.listening import listening_again, the_listen_backend
from tests.support.names import unique
from tests.support.waiting import eventually

DEADLINE_S = 30.0


class Collector:
    """Runs :func:`follow` in a task; records each event with the time it arrived."""

    def __init__(self, session: aiohttp.ClientSession, api_url: str, run_id: str, after_seq: int = -1) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.finished = False
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(session, api_url, run_id, after_seq))

    async def _run(self, session: aiohttp.ClientSession, api_url: str, run_id: str, after_seq: int) -> None:
        try:
            async for event in follow(session, api_url, run_id, after_seq):
                self.events.append((time.time(), event))
                self._changed.set()
        finally:
            self.finished = True
            self._changed.set()

    async def wait(self, condition: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
        """Wait (bounded) until ``condition()`` is truthy; re-checked after every event."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not (result := condition()):
            if self.task.done() and self.task.exception() is not None:
                raise self.task.exception()  # type: ignore[misc]
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; got {self.seqs()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass
        return result

    def find(self, type_: str, predicate: Callable[[dict[str, Any]], bool] = lambda p: True) -> Any:
        return next(((t, e) for t, e in self.events if e["type"] == type_ and predicate(e["payload"])), None)

    def seqs(self) -> list[int]:
        return [e["seq"] for _, e in self.events]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def has_point(name: str, step: int) -> Callable[[dict[str, Any]], bool]:
    return lambda p: any(s["name"] == name and step in s["steps"] for s in p["series"])


async def sse(session: aiohttp.ClientSession, url: str, *, until: Callable[[list[tuple[str, str | None, bytes]]], bool],
              headers: dict[str, str] | None = None, params: dict[str, str] | None = None,
              into: list[tuple[str, str | None, bytes]] | None = None) -> list[tuple[str, str | None, bytes]]:
    """Read raw SSE messages from ``url`` (into ``into``) until ``until(messages)`` holds or the stream ends."""
    messages = [] if into is None else into
    async with asyncio.timeout(DEADLINE_S):
        async with session.get(url, headers=headers, params=params) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.content_type == "text/event-stream"
            parser = SseParser()
            async for chunk in resp.content.iter_any():
                messages.extend(parser.feed(chunk))
                if until(messages):
                    break
    return messages


def finished_run(workspace: Workspace, points: int) -> Run:
    run = Experiment(workspace, unique("live")).start_logging(name="done")
    for i in range(points):
        run.log("x", float(i))
        run.flush()  # one event per point
    run.tag("k", "v")
    run.complete()
    return run


async def archived(session: aiohttp.ClientSession, api_url: str, run: Run) -> list[dict[str, Any]]:
    async with session.get(f"{api_url}/api/runs/{run.id}/events", params={"limit": "1000"}) as resp:
        assert resp.status == 200
        events: list[dict[str, Any]] = (await resp.json())["events"]
        return events


# ---------------------------------------------------------------- live delivery


async def test_points_logged_after_connecting_arrive_live(
    workspace: Workspace, session: aiohttp.ClientSession, record_property: Callable[[str, Any], None]
) -> None:
    run = Experiment(workspace, unique("live")).start_logging(name="latency")
    collector = Collector(session, workspace.settings.api_url, run.id)
    try:
        # run.started arrives in the catch-up read, which follows the subscription.
        await collector.wait(lambda: collector.find("run.started"), "run.started")
        latencies = []
        for step in range(20):
            sent = time.time()
            run.log("late", float(step))
            received, event = await collector.wait(lambda: collector.find("metric.points", has_point("late", step)),
                                                   f"point {step}")
            assert event["run_id"] == run.id
            latencies.append((received - sent) * 1000)
        p50, worst = statistics.median(latencies), max(latencies)
        print(f"\nlive latency, run.log() -> SSE message received (20 points): "
              f"p50 {p50:.1f} ms, max {worst:.1f} ms, first {latencies[0]:.1f} ms")
        record_property("live_latency_ms_p50", round(p50, 1))
        record_property("live_latency_ms_max", round(worst, 1))
        run.complete()
        await collector.wait(lambda: collector.finished, "the end of the stream")
        assert collector.find("run.status", lambda p: p["status"] == "completed")
        assert collector.seqs() == list(range(len(collector.seqs())))
    finally:
        await collector.close()


async def test_catch_up_from_after_seq_then_end(workspace: Workspace, session: aiohttp.ClientSession) -> None:
    api = workspace.settings.api_url
    run = finished_run(workspace, 5)
    events = [e async for e in follow(session, api, run.id, after_seq=2)]  # ends after the terminal status
    history = await archived(session, api, run)
    assert [e["seq"] for e in history] == list(range(8))  # started, 5 points, tag, completed
    assert events == history[3:]  # the events exactly as archived
    last = history[-1]["seq"]

    messages = await sse(session, f"{api}/api/runs/{run.id}/live", params={"after_seq": "2"}, until=lambda m: False)
    *body, end = messages
    assert [(m[0], m[1]) for m in body] == [(e["type"], str(e["seq"])) for e in history[3:]]
    assert [orjson.loads(m[2]) for m in body] == history[3:]
    assert end[0] == "end" and orjson.loads(end[2]) == {"status": "completed", "last_seq": last}
    # Nothing after the end: just `end`.
    messages = await sse(session, f"{api}/api/runs/{run.id}/live", params={"after_seq": str(last)},
                         until=lambda m: False)
    assert [m[0] for m in messages] == ["end"]


async def test_stream_ends_with_end_after_complete(workspace: Workspace, session: aiohttp.ClientSession) -> None:
    api = workspace.settings.api_url
    run = Experiment(workspace, unique("live")).start_logging(name="ends")
    run.log("a", 1.0)
    run.flush()
    reader = asyncio.create_task(sse(session, f"{api}/api/runs/{run.id}/live", params={"min_seq": "1"},
                                     until=lambda m: False))
    run.log("a", 2.0)
    run.fail("boom")
    messages = await reader  # returns when the server closes the stream
    types = [m[0] for m in messages]
    assert types[0] == "run.started" and types[-2:] == ["run.status", "end"]
    assert orjson.loads(messages[-2][2])["payload"] == {"status": "failed", "error": "boom"}
    assert orjson.loads(messages[-1][2]) == {"status": "failed", "last_seq": int(messages[-2][1] or -1)}
    assert [int(m[1] or -1) for m in messages[:-1]] == list(range(len(messages) - 1))


async def test_reconnect_with_last_event_id_resumes_without_duplicates(
    workspace: Workspace, session: aiohttp.ClientSession
) -> None:
    api = workspace.settings.api_url
    run = finished_run(workspace, 6)
    url = f"{api}/api/runs/{run.id}/live"
    first = await sse(session, url, params={"min_seq": str(run._seq - 1)},
                      until=lambda m: len(m) >= 3)  # then the client drops the connection
    assert [m[1] for m in first[:3]] == ["0", "1", "2"]
    last_id = first[2][1]
    assert last_id is not None
    # An EventSource reconnects to the same URL (after_seq=-1 here) with Last-Event-ID: it wins.
    rest = await sse(session, url, params={"after_seq": "-1"}, headers={"Last-Event-ID": last_id},
                     until=lambda m: False)
    ids = [m[1] for m in first[:3]] + [m[1] for m in rest if m[0] != "end"]
    history = await archived(session, api, run)
    assert ids == [str(e["seq"]) for e in history]
    assert rest[-1][0] == "end"


async def test_errors_are_json_before_the_stream_starts(services: Settings, session: aiohttp.ClientSession) -> None:
    api = services.api_url
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        (f"/api/runs/{uuid.uuid4()}/live", {}, 404, "not found"),
        ("/api/runs/not-a-uuid/live", {}, 400, "run_id"),
        (f"/api/runs/{uuid.uuid4()}/live", {"params": {"after_seq": "x"}}, 400, "after_seq"),
        (f"/api/runs/{uuid.uuid4()}/live", {"headers": {"Last-Event-ID": "x"}}, 400, "Last-Event-ID"),
        (f"/api/runs/{uuid.uuid4()}/live", {"params": {"min_seq": "0", "wait_ms": "50"}}, 504, "min_seq"),
    ]
    for path, kwargs, status, words in cases:
        async with session.get(api + path, **kwargs) as resp:
            body = await resp.json()
            assert resp.status == status and resp.content_type == "application/json", (path, body)
            assert body["error"]["status"] == status and words in body["error"]["message"], body
    async with session.get(f"{api}/api/openapi.json") as resp:
        doc = await resp.json()
    op = doc["paths"]["/api/runs/{run_id}/live"]["get"]
    assert "text/event-stream" in op["responses"]["200"]["content"]


# ---------------------------------------------------------------- the app's insides


async def test_listener_reconnects_after_its_connection_drops(
    workspace: Workspace, local_api: TestServer, session: aiohttp.ClientSession, db: Any
) -> None:
    listener = local_api.app[LISTENER]
    await asyncio.wait_for(listener.connected.wait(), DEADLINE_S)
    old_pid = await the_listen_backend(db)
    assert db.execute("SELECT pg_terminate_backend(%s)", (old_pid,)).fetchone() == (True,)
    run = Experiment(workspace, unique("live")).start_logging(name="reconnect")
    collector = Collector(session, str(local_api.make_url("")).rstrip("/"), run.id)
    try:
        await collector.wait(lambda: collector.find("run.started"), "run.started")
        await eventually(lambda: listener.connected.is_set() and listening_again(db, old_pid),
                         "a new LISTEN connection")
        run.log("after", 1.0)
        # Pushed by a notification on the new connection, not found by the re-read that
        # every idle stream does at its heartbeat (HEARTBEAT_S).
        await collector.wait(lambda: collector.find("metric.points", has_point("after", 0)), "the point",
                             timeout=HEARTBEAT_S / 2)
    finally:
        run.complete()
        await collector.close()


async def test_open_streams_do_not_block_shutdown(workspace: Workspace, services: Settings) -> None:
    run = Experiment(workspace, unique("live")).start_logging(name="open")
    run.flush()
    server = TestServer(create_app(services))
    await server.start_server()
    url = server.make_url(f"/api/runs/{run.id}/live")
    try:
        async with aiohttp.ClientSession() as s:
            received: list[tuple[str, str | None, bytes]] = []
            reader = asyncio.create_task(sse(s, str(url), params={"min_seq": "0"}, until=lambda m: False,
                                             into=received))
            await eventually(lambda: received, "the stream's first message")
            started = time.monotonic()
            await server.close()
            closed_in = time.monotonic() - started
            messages = await reader
    finally:
        await server.close()
        run.complete()
    # aiohttp would wait up to its shutdown timeout (60 s) for a handler that does not end.
    assert closed_in < 10, closed_in
    assert [m[0] for m in messages] == ["run.started"]  # no `end`: the client reconnects elsewhere


async def test_follow_resumes_after_the_server_restarts(workspace: Workspace, services: Settings) -> None:
    """A stream closed without `end` (server shutdown) is resumed by follow() where it stopped."""
    run = Experiment(workspace, unique("live")).start_logging(name="restart")
    run.log("a", 0.0)
    run.flush()
    server = TestServer(create_app(services))
    await server.start_server()
    port = server.port
    async with aiohttp.ClientSession() as s:
        collector = Collector(s, str(server.make_url("")).rstrip("/"), run.id)
        try:
            await collector.wait(lambda: collector.find("metric.points"), "the first point")
            await server.close()
            run.log("a", 1.0)
            run.flush()
            server = TestServer(create_app(services), port=port)
            await server.start_server()
            run.complete()
            await collector.wait(lambda: collector.finished, "the end after the restart")
            assert collector.seqs() == list(range(4))  # started, a=0, a=1, completed: once each
        finally:
            await collector.close()
            await server.close()


# ---------------------------------------------------------------- widget


async def test_widget_follows_a_run_live(workspace: Workspace, session: aiohttp.ClientSession) -> None:
    from runstream.widgets import RunDetails

    run = Experiment(workspace, unique("widget")).start_logging(name="notebook")
    run.log("loss", 1.0)
    run.flush()
    details = RunDetails(run)
    details.start()
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, lambda: _wait(lambda: details.state.metrics.get("loss"), "the first loss"))
        assert details.state.status == "running"
        for i in range(2, 6):
            run.log("loss", 1.0 / i)
        run.log("nan", float("nan"))
        run.log_row("table", a=1, b=2.5)
        run.tag("stage", "train")
        run.upload_file("outputs/model.txt", b"weights")
        # Output lines as a submitted run's captured stdout sends them.
        run._event("log.lines", {"stream": "stdout", "lines": ["epoch 1", "epoch 2 <done>"],
                                 "times": [time.time()] * 2})
        run.complete()
        assert await loop.run_in_executor(None, details.wait, DEADLINE_S), "the widget did not see the end"
    finally:
        details.stop()
    state = details.state
    assert details.error is None
    assert state.status == "completed" and state.experiment == run.experiment.name and state.name == "notebook"
    assert state.metrics["loss"].count == 5 and state.metrics["loss"].last == 0.2
    assert list(state.metrics["loss"].recent) == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert state.metrics["nan"].count == 1 and state.metrics["nan"].min is None
    assert state.metrics["table"].kind == "table" and state.metrics["table"].last == {"a": 1, "b": 2.5}
    assert state.tags == {"stage": "train"} and state.files == {"outputs/model.txt": 7}
    assert list(state.lines) == [("stdout", "epoch 1"), ("stdout", "epoch 2 <done>")]
    assert "completed" in details.status.value and "stage: train" in details.status.value
    assert "<td>loss</td>" in details.metrics.value and "<td>0.2</td>" in details.metrics.value
    assert "<polyline" in details.metrics.value  # the trend line of loss
    assert "epoch 2 &lt;done&gt;" in details.output.value
    assert "outputs/model.txt" in details.files.value

    # The same events applied one by one (no thread) give the same state: apply() is the whole logic.
    replay = RunDetails(run)
    async for event in follow(session, workspace.settings.api_url, run.id):
        replay.apply(event)
    replay.render()
    assert replay.state == state
    assert replay.metrics.value == details.metrics.value and replay.output.value == details.output.value


def _wait(condition: Callable[[], Any], what: str) -> Any:
    from tests.support.waiting import wait_for

    return wait_for(condition, timeout=DEADLINE_S, what=what)


async def test_follow_raises_on_error_answers(services: Settings, session: aiohttp.ClientSession) -> None:
    with pytest.raises(ApiError) as info:
        async for _ in follow(session, services.api_url, "not-a-uuid"):
            pass
    assert info.value.status == 400
