"""Broker and gateway faults under a logging script, on a stack of this module's own.

A real single-broker Kafka and PostgreSQL in their own state dir (so killing the broker
does not disturb the session's stack), one ``runstream processor`` and one ``runstream
gateway`` subprocess. The script is ``benchmarks.chaos_worker`` (the SDK, a known series
of points, paced so the fault lands mid-stream); what counts is the database: every
(run, name, step) stored exactly once and the value sum complete.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.faults import FaultStack, Workload, count, expected_sum, start_stack, wait_stored, wait_until
from tests.support.names import REPO, unique

POINTS = 100_000
RATE = 25_000.0  # points/s: about 4 s of logging, so the fault lands while the script logs
SCRIPT_TIMEOUT_S = 240


def state_dir(suffix: str) -> Path:
    """A state dir beside the session's (one per worktree), so `services down` can clean it."""
    base = Path(os.environ.get("RUNSTREAM_TEST_STATE_DIR", REPO / ".state" / "test-stack"))
    return base.with_name(f"{base.name}-{suffix}")


@pytest.fixture(scope="module")
def fault_stack() -> Iterator[FaultStack]:
    stack = start_stack(state_dir("faults"), brokers=1)
    try:
        yield stack
    finally:
        stack.close()


def assert_exactly_once(stack: FaultStack, workload: Workload) -> None:
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


def test_broker_sigkill_and_restart_mid_stream_stores_every_point_once(fault_stack: FaultStack) -> None:
    workload = Workload(fault_stack, unique("broker-kill"), points=POINTS, rate=RATE)
    workload.wait_logged(POINTS // 5)
    fault_stack.kill_broker()
    try:
        logged_at_kill = workload.logged()
        # The script carries on logging while the broker is gone (its calls do not block).
        workload.wait_logged(min(POINTS, logged_at_kill + POINTS // 10))
    finally:
        fault_stack.restart_broker()
    assert_exactly_once(fault_stack, workload)


def test_broker_sigstop_then_sigcont_stores_every_point_once(fault_stack: FaultStack) -> None:
    workload = Workload(fault_stack, unique("broker-stop"), points=POINTS, rate=RATE / 2)
    workload.wait_logged(POINTS // 5)
    pid = fault_stack.broker_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        # Frozen for as long as the script takes to log another 40% (about 3 s).
        workload.wait_logged(POINTS * 3 // 5)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert_exactly_once(fault_stack, workload)


def test_gateway_sigkill_and_restart_delivers_http_transport_points_once(fault_stack: FaultStack) -> None:
    workload = Workload(fault_stack, unique("gateway-kill"), points=POINTS, rate=RATE, transport="http")
    workload.wait_logged(POINTS // 5)
    fault_stack.kill("gateway")
    try:
        workload.wait_logged(POINTS * 2 // 5)
    finally:
        fault_stack.start_gateway()
    assert_exactly_once(fault_stack, workload)
