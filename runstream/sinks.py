"""Where a run's logging calls go: the contract between :class:`~runstream.run.Run` and its outlet.

A run hands every queued item (a point, a row or a whole event, see ``runstream.sender``)
to its sink and never talks to a transport itself. Three sinks exist:

* :class:`WorkspaceSink` (the default): the process's background sender, which assigns
  ``seq`` and ships to Kafka or the gateway.
* ``runstream.relay.RelayClient``: inside a submitted script, the submitting process's
  relay (that process alone assigns the submitted run's ``seq``).
* ``runstream.spool.SpoolSink``: an offline run's local spool, uploaded later by
  ``runstream sync``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

if TYPE_CHECKING:
    from runstream.run import Run
    from runstream.workspace import Workspace

__all__ = ["Sink", "WorkspaceSink"]


class Sink(Protocol):
    online: bool
    """True if the run's events become readable through the query API as they are flushed."""

    def put(self, run: Run, item: tuple[Any, ...]) -> None:
        """Queue one item of ``run``; never waits on the network."""

    def flush(self, timeout: float | None = None) -> bool | None:
        """Return when every item queued so far is durably delivered (acknowledged or on disk).
        False means some were kept back undelivered (e.g. in a disk outbox during an outage):
        ``Run.flush`` then does not wait for the query API to show them."""

    def store_blob(self, run: Run, stream: BinaryIO) -> tuple[str, int]:
        """Store an artifact's bytes where readers of ``run`` will find them; ``(sha256, size)``."""

    def status(self, run: Run, payload: dict[str, Any]) -> None:
        """Record a terminal status change of ``run`` (``{"status": ..., "error": ...}``)."""

    def child_sink(self) -> Sink:
        """The sink for child runs started from a run of this sink."""


class WorkspaceSink:
    """The workspace's background sender (looked up on every use: it may be restarted)."""

    online = True

    def __init__(self, workspace: Workspace) -> None:
        self._ws = workspace

    def put(self, run: Run, item: tuple[Any, ...]) -> None:
        self._ws._sender.put(run, item)

    def flush(self, timeout: float | None = None) -> bool:
        return self._ws._sender.flush(timeout)

    def store_blob(self, run: Run, stream: BinaryIO) -> tuple[str, int]:
        return self._ws._store_blob(stream, run.id)

    def status(self, run: Run, payload: dict[str, Any]) -> None:
        run._event("run.status", payload)

    def child_sink(self) -> Sink:
        return self
