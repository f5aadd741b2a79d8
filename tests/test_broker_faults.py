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

import pytest

from benchmarks.faults import FaultStack, Workload, start_stack
from tests.support.faults import POINTS, RATE, assert_stored_once, state_dir
from tests.support.names import unique


@pytest.fixture(scope="module")
def fault_stack() -> Iterator[FaultStack]:
    stack = start_stack(state_dir("faults"), brokers=1)
    try:
        yield stack
    finally:
        stack.close()


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
    assert_stored_once(fault_stack, workload)


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
    assert_stored_once(fault_stack, workload)


def test_gateway_sigkill_and_restart_delivers_http_transport_points_once(fault_stack: FaultStack) -> None:
    workload = Workload(fault_stack, unique("gateway-kill"), points=POINTS, rate=RATE, transport="http")
    workload.wait_logged(POINTS // 5)
    fault_stack.kill("gateway")
    try:
        workload.wait_logged(POINTS * 2 // 5)
    finally:
        fault_stack.start_gateway()
    assert_stored_once(fault_stack, workload)
