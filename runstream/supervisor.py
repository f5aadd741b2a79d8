"""Runs a submitted script and keeps its run up to date until it ends.

The script's stdout and stderr are read from pipes as it writes them and logged on the
run as ``log.lines`` events (the child gets ``PYTHONUNBUFFERED=1`` so ``print`` is not held
back); the script's own logging arrives through the relay (``runstream.relay``). When the
process exits: the relay is drained, files the script wrote under ``./outputs`` are
uploaded as ``outputs/<path>``, and the final status follows the exit code: ``completed``
on 0, ``failed`` with the command's exit code and the last lines of stderr otherwise,
``canceled`` if ``cancel()`` stopped it. A process that submitted a script waits for it
(and records its end) when it exits; interrupted (Ctrl-C) while waiting, it cancels it.
"""

from __future__ import annotations

import atexit
import codecs
import collections
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

import orjson

from runstream import context
from runstream.errors import RunstreamError
from runstream.relay import RelayServer
from runstream.run import Run
from runstream.schemas.limits import MAX_EVENT_BYTES, MAX_LOG_LINE_LENGTH, MAX_LOG_LINES_PER_EVENT
from runstream.sysmetrics import SystemMetrics

if TYPE_CHECKING:
    from runstream.script_run import ScriptRun

__all__ = ["Supervisor", "OUTPUTS_DIR"]

log = logging.getLogger("runstream.supervisor")

OUTPUTS_DIR = "outputs"
"""Files the script writes below ``<cwd>/outputs`` are uploaded when it ends."""
ERROR_TAIL_LINES = 40
"""Lines of stderr recorded as a failed run's error."""
DRAIN_TIMEOUT_S = 30.0
"""After the script exits: how long to wait for its output pipes and relay connections to
close (a process it left behind may hold them open)."""
_running: set[Supervisor] = set()
"""Scripts still running, waited for (or canceled) at exit."""
_READ_BYTES = 65_536
_LINES_BYTES = MAX_EVENT_BYTES // 2
"""Encoded size of the lines one ``log.lines`` event carries."""


