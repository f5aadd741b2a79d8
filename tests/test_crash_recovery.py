"""A processor killed with SIGKILL mid-stream and restarted: exact counts, no duplicates, no gaps."""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

from runstream.settings import Settings
from tests.support import events
from tests.support.events import archived
from tests.support.names import unique
from tests.support.services import start_serve, stop
from tests.support.waiting import wait_for

RUNS, EVENTS_PER_RUN, POINTS_PER_EVENT = 40, 500, 4


async def test_sigkilled_processor_resumes_exactly_where_its_transaction_ended(
        settings: Settings, db: Any, tmp_path: Path) -> None:
    name = unique("crash")
    isolated = replace(settings, topic=name, processor_group=name, processor_max_records=200)
    run_ids = [events.new_run_id() for _ in range(RUNS)]
    await events.produce_runs(isolated, name, run_ids, range(EVENTS_PER_RUN + 1), POINTS_PER_EVENT)
    total = RUNS * (EVENTS_PER_RUN + 1)

    first = start_serve(isolated, "--no-api", "--no-gateway", log=tmp_path / "p1.log")
    try:
        at_kill = wait_for(lambda: (n := archived(db, name)) >= total // 5 and n, timeout=120,
                           what="a fifth of the events")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        stop(first)
    assert at_kill < total, "the processor finished before it was killed; the test needs more events"

    second = start_serve(isolated, "--no-api", "--no-gateway", log=tmp_path / "p2.log")
    try:
        wait_for(lambda: archived(db, name) == total, timeout=180, what="every event after the restart")
    finally:
        stop(second)
    events.assert_exactly_once(db, name, name, run_ids, EVENTS_PER_RUN, POINTS_PER_EVENT)
