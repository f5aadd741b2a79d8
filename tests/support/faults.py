"""A logging script under a fault, counted in the database (shared by the broker, gateway and
cluster fault tests): the workload's size and pace, the fault stacks' state dirs, and the
exactly-once check."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.faults import FaultStack, Workload, count, expected_sum, wait_stored, wait_until
from tests.support.names import REPO

POINTS = 100_000
RATE = 25_000.0  # points/s: about 4 s of logging, so the fault lands while the script logs
SCRIPT_TIMEOUT_S = 240


def state_dir(suffix: str) -> Path:
    """A state dir beside the session's (one per worktree), so `services down` can clean it."""
    base = Path(os.environ.get("RUNSTREAM_TEST_STATE_DIR", REPO / ".state" / "test-stack"))
    return base.with_name(f"{base.name}-{suffix}")


def assert_stored_once(stack: FaultStack, workload: Workload) -> None:
    report = workload.result(SCRIPT_TIMEOUT_S)
    assert report["returncode"] == 0 and report["error"] is None, report
    assert report["points"] == workload.planned
    counts, complete_at = wait_stored(stack, workload, timeout_s=120)
    assert complete_at is not None, f"stored {counts.distinct} of {workload.planned}"
    # Let anything still in flight land before checking for copies: the run's status is
    # written last by its `completed` event, which follows every point in the partition.
    wait_until(lambda: _completed(stack, workload), 60, "every run completed")
    final = count(stack.settings.database_url, workload.experiment)
    assert (final.rows, final.distinct) == (workload.planned, workload.planned), final
    assert final.value_sum == expected_sum(workload)


def _completed(stack: FaultStack, workload: Workload) -> bool:
    import psycopg

    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FROM runs "
                           "WHERE experiment = %s", (workload.experiment,)).fetchone()
    return row is not None and row[1] > 0 and row[0] == row[1]
