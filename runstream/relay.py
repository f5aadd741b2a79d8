"""The submitted run's relay: a script's logging calls travel to the process that submitted it.

A run's ``seq`` is assigned by exactly one sender. For a submitted run that sender is in
the submitting process, which also writes the run's ``run.started``, its snapshot, the
script's captured output and its final status. The script's process therefore does not
number the run's events: ``Run.get_context()`` there returns a run whose sink is a
:class:`RelayClient`, which ships the raw queued items (points, rows, events: exactly
what a run hands its sender) over a Unix socket to the :class:`RelayServer`, which queues
them on the submitted run as if they had been logged in that process. Output lines and
the script's metrics thus share one gap-free seq space, and the submitting process, which
outlives the script, can always write the terminal status after the script's last event.

Frames are a 4-byte big-endian length and an orjson object:

* ``{"items": [[kind, ...], ...]}`` script → submitter: queue these items on the run;
* ``{"flush": n}`` script → submitter; answered ``{"flushed": n, "seq": s, "error": e}``
  once everything before it is acknowledged by Kafka (``s`` is the run's next seq, for
  read-your-writes);
* ``{"status": st, "error": e}`` script → submitter: the script called
  ``complete``/``fail``/``cancel``; the submitter applies it when the script exits.

Child runs a script starts are its own (new run ids) and go straight to Kafka from it.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import logging
import os
import select
import socket
import struct
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from runstream.errors import DeliveryError
from runstream.sender import FLUSH
from runstream.sinks import WorkspaceSink

if TYPE_CHECKING:
    from runstream.run import Run
    from runstream.sinks import Sink
    from runstream.workspace import Workspace

__all__ = ["RelayServer", "RelayClient"]

log = logging.getLogger("runstream.relay")

_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 256 * 1024 * 1024
"""Largest frame either side accepts (a drained burst of calls)."""
ITEMS_PER_FRAME = 10_000
"""Items the client packs into one frame."""


def send_frame(sock: socket.socket, message: Any) -> None:
    data = orjson.dumps(message)
    sock.sendall(_HEADER.pack(len(data)) + data)


def recv_frame(sock: socket.socket) -> Any:
    """The next message, or None at end of stream."""
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"relay frame of {size} bytes exceeds MAX_FRAME_BYTES={MAX_FRAME_BYTES}")
    body = _recv_exact(sock, size)
    if body is None:
        raise ConnectionError("relay stream ended inside a frame")
    return orjson.loads(body)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            if left == size:
                return None
            raise ConnectionError("relay stream ended inside a frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class RelayServer:
    """The submitting side: accepts the script's connections and queues what they send on ``run``."""

    def __init__(self, run: Run, directory: Path) -> None:
        self.run = run
        self.path = directory / "relay.sock"
        self.declared: dict[str, Any] | None = None
        """The last status the script set itself (``{"status": ..., "error": ...}``)."""
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self._listener.listen(16)
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._conns: list[tuple[socket.socket, threading.Thread]] = []
        self._acceptor = threading.Thread(target=self._accept, name="runstream-relay-accept", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            ready, _, _ = select.select([self._listener, self._wake_r], [], [])
            if self._wake_r in ready:  # stop: take what is already queued, then close
                self._listener.setblocking(False)
                while True:
                    try:
                        conn, _ = self._listener.accept()
                    except (BlockingIOError, OSError):
                        break
                    self._serve_in_thread(conn)
                self._listener.close()
                return
            conn, _ = self._listener.accept()
            self._serve_in_thread(conn)

    def _serve_in_thread(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        thread = threading.Thread(target=self._serve, args=(conn,), name="runstream-relay", daemon=True)
        with self._lock:
            self._conns.append((conn, thread))
        thread.start()

    def _serve(self, conn: socket.socket) -> None:
        run, put = self.run, self.run._sink.put
        try:
            while (message := recv_frame(conn)) is not None:
                if "items" in message:
                    for item in message["items"]:
                        put(run, tuple(item))
                elif "flush" in message:
                    error = None
                    try:
                        run._flush()  # the script waits for the API itself (Run._await_readable)
                    except Exception as exc:
                        error = str(exc)
                    send_frame(conn, {"flushed": message["flush"], "seq": run._seq, "error": error})
                elif "status" in message:
                    self.declared = {"status": message["status"], "error": message.get("error")}
        except (OSError, ValueError) as exc:
            log.warning("relay of run %s: connection dropped (%s)", run.id, exc)
        finally:
            conn.close()

    def close(self, timeout: float) -> bool:
        """Stop accepting, then wait up to ``timeout`` s for open connections to end.
        False if some connection (a process the script left behind) was still open."""
        self._wake_w.send(b"x")
        self._acceptor.join(timeout)
        with self._lock:
            conns = list(self._conns)
        deadline = time.monotonic() + timeout
        clean = True
        for conn, thread in conns:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                clean = False
                conn.close()
        self._wake_r.close()
        self._wake_w.close()
        return clean


class RelayClient:
    """The script's side: a sink that forwards the submitted run's items to the submitter."""

    online = True

    def __init__(self, path: str, workspace: Workspace) -> None:
        self.run: Run | None = None
        self._ws = workspace
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake = threading.Event()
        self._idle = False
        self._ids = itertools.count()
        self._waiting: dict[int, tuple[threading.Event, dict[str, Any]]] = {}
        self._error: BaseException | None = None
        self._writer = threading.Thread(target=self._write, name="runstream-relay-writer", daemon=True)
        self._reader = threading.Thread(target=self._read, name="runstream-relay-reader", daemon=True)
        self._writer.start()
        self._reader.start()
        atexit.register(self.close)

    # ---- Sink -------------------------------------------------------------------
    def put(self, run: Run, item: tuple[Any, ...]) -> None:
        self._queue.append(item)
        if self._idle:
            self._idle = False
            self._wake.set()

    def flush(self, timeout: float | None = None) -> None:
        """Return when the submitter has every item so far acknowledged by Kafka."""
        if self._error is not None:
            raise DeliveryError(f"the submitting process's relay failed: {self._error}")
        done, box = threading.Event(), dict[str, Any]()
        request = next(self._ids)
        self._waiting[request] = (done, box)
        self._queue.append((FLUSH, request))
        self._wake.set()
        if not done.wait(timeout):
            raise DeliveryError(f"the submitting process did not acknowledge within {timeout} s")
        if "error" in box:
            raise DeliveryError(str(box["error"]))
        if self.run is not None:
            self.run._seq = box["seq"]

    def store_blob(self, run: Run, stream: BinaryIO) -> tuple[str, int]:
        return self._ws._store_blob(stream, run.id)  # the gateway down: into this process's outbox

    def status(self, run: Run, payload: dict[str, Any]) -> None:
        self._queue.append((FLUSH, None, payload))
        self._wake.set()

    def child_sink(self) -> Sink:
        return WorkspaceSink(self._ws)

    def close(self) -> None:
        """Deliver what is queued (at exit too), then disconnect."""
        if self._error is None and self._writer.is_alive():
            try:
                self.flush(timeout=60)
            except DeliveryError as exc:
                log.error("runstream: events of the submitted run may be lost: %s", exc)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    # ---- threads ----------------------------------------------------------------
    def _write(self) -> None:
        try:
            while True:
                self._idle = True
                if not self._queue:
                    self._wake.wait()
                    self._wake.clear()
                self._idle = False
                items: list[tuple[Any, ...]] = []
                while self._queue:
                    item = self._queue.popleft()
                    if item[0] != FLUSH:
                        items.append(item)
                        if len(items) >= ITEMS_PER_FRAME:
                            send_frame(self._sock, {"items": items})
                            items = []
                        continue
                    if items:
                        send_frame(self._sock, {"items": items})
                        items = []
                    if item[1] is None:
                        send_frame(self._sock, item[2])  # a declared status
                    else:
                        send_frame(self._sock, {"flush": item[1]})
                if items:
                    send_frame(self._sock, {"items": items})
        except OSError as exc:
            self._fail(exc)

    def _read(self) -> None:
        try:
            while (message := recv_frame(self._sock)) is not None:
                done, box = self._waiting.pop(message["flushed"])
                if message.get("error"):
                    box["error"] = message["error"]
                box["seq"] = message["seq"]
                done.set()
            self._fail(ConnectionError("the submitting process closed the relay"))
        except (OSError, ValueError) as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        for done, box in list(self._waiting.values()):
            box.setdefault("error", f"relay to the submitting process lost: {exc}")
            done.set()
