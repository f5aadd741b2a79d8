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
import functools
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import orjson
from uuid6 import uuid7

from runstream.errors import DeliveryError
from runstream.reader import wait_cancelling
from runstream.schemas.events import SCHEMA_VERSION
from runstream.schemas.limits import MAX_EVENT_BYTES, MAX_POINTS_PER_EVENT, MAX_ROWS_PER_EVENT
from runstream.settings import ClientSettings
from runstream.transport import HttpTransport, KafkaTransport, Transport, is_outage

if TYPE_CHECKING:
    from runstream.outbox import RunOutbox
    from runstream.run import Run

log = logging.getLogger("runstream.sender")
T = TypeVar("T")

POINT, ROW, EVENT, FLUSH = 0, 1, 2, 3
QUEUED_CALL_BYTES = 200
"""About what one queued logging call costs in memory (its tuples, value, time and slot)."""


def budget_shares(memory_budget_bytes: int) -> tuple[int, int]:
    """``memory_budget_bytes`` bounds all the SDK holds in memory, so it is shared out: a
    quarter for logging calls waiting to be folded (as a number of calls, past which
    :meth:`Sender.put` waits) and a quarter for encoded events waiting for their
    acknowledgement (the Kafka client holds a copy of those it was handed: another quarter);
    the rest is slack for the client's buffers and the allocator. Returns (calls, bytes)."""
    quarter = memory_budget_bytes // 4
    return max(1_000, quarter // QUEUED_CALL_BYTES), quarter
LINGER_S = 0.005
"""Shortest time between two drains of the queue (points logged meanwhile share events)."""
IDLE_LINGER_S = 0.0
"""The wait before draining a queue that was empty (0: the next turn of the sender's loop)."""
BUSY_LINGER_S = 0.02
"""Shortest time between two drains while the script logs many points (adaptive batching)."""
BUSY_ITEMS = 128
BUSY_WINDOW_S = 0.05
"""The sender counts as busy while the drains of the last BUSY_WINDOW_S carried at least
BUSY_ITEMS logging calls (2,560 calls/s): its next drain waits BUSY_LINGER_S after the
last, so a steady stream folds into fewer, larger events (each costs the SDK a fold, an
encoding and a produce request with its acknowledgement, and downstream a fetch and part
of a transaction), while a sparse stream (a live chart's point every few ms) still goes
out at once. A rate over a window, not a count per drain: a loop paced in 10 ms slices
splits each slice over drains, and at 256 calls per drain a slice of 187 was never busy
(15-18 µs of SDK CPU per point instead of 9-11; docs/PERFORMANCE.md)."""
_BYTE_BUDGET = MAX_EVENT_BYTES * 3 // 4  # leave room for the envelope and estimate error
_POINT_OVERHEAD = 40  # bytes a point costs in JSON besides a string value's own length
WARN_EVERY_S = 60.0
"""While the service stays unreachable, the outage warning is repeated at most this often."""


class _Batch:
    """Encoded events kept in memory, in order, until the transport acknowledges them."""

    __slots__ = ("no", "events", "size", "acked")

    def __init__(self, no: int, events: list[tuple[str, bytes]], size: int) -> None:
        self.no, self.events, self.size, self.acked = no, events, size, False


class _Waiter:
    """A flush: done when batches up to ``no`` are acked and the outbox is delivered up to ``sizes``."""

    __slots__ = ("done", "box", "no", "sizes")

    def __init__(self, done: threading.Event, box: dict[str, BaseException], no: int,
                 sizes: dict[RunOutbox, int]) -> None:
        self.done, self.box, self.no, self.sizes = done, box, no, sizes


class Sender:
    """One per process and settings; shared by every run of a workspace.

    It never raises or blocks because Kafka or the gateway is unreachable: the transport
    starts in the background (retried with backoff), encoded events wait in memory up to
    ``settings.memory_budget_bytes`` and beyond it, or while the service is unreachable, in
    the disk outbox (``runstream.outbox``, the offline spool's format in
    ``settings.spool_dir``), which a background task delivers in order when it is back."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._max_queued, self._event_budget = budget_shares(settings.memory_budget_bytes)
        self._idle = False
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._running = False  # True while the thread serves; read without a lock by sender_for
        self._last_error: BaseException | None = None
        self._down = False  # the transport failed and has not delivered since: new events go to disk
        self._gave_up = False  # a flush timed out while down: later flushes only make sure of the disk
        self.trace: Callable[[str, list[tuple[str, bytes]]], None] | None = None
        """Off (None) unless set: called on the sender thread with ``("handed", events)`` as a
        batch of encoded ``(run_id, event)`` goes to the transport and ``("acked", events)``
        when it is acknowledged (the benchmark's per-stage latency timeline). Keep it cheap."""
        self._thread = threading.Thread(target=self._main, name="runstream-sender", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:  # no network is involved: a bug, not an outage
            raise DeliveryError(f"could not start the sender: {self._startup_error}")
        self._running = True
        _live.add(self)

    # ---- called from user threads -------------------------------------------------
    def put(self, run: Run, item: tuple[Any, ...]) -> None:
        queue = self._queue
        queue.append((run, item))
        if self._idle:
            self._idle = False
            self._loop.call_soon_threadsafe(self._wake.set)
        if len(queue) > self._max_queued:
            self._catch_up()

    def _catch_up(self) -> None:
        """Backpressure on a caller that logs faster than the sender thread folds and routes
        its calls (CPU and the local disk, never the network: in an outage the events go to
        the outbox): it waits here until the queue is drained, so the calls waiting in memory
        stay within their share of ``memory_budget_bytes`` (:func:`budget_shares`), however
        fast a script logs and however long an outage lasts."""
        if threading.current_thread() is self._thread:
            return
        while len(self._queue) > self._max_queued // 2 and self._thread.is_alive():
            time.sleep(0.001)  # lets the sender thread run (the GIL) and drain the queue

    def flush(self, timeout: float | None = None) -> bool:
        """Return True when every event queued so far is acknowledged, waiting at most ``timeout``
        seconds (default ``settings.delivery_timeout``). In an outage it returns after the
        timeout, or at once if an earlier flush already timed out during the same outage,
        with every such event written (and fsynced) to the outbox, and says so in a
        warning; the sender keeps delivering the outbox in the background while the
        process lives, and ``runstream sync`` delivers what is left after it ends.
        Returns False when events were left in the outbox. Raises DeliveryError only if the
        gateway rejected events as invalid."""
        return self._flush(self.settings.delivery_timeout if timeout is None else timeout, warn=True)

    def _flush(self, timeout: float, warn: bool) -> bool:
        done = threading.Event()
        box: dict[str, BaseException] = {}
        self.put(None, (FLUSH, done, box))  # type: ignore[arg-type]
        waited = not (self._gave_up and self._down)
        if waited and done.wait(timeout):
            if "error" in box:
                raise DeliveryError(str(box["error"])) from box["error"]
            return True
        events, runs = asyncio.run_coroutine_threadsafe(self._persist(), self._loop).result()
        self._gave_up = self._down
        if events and waited and warn:
            log.warning("runstream: %d event(s) of %d run(s) not delivered within %s s (last error: %s); they are "
                        "kept in %s and sent in the background while this process runs; after it ends, deliver them "
                        "with: runstream sync %s", events, runs, timeout, _describe(self._last_error),
                        self.settings.spool_dir, self.settings.spool_dir)
        if "error" in box:
            raise DeliveryError(str(box["error"])) from box["error"]
        return not events

    def call(self, fn: Callable[[aiohttp.ClientSession], Coroutine[Any, Any, T]], timeout: float | None = 60) -> T:
        """Run ``fn(session)`` on the sender's loop (uploads) and return its result; cancelled
        on the loop after ``timeout`` seconds (:class:`TimeoutError`)."""
        return wait_cancelling(asyncio.run_coroutine_threadsafe(fn(self.session), self._loop), timeout)

    def store_blob_in_outbox(self, run_id: str, data: bytes) -> tuple[str, int]:
        """Keep an artifact's bytes in the run's outbox folder (the gateway is unreachable);
        the run's later events go to the outbox too, so the drain uploads the bytes before
        the event that refers to them."""

        async def store() -> tuple[str, int]:
            rob = self._spool_run(run_id)
            rob.blobs_pending += 1
            # The file write on a worker thread: up to MAX_ARTIFACT_BYTES must not stall delivery.
            return await asyncio.to_thread(rob.store_blob, data)

        return asyncio.run_coroutine_threadsafe(store(), self._loop).result()

    @property
    def down(self) -> bool:
        """True while the service is known to be unreachable."""
        return self._down

    def report_outage(self, exc: BaseException) -> None:
        """A user-thread request (an artifact upload) found the service unreachable."""
        self._loop.call_soon_threadsafe(self._fail, exc)

    def close(self, timeout: float | None = None) -> None:
        """Flush (at most ``timeout``, default ``settings.delivery_timeout``), then stop; what
        is still undelivered stays in the outbox and a warning says how to deliver it."""
        timeout = self.settings.delivery_timeout if timeout is None else timeout
        self._running = False
        if not self._thread.is_alive():
            return
        try:
            self._flush(timeout, warn=False)  # _shutdown says what is left
        finally:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(60)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._loop.close()  # its selector and self-pipe; a restarted sender makes a new loop
            _live.discard(self)

    # ---- the sender thread --------------------------------------------------------
    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to the constructor's caller
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._running = False

    async def _start(self) -> None:
        from runstream.outbox import RunOutbox  # imported here: runstream.spool imports this module

        self._outbox_cls = RunOutbox
        self._wake = asyncio.Event()
        self._work = asyncio.Event()  # memory batches to hand over, or the transport is back
        self._drain_wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._mem: collections.deque[_Batch] = collections.deque()
        self._handed = 0  # how many batches at the left of _mem the transport has
        self._mem_bytes = 0
        self._batch_no = 0
        self._epoch = 0  # bumped when memory is spilled to the outbox: older hand-overs are void
        self._outbox: dict[str, RunOutbox] = {}
        self._waiters: list[_Waiter] = []
        self._warned_at: float | None = None
        self._encode_errors: set[str] = set()
        self.session = aiohttp.ClientSession(json_serialize=lambda o: orjson.dumps(o).decode(),
                                             headers=self.settings.auth_headers())
        self.transport: Transport = (
            HttpTransport(self.settings, self.session) if self.settings.transport == "http"
            else KafkaTransport(self.settings)
        )
        _quiet_kafka_client()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(c) for c in (self._pump(), self._connect(), self._deliver(), self._drain())]
        self._pump_task = self._tasks[0]

    async def _shutdown(self) -> None:
        tasks = {*self._tasks, self._pump_task}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._route_queue(force_disk=True)  # what was logged after the last flush (a script without complete())
        self._spill_memory()
        left = self._close_outbox()
        if left:
            log.warning("runstream: %d event(s) of %d run(s) were not delivered before the sender stopped "
                        "(last error: %s); they are kept in %s; deliver them with: runstream sync %s",
                        left[0], left[1], _describe(self._last_error), self.settings.spool_dir, self.settings.spool_dir)
        try:
            # aiokafka's stop waits for batches it still holds (copies of what is in the
            # outbox now): never longer than a moment.
            await asyncio.wait_for(self.transport.close(), 5)
        except (TimeoutError, Exception) as exc:
            log.debug("closing the transport: %s", exc)
        await self.session.close()

    # ---- encoding and routing -------------------------------------------------------
    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        last_drain = 0.0
        busy = False
        recent: collections.deque[tuple[float, int]] = collections.deque()  # (time, calls) of drains
        while True:
            self._idle = True
            linger = BUSY_LINGER_S if busy else LINGER_S
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
                # No linger after a quiet spell: a lone point (a live chart's) goes out at once,
                # and a burst still folds, because the logging thread holds the GIL until it
                # sleeps or the switch interval ends; what comes after a drain waits for the
                # next one, LINGER_S later (below).
                # Busy (the last drain was large, e.g. a paced loop between two slices): keep
                # the busy cadence, so slices fold together instead of one event per slice.
                await asyncio.sleep(max(IDLE_LINGER_S, last_drain + linger - loop.time()) if busy else IDLE_LINGER_S)
            elif (wait := last_drain + linger - loop.time()) > 0:
                # A queue that never empties is drained at most once per LINGER_S too, so a
                # stream of log calls folds into a few large events, not many small ones.
                await asyncio.sleep(wait)
            self._idle = False
            last_drain = loop.time()
            recent.append((last_drain, len(self._queue)))
            while recent[0][0] < last_drain - BUSY_WINDOW_S:
                recent.popleft()
            busy = sum(calls for _, calls in recent) >= BUSY_ITEMS
            try:
                self._route_queue()
            except Exception:  # nothing may stop the pump (the outbox's disk, a bug)
                log.exception("runstream: the sender could not process queued events")

    def _route_queue(self, force_disk: bool = False) -> None:
        """Fold what is queued now into events and put each in memory or in the outbox."""
        queue = self._queue
        drained = list(map(collections.deque.popleft, itertools.repeat(queue, len(queue))))
        encoded, flushes = fold(drained, self._encode_failed)
        touched = self._route(encoded, force_disk)
        for rob in touched:
            rob.flush()  # in the OS's hands: a killed process loses none of it
        for _, done, box in flushes:
            self._waiters.append(_Waiter(done, box, self._batch_no, {r: r.size for r in self._outbox.values()}))
        if flushes:
            self._check_waiters()

    def _route(self, encoded: list[tuple[str, bytes]], force_disk: bool = False) -> set[RunOutbox]:
        budget = self._event_budget
        memory: list[tuple[str, bytes]] = []
        size = 0
        touched: set[RunOutbox] = set()
        outbox = self._outbox
        for run_id, data in encoded:
            rob = outbox.get(run_id)
            if rob is None and (force_disk or self._down or self._mem_bytes + size + len(data) > budget):
                rob = self._spool_run(run_id)
                # The run's events folded just before this one are not in self._mem yet: they
                # go to the outbox ahead of it, or the drain could overtake them.
                if any(rid == run_id for rid, _ in memory):
                    for rid, earlier in memory:
                        if rid == run_id:
                            rob.append(earlier)
                            size -= len(earlier)
                    memory = [(rid, d) for rid, d in memory if rid != run_id]
            if rob is not None:
                # A run with events in the outbox keeps going there until they are delivered:
                # none of its events may overtake an earlier one.
                rob.append(data)
                touched.add(rob)
            else:
                memory.append((run_id, data))
                size += len(data)
        if memory:
            self._batch_no += 1
            self._mem.append(_Batch(self._batch_no, memory, size))
            self._mem_bytes += size
            self._work.set()
        if touched:
            self._drain_wake.set()
        return touched

    def _spool_run(self, run_id: str) -> RunOutbox:
        """Send ``run_id``'s events through the outbox from now on. Its events still in memory
        are copied first, so the outbox holds every unacknowledged event of the run in order
        (the in-memory originals may arrive too: identical bytes, stored once)."""
        rob = self._outbox.get(run_id)
        if rob is None:
            rob = self._outbox[run_id] = self._outbox_cls(Path(self.settings.spool_dir), run_id)
            for batch in self._mem:
                if not batch.acked:
                    for rid, data in batch.events:
                        if rid == run_id:
                            rob.append(data)
            self._drain_wake.set()
        return rob

    def _spill_memory(self) -> None:
        """Move every unacknowledged in-memory event to the outbox, in order."""
        self._epoch += 1
        already = set(self._outbox)  # their in-memory events were copied when they were spooled
        touched = set()
        for batch in self._mem:
            if batch.acked:
                continue
            for run_id, data in batch.events:
                if run_id in already:
                    continue
                rob = self._outbox.get(run_id)
                if rob is None:
                    rob = self._outbox[run_id] = self._outbox_cls(Path(self.settings.spool_dir), run_id)
                rob.append(data)
                touched.add(rob)
        self._mem.clear()
        self._handed = self._mem_bytes = 0
        for rob in touched:
            rob.flush()
        for waiter in self._waiters:  # what they waited for in memory is in the outbox now
            waiter.no = 0
            for rob in self._outbox.values():
                waiter.sizes[rob] = rob.size
        if touched:
            self._drain_wake.set()
        self._check_waiters()

    def _encode_failed(self, run: Run, exc: BaseException) -> None:
        if run.id not in self._encode_errors:
            self._encode_errors.add(run.id)
            log.error("runstream: run %s: a logged value could not be encoded and was dropped (%s: %s); "
                      "the run's other events and every other run are still sent", run.id, type(exc).__name__, exc)

    # ---- delivery ---------------------------------------------------------------
    async def _connect(self) -> None:
        """Start the transport, retrying with backoff until it starts."""
        delay = 0.5
        while True:
            try:
                await self.transport.start()
            except Exception as exc:
                self._fail(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self._connected.set()
            self._work.set()
            self._drain_wake.set()
            return

    async def _deliver(self) -> None:
        """Hand the in-memory batches to the transport in order; acks arrive in callbacks."""
        sequential = self.settings.transport == "http"  # one POST at a time keeps a run's order
        await self._connected.wait()
        while True:
            if self._down or self._handed >= len(self._mem):
                self._work.clear()
                await self._work.wait()
                continue
            batch, epoch = self._mem[self._handed], self._epoch
            if self.trace is not None:
                self.trace("handed", batch.events)
            try:
                acked = await self.transport.send(batch.events)
            except Exception as exc:
                if epoch == self._epoch:
                    self._fail(exc)
                continue
            if epoch != self._epoch:  # spilled meanwhile: the outbox has these events
                acked.add_done_callback(_consume)
                continue
            self._handed += 1
            acked.add_done_callback(functools.partial(self._acked, batch, epoch))
            if sequential:
                await asyncio.wait([acked])

    def _acked(self, batch: _Batch, epoch: int, future: asyncio.Future[None]) -> None:
        exc = future.exception() if not future.cancelled() else ConnectionError("send cancelled")
        if epoch != self._epoch:
            return
        if isinstance(exc, DeliveryError):  # the gateway rejected them as invalid: not an outage
            log.error("runstream: %s", exc)
            for waiter in self._waiters:
                waiter.box.setdefault("error", exc)
        elif exc is not None:
            self._fail(exc)
            return
        batch.acked = True
        if self.trace is not None:
            self.trace("acked", batch.events)
        mem = self._mem
        while mem and mem[0].acked:
            done = mem.popleft()
            self._handed -= 1
            self._mem_bytes -= done.size
        self._check_waiters()

    async def _drain(self) -> None:
        """Deliver the outbox, run by run, each in order, whenever the service is reachable."""
        delay = 0.2
        while True:
            if not self._outbox:
                self._drain_wake.clear()
                await self._drain_wake.wait()
                continue
            await self._connected.wait()
            try:
                progressed = await self._drain_once()
            except Exception as exc:
                self._fail(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            if not progressed:  # every folder is being synced by `runstream sync` right now
                await asyncio.sleep(1)

    async def _drain_once(self) -> bool:
        from runstream.outbox import blob_lines
        from runstream.schemas import events as ev
        from runstream.spool import _blobs, _upload_blob

        progressed = False
        for run_id, rob in list(self._outbox.items()):
            if rob.parked:
                continue  # left for `runstream sync` (said once when parked)
            fd = rob.lock()
            if fd is None:
                continue
            try:
                lines, state = rob.read_batch()
                rob.delivered_offset = state["offset"]
                if not lines:
                    # Caught up, checked with no await since the read: the pump (same thread)
                    # appended nothing meanwhile, so the run's next event may go through memory.
                    if state["offset"] >= rob.size and rob.blobs_pending <= 0:
                        del self._outbox[run_id]
                        rob.remove()
                        progressed = True
                        self._check_waiters()
                    continue
                for sha in dict.fromkeys(_blobs([ev.decode(line) for line in blob_lines(lines)])):
                    await _upload_blob(self.settings, self.session, rob.dir, sha)  # before the events that refer to it
                await (await self.transport.send([(run_id, line) for line in lines]))
                rob.delivered_offset = rob.delivered(state, lines)
            except Exception as exc:
                if is_outage(exc):
                    raise
                # Not the service's absence (a batch the gateway refuses, artifact bytes gone,
                # an unreadable record): retrying cannot help, and it must not hold up the
                # other runs or make the sender believe the service is down.
                rob.parked = f"{type(exc).__name__}: {exc}"
                log.error("runstream: the outbox of run %s cannot be delivered (%s); it stays in %s: fix the cause, "
                          "then run `runstream sync %s`", run_id, rob.parked, rob.dir, rob.dir)
                continue
            finally:
                rob.unlock(fd)
            progressed = True
            self._recovered()
            self._check_waiters()
        return progressed

    # ---- outage bookkeeping --------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        """The transport failed: say so (rarely), and keep everything unsent on disk."""
        self._last_error = exc
        if not self._down:
            self._down = True
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            target = self.settings.ingest_url if self.settings.transport == "http" else self.settings.kafka_bootstrap
            log.warning("runstream: %s at %s is unreachable (%s); logging goes on: events are kept in %s and "
                        "sent when it is back (after this process ends: runstream sync %s)",
                        "the ingest gateway" if self.settings.transport == "http" else "Kafka", target,
                        _describe(exc), self.settings.spool_dir, self.settings.spool_dir)
        else:
            log.debug("runstream: still unreachable: %s", exc)
        if self._mem:
            self._spill_memory()

    def _recovered(self) -> None:
        if self._down:
            self._down = self._gave_up = False
            if self._warned_at is not None:
                log.warning("runstream: delivering again; the outbox in %s is being sent", self.settings.spool_dir)
                self._warned_at = None
            self._work.set()

    def _check_waiters(self) -> None:
        if not self._waiters:
            return
        first = self._mem[0].no if self._mem else self._batch_no + 1
        keep = []
        for waiter in self._waiters:
            if waiter.no < first and all(r.removed or r.delivered_offset >= n for r, n in waiter.sizes.items()):
                waiter.done.set()
            else:
                keep.append(waiter)
        self._waiters = keep

    async def _persist(self) -> tuple[int, int]:
        """Everything queued or in memory into the outbox, fsynced: (events undelivered, runs)."""
        self._route_queue(force_disk=True)
        self._spill_memory()
        events = runs = 0
        for rob in self._outbox.values():
            rob.flush(sync=True)
            n = rob.undelivered()
            if n:
                events += n
                runs += 1
        return events, runs

    def _close_outbox(self) -> tuple[int, int] | None:
        events = runs = 0
        for rob in self._outbox.values():
            n = rob.undelivered()
            if n:
                rob.close()
                events += n
                runs += 1
            elif rob.blobs_pending <= 0:
                rob.remove()  # delivered to its end: nothing for `runstream sync` to do
            else:
                rob.close()
        self._outbox.clear()
        return (events, runs) if events else None


def _describe(exc: BaseException | None) -> str:
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned future's exception (asyncio would log it otherwise)."""
    if not future.cancelled():
        future.exception()


def _quiet_kafka_client() -> None:
    """aiokafka logs an error per reconnection attempt (dozens a second while a broker is
    down); the sender says it once itself. A level the application set is left alone."""
    logger = logging.getLogger("aiokafka")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


def encode_items(items: list[tuple[Run, tuple[Any, ...]]]) -> list[tuple[str, bytes]]:
    """Fold queued items into encoded events, run by run, keeping each run's order."""
    return fold(items)[0]


OnError = Callable[["Run", BaseException], None]


def _raise(run: Run, exc: BaseException) -> None:
    raise exc


def fold(items: list[tuple[Run, tuple[Any, ...]]], on_error: OnError = _raise,
         ) -> tuple[list[tuple[str, bytes]], list[tuple[Any, ...]]]:
    """:func:`encode_items` in one pass over a drained queue, which also holds the FLUSH
    items (queued with run None): returns (encoded events, FLUSH items in order).

    An item that cannot be encoded is passed to ``on_error`` with its run (the default
    raises) and left out; it costs no seq, and the run's other items and every other
    run's are encoded as usual."""
    by_run: dict[Run | None, list[tuple[Any, ...]]] = {}
    for run, item in items:
        run_items = by_run.get(run)
        if run_items is None:
            run_items = by_run[run] = []
        run_items.append(item)
    flushes = by_run.pop(None, [])
    out: list[tuple[str, bytes]] = []
    for owner, owner_items in by_run.items():
        try:
            _Folder(owner, out, on_error).feed(owner_items)  # type: ignore[arg-type]  # None was popped above
        except Exception as exc:  # contained to this run (the default on_error re-raises)
            on_error(owner, exc)  # type: ignore[arg-type]
    return out, flushes


class _Folder:
    """Turns one run's items into events: consecutive points → one metric.points event."""

    def __init__(self, run: Run, out: list[tuple[str, bytes]], on_error: OnError = _raise) -> None:
        self.run, self.out, self.on_error = run, out, on_error
        self.series: dict[str, list[Any]] = {}
        self.points = self.bytes = 0
        self.rows: list[Any] = []
        self.rows_name: str | None = None
        self.rows_desc: str | None = None
        self.rows_t = 0.0

    def feed(self, items: list[tuple[Any, ...]]) -> None:
        for item in items:
            try:
                self._feed_one(item)
            except Exception as exc:  # a malformed item: only it is lost
                self.on_error(self.run, exc)
        self._flush_points()
        self._flush_rows()

    def _feed_one(self, item: tuple[Any, ...]) -> None:
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

    def _flush_points(self) -> None:
        if not self.series:
            return
        series, self.series, self.points, self.bytes = self.series, {}, 0, 0
        self._emit_points(series)

    def _emit_points(self, series: dict[str, list[Any]]) -> None:
        out = []
        for name, (steps, values, times, description, _) in series.items():
            s: dict[str, Any] = {"name": name, "steps": steps, "values": values, "times": times}
            if description:
                s["description"] = description
            out.append(s)
        first_t = min(s[4] for s in series.values())
        try:
            self._emit("metric.points", {"series": out}, first_t)
        except (TypeError, ValueError) as exc:  # a value orjson cannot encode: find it by halving
            halves = _halve_series(series)
            if halves is None:
                self.on_error(self.run, exc)
                return
            for half in halves:
                self._emit_points(half)

    def _flush_rows(self) -> None:
        if not self.rows:
            return
        rows, self.rows, self.bytes = self.rows, [], 0
        self._emit_rows(rows)
        self.rows_name = None

    def _emit_rows(self, rows: list[Any]) -> None:
        payload: dict[str, Any] = {"name": self.rows_name, "rows": rows}
        if self.rows_desc:
            payload["description"] = self.rows_desc
        try:
            self._emit("metric.rows", payload, self.rows_t)
        except (TypeError, ValueError) as exc:
            if len(rows) == 1:
                self.on_error(self.run, exc)
                return
            self._emit_rows(rows[:len(rows) // 2])
            self._emit_rows(rows[len(rows) // 2:])

    def _emit(self, type_: str, payload: dict[str, Any], t: float) -> None:
        """Encode one event with the run's next seq; an event that cannot be encoded
        raises and takes no seq (a gap would make readers wait for it forever)."""
        run = self.run
        event = {"type": type_, "v": SCHEMA_VERSION, "event_id": str(uuid7()), "run_id": run.id,
                 "seq": run._seq, "ts": t, "payload": payload}
        data = orjson.dumps(event)
        run._next_seq()
        self.out.append((run.id, data))


def _halve_series(series: dict[str, list[Any]]) -> tuple[dict[str, list[Any]], dict[str, list[Any]]] | None:
    """Split folded series into two halves by points (None for a single point)."""
    if len(series) > 1:
        names = list(series)
        mid = len(names) // 2
        return {n: series[n] for n in names[:mid]}, {n: series[n] for n in names[mid:]}
    ((name, (steps, values, times, description, t)),) = series.items()
    if len(steps) <= 1:
        return None
    mid = len(steps) // 2
    return ({name: [steps[:mid], values[:mid], times[:mid], description, t]},
            {name: [steps[mid:], values[mid:], times[mid:], description, t]})


_live: weakref.WeakSet[Sender] = weakref.WeakSet()
_shared: dict[ClientSettings, Sender] = {}
_shared_lock = threading.Lock()
_last: tuple[ClientSettings, Sender] | None = None


def sender_for(settings: ClientSettings) -> Sender:
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


def close_sender(settings: ClientSettings, timeout: float | None = None) -> None:
    """Flush and stop the sender for ``settings`` if one runs; the next use starts a new one."""
    with _shared_lock:
        sender = _shared.pop(settings, None)
    if sender is not None:
        sender.close(timeout)


@atexit.register
def _flush_at_exit() -> None:
    """A script that forgets run.complete() still delivers what it logged; what cannot be
    delivered within ``settings.delivery_timeout`` stays in the outbox for ``runstream sync``."""
    for sender in list(_live):
        try:
            sender.close()
        except Exception as exc:  # pragma: no cover - reported, not raised, at exit
            log.error("runstream: stopping the sender at exit failed (%s); undelivered events are in %s",
                      exc, sender.settings.spool_dir)


def _forget_after_fork() -> None:
    global _last
    _shared.clear()
    _live.clear()
    _last = None


os.register_at_fork(after_in_child=_forget_after_fork)
