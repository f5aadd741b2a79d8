"""Fault injection on a real stack: start one, run the chaos workload, break a service, count.

Used by ``runstream chaos`` (benchmarks/chaos.py) and the fault tests. A :class:`FaultStack`
is a devstack (one Kafka broker or a cluster, PostgreSQL) in its own state dir plus the
processes the harness owns: one processor and, when asked, one gateway (``runstream
processor`` / ``runstream gateway`` subprocesses, killable on their own). Loss and
duplication are counted in the database (per (run, name, step), and the value sum), never
taken from the SDK's word.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg

from benchmarks.services import REPO, Services, wait_http
from benchmarks.services import stop as stop_services
from runstream import devstack
from runstream.devstack import postgres
from runstream.devstack.stack import free_ports
from runstream.schemas.migrate import migrate
from runstream.settings import Settings

POLL_S = 0.05


def wait_until(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``cond`` until truthy (returned) or raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if value := cond():
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)


@dataclass
class FaultStack(Services):
    """A running stack the harness may break; :meth:`close` stops everything it started."""

    brokers: int = 1

    def start_processor(self) -> subprocess.Popen[bytes]:
        return self.spawn("processor", ["-m", "runstream.cli", "processor"])

    def start_gateway(self) -> subprocess.Popen[bytes]:
        process = self.spawn("gateway", ["-m", "runstream.cli", "gateway"])
        wait_http(f"{self.settings.ingest_url}/api/v1/health", process)
        return process

    def kill(self, name: str) -> None:
        """SIGKILL one of the harness's processes and reap it."""
        process = self.processes[name]
        process.kill()
        process.wait(10)

    def broker_pid(self, node_id: int = 1) -> int:
        pid = next(b["pid"] for b in devstack.broker_status(self.state_dir) if b["node_id"] == node_id)
        if pid is None:
            raise RuntimeError(f"broker {node_id} of {self.state_dir} is not running")
        return int(pid)

    def kill_broker(self, node_id: int = 1) -> None:
        """SIGKILL broker ``node_id`` and wait until it is gone."""
        pid = self.broker_pid(node_id)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), 30, f"broker pid {pid} to die")

    def restart_broker(self, node_id: int = 1) -> None:
        devstack.start_broker(self.state_dir, node_id)

    def pg_data(self) -> Path:
        record = orjson.loads((self.state_dir / "stack.json").read_bytes())
        return Path(record["postgres"]["root"]) / "data"

    def stop_postgres(self, mode: str) -> None:
        """``pg_ctl stop -m fast|immediate``."""
        if not postgres.stop(postgres.find_bin_dir(), self.pg_data(), mode=mode):
            raise RuntimeError(f"pg_ctl stop -m {mode} failed")

    def start_postgres(self) -> None:
        root = self.pg_data().parent
        postgres.start(postgres.find_bin_dir(), root, int(self.settings.database_url.rsplit(":", 1)[1].split("/")[0]),
                       60)

    def close(self) -> None:
        stop_services(self)


def start_stack(state_dir: Path, *, brokers: int = 1, gateway: bool = True, partitions: int = 4) -> FaultStack:
    """A fresh stack in ``state_dir`` with one processor (and a gateway)."""
    state_dir = Path(state_dir).resolve()
    info = devstack.up(state_dir, fresh=True, brokers=brokers)
    api_port, gateway_port = free_ports(2)
    settings = Settings.from_env(
        {}, kafka_bootstrap=info.kafka_bootstrap, database_url=info.database_url,
        api_database_url=info.api_database_url,
        blob_dir=str(state_dir / "blobs"), spool_dir=str(state_dir / "spool"), partitions=partitions,
        api_port=api_port, gateway_port=gateway_port, metrics_port=0,
        api_url=f"http://127.0.0.1:{api_port}", ingest_url=f"http://127.0.0.1:{gateway_port}",
        auth="off")  # every listener is on loopback; the faults are the subject, not the tokens
    stack = FaultStack(state_dir, settings, brokers=brokers)
    try:
        migrate(settings.database_url)
        stack.start_processor()
        if gateway:
            stack.start_gateway()
        warm_up(stack)
    except BaseException:
        stack.close()
        raise
    return stack


