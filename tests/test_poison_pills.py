"""No event stops the pipeline and no bad value takes its neighbours down (issue 9, item 2).

What happens to each kind of bad message straight on the topic, to a point the database
rejects beside good ones, to a re-sent seq with other content, to a status that overtakes
its run's start; and `runstream dead-letters list|retry` end to end. The processors here
are a `runstream serve` of this module's own (own topic, consumer group and ports), so the
test can assert that it is still running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import aiohttp
import asyncpg
import pytest

from runstream.devstack.demo import wait_ready
from runstream.devstack.stack import free_ports
from runstream.processors import salvage
from runstream.processors.store import Received
from runstream.schemas import events as ev
from runstream.settings import Settings
from tests.support import events
from tests.support.names import unique
from tests.support.rejects import reject_step
from tests.support.services import start_serve, stop
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def own(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, subprocess.Popen[bytes]]]:
    """A `runstream serve` of this module: its own topic, group and ports."""
    api_port, gateway_port, metrics_port = free_ports(3)
    s = replace(settings, topic=unique("poison"), processor_group=unique("poison-group"), api_port=api_port,
                gateway_port=gateway_port, metrics_port=metrics_port, api_url=f"http://127.0.0.1:{api_port}",
                ingest_url=f"http://127.0.0.1:{gateway_port}")
    process = start_serve(s, log=tmp_path_factory.mktemp("poison") / "serve.log")
    try:
        wait_ready(s, process)
        yield s, process
    finally:
        stop(process)


def _json(body: dict[str, Any]) -> bytes:
    """Stdlib JSON: it writes ints of any size (orjson refuses beyond 64 bits)."""
    return json.dumps(body).encode()


def envelope(run_id: str, seq: Any, type_: str, payload: Any, ts: float | None = None) -> dict[str, Any]:
    return {"type": type_, "v": 1, "event_id": events.new_run_id(), "run_id": run_id, "seq": seq,
            "ts": time.time() if ts is None else ts, "payload": payload}


def letters(db: Any, run_id: str) -> list[tuple[Any, ...]]:
    return db.execute('SELECT "offset", seq, item, reason FROM dead_letters WHERE run_id = %s AND retried_at IS NULL '
                      'ORDER BY "offset", item', (run_id,)).fetchall()


def letters_at(db: Any, topic: str, offsets: list[int]) -> dict[int, str]:
    rows = db.execute('SELECT "offset", reason FROM dead_letters WHERE topic = %s AND "offset" = ANY(%s)',
                      (topic, offsets)).fetchall()
    return dict(rows)


def point_steps(db: Any, run_id: str, name: str) -> list[int]:
    return [r[0] for r in db.execute("SELECT step FROM metric_points WHERE run_id = %s AND name = %s ORDER BY step",
                                     (run_id, name))]


async def produce_raw(settings: Settings, run_id: str, messages: list[bytes]) -> list[int]:
    """Produce raw bytes keyed by ``run_id`` (one partition, in order); their offsets."""
    from aiokafka import AIOKafkaProducer

    from runstream.ingest.topic import ensure_topic

    await ensure_topic(settings.kafka_bootstrap, settings.topic, settings.partitions)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        return [(await producer.send_and_wait(settings.topic, m, key=run_id.encode())).offset for m in messages]
    finally:
        await producer.stop()


async def api_json(settings: Settings, path: str) -> Any:
    async with aiohttp.ClientSession() as session:
        async with session.get(settings.api_url + path) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


async def test_poison_pills_are_dead_lettered_and_the_partition_keeps_flowing(own: tuple[Settings, Any], db: Any) -> None:
    s, process = own
    run_id = events.new_run_id()
    exp = unique("poison")
    good_start = events.started(run_id, exp)
    deep = b'{"type":"tag.set","v":1,"event_id":"' + events.new_run_id().encode() + b'","run_id":"' + \
        run_id.encode() + b'","seq":1,"ts":1.0,"payload":{"key":"k","value":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    pills = {
        "invalid UTF-8": events.event(run_id, 1, "tag.set", {"key": "k", "value": "AAAA"}).replace(b"AAAA", b"\xff\xfe\xfd"),
        "seq 2**63": _json(envelope(run_id, 2**63, "tag.set", {"key": "k", "value": "v"})),
        "2**64 run property": _json(envelope(run_id, 0, "run.started", {"experiment": exp, "properties": {"big": 2**64}})),
        "too deep": deep,
    }
    big_cell = _json(envelope(run_id, 2, "metric.rows", {"name": "t", "rows": [{"a": 1}, {"a": 2**64}, {"a": 3}]}))
    behind = [events.points(run_id, 3, "after", [0, 1, 2]), events.event(run_id, 4, "run.status", {"status": "completed"})]
    offsets = await produce_raw(s, run_id, [*pills.values(), good_start, big_cell, *behind])

    wait_for(lambda: db.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,)).fetchone() == ("completed",),
             what="the events behind the poison pills")
    assert point_steps(db, run_id, "after") == [0, 1, 2]
    assert process.poll() is None, "runstream serve exited"
    reasons = letters_at(db, s.topic, offsets[:len(pills)])
    assert sorted(reasons) == offsets[:len(pills)], f"each poison pill is a dead letter: {reasons}"
    by_kind = dict(zip(pills, (reasons[o] for o in offsets[:len(pills)])))
    assert "UnicodeDecodeError" in by_kind["invalid UTF-8"] or "UTF-8" in by_kind["invalid UTF-8"]
    assert by_kind["too deep"]
    # The table cell beyond 64 bits: the event (or just that row) is dead-lettered; rows
    # beside it that the pipeline accepted are stored, never more than one copy.
    big = letters_at(db, s.topic, [offsets[len(pills) + 1]])
    assert big, "the 2**64 table cell is dead-lettered"
    rows = db.execute("SELECT idx FROM table_rows WHERE run_id = %s AND name = 't' ORDER BY idx", (run_id,)).fetchall()
    assert [r[0] for r in rows] in ([], [0, 2])


async def test_a_point_the_database_rejects_is_dead_lettered_alone(settings: Settings) -> None:
    """A NUL in a table cell (jsonb refuses "\\u0000") and in a string point (text refuses
    it), beside good rows/points of the same event and a good event of the same batch:
    written through the processor's fallback against the real database, only the bad
    items become dead letters, with their index."""
    run_id = events.new_run_id()
    now = time.time()
    rows = ev.MetricRows(event_id=events.new_run_id(), run_id=run_id, seq=1, ts=now, v=1, payload=ev.MetricRowsPayload(
        name="t", rows=[{"a": 1}, {"a": "x\x00y"}, {"a": 3}, {"a": 4}]))
    pts = ev.MetricPoints(event_id=events.new_run_id(), run_id=run_id, seq=2, ts=now, v=1, payload=ev.MetricPointsPayload(
        series=[ev.Series(name="s", steps=[0, 1], values=[1.0, 2.0], times=[now, now]),
                ev.Series(name="u", steps=[0, 1, 2], values=["ok", "b\x00d", "fine"], times=[now] * 3)]))
    received = [Received(e, b"{}", "direct", 0, i) for i, e in enumerate([rows, pts])]
    conn = await asyncpg.connect(settings.database_url)
    try:
        results: list[Any] = []
        dead: list[Any] = []
        tx = conn.transaction()  # rolled back at the end: these bodies are not real messages
        await tx.start()
        try:
            for r in received:
                await salvage.write_one(conn, r, results, dead)
            stored_rows = await conn.fetch("SELECT idx, cells::text FROM table_rows WHERE run_id = $1 ORDER BY idx",
                                           run_id)
            stored_points = await conn.fetch(
                "SELECT name, step FROM metric_points WHERE run_id = $1 ORDER BY name, step", run_id)
            archived = await conn.fetchval("SELECT count(*) FROM events WHERE run_id = $1", run_id)
            counts = await conn.fetch("SELECT name, count FROM metric_summaries WHERE run_id = $1 ORDER BY name",
                                      run_id)
        finally:
            await tx.rollback()
    finally:
        await conn.close()
    assert [(d.seq, d.item) for d in dead] == [(1, 1), (2, 3)]  # items count over the event's series
    assert all("rejected by the database" in d.reason for d in dead)
    assert [r["idx"] for r in stored_rows] == [0, 2, 3]
    assert [tuple(p) for p in stored_points] == [("s", 0), ("s", 1), ("u", 0), ("u", 2)]
    assert [tuple(c) for c in counts] == [("s", 2), ("t", 3), ("u", 2)]
    assert archived == 2 and sum(r.points for r in results) == 4


@pytest.fixture()
def reject_step_7(db: Any) -> Iterator[tuple[str, Callable[[], None]]]:
    """A run id whose metric point at step 7 the database rejects, and the fix."""
    run_id = events.new_run_id()
    with reject_step(db, run_id, 7) as fix:
        yield run_id, fix


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runstream.cli", "dead-letters", *args], capture_output=True,
                          text=True, env={**os.environ, **settings.to_env()}, timeout=120)


async def test_rejected_point_beside_good_ones_counts_in_the_api_and_is_re_driven(
        own: tuple[Settings, Any], db: Any, reject_step_7: tuple[str, Callable[[], None]]) -> None:
    s, process = own
    run_id, fix = reject_step_7
    steps = list(range(100))  # long enough for the columnar path
    await produce_raw(s, run_id, [events.started(run_id, unique("reject")), events.points(run_id, 1, "x", steps),
                                  events.points(run_id, 2, "y", [0, 1]),
                                  events.points(run_id, 3, "z", [7]),  # its only point is rejected: the whole event
                                  events.event(run_id, 4, "run.status", {"status": "completed"})])
    wait_for(lambda: db.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,)).fetchone() == ("completed",),
             what="the run to complete")
    assert point_steps(db, run_id, "x") == [s_ for s_ in steps if s_ != 7]
    assert point_steps(db, run_id, "y") == [0, 1]
    assert point_steps(db, run_id, "z") == []
    assert [r[1:3] for r in letters(db, run_id)] == [(1, 7), (3, -1)]
    assert all("test rejects step 7" in r[3] for r in letters(db, run_id))
    assert db.execute("SELECT count(*) FROM events WHERE run_id = %s AND seq = 3", (run_id,)).fetchone() == (0,)
    detail = await api_json(s, f"/api/runs/{run_id}")
    assert detail["dead_letters"] == 2
    assert process.poll() is None

    listed = cli(s, "list", "--run", run_id)
    assert listed.returncode == 0 and f"run={run_id}\tseq=1\titem=7" in listed.stdout
    assert f"run={run_id}\tseq=3\titem=-1" in listed.stdout
    still = cli(s, "retry", "--run", run_id)  # not fixed yet: they stay, with their (new) reasons
    assert still.returncode == 1 and "0 stored, 2 still failing" in still.stdout
    assert len(letters(db, run_id)) == 2

    fix()
    fixed = cli(s, "retry", "--run", run_id)
    assert fixed.returncode == 0 and "2 stored, 0 still failing" in fixed.stdout, fixed.stdout + fixed.stderr
    assert point_steps(db, run_id, "x") == steps
    assert point_steps(db, run_id, "z") == [7]
    assert db.execute("SELECT count(*) FROM events WHERE run_id = %s AND seq = 3", (run_id,)).fetchone() == (1,)
    assert db.execute("SELECT count FROM metric_summaries WHERE run_id = %s AND name = 'x'", (run_id,)).fetchone() == (100,)
    again = cli(s, "retry", "--run", run_id)  # nothing pending: nothing written twice
    assert again.returncode == 0 and "re-drove 0" in again.stdout
    assert point_steps(db, run_id, "x") == steps and point_steps(db, run_id, "z") == [7]
    assert letters(db, run_id) == []
    assert cli(s, "list", "--run", run_id, "--all").stdout.count("retried") == 2
    detail = await api_json(s, f"/api/runs/{run_id}")
    assert detail["dead_letters"] == 0


async def test_retrying_bytes_that_still_do_not_decode_keeps_them(own: tuple[Settings, Any], db: Any) -> None:
    s, _ = own
    run_id = events.new_run_id()
    bad = events.event(run_id, 1, "tag.set", {"key": "k", "value": "AAAA"}).replace(b"AAAA", b"\xff\xfe")
    (offset, _) = await produce_raw(s, run_id, [bad, events.started(run_id, unique("undecodable"))])
    wait_for(lambda: db.execute("SELECT 1 FROM runs WHERE run_id = %s", (run_id,)).fetchone(), what="the start")
    (letter_id,) = db.execute('SELECT id FROM dead_letters WHERE topic = %s AND "offset" = %s AND retried_at IS NULL',
                              (s.topic, offset)).fetchone()
    out = cli(s, "retry", "--id", str(letter_id))
    assert out.returncode == 1 and f"{letter_id}\tstill failing:" in out.stdout and "1 still failing" in out.stdout
    assert db.execute("SELECT retried_at FROM dead_letters WHERE id = %s", (letter_id,)).fetchone() == (None,)
    # It did not decode, but its Kafka key names the run: the run counts it.
    assert [r[1:3] for r in letters(db, run_id)] == [(None, -1)]
    assert (await api_json(s, f"/api/runs/{run_id}"))["dead_letters"] == 1


def test_dead_letters_cli_names_bad_input(settings: Settings) -> None:
    bad = cli(settings, "list", "--run", "not-a-uuid")
    assert bad.returncode == 2 and "is not a run id" in bad.stderr


async def test_same_seq_with_other_content_is_a_conflict_and_an_identical_resend_a_duplicate(
        own: tuple[Settings, Any], db: Any) -> None:
    s, _ = own
    run_id = events.new_run_id()
    first = events.event(run_id, 1, "metric.points", {"series": [
        {"name": "m", "steps": [0, 1, 2], "values": [1.0, 2.0, 3.0], "times": [1.0, 1.0, 1.0]}]})
    changed = _json({**json.loads(first), "ts": time.time() + 5, "payload": {"series": [
        {"name": "m", "steps": [0, 1, 2], "values": [7.0, 8.0, 9.0], "times": [2.0, 2.0, 2.0]}]}})

    async def post(*bodies: bytes) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.post(s.ingest_url + "/api/v1/events", data=b"[" + b",".join(bodies) + b"]",
                                    headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 202, await resp.text()

    await post(events.started(run_id, unique("conflict")), first)
    wait_for(lambda: len(point_steps(db, run_id, "m")) == 3, what="the first copy")
    await post(changed)  # seq 1 again, another ts and values: a conflict
    await post(first)  # the very same event again: a silent duplicate
    await post(events.event(run_id, 2, "run.status", {"status": "completed"}))
    wait_for(lambda: db.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,)).fetchone() == ("completed",),
             what="the run to complete")
    values = db.execute("SELECT value FROM metric_points WHERE run_id = %s AND name = 'm' ORDER BY step",
                        (run_id,)).fetchall()
    assert [v[0] for v in values] == [1.0, 2.0, 3.0]
    assert db.execute("SELECT count(*) FROM events WHERE run_id = %s AND seq = 1", (run_id,)).fetchone() == (1,)
    ((_, seq, item, reason),) = letters(db, run_id)
    assert (seq, item) == (1, -1) and reason.startswith("conflict: seq 1 of run") and "first copy is kept" in reason

    # Both copies in one batch: the first is kept, the second is the conflict.
    run2 = events.new_run_id()
    a = events.event(run2, 1, "tag.set", {"key": "k", "value": "a"})
    b = _json({**json.loads(a), "ts": json.loads(a)["ts"] + 1, "payload": {"key": "k", "value": "b"}})
    await post(events.started(run2, unique("conflict")), a, b, events.event(run2, 2, "run.status", {"status": "completed"}))
    wait_for(lambda: db.execute("SELECT status FROM runs WHERE run_id = %s", (run2,)).fetchone() == ("completed",),
             what="the second run to complete")
    assert db.execute("SELECT value FROM tags WHERE run_id = %s AND key = 'k'", (run2,)).fetchone() == ("a",)
    assert [r[1:3] for r in letters(db, run2)] == [(1, -1)]

    # Re-driving a conflict conflicts again: it stays pending, the first copy stays stored.
    done = cli(s, "retry", "--run", run2)
    assert done.returncode == 1 and "still failing: conflict: seq 1" in done.stdout, done.stdout + done.stderr
    assert [r[1:3] for r in letters(db, run2)] == [(1, -1)]
    assert db.execute("SELECT value FROM tags WHERE run_id = %s AND key = 'k'", (run2,)).fetchone() == ("a",)


async def test_a_status_before_the_start_is_not_lost(own: tuple[Settings, Any], db: Any) -> None:
    s, _ = own
    run_id = events.new_run_id()
    await produce_raw(s, run_id, [events.points(run_id, 1, "x", [0, 1]),
                                  events.event(run_id, 2, "run.status", {"status": "failed", "error": "boom"})])
    wait_for(lambda: db.execute("SELECT count(*) FROM events WHERE run_id = %s", (run_id,)).fetchone() == (2,),
             what="the early events archived")
    assert db.execute("SELECT 1 FROM runs WHERE run_id = %s", (run_id,)).fetchone() is None
    await produce_raw(s, run_id, [events.started(run_id, unique("late-start"))])
    row = wait_for(lambda: db.execute("SELECT status, last_seq, error, ended_at IS NOT NULL FROM runs WHERE run_id = %s",
                                      (run_id,)).fetchone(), what="the run row")
    assert row == ("failed", 2, "boom", True)
    detail = await api_json(s, f"/api/runs/{run_id}")
    assert (detail["status"], detail["last_seq"]) == ("failed", 2)
