"""The background sender: logging calls never wait on the network.

User threads append small tuples to a deque. One daemon thread runs an asyncio loop that
drains the deque, folds consecutive points (and rows) of a run into one event, stamps
each event with the run's next ``seq`` (gap-free: seq is assigned only here), encodes it
with orjson and hands it to the transport. :meth:`Sender.flush` waits until everything
queued before it is acknowledged. Failed sends are retried with backoff, in order.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import itertools
import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Coroutine, TypeVar

import aiohttp
import orjson
from uuid6 import uuid7

from runstream.errors import DeliveryError
from runstream.settings import Settings
from runstream.transport import HttpTransport, KafkaTransport, Transport
from schemas.events import SCHEMA_VERSION
from schemas.limits import MAX_EVENT_BYTES, MAX_POINTS_PER_EVENT, MAX_ROWS_PER_EVENT

if TYPE_CHECKING:
    from runstream.run import Run

log = logging.getLogger("runstream.sender")
T = TypeVar("T")

POINT, ROW, EVENT, FLUSH = 0, 1, 2, 3
LINGER_S = 0.005
"""Shortest time between two drains of the queue (points logged meanwhile share events)."""
_BYTE_BUDGET = MAX_EVENT_BYTES * 3 // 4  # leave room for the envelope and estimate error
_POINT_OVERHEAD = 40  # bytes a point costs in JSON besides a string value's own length


class Sender:
    """One per process and settings; shared by every run of a workspace."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._idle = False
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._inflight: list[asyncio.Future[None]] = []
        self._running = False  # True while the thread serves; read without a lock by sender_for
        self._thread = threading.Thread(target=self._main, name="runstream-sender", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise DeliveryError(f"could not start the {settings.transport} transport: {self._startup_error}")
        self._running = True
        _live.add(self)

    # ---- called from user threads -------------------------------------------------
    def put(self, run: "Run", item: tuple[Any, ...]) -> None:
        self._queue.append((run, item))
        if self._idle:
            self._idle = False
            self._loop.call_soon_threadsafe(self._wake.set)

    def flush(self, timeout: float | None = None) -> None:
        """Return when every event queued so far is acknowledged; raise DeliveryError if not."""
        done = threading.Event()
        box: dict[str, BaseException] = {}
        self.put(None, (FLUSH, done, box))  # type: ignore[arg-type]
        if not done.wait(timeout):
            raise DeliveryError(f"events not acknowledged within {timeout} s (last error: {self._last_error})")
        if "error" in box:
            raise DeliveryError(str(box["error"])) from box["error"]

    def call(self, fn: Callable[[aiohttp.ClientSession], Coroutine[Any, Any, T]], timeout: float | None = 60) -> T:
        """Run ``fn(session)`` on the sender's loop (API reads, uploads) and return its result."""
        return asyncio.run_coroutine_threadsafe(fn(self.session), self._loop).result(timeout)

    def close(self, timeout: float = 30) -> None:
        self._running = False
        if not self._thread.is_alive():
            return
        try:
            self.flush(timeout)
        finally:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            _live.discard(self)

    # ---- the sender thread --------------------------------------------------------
    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._last_error: BaseException | None = None
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to the constructor's caller
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        self._pump_task = self._loop.create_task(self._pump())
        try:
            self._loop.run_forever()
        finally:
            self._running = False

    async def _start(self) -> None:
        self._wake = asyncio.Event()
        self._enqueue_lock = asyncio.Lock()
        self.session = aiohttp.ClientSession(json_serialize=lambda o: orjson.dumps(o).decode())
        self.transport: Transport = (
            HttpTransport(self.settings, self.session) if self.settings.transport == "http"
            else KafkaTransport(self.settings)
        )
        await self.transport.start()

    async def _shutdown(self) -> None:
        self._pump_task.cancel()
        await asyncio.gather(self._pump_task, return_exceptions=True)
        await self.transport.close()
        await self.session.close()

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        last_drain = 0.0
        while True:
            self._idle = True
            if not self._queue:
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
                    # cancellation that stops this task when the event is set at the same
                    # moment (the sender's close then waited for a task that never ended).
                    async with asyncio.timeout(0.5):
                        await self._wake.wait()
                except TimeoutError:
                    continue
                self._wake.clear()
                await asyncio.sleep(LINGER_S)  # linger: let a burst of log calls fold into one event
            elif (wait := last_drain + LINGER_S - loop.time()) > 0:
                # A queue that never empties is drained at most once per LINGER_S too, so a
                # stream of log calls folds into a few large events, not many small ones.
                await asyncio.sleep(wait)
            self._idle = False
            last_drain = loop.time()
            queue = self._queue
            drained = list(map(collections.deque.popleft, itertools.repeat(queue, len(queue))))
            encoded, flushes = fold(drained)
            if encoded:
                await self._send(encoded)
            for _, done, box in flushes:
                try:
                    await asyncio.gather(*self._inflight)
                except Exception as exc:  # a batch the gateway rejected as invalid
                    box["error"] = exc
                finally:
                    self._inflight.clear()
                done.set()

    async def _send(self, encoded: list[tuple[str, bytes]]) -> None:
        """Send, retrying in order with backoff until acknowledged (errors are kept for flush)."""

        async def attempt() -> None:
            delay = 0.2
            while True:
                try:
                    # Hand the events over in the order they were encoded (seq order): the
                    # producer's enqueue can wait for buffer space, and without the lock a
                    # later batch would overtake this one on the way into Kafka.
                    async with self._enqueue_lock:
                        acked = await self.transport.send(encoded)
                    await acked
                    return
                except DeliveryError:
                    raise
                except Exception as exc:
                    self._last_error = exc
                    log.warning("sending %d events failed (%s); retrying in %.1f s", len(encoded), exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

        self._inflight = [f for f in self._inflight if not f.done() or f.exception() is not None]
        self._inflight.append(asyncio.ensure_future(attempt()))


def encode_items(items: list[tuple["Run", tuple[Any, ...]]]) -> list[tuple[str, bytes]]:
    """Fold queued items into encoded events, run by run, keeping each run's order."""
    return fold(items)[0]


def fold(items: list[tuple["Run", tuple[Any, ...]]]) -> tuple[list[tuple[str, bytes]], list[tuple[Any, ...]]]:
    """:func:`encode_items` in one pass over a drained queue, which also holds the FLUSH
    items (queued with run None): returns (encoded events, FLUSH items in order)."""
    by_run: dict["Run | None", list[tuple[Any, ...]]] = {}
    for run, item in items:
        run_items = by_run.get(run)
        if run_items is None:
            run_items = by_run[run] = []
        run_items.append(item)
    flushes = by_run.pop(None, [])
    out: list[tuple[str, bytes]] = []
    for owner, owner_items in by_run.items():
        _Folder(owner, out).feed(owner_items)  # type: ignore[arg-type]  # None was popped above
    return out, flushes


class _Folder:
    """Turns one run's items into events: consecutive points → one metric.points event."""

    def __init__(self, run: "Run", out: list[tuple[str, bytes]]) -> None:
        self.run, self.out = run, out
        self.series: dict[str, list[Any]] = {}
        self.points = self.bytes = 0
        self.rows: list[Any] = []
        self.rows_name: str | None = None
        self.rows_desc: str | None = None
        self.rows_t = 0.0

    def feed(self, items: list[tuple[Any, ...]]) -> None:
        for item in items:
            kind = item[0]
            if kind == POINT:
                self._flush_rows()
                _, name, step, value, t, description = item
                s = self.series.get(name)
                if s is None:
                    s = self.series[name] = [[], [], [], description, t]
                s[0].append(step)
                s[1].append(value)
                s[2].append(t)
                self.points += 1
                self.bytes += _POINT_OVERHEAD + (len(value) if value.__class__ is str else 0)
                if self.points >= MAX_POINTS_PER_EVENT or self.bytes >= _BYTE_BUDGET:
                    self._flush_points()
            elif kind == ROW:
                self._flush_points()
                _, name, row, size, t, description = item
                if name != self.rows_name or len(self.rows) >= MAX_ROWS_PER_EVENT or self.bytes + size >= _BYTE_BUDGET:
                    self._flush_rows()
                    self.rows_name, self.rows_desc, self.rows_t = name, description, t
                self.rows.append(row)
                self.bytes += size
            else:
                self._flush_points()
                self._flush_rows()
                _, type_, payload, t = item
                self._emit(type_, payload, t)
        self._flush_points()
        self._flush_rows()

    def _flush_points(self) -> None:
        if not self.series:
            return
        series = []
        for name, (steps, values, times, description, _) in self.series.items():
            s: dict[str, Any] = {"name": name, "steps": steps, "values": values, "times": times}
            if description:
                s["description"] = description
            series.append(s)
        first_t = min(s[4] for s in self.series.values())
        self._emit("metric.points", {"series": series}, first_t)
        self.series, self.points, self.bytes = {}, 0, 0

    def _flush_rows(self) -> None:
        if not self.rows:
            return
        payload: dict[str, Any] = {"name": self.rows_name, "rows": self.rows}
        if self.rows_desc:
            payload["description"] = self.rows_desc
        self._emit("metric.rows", payload, self.rows_t)
        self.rows, self.rows_name, self.bytes = [], None, 0

    def _emit(self, type_: str, payload: dict[str, Any], t: float) -> None:
        run = self.run
        seq = run._next_seq()
        event = {"type": type_, "v": SCHEMA_VERSION, "event_id": str(uuid7()), "run_id": run.id,
                 "seq": seq, "ts": t, "payload": payload}
        self.out.append((run.id, orjson.dumps(event)))


_live: "weakref.WeakSet[Sender]" = weakref.WeakSet()
_shared: dict[Settings, Sender] = {}
_shared_lock = threading.Lock()
_last: tuple[Settings, Sender] | None = None


def sender_for(settings: Settings) -> Sender:
    """The process's sender for these settings, started on first use.

    Called on every log call: the same settings object as last time gets its running
    sender without hashing the settings, taking the lock or asking the thread."""
    global _last
    last = _last
    if last is not None and last[0] is settings and last[1]._running:
        return last[1]
    with _shared_lock:
        sender = _shared.get(settings)
        if sender is None or not sender._thread.is_alive():
            sender = _shared[settings] = Sender(settings)
        _last = (settings, sender)
        return sender


def close_sender(settings: Settings, timeout: float = 30) -> None:
    """Flush and stop the sender for ``settings`` if one runs; the next use starts a new one."""
    with _shared_lock:
        sender = _shared.pop(settings, None)
    if sender is not None:
        sender.close(timeout)


@atexit.register
def _flush_at_exit() -> None:
    """A script that forgets run.complete() still delivers what it logged."""
    for sender in list(_live):
        try:
            sender.close(timeout=30)
        except Exception as exc:  # pragma: no cover - reported, not raised, at exit
            log.error("runstream: events may be undelivered at exit: %s", exc)


def _forget_after_fork() -> None:
    global _last
    _shared.clear()
    _live.clear()
    _last = None


os.register_at_fork(after_in_child=_forget_after_fork)
