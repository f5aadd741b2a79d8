"""A real TimescaleDB-enabled PostgreSQL for tests, without Docker, apt or a build.

`start_pglite()` runs `node tests/timescale/server.mjs`: PGlite (PostgreSQL 17.5
compiled to WASM, in memory) with TimescaleDB 2.23 created, served over the wire
protocol on 127.0.0.1 by pglite-socket (patched there; see its comments).

    from tests.support.pglite import start_pglite

    with start_pglite() as pg:             # fresh, empty database; stopped on exit
        with psycopg.connect(pg.dsn) as conn:
            ...

What to know (found by experiment, see tests/test_pglite_harness.py):
- ONE client at a time. PGlite is a single backend: a second connection is queued,
  not refused, until the first closes (after 60 s queued it is dropped). Close one
  connection before opening the next; an asyncpg pool must be
  create_pool(dsn, min_size=1, max_size=1).
- Each new connection starts clean (open transaction rolled back, DISCARD ALL), so
  prepared statements work as usual in both drivers: no statement_cache_size=0 or
  prepare_threshold=None needed.
- COPY ... FROM STDIN (asyncpg copy_records_to_table / copy_to_table, psycopg
  cursor.copy FROM STDIN) is refused with FeatureNotSupported (it would crash the
  WASM backend); use INSERT / executemany / unnest(). COPY ... TO STDOUT works.
- Startup parameters are ignored: database is always template1, TimeZone is GMT,
  asyncpg server_settings have no effect; use SET after connecting.
- No background workers: policies are registered but never run by themselves;
  `CALL run_job(<job_id>)` runs one. Nothing is kept after stop().
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

HARNESS_DIR = Path(__file__).resolve().parent.parent / "timescale"


class PgliteError(RuntimeError):
    """npm or the server failed; the message carries their output."""


def node_available() -> bool:
    """True when both `node` and `npm` are on PATH."""
    return shutil.which("node") is not None and shutil.which("npm") is not None


def ensure_node_modules() -> None:
    """`npm ci` in tests/timescale unless node_modules is as new as package-lock.json."""
    lock = HARNESS_DIR / "package-lock.json"
    installed = HARNESS_DIR / "node_modules" / ".package-lock.json"  # npm writes it last
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise PgliteError("npm is not on PATH: cannot install tests/timescale/node_modules")
    proc = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=HARNESS_DIR,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise PgliteError(
            f"`npm ci` in {HARNESS_DIR} failed (exit {proc.returncode}):\n"
            f"{proc.stdout}{proc.stderr}"
        )


class PgliteServer:
    """A running server: `.port`, `.dsn`, `.stop()`; a context manager that stops it."""

    def __init__(self, process: subprocess.Popen[str], port: int, stderr: IO[str]) -> None:
        self.process = process
        self.port = port
        self._stderr = stderr  # a temporary file: the server's stderr

    @property
    def dsn(self) -> str:
        """libpq URL, for psycopg.connect and asyncpg.connect/create_pool alike."""
        return f"postgresql://postgres:postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def stderr(self) -> str:
        """What the server wrote to stderr so far (errors, crash traces)."""
        if self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to `timeout` s, then SIGKILL. Safe to call twice."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self._stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> PgliteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PgliteServer(port={self.port}, pid={self.process.pid})"


def start_pglite(port: int | None = None, *, timeout: float = 60.0) -> PgliteServer:
    """Start a fresh server on `port` (None: a free port chosen by the OS); wait for it.

    Runs `npm ci` first if node_modules is missing or stale. Raises PgliteError if npm
    fails, or if the server exits or is not ready within `timeout` seconds (its stderr
    is in the message). Startup takes about 3 s on an idle machine, up to ~8 s when busy.
    """
    ensure_node_modules()
    node = shutil.which("node")
    if node is None:
        raise PgliteError("node is not on PATH")
    stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
    process = subprocess.Popen(
        [node, "server.mjs", str(port or 0), "--exit-with-stdin"],
        cwd=HARNESS_DIR,
        stdin=subprocess.PIPE,  # the server exits when this closes: it dies with us
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    server = PgliteServer(process, 0, stderr)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # read stdout to EOF, so the pipe never fills
        assert process.stdout is not None
        try:
            for line in process.stdout:
                lines.put(line)
        except ValueError:  # closed by stop()
            pass
        lines.put(None)

    threading.Thread(target=pump, name="pglite-stdout", daemon=True).start()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        if line is None:
            break  # stdout closed: the server exited
        if line.startswith("READY "):
            server.port = int(line.split()[1])
            return server
    problem = "exited" if process.poll() is not None else f"was not ready within {timeout:g} s"
    log = server.stderr()
    server.stop()
    raise PgliteError(f"pglite server ({HARNESS_DIR / 'server.mjs'}) {problem}; stderr:\n{log}")


@contextlib.contextmanager
def migrated_timescale() -> Iterator[PgliteServer]:
    """A fresh server with every runstream migration applied, the TimescaleDB ones included."""
    from runstream.schemas.migrate import migrate

    with start_pglite() as server:
        report = migrate(server.dsn)
        assert report.timescaledb and report.pending == [], report
        yield server


@pytest.fixture(scope="module")
def pg() -> Iterator[PgliteServer]:
    """A migrated TimescaleDB server (:func:`migrated_timescale`) per test module."""
    with migrated_timescale() as server:
        yield server
