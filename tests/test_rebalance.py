"""Processors scale out as one consumer group: a member joining and another leaving while
events stream in rebalance the partitions without losing or duplicating anything."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from runstream.settings import Settings
from tests.support import events
from tests.support.events import archived
from tests.support.names import unique
from tests.support.services import start_serve, stop
from tests.support.waiting import wait_for

RUNS, EVENTS_PER_RUN, POINTS_PER_EVENT = 40, 400, 2
HALF = EVENTS_PER_RUN // 2


async def test_a_member_joining_and_one_leaving_lose_and_duplicate_nothing(
        settings: Settings, db: Any, tmp_path: Path) -> None:
    name = unique("rebalance")
    isolated = replace(settings, topic=name, processor_group=name, processor_max_records=100, partitions=4)
    run_ids = [events.new_run_id() for _ in range(RUNS)]
    await events.produce_runs(isolated, name, run_ids, range(HALF + 1), POINTS_PER_EVENT)

    first = start_serve(isolated, "--no-api", "--no-gateway", log=tmp_path / "p1.log")
    second = None
    try:
        wait_for(lambda: archived(db, name) == RUNS * (HALF + 1), timeout=120, what="the first half")
        second = start_serve(isolated, "--no-api", "--no-gateway", log=tmp_path / "p2.log")
        wait_for(lambda: _assigned(tmp_path / "p2.log"), timeout=120, what="the second member's assignment")
        await events.produce_runs(isolated, name, run_ids, range(HALF + 1, EVENTS_PER_RUN + 1), POINTS_PER_EVENT)
        stop(first)  # SIGTERM: leaves the group while the second half streams; the other member takes over
        wait_for(lambda: archived(db, name) == RUNS * (EVENTS_PER_RUN + 1), timeout=180, what="every event")
    finally:
        stop(first)
        if second is not None:
            stop(second)
    events.assert_exactly_once(db, name, name, run_ids, EVENTS_PER_RUN, POINTS_PER_EVENT)


def _assigned(log: Path) -> bool:
    """The member logged its partition assignment (aiokafka's own log line)."""
    return log.exists() and "Setting newly assigned partitions" in log.read_text()
