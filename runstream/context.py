"""``Run.get_context()``: the submitted run inside a submitted script, else an offline run.

``experiment.submit`` starts the script with the ``RUNSTREAM_*`` settings of its workspace
and one more variable, :data:`CONTEXT_ENV`, a JSON object naming the run (``run_id``,
``experiment``) and the Unix socket of the submitting process's relay (``relay``). It is
a hand-over between two runstream processes, not a setting, so it is read here and not
by ``runstream.settings``.

Without it, the context is an *offline* run (kind ``offline``, experiment
:data:`OFFLINE_EXPERIMENT`) whose events go to the local spool (``settings.spool_dir``)
with no Kafka, gateway or API needed; ``runstream sync`` uploads them later. Its status
follows the process: ``failed`` with the traceback on an uncaught exception, else
``completed`` at exit (unless the script ended it itself).

One context per process (both calls of ``get_context`` return the same run, so steps
continue); a forked child gets its own.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import orjson

from runstream.errors import RunstreamError
from runstream.settings import ClientSettings

if TYPE_CHECKING:
    from runstream.run import Run

__all__ = ["get_context", "context_env", "CONTEXT_ENV", "OFFLINE_EXPERIMENT"]

log = logging.getLogger("runstream.context")

CONTEXT_ENV = "RUNSTREAM_RUN_CONTEXT"
"""Set by ``submit`` for the script: ``{"run_id": ..., "experiment": ..., "relay": <socket path>}``."""
OFFLINE_EXPERIMENT = "offline"
"""The experiment of offline runs."""

_context: Run | None = None
_lock = threading.Lock()


def context_env(run: Run, relay_path: str) -> dict[str, str]:
    """The variable that makes ``Run.get_context()`` in a child process return ``run``."""
    value = {"run_id": run.id, "experiment": run.experiment.name, "relay": relay_path}
    return {CONTEXT_ENV: orjson.dumps(value).decode()}


def get_context(allow_offline: bool = True) -> Run:
    global _context
    with _lock:
        if _context is None:
            raw = os.environ.get(CONTEXT_ENV)
            if raw:
                _context = _submitted(raw)
            elif allow_offline:
                _context = _offline()
            else:
                raise RunstreamError("Run.get_context(allow_offline=False): this process was not started by "
                                     f"experiment.submit ({CONTEXT_ENV} is not set)")
        return _context


def _submitted(raw: str) -> Run:
    from runstream.experiment import Experiment
    from runstream.relay import RelayClient
    from runstream.run import Run
    from runstream.workspace import Workspace

    try:
        value = orjson.loads(raw)
        run_id, experiment, relay = str(value["run_id"]), str(value["experiment"]), str(value["relay"])
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise RunstreamError(f"{CONTEXT_ENV} is not a submitted run's context ({exc}): {raw[:200]!r}") from None
    workspace = Workspace(settings=ClientSettings.from_env())
    try:
        client = RelayClient(relay, workspace)
    except OSError as exc:
        raise RunstreamError(f"the process that submitted run {run_id} does not answer at {relay} ({exc}); "
                             f"outside a submitted script, unset {CONTEXT_ENV}") from None
    run = Run(Experiment(workspace, experiment), run_id, _writable=True, _sink=client)
    client.run = run
    _stop_cleanly_on_sigterm()
    return run


def _stop_cleanly_on_sigterm() -> None:
    """``cancel()`` sends SIGTERM: exit through SystemExit so what was logged is relayed first."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # the script handles it

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def _offline() -> Run:
    from runstream.experiment import Experiment
    from runstream.run import Run
    from runstream.spool import SpoolSink
    from runstream.workspace import Workspace

    settings = ClientSettings.from_env()
    workspace = Workspace(settings=settings)
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else None
    run = Run._start(Experiment(workspace, OFFLINE_EXPERIMENT), name=script or None, parent=None, kind="offline",
                     properties={"spool_dir": settings.spool_dir}, sink=SpoolSink(settings.spool_dir))
    previous = sys.excepthook

    def failed(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if not run._ended:
            run.fail("".join(traceback.format_exception(kind, exc, tb)))
        previous(kind, exc, tb)

    def at_exit() -> None:
        try:
            if not run._ended:
                run.complete()
            else:
                run.flush()
        except Exception as exc:  # pragma: no cover - reported, not raised, at exit
            log.error("runstream: the offline run %s may be incomplete in the spool: %s", run.id, exc)

    sys.excepthook = failed
    atexit.register(at_exit)
    return run


def _forget_after_fork() -> None:
    global _context
    _context = None


os.register_at_fork(after_in_child=_forget_after_fork)
