"""Read-your-writes across processes (issue 9 item 3).

When ``run.complete()`` or ``run.flush()`` returns in one process, another process that
opens the run at once (``Run.get``, ``Workspace.get_run``, ``Run(experiment, id)``; no
sleep, no retry) sees every point, row and tag logged before, and the status. The wait
behind that is bounded by ``settings.materialize_timeout`` and never fails the caller:
an unreachable, hung or lagging query API costs at most the bound and one warning.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

import runstream.run as run_module
from runstream import Experiment, Run, Workspace
from runstream.api import ApiClient
from runstream.devstack.stack import free_ports
from runstream.errors import ApiUnreachable, RunstreamError
from runstream.reader import reader
from runstream.settings import Settings
from runstream.sinks import WorkspaceSink
from tests.support.names import unique
from tests.support.waiting import wait_for

POINTS = 20_000
"""Enough points that the processors are still materializing them when the acks are in."""

SCRIPT = """
import os, sys
from runstream import Experiment, Workspace

ws = Workspace()
run = Experiment(ws, sys.argv[1]).start_logging(name="writer")
for i in range({points}):
    run.log("loss", i * 0.5)
    run.log("acc", i)
for i in range(50):
    run.log_row("table", epoch=i, score=i * 2)
run.tag("phase", "done")
run.tag("marker")
child = run.child_run(name="child")
child.log_list("curve", list(range(1000)))
print(run.id, child.id, flush=True)
if sys.argv[2] == "complete":
    child.complete()
    run.complete()
    os._exit(0)  # no atexit flush: complete() alone must have made the run readable
run.flush()
print("flushed", flush=True)
sys.stdin.readline()  # stay alive (and the run running) until the reader is done
os._exit(0)
"""


@pytest.fixture(autouse=True)
def every_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees its own warning (they are otherwise at most one a minute)."""
    monkeypatch.setattr(run_module, "_last_warning", -math.inf)


def start_writer(services: Settings, tmp_path: Path, experiment: str, mode: str) -> subprocess.Popen[str]:
    script = tmp_path / "writer.py"
    script.write_text(SCRIPT.format(points=POINTS))
    env = {k: v for k, v in os.environ.items() if k not in Settings.env_names()}
    return subprocess.Popen([sys.executable, str(script), experiment, mode], env={**env, **services.to_env()},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp_path)


def assert_everything_visible(run: Run, child_id: str, status: str) -> None:
    """One read each, no retries: what the writer logged is there now."""
    assert run.get_status() == status
    metrics = run.get_metrics()
    assert metrics["loss"] == [i * 0.5 for i in range(POINTS)]
    assert metrics["acc"] == list(range(POINTS))
    assert metrics["table"] == {"epoch": list(range(50)), "score": [i * 2 for i in range(50)]}
    assert run.get_tags() == {"phase": "done", "marker": ""}
    children = run.get_children()
    assert [c.id for c in children] == [child_id]
    assert children[0].get_metrics() == {"curve": list(range(1000))}


def opened_three_ways(workspace: Workspace, experiment: str, run_id: str) -> Iterator[Run]:
    yield Run.get(workspace, run_id)
    yield workspace.get_run(run_id)
    yield Run(Experiment(workspace, experiment), run_id)


def test_a_run_completed_in_another_process_is_readable_at_once(workspace: Workspace, tmp_path: Path) -> None:
    experiment = unique("ryw")
    writer = start_writer(workspace.settings, tmp_path, experiment, "complete")
    out, _ = writer.communicate(timeout=120)
    assert writer.returncode == 0, out
    run_id, child_id = out.split()
    for run in opened_three_ways(workspace, experiment, run_id):
        assert run.experiment.name == experiment and run.id == run_id
        assert_everything_visible(run, child_id, "completed")
    assert Run.get(workspace, run_id).name == "writer"


def test_a_flushed_run_is_readable_at_once_while_its_process_still_runs(workspace: Workspace,
                                                                        tmp_path: Path) -> None:
    experiment = unique("ryw-flush")
    writer = start_writer(workspace.settings, tmp_path, experiment, "flush")
    try:
        assert writer.stdout is not None and writer.stdin is not None
        run_id, child_id = writer.stdout.readline().split()
        assert writer.stdout.readline() == "flushed\n"
        for run in opened_three_ways(workspace, experiment, run_id):
            assert_everything_visible(run, child_id, "running")
        writer.stdin.write("done\n")
        writer.stdin.close()
        assert writer.wait(60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)


def test_opening_an_unknown_or_malformed_run_id_is_a_clear_error(workspace: Workspace) -> None:
    missing = "01890000-0000-7000-8000-000000000000"
    with pytest.raises(RunstreamError, match=f"run '{missing}'.*not found"):
        Run.get(workspace, missing)
    with pytest.raises(RunstreamError, match="run 'not-a-run-id'.*run_id"):
        workspace.get_run("not-a-run-id")


# ---- the wait is bounded and never fails the caller ----------------------------------------

@pytest.fixture()
def silent_port() -> Iterator[tuple[int, socket.socket]]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1], listener


def completed_elsewhere(workspace: Workspace, experiment: str, run_id: str) -> None:
    """The events were delivered all the same: the real API shows the run completed."""
    run = Run(Experiment(workspace, experiment), run_id)
    wait_for(lambda: _status(run) == "completed", what=f"run {run_id} completed")
    assert run.get_metrics() == {"x": [0, 1, 2]}


