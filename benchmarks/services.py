"""The services a benchmark measures: Kafka + PostgreSQL (devstack), one or more
processor processes and one query-API process, started and stopped by the harness."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from runstream import devstack
from runstream.devstack.stack import free_ports
from runstream.schemas.migrate import migrate
from runstream.settings import Settings

REPO = Path(__file__).resolve().parent.parent
TRACE_FILE = "processor-trace.jsonl"
"""The processors' per-batch trace (``processors.trace``) in the state directory."""


@dataclass
class Services:
    """A running benchmark stack; :func:`stop` ends every process it started."""

    state_dir: Path
    settings: Settings
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    profilers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.settings.to_env(), "PYTHONPATH": str(REPO)}

    def spawn(self, name: str, args: list[str], **settings: str) -> subprocess.Popen[bytes]:
        """Start ``python args...`` with the stack's settings (``settings``: RUNSTREAM_*
        overrides by field name); output to ``<state>/<name>.log``."""
        log = (self.state_dir / f"{name}.log").open("ab")
        env = {**self.env(), **{f"RUNSTREAM_{k.upper()}": v for k, v in settings.items()}}
        process = subprocess.Popen([sys.executable, *args], env=env, cwd=REPO,
                                   stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.processes[name] = process
        return process

    def profile(self, name: str, pid: int, out_dir: Path, seconds: float) -> None:
        """Attach py-spy to ``pid`` for ``seconds`` (raw collapsed stacks in ``out_dir``)."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        out_dir.mkdir(parents=True, exist_ok=True)
        self.profilers.append(subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "200",
             "--format", "raw", "--nonblocking", "-o", str(out_dir / f"{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=(self.state_dir / f"py-spy-{name}.log").open("ab")))

    def wait_profilers(self) -> None:
        for p in self.profilers:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        self.profilers.clear()


def start(state_dir: Path, *, processors: int = 1, partitions: int = 8) -> Services:
    """A fresh stack in ``state_dir`` with ``processors`` processor processes and an API."""
    state_dir = Path(state_dir).resolve()
    info = devstack.up(state_dir, fresh=True)
    api_port, gateway_port = free_ports(2)
    settings = Settings.from_env(
        {},
        kafka_bootstrap=info.kafka_bootstrap, database_url=info.database_url,
        api_database_url=info.api_database_url,
        blob_dir=str(state_dir / "blobs"), spool_dir=str(state_dir / "spool"), partitions=partitions,
        api_port=api_port, gateway_port=gateway_port,
        api_url=f"http://127.0.0.1:{api_port}", ingest_url=f"http://127.0.0.1:{gateway_port}",
        auth="off",  # every listener is on loopback: the pipeline is measured, not the token checks
        processor_trace=str(state_dir / TRACE_FILE),  # one line per batch: the latency probe's timeline
    )
    migrate(settings.database_url)
    services = Services(state_dir, settings)
    try:
        for i in range(processors):
            services.spawn(f"processor-{i}", ["-m", "runstream.cli", "processor"])
        services.spawn("api", ["-m", "runstream.cli", "api"])
        wait_http(f"{settings.api_url}/api/ready", services.processes["api"])
    except BaseException:
        stop(services)
        raise
    return services


def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)  # poll interval while the service starts
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


def stop(services: Services) -> None:
    """Stop every process the harness started, then Kafka and PostgreSQL."""
    services.wait_profilers()
    for process in services.processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in services.processes.values():
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    devstack.down(services.state_dir)
