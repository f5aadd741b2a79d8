"""The one builder of hand-made events, for tests that write below the SDK (to Kafka,
to the archive, or straight into the decoder and materializer)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from uuid6 import uuid7

from runstream.schemas import events as contract


def body(run_id: str, seq: int, type_: str, payload: dict[str, Any], **over: Any) -> dict[str, Any]:
    """An event's JSON object: a fresh event id and the current time unless ``over`` sets
    them (or any other field)."""
    return {"type": type_, "v": 1, "event_id": str(uuid7()), "run_id": run_id, "seq": seq,
            "ts": time.time(), "payload": payload, **over}


def event(run_id: str, seq: int, type_: str, payload: dict[str, Any], **over: Any) -> bytes:
    """:func:`body`, encoded as the wire carries it."""
    return orjson.dumps(body(run_id, seq, type_, payload, **over))


def decoded(run_id: str, seq: int, type_: str, payload: dict[str, Any], **over: Any) -> contract.Event:
    """:func:`event`, through the contract's decoder (what the processors see)."""
    return contract.decode(event(run_id, seq, type_, payload, **over))


def started(run_id: str, experiment: str, seq: int = 0) -> bytes:
    return event(run_id, seq, "run.started", {"experiment": experiment})


def series(name: str, steps: list[int], values: list[Any], times: list[float]) -> dict[str, Any]:
    """A ``metric.points`` payload of one series."""
    return {"series": [{"name": name, "steps": steps, "values": values, "times": times}]}


def points(run_id: str, seq: int, name: str, steps: list[int], values: list[Any] | None = None) -> bytes:
    """A ``metric.points`` event of one series logged now (values: the steps as floats unless given)."""
    now = time.time()
    return event(run_id, seq, "metric.points",
                 series(name, steps, [float(s) for s in steps] if values is None else values, [now] * len(steps)))


def new_run_id() -> str:
    return str(uuid7())


async def produce(settings: Any, messages: list[tuple[str, bytes]]) -> None:
    """Produce ``(run_id, encoded event)`` pairs straight to the settings' topic, in order."""
    from runstream.ingest.topic import ensure_topic
    from runstream.producer import EventProducer

    security = settings.kafka_security()
    await ensure_topic(settings.kafka_bootstrap, settings.topic, settings.partitions, security=security)
    producer = EventProducer(settings.kafka_bootstrap, settings.topic, security=security)
    await producer.start()
    try:
        await producer.send_batch(messages)
    finally:
        await producer.stop()


async def produce_runs(settings: Any, experiment: str, run_ids: list[str], seqs: range,
                       points_per_event: int) -> None:
    """Produce the events ``seqs`` of each run straight to Kafka, interleaved across runs:
    seq 0 is run.started, seq n > 0 carries ``points_per_event`` points (steps continue)."""
    batch = []
    for seq in seqs:
        first = (seq - 1) * points_per_event
        batch += [(r, started(r, experiment) if seq == 0 else
                   points(r, seq, "x", list(range(first, first + points_per_event)))) for r in run_ids]
    await produce(settings, batch)


def assert_exactly_once(db: Any, topic: str, group: str, run_ids: list[str], events_per_run: int,
                        points_per_event: int) -> None:
    """Every point once, every summary exact, every run at its last seq, offsets at the end."""
    total_points = events_per_run * points_per_event
    rows = db.execute(
        "SELECT count(*), count(DISTINCT (run_id, step)) FROM metric_points WHERE run_id = ANY(%s::uuid[]) AND name = 'x'",
        (run_ids,)).fetchone()
    assert rows == (len(run_ids) * total_points,) * 2
    per_run = db.execute(
        "SELECT count, last_step, last_seq FROM metric_summaries WHERE run_id = ANY(%s::uuid[]) AND name = 'x'",
        (run_ids,)).fetchall()
    assert len(per_run) == len(run_ids)
    assert set(per_run) == {(total_points, total_points - 1, events_per_run)}
    runs = db.execute("SELECT count(*) FROM runs WHERE run_id = ANY(%s::uuid[]) AND last_seq = %s",
                      (run_ids, events_per_run)).fetchone()
    assert runs[0] == len(run_ids)
    offsets = db.execute('SELECT sum("offset" + 1) FROM consumer_offsets WHERE group_id = %s AND topic = %s',
                         (group, topic)).fetchone()
    assert offsets[0] == len(run_ids) * (events_per_run + 1)


def archived(db: Any, topic: str) -> int:
    """Events of ``topic`` in the archive (``db``: a psycopg connection)."""
    return int(db.execute("SELECT count(*) FROM events WHERE topic = %s", (topic,)).fetchone()[0])