def warm_up(stack: FaultStack, timeout_s: float = 120) -> None:
    """Log a few points end to end and wait until they are stored, so a fault never lands
    while the processor is still starting (that would measure its start-up, not the fault)."""
    workload = Workload(stack, f"warm-up-{os.getpid()}-{time.monotonic_ns()}", points=4, runs=1, names=1)
    report = workload.result(timeout_s)
    if report["returncode"] != 0:
        raise RuntimeError(f"the warm-up script failed: {report}")
    if wait_stored(stack, workload, timeout_s)[1] is None:
        raise RuntimeError(f"the processor did not store the warm-up points in {timeout_s:.0f} s "
                           f"(see {stack.state_dir / 'processor.log'})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Workload:
    """One ``benchmarks.chaos_worker`` process: a script logging a known series."""

    def __init__(self, stack: FaultStack, experiment: str, *, points: int, runs: int = 2, names: int = 2,
                 rate: float = 0.0, transport: str = "kafka", **settings: str) -> None:
        self.experiment = experiment
        self.transport = transport
        self.steps = points // (runs * names)
        self.planned = self.steps * runs * names
        self.progress_file = stack.state_dir / f"progress-{experiment}"
        self.progress_file.unlink(missing_ok=True)
        env = {**stack.env(), "RUNSTREAM_TRANSPORT": transport,
               **{f"RUNSTREAM_{k.upper()}": v for k, v in settings.items()}}
        self.log = (stack.state_dir / f"worker-{experiment}.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.chaos_worker", experiment, "--runs", str(runs), "--points",
             str(points), "--names", str(names), "--rate", str(rate), "--progress", str(self.progress_file)],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=self.log)
        self.started = time.monotonic()

    def logged(self) -> int:
        """Points the script has logged so far (0 before its first progress note)."""
        try:
            return int(self.progress_file.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def wait_logged(self, points: int, timeout_s: float = 120) -> None:
        """Return once the script has logged ``points`` (raise if it exited first)."""
        def reached() -> bool:
            if self.process.poll() is not None and self.logged() < points:
                raise RuntimeError(f"the workload exited ({self.process.returncode}) after {self.logged()} points")
            return self.logged() >= points
        wait_until(reached, timeout_s, f"{points} points logged")

    def result(self, timeout_s: float) -> dict[str, Any]:
        """The script's JSON report plus ``returncode`` and ``wall_s``; a script still
        running after ``timeout_s`` is killed and reported as ``hung``."""
        try:
            stdout, _ = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, _ = self.process.communicate()
            return {"returncode": None, "hung": True, "error": f"still running after {timeout_s:.0f} s",
                    "wall_s": time.monotonic() - self.started}
        finally:
            self.log.close()
        lines = stdout.decode(errors="replace").strip().splitlines()
        report = orjson.loads(lines[-1]) if lines and lines[-1].startswith("{") else {"error": "no report"}
        return {**report, "returncode": self.process.returncode, "hung": False,
                "wall_s": time.monotonic() - self.started}


@dataclass(frozen=True)
class Counts:
    """What the database holds for an experiment's runs."""

    rows: int
    distinct: int
    value_sum: float

    def lost(self, planned: int) -> int:
        return planned - self.distinct

    @property
    def duplicated(self) -> int:
        return self.rows - self.distinct


def count(database_url: str, experiment: str) -> Counts:
    """Metric rows of ``experiment``'s runs: all, distinct (run, name, step), the value sum."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (m.run_id, m.name, m.step)), coalesce(sum(m.value), 0) "
            "FROM metric_points m JOIN runs r ON r.run_id = m.run_id WHERE r.experiment = %s",
            (experiment,)).fetchone()
    assert row is not None
    return Counts(int(row[0]), int(row[1]), float(row[2]))


def expected_sum(workload: Workload) -> float:
    """The value sum of a complete workload: every run and name logs 0 .. steps-1."""
    return float(workload.planned // workload.steps * workload.steps * (workload.steps - 1) // 2) \
        if workload.steps else 0.0


def wait_stored(stack: FaultStack, workload: Workload, timeout_s: float,
                stall_s: float | None = None) -> tuple[Counts, float | None]:
    """Wait until every planned point is stored (or ``timeout_s`` passes, or with
    ``stall_s`` the count has not moved for that long); returns the last counts and when
    they became complete (monotonic), None if they never did. A count the database cannot
    answer right now (it may be the fault) is retried."""
    now = time.monotonic()
    deadline, moved_at = now + timeout_s, now
    last = Counts(0, 0, 0.0)
    while True:
        try:
            current = count(stack.settings.database_url, workload.experiment)
            if current != last:
                last, moved_at = current, time.monotonic()
        except psycopg.OperationalError:
            pass
        if last.distinct >= workload.planned:
            return last, time.monotonic()
        now = time.monotonic()
        if now > deadline or (stall_s is not None and now - moved_at > stall_s):
            return last, None
        time.sleep(0.2)  # poll interval of the database count
