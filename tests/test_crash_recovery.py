"""A processor killed with SIGKILL mid-stream and restarted: exact counts, no duplicates, no gaps."""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

from ingest.producer import EventProducer, ensure_topic
from runstream.settings import Settings
from tests.conftest import start_serve, stop, unique, wait_for
from tests.support import events

RUNS, EVENTS_PER_RUN, POINTS_PER_EVENT = 40, 250, 4


async def produce_all(settings: Settings, experiment: str) -> list[str]:
    await ensure_topic(settings.kafka_bootstrap, settings.topic, settings.partitions)
    producer = EventProducer(settings.kafka_bootstrap, settings.topic)
    await producer.start()
    run_ids = [events.new_run_id() for _ in range(RUNS)]
    try:
        batch = [(r, events.started(r, experiment)) for r in run_ids]
        for seq in range(1, EVENTS_PER_RUN + 1):
            first = (seq - 1) * POINTS_PER_EVENT
            batch += [(r, events.points(r, seq, "x", list(range(first, first + POINTS_PER_EVENT)))) for r in run_ids]
        await producer.send_batch(batch)
    finally:
        await producer.stop()
    return run_ids


async def test_sigkilled_processor_resumes_exactly_where_its_transaction_ended(
        settings: Settings, db: Any, tmp_path: Path) -> None:
    name = unique("crash")
    isolated = replace(settings, topic=name, processor_group=name, processor_max_records=200)
    run_ids = await produce_all(isolated, name)
    total = RUNS * (EVENTS_PER_RUN + 1)

    def archived() -> int:
        return db.execute("SELECT count(*) FROM events WHERE topic = %s", (name,)).fetchone()[0]

    first = start_serve(isolated, "--no-api", "--no-gateway", log=tmp_path / "p1.log")
    try:
        at_kill = wait_for(lambda: (n := archived()) >= total // 5 and n, timeout=120, what="a fifth of the events")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        stop(first)
    assert at_kill < total, "the processor finished before it was killed; the test needs more events"

    second = start_serve(isolated, "--no-api", "--no-gateway", log=tmp_path / "p2.log")
    try:
        wait_for(lambda: archived() == total, timeout=180, what="every event after the restart")
    finally:
        stop(second)

    rows = db.execute(
        "SELECT count(*), count(DISTINCT (run_id, step)) FROM metric_points WHERE run_id = ANY(%s::uuid[]) AND name = 'x'",
        (run_ids,)).fetchone()
    assert rows == (RUNS * EVENTS_PER_RUN * POINTS_PER_EVENT,) * 2
    per_run = db.execute(
        "SELECT count, last_step, last_seq FROM metric_summaries WHERE run_id = ANY(%s::uuid[]) AND name = 'x'",
        (run_ids,)).fetchall()
    assert sorted(set(per_run)) == [(EVENTS_PER_RUN * POINTS_PER_EVENT, EVENTS_PER_RUN * POINTS_PER_EVENT - 1, EVENTS_PER_RUN)]
    runs = db.execute("SELECT count(*) FROM runs WHERE run_id = ANY(%s::uuid[]) AND last_seq = %s",
                      (run_ids, EVENTS_PER_RUN)).fetchone()
    assert runs[0] == RUNS
    offsets = db.execute('SELECT sum("offset" + 1) FROM consumer_offsets WHERE group_id = %s', (name,)).fetchone()
    assert offsets[0] == total