class Supervisor:
    """One submitted script: its process, output readers, relay and final bookkeeping."""

    def __init__(self, run: ScriptRun, argv: list[str], cwd: Path, extra_env: dict[str, str],
                 workdir: Path) -> None:
        self.run, self.argv, self.cwd, self.workdir = run, argv, cwd, workdir
        self.relay = RelayServer(run, workdir)
        self.env = {**os.environ, **extra_env, **run._ws.settings.to_env(),
                    **context.context_env(run, str(self.relay.path)), "PYTHONUNBUFFERED": "1"}
        self._outputs_before = _outputs_state(cwd / OUTPUTS_DIR)
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=ERROR_TAIL_LINES)
        self._canceled = False
        self._done = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def start(self) -> None:
        try:
            self.process = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            self.relay.close(0)
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._done.set()
            Run.fail(self.run, f"could not start {self.argv[0]}: {exc}")
            raise RunstreamError(f"submit: could not start {self.argv[0]}: {exc}") from exc
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=("stdout", self.process.stdout), daemon=True,
                             name="runstream-stdout"),
            threading.Thread(target=self._pump, args=("stderr", self.process.stderr), daemon=True,
                             name="runstream-stderr"),
        ]
        for reader in self._readers:
            reader.start()
        _running.add(self)
        self.run._system_metrics = SystemMetrics.start_for(
            self.run, self.run._ws.settings.system_metrics_interval, self.process.pid, str(self.cwd))
        threading.Thread(target=self._watch, name=f"runstream-submitted-{self.run.id}", daemon=True).start()

    def cancel(self, grace_period_s: float) -> None:
        """SIGTERM to the script's process group, SIGKILL after the grace period; wait for the record."""
        self._canceled = True
        process = self.process
        if process is not None and process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(grace_period_s)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
        self._done.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the script has ended and its run's end is recorded."""
        return self._done.wait(timeout)

    # ---- threads ----------------------------------------------------------------
    def _pump(self, stream: str, pipe: IO[bytes]) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        fd, pending = pipe.fileno(), ""
        while chunk := os.read(fd, _READ_BYTES):
            text = pending + decoder.decode(chunk)
            *lines, pending = text.split("\n")
            while len(pending) > MAX_LOG_LINE_LENGTH:  # a long line without a newline yet
                lines.append(pending[:MAX_LOG_LINE_LENGTH])
                pending = pending[MAX_LOG_LINE_LENGTH:]
            if lines:
                self._log_lines(stream, lines)
        pending += decoder.decode(b"", final=True)
        if pending:
            self._log_lines(stream, [pending])
        pipe.close()

    def _log_lines(self, stream: str, raw: list[str]) -> None:
        now = time.time()
        lines: list[str] = []
        for line in raw:
            line = line.removesuffix("\r").replace("\x00", "\ufffd")
            lines.extend(line[i:i + MAX_LOG_LINE_LENGTH] for i in range(0, max(len(line), 1), MAX_LOG_LINE_LENGTH))
        if stream == "stderr":
            self._stderr_tail.extend(lines)
        batch: list[str] = []
        size = 0
        for line in lines:
            n = len(orjson.dumps(line)) + 20
            if batch and (len(batch) >= MAX_LOG_LINES_PER_EVENT or size + n > _LINES_BYTES):
                self.run._event("log.lines", {"stream": stream, "lines": batch, "times": [now] * len(batch)}, now)
                batch, size = [], 0
            batch.append(line)
            size += n
        if batch:
            self.run._event("log.lines", {"stream": stream, "lines": batch, "times": [now] * len(batch)}, now)

    def _watch(self) -> None:
        assert self.process is not None
        try:
            returncode = self.process.wait()
            if self.run._system_metrics is not None:  # no sample of a script that has ended
                self.run._system_metrics.stop()
                self.run._system_metrics = None
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            for reader in self._readers:
                reader.join(max(0.0, deadline - time.monotonic()))
            if not self.relay.close(max(0.0, deadline - time.monotonic())):
                log.warning("run %s: a process the script left behind still holds its relay", self.run.id)
            self._upload_outputs()
            self._record_end(returncode)
        except Exception:
            log.exception("run %s: recording the end of the submitted script failed", self.run.id)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            _running.discard(self)
            self._done.set()

    def _upload_outputs(self) -> None:
        root = self.cwd / OUTPUTS_DIR
        for rel, state in sorted(_outputs_state(root).items()):
            if self._outputs_before.get(rel) == state:
                continue  # there before the script started, untouched
            try:
                self.run.upload_file(f"{OUTPUTS_DIR}/{rel}", root / rel)
            except (OSError, RunstreamError) as exc:
                log.warning("run %s: could not upload %s/%s: %s", self.run.id, OUTPUTS_DIR, rel, exc)

    def _record_end(self, returncode: int) -> None:
        declared = self.relay.declared or {}
        if self._canceled:
            Run._status(self.run, "canceled")
        elif returncode != 0:
            Run.fail(self.run, self._error_text(returncode))
        elif declared.get("status") in ("failed", "canceled"):
            Run._status(self.run, declared["status"], declared.get("error"))
        else:
            Run._status(self.run, "completed")

    def _error_text(self, returncode: int) -> str:
        script = Path(self.argv[1]).name
        if returncode < 0:
            head = f"script {script} was killed by {signal.Signals(-returncode).name}"
        else:
            head = f"script {script} exited with code {returncode}"
        tail = "\n".join(self._stderr_tail)
        return f"{head}; last lines of stderr:\n{tail}" if tail else head


@atexit.register
def _wait_at_exit() -> None:
    """Registered after the sender's exit hook, so it runs first: the end is still delivered."""
    for supervisor in list(_running):
        log.warning("waiting for submitted run %s (pid %d) to end; Ctrl-C cancels it",
                    supervisor.run.id, supervisor.pid)
        try:
            supervisor.wait()
        except KeyboardInterrupt:
            from runstream.script_run import CANCEL_GRACE_S

            supervisor.cancel(CANCEL_GRACE_S)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)  # the script's session: it and what it started
    except ProcessLookupError:
        pass


def _outputs_state(root: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of the files below ``root``."""
    state: dict[str, tuple[int, int]] = {}
    if not root.is_dir():
        return state
    for path in root.rglob("*"):
        if path.is_file():
            st = path.stat()
            state[path.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return state