def _status(run: Run) -> str | None:
    try:
        return run.get_status()
    except RunstreamError:
        return None


def log_and_complete(settings: Settings, experiment: str) -> tuple[str, float]:
    ws = Workspace(settings=settings)
    try:
        run = Experiment(ws, experiment).start_logging()
        run.log_list("x", [0, 1, 2])
        started = time.monotonic()
        run.complete()
        return run.id, time.monotonic() - started
    finally:
        ws.close()


def rw_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "runstream.run" and r.levelno == logging.WARNING]


@pytest.mark.parametrize("api", ["refused", "silent"])
def test_complete_returns_within_the_bound_when_the_api_is_unreachable(
        workspace: Workspace, silent_port: tuple[int, socket.socket], caplog: pytest.LogCaptureFixture,
        api: str) -> None:
    port = free_ports(1)[0] if api == "refused" else silent_port[0]
    bound = 2.0
    settings = replace(workspace.settings, api_url=f"http://127.0.0.1:{port}", materialize_timeout=bound)
    experiment = unique("ryw-down")
    with caplog.at_level(logging.WARNING, logger="runstream.run"):
        run_id, took = log_and_complete(settings, experiment)
    assert took < bound + 5  # the bound holds (plus the acks' and the sender's own time)
    (warning,) = rw_warnings(caplog)
    assert run_id in warning and f"127.0.0.1:{port}" in warning and "materialize_timeout=2" in warning
    completed_elsewhere(workspace, experiment, run_id)


def test_complete_returns_within_the_bound_when_nothing_materializes(
        workspace: Workspace, caplog: pytest.LogCaptureFixture) -> None:
    # A topic no processor reads: Kafka acknowledges, the API answers, the run never appears.
    topic = unique("ryw-unread")
    bound = 2.0
    settings = replace(workspace.settings, topic=topic, materialize_timeout=bound)
    with caplog.at_level(logging.WARNING, logger="runstream.run"):
        run_id, took = log_and_complete(settings, unique("ryw-lag"))
    assert took >= bound and took < bound + 5
    (warning,) = rw_warnings(caplog)
    assert run_id in warning and "TimeoutError" in warning


def test_no_wait_when_the_sink_reports_events_left_undelivered(
        workspace: Workspace, silent_port: tuple[int, socket.socket], caplog: pytest.LogCaptureFixture) -> None:
    port, listener = silent_port

    class Outboxed(WorkspaceSink):
        """Delivers, but reports (as a sink with a disk outbox would) that some events were kept back."""

        def flush(self, timeout: float | None = None) -> bool:
            super().flush(timeout)
            return False

    ws = Workspace(settings=replace(workspace.settings, api_url=f"http://127.0.0.1:{port}", materialize_timeout=30))
    try:
        experiment = Experiment(ws, unique("ryw-outbox"))
        run = Run._start(experiment, name=None, parent=None, kind="interactive", properties={}, sink=Outboxed(ws))
        run.log("x", 1)
        with caplog.at_level(logging.WARNING, logger="runstream.run"):
            run.complete()
    finally:
        ws.close()
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):  # the API was never asked
        listener.accept()
    assert rw_warnings(caplog) == []


def test_a_zero_bound_skips_the_wait(workspace: Workspace, silent_port: tuple[int, socket.socket]) -> None:
    port, listener = silent_port
    experiment = unique("ryw-zero")
    run_id, _ = log_and_complete(replace(workspace.settings, api_url=f"http://127.0.0.1:{port}",
                                         materialize_timeout=0), experiment)
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):  # the API was never asked
        listener.accept()
    completed_elsewhere(workspace, experiment, run_id)


def test_the_bound_is_a_setting_read_from_the_environment() -> None:
    assert Settings.from_env({"RUNSTREAM_MATERIALIZE_TIMEOUT": "2.5"}).materialize_timeout == 2.5
    assert Settings().materialize_timeout == 10.0
    with pytest.raises(ValueError, match="RUNSTREAM_MATERIALIZE_TIMEOUT='soon' is not a number"):
        Settings.from_env({"RUNSTREAM_MATERIALIZE_TIMEOUT": "soon"})


def test_a_read_of_an_unreachable_api_raises_the_sdks_error(workspace: Workspace) -> None:
    """Nothing listens at the API's address: reads raise ApiUnreachable (a RunstreamError naming
    the address), not an aiohttp class the caller never imported."""
    port = free_ports(1)[0]
    ws = Workspace(settings=replace(workspace.settings, api_url=f"http://127.0.0.1:{port}"))
    with pytest.raises(ApiUnreachable, match=f"127.0.0.1:{port}") as caught:
        ws.get_run(str(uuid.uuid4()))
    assert isinstance(caught.value, RunstreamError)


def test_a_read_that_times_out_is_cancelled_on_the_loop(silent_port: tuple[int, socket.socket]) -> None:
    """The caller gives up after its timeout and the request ends with it: the silent server
    sees the connection closed, instead of a request left running on the reader's loop."""
    port, listener = silent_port
    api = ApiClient(reader(), f"http://127.0.0.1:{port}")

    async def hang(session: aiohttp.ClientSession) -> bytes:
        async with session.get(f"http://127.0.0.1:{port}/api/runs") as resp:
            return await resp.read()

    with pytest.raises(TimeoutError):
        api._call(hang, timeout=0.5)
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(10)
        received = b""
        while chunk := conn.recv(65536):  # the request, then EOF once the client closed it
            received += chunk
    assert received.startswith(b"GET /api/runs ")
