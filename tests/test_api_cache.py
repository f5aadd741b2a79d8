"""The query API's response cache (``query_api/cache.py``).

End to end against the real stack (SDK → Kafka → processors → NOTIFY → query API): a
repeated read is answered from the cache (``X-Cache: hit``), a committed event of the
run (or a new child) makes the next reads fresh, ``min_seq``/``wait_ms`` keep their
meaning, and changes made while the API's LISTEN connection is down are never hidden.
Then the cache's bookkeeping on its own (no database): what is refused and dropped.
Conditions are waited on with deadlines, never with sleeps.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from runstream import Experiment, Run, Workspace
from runstream.query_api.cache import ResponseCache
from runstream.query_api.live import LISTENER
from tests.support.listening import listening_again, the_listen_backend
from tests.support.names import unique
from tests.support.waiting import eventually

DEADLINE_S = 30.0


class Reader:
    """GETs of one API, returning (X-Cache, status, JSON body)."""

    def __init__(self, session: aiohttp.ClientSession, api_url: str) -> None:
        self.session, self.base = session, api_url.rstrip("/")

    async def get(
        self, path: str, params: Any = None, status: int = 200, headers: dict[str, str] | None = None
    ) -> tuple[str | None, Any]:
        async with self.session.get(self.base + path, params=params, headers=headers) as resp:
            body = await resp.json()
            assert resp.status == status, body
            return resp.headers.get("X-Cache"), body

    async def cached(self, path: str, params: Any = None) -> Any:
        """Read until an answer comes from the cache (the first read of a path fills it;
        an unrelated new run in the shared database may drop a run detail once); the
        hit must equal the read before it."""
        previous: list[Any] = []

        async def hit() -> Any:
            header, body = await self.get(path, params)
            same = bool(previous) and previous[-1] == body
            previous.append(body)
            return header == "hit" and same and (body,)

        return (await eventually(hit, f"a cache hit for {path}"))[0]


def started(workspace: Workspace, name: str = "r", **tags: str) -> Run:
    run = Experiment(workspace, unique("cache")).start_logging(name=name)
    run.log("loss", 1.0)
    for key, value in tags.items():
        run.tag(key, value)
    run.get_details()  # flush, then wait until the API has materialized it
    return run


def last_seq(run: Run) -> int:
    """The seq of the run's last event sent (the SDK's own read-your-writes figure)."""
    return run._seq - 1


# ---------------------------------------------------------------- end to end


async def test_a_repeated_read_is_a_hit(workspace: Workspace, session: aiohttp.ClientSession) -> None:
    run = started(workspace, k="v")
    api = Reader(session, workspace.settings.api_url)
    detail = await api.cached(f"/api/runs/{run.id}")
    assert detail["tags"] == {"k": "v"} and detail["metrics"]["loss"]["last"] == 1.0
    assert detail["last_seq"] == last_seq(run)
    vector = await api.cached(f"/api/runs/{run.id}/metrics/loss", {"max_points": "100"})
    assert vector["values"] == [1.0]
    assert await api.cached(f"/api/runs/{run.id}/metrics") == {"loss": 1.0}
    # Not part of the key: a hit also answers with min_seq/wait_ms (reached already).
    params = {"max_points": "100", "min_seq": str(last_seq(run)), "wait_ms": "0"}
    header, body = await api.get(f"/api/runs/{run.id}/metrics/loss", params)
    assert header == "hit" and body == vector
    # A different query is a different answer.
    header, _ = await api.get(f"/api/runs/{run.id}/metrics/loss", {"max_points": "200"})
    assert header == "miss"
    # Cache-Control: no-cache reads the database.
    header, body = await api.get(f"/api/runs/{run.id}/metrics/loss", {"max_points": "100"},
                                 headers={"Cache-Control": "no-cache"})
    assert header == "miss" and body == vector
    run.complete()


async def test_a_committed_event_makes_the_next_read_fresh(
    workspace: Workspace, session: aiohttp.ClientSession
) -> None:
    run = started(workspace, k="v")
    api = Reader(session, workspace.settings.api_url)
    await api.cached(f"/api/runs/{run.id}")
    await api.cached(f"/api/runs/{run.id}/metrics/loss")
    run.tag("k", "v2")
    run.log("loss", 0.5)
    run.flush()

    async def fresh_detail() -> bool:
        _, body = await api.get(f"/api/runs/{run.id}")
        return body["tags"] == {"k": "v2"} and body["metrics"]["loss"]["last"] == 0.5

    async def fresh_vector() -> bool:
        _, body = await api.get(f"/api/runs/{run.id}/metrics/loss")
        return bool(body["values"] == [1.0, 0.5])

    await eventually(fresh_detail, "the new tag and point in the run detail")
    await eventually(fresh_vector, "the new point in the vector")
    detail = await api.cached(f"/api/runs/{run.id}")  # cached again, with the new state
    assert detail["last_seq"] == last_seq(run)
    run.complete()


async def test_the_sdk_reads_its_own_writes_through_the_cache(
    workspace: Workspace, session: aiohttp.ClientSession
) -> None:
    """The SDK reads the run detail with min_seq, then other endpoints without it: once
    the API has seen the new seq, no endpoint answers from before it, notification or not."""
    run = started(workspace, k="v")
    api = Reader(session, workspace.settings.api_url)
    assert await api.cached(f"/api/runs/{run.id}/metrics", [("recursive", "false")]) == {"loss": 1.0}
    assert (await api.cached(f"/api/runs/{run.id}"))["tags"] == {"k": "v"}
    for i in range(5):
        run.log("loss", float(i))
        run.tag("k", f"v{i}")
        assert run.get_metrics() == {"loss": [1.0, *[float(j) for j in range(i + 1)]]}
        assert run.get_details()["tags"] == {"k": f"v{i}"}
        assert run.get_tags() == {"k": f"v{i}"}
    run.complete()
    assert run.get_status() == "completed"


async def test_a_child_refreshes_its_parents_detail(workspace: Workspace, session: aiohttp.ClientSession) -> None:
    parent = started(workspace, name="parent")
    api = Reader(session, workspace.settings.api_url)
    assert (await api.cached(f"/api/runs/{parent.id}"))["children"] == []
    child = parent.child_run("child")
    child.log("x", 1.0)
    child.flush()

    async def listed() -> bool:
        _, body = await api.get(f"/api/runs/{parent.id}")
        return bool(body["children"] == [child.id])

    await eventually(listed, "the new child in the parent's detail")
    assert (await api.cached(f"/api/runs/{parent.id}"))["children"] == [child.id]
    tree = await api.cached(f"/api/runs/{parent.id}/metrics", {"recursive": "true"})
    assert tree == {parent.id: {"loss": 1.0}, child.id: {"x": 1.0}}
    # A later event of the child drops the parent's cached detail (it lists the child)
    # and the recursive metrics (they hold the child's values).
    child.log("x", 2.0)
    child.flush()

    async def recursive_fresh() -> bool:
        _, body = await api.get(f"/api/runs/{parent.id}/metrics", {"recursive": "true"})
        return bool(body[child.id] == {"x": [1.0, 2.0]})

    async def detail_dropped() -> bool:
        header, _ = await api.get(f"/api/runs/{parent.id}")
        return header == "miss"

    await eventually(recursive_fresh, "the child's new point in the parent's recursive metrics")
    await eventually(detail_dropped, "the parent's detail read again from the database")
    child.complete()
    parent.complete()


async def test_min_seq_and_wait_ms_with_a_cached_answer(
    workspace: Workspace, session: aiohttp.ClientSession
) -> None:
    run = started(workspace)
    api = Reader(session, workspace.settings.api_url)
    await api.cached(f"/api/runs/{run.id}/metrics")
    seq = last_seq(run)
    assert (await api.get(f"/api/runs/{run.id}/metrics", {"min_seq": str(seq)}))[0] == "hit"
    # A min_seq the cached answer has not reached is not answered from it: 504 when the
    # run never gets there ...
    _, error = await api.get(f"/api/runs/{run.id}", {"min_seq": str(seq + 100), "wait_ms": "200"}, status=504)
    assert f"min_seq={seq + 100}" in error["error"]["message"]
    # ... and the new state once it does (the read waits for the event logged here).
    run.log("loss", 2.0)  # the next event: seq + 1
    header, body = await api.get(f"/api/runs/{run.id}", {"min_seq": str(seq + 1), "wait_ms": "20000"})
    assert header == "miss" and body["last_seq"] >= seq + 1 and body["metrics"]["loss"]["last"] == 2.0
    run.log("loss", 3.0)  # seq + 2
    header, body = await api.get(f"/api/runs/{run.id}/metrics/loss", {"min_seq": str(seq + 2), "wait_ms": "20000"})
    assert header == "miss" and body["values"] == [1.0, 2.0, 3.0]
    run.complete()


async def test_changes_are_not_hidden_while_the_listener_is_down(
    workspace: Workspace, local_api: TestServer, session: aiohttp.ClientSession, db: Any
) -> None:
    run = started(workspace, k="v")
    listener = local_api.app[LISTENER]
    api = Reader(session, str(local_api.make_url("")))
    await asyncio.wait_for(listener.connected.wait(), DEADLINE_S)
    assert (await api.cached(f"/api/runs/{run.id}"))["tags"] == {"k": "v"}
    old_pid = await the_listen_backend(db)
    assert db.execute("SELECT pg_terminate_backend(%s)", (old_pid,)).fetchone() == (True,)
    # A change whose notification nobody hears (none is sent here, as if it was sent
    # while the listener was away).
    db.execute("UPDATE tags SET value = 'changed' WHERE run_id = %s::uuid AND key = 'k'", (run.id,))

    async def reconnected() -> bool:
        # the cache serves again as soon as `connected` is set (both happen in one step)
        return listener.connected.is_set() and listening_again(db, old_pid)

    await eventually(reconnected, "a new LISTEN connection")
    header, body = await api.get(f"/api/runs/{run.id}")
    assert header == "miss" and body["tags"] == {"k": "changed"}
    run.complete()


# ---------------------------------------------------------------- the cache's bookkeeping


RUN, CHILD, OTHER = (uuid.UUID(int=i) for i in (1, 2, 3))


def serving_cache(**limits: int) -> ResponseCache:
    cache = ResponseCache(**limits)
    cache.listening()
    return cache


def test_nothing_is_served_or_kept_without_listen() -> None:
    cache = ResponseCache()
    assert cache.token() is None and not cache.put(0, "k", b"{}", RUN, 0)
    cache.listening()
    assert cache.put(cache.token(), "k", b"{}", RUN, 0) and cache.get("k") is not None
    token = cache.token()
    cache.unlistening()
    assert cache.get("k") is None and not cache.put(token, "k2", b"{}", RUN, 0)
    cache.listening()
    assert cache.get("k") is None and not cache.put(token, "k2", b"{}", RUN, 0)


def test_min_seq_is_answered_only_by_an_answer_that_reached_it() -> None:
    cache = serving_cache()
    cache.put(cache.token(), "k", b"{}", RUN, 5)
    assert cache.get("k", 5) is not None and cache.get("k", None) is not None and cache.get("k", 6) is None


def test_a_notification_drops_the_runs_answers_and_refuses_reads_in_flight() -> None:
    cache = serving_cache()
    cache.notified(CHILD)  # seen: its later events are not new runs
    cache.put(cache.token(), "run", b"{}", RUN, 1)
    cache.put(cache.token(), "detail", b"{}", RUN, 1, {CHILD: None}, structural=True)
    cache.put(cache.token(), "other", b"{}", OTHER, 1)
    in_flight = cache.token()
    cache.notified(RUN)
    assert cache.get("run") is None and cache.get("detail") is None and cache.get("other") is not None
    assert not cache.put(in_flight, "run", b"{}", RUN, 1)  # read before the commit: maybe stale
    assert cache.put(in_flight, "other2", b"{}", OTHER, 1)  # another run: unaffected
    assert cache.put(cache.token(), "run", b"{}", RUN, 2)  # read after it


def test_a_childs_event_drops_the_parents_detail_and_a_new_run_every_detail() -> None:
    cache = serving_cache()
    cache.notified(RUN)
    cache.notified(CHILD)
    cache.put(cache.token(), "detail", b"{}", RUN, 1, {CHILD: None}, structural=True)
    cache.put(cache.token(), "vector", b"{}", RUN, 1)
    cache.notified(CHILD)
    assert cache.get("detail") is None and cache.get("vector") is not None
    cache.put(cache.token(), "detail", b"{}", RUN, 1, {CHILD: None}, structural=True)
    in_flight = cache.token()
    cache.notified(OTHER)  # first seen: may be a new child of any run
    assert cache.get("detail") is None and cache.get("vector") is not None
    assert not cache.put(in_flight, "detail", b"{}", RUN, 1, {CHILD: None}, structural=True)
    assert cache.put(in_flight, "vector2", b"{}", RUN, 1)  # not structural: a new run cannot change it


def test_a_newer_seq_seen_in_the_database_drops_older_answers() -> None:
    cache = serving_cache()
    cache.notified(CHILD)
    cache.put(cache.token(), "metrics", b"{}", RUN, 3)
    cache.put(cache.token(), "parent", b"{}", OTHER, 7, {RUN: None}, structural=True)
    cache.put(cache.token(), "tree", b"{}", OTHER, 7, {RUN: 3}, structural=True)
    token = cache.token()
    cache.observe(RUN, 4)
    assert cache.get("metrics") is None and cache.get("tree") is None and cache.get("parent") is not None
    assert not cache.put(token, "metrics", b"{}", RUN, 3)  # older than what was seen
    assert cache.put(token, "metrics", b"{}", RUN, 4)


def test_bounded_by_entries_and_bytes_least_recently_used_first() -> None:
    cache = serving_cache(max_entries=3, max_bytes=100, max_entry_bytes=60)
    for key in "abc":
        cache.put(cache.token(), key, b"x" * 10, RUN, 0)
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put(cache.token(), "d", b"x" * 10, OTHER, 0)
    assert cache.get("b") is None and all(cache.get(k) is not None for k in "acd")
    assert not cache.put(cache.token(), "big", b"x" * 61, RUN, 0) and cache.get("big") is None
    cache.put(cache.token(), "e", b"x" * 60, RUN, 0)
    assert len(cache) <= 3 and cache.get("e") is not None
    cache.notified(RUN)
    assert [k for k in "acde" if cache.get(k) is not None] == ["d"]
    # the dropped entries gave their bytes back: d's 10 and 60 + 30 more fill the 100 exactly
    assert cache.put(cache.token(), "f", b"x" * 60, OTHER, 0) and cache.put(cache.token(), "g", b"x" * 30, OTHER, 0)
    assert all(cache.get(k) is not None for k in "dfg")


def test_bookkeeping_stays_bounded_and_only_costs_freshness() -> None:
    cache = serving_cache(max_tracked_runs=4)
    in_flight = cache.token()
    for i in range(10):
        cache.notified(uuid.UUID(int=100 + i))
        cache.observe(uuid.UUID(int=200 + i), i)
    assert len(cache._touched) <= 4 and len(cache._seen) <= 4 and len(cache._known) <= 4
    assert not cache.put(in_flight, "k", b"{}", RUN, 0)  # what it knew about is forgotten: refuse
    assert cache.put(cache.token(), "k", b"{}", RUN, 0)
