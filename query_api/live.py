"""Live updates of a run: ``GET /api/runs/{run_id}/live`` as Server-Sent Events.

One asyncpg connection per app ``LISTEN``s on the channel the processors notify after
each committed batch (:mod:`schemas.notify`: ``"<run_id> <last_seq>"``). The
:class:`Listener` wakes the subscribers of that run; each subscriber then reads the
archived events after the last one it sent and writes one SSE message per event::

    id: <seq>
    event: <event type, e.g. metric.points>
    data: <the event's JSON exactly as archived>

A subscriber registers before its first (catch-up) read, so nothing committed between
the client's last read and the subscription is missed. Notifications only wake readers;
the ``events`` table is what is sent, so a lost notification (listener reconnecting)
costs latency, never events: every wake-up, heartbeat and reconnect re-reads.

The same connection keeps the response cache (:mod:`query_api.cache`) fresh: each
notification drops the cached answers of that run, and the cache serves only while
``LISTEN`` is in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import orjson
from aiohttp import web

from runstream.query_api import auth, queries
from runstream.query_api.cache import CACHE, ResponseCache
from runstream.query_api.errors import BadRequest
from runstream.query_api.handlers import POOL, SETTINGS, query_int, reader_url, run_scope, workspace
from runstream.query_api.hardening import StreamSlots, principal_key
from runstream.schemas import api, notify
from runstream.schemas.events import TERMINAL_STATUSES

__all__ = ["LISTENER", "SLOTS", "Listener", "Subscription", "live", "setup"]

log = logging.getLogger("runstream.query_api.live")

HEARTBEAT_S = 15.0
"""Idle time after which a comment line is sent (keeps proxies and clients from timing out)."""
PAGE = 500
"""Events read (and written) per statement."""
RETRY_MS = 1000
"""The ``retry:`` advertised to EventSource clients (reconnect delay)."""
PING_S = 10.0
"""How often the LISTEN connection is checked when it is quiet."""
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 5.0


class Subscription:
    """One client's interest in one run: a flag the listener sets when the run has news."""

    __slots__ = ("run_id", "_wake", "closing")

    def __init__(self, run_id: uuid.UUID) -> None:
        self.run_id = run_id
        self._wake = asyncio.Event()
        self.closing = False
        """Set when the app shuts down or the stream's token is revoked: the stream ends without ``end``."""

    def notify(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self.closing = True
        self._wake.set()

    def clear(self) -> None:
        """Called before each read: news arriving during the read sets the flag again."""
        self._wake.clear()

    async def wait(self, timeout: float) -> bool:
        """True if woken within ``timeout`` seconds, False on timeout."""
        try:
            async with asyncio.timeout(timeout):  # not wait_for: see runstream.sender's pump
                await self._wake.wait()
        except TimeoutError:
            return False
        return True


def listen_application_name(pid: int | None = None) -> str:
    """The ``application_name`` of the LISTEN connection of the API process ``pid`` (default:
    this one), so ``pg_stat_activity`` shows which process holds which LISTEN."""
    return f"runstream-query-api-live-{os.getpid() if pid is None else pid}"


class Listener:
    """The app's LISTEN connection, its subscribers (one set per run id) and the response
    cache it keeps fresh (``cache``, optional)."""

    def __init__(self, database_url: str, cache: ResponseCache | None = None) -> None:
        self._url = database_url
        self._cache = cache
        self._subs: dict[uuid.UUID, set[Subscription]] = {}
        self._closing = False
        self.connected = asyncio.Event()
        """Set while LISTEN is in force (tests wait on it)."""

    @contextlib.contextmanager
    def subscribe(self, run_id: uuid.UUID) -> Iterator[Subscription]:
        sub = Subscription(run_id)
        if self._closing:
            sub.close()
        self._subs.setdefault(run_id, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(run_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[run_id]

    def close_all(self) -> None:
        """Shutdown: end every open stream promptly so the server need not wait for them."""
        self._closing = True
        for subs in self._subs.values():
            for sub in subs:
                sub.close()

    def _wake_all(self) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.notify()

    def _on_notification(self, conn: object, pid: int, channel: str, payload: str) -> None:
        try:
            committed = notify.parse(payload)
        except ValueError as exc:
            log.warning("%s: flushing the cache, waking every stream", exc)
            committed = None
        if committed is None:
            # "*" (the replay swapped every projection) or malformed: whatever changed, the
            # cache cannot tell what; readers re-read.
            if self._cache is not None:
                self._cache.flush()
            self._wake_all()
            return
        run_id = committed.run_id
        if self._cache is not None:
            self._cache.notified(run_id)
        for sub in self._subs.get(run_id, ()):
            sub.notify()

    async def run(self) -> None:
        """Keep a LISTEN connection open until cancelled, reconnecting with backoff."""
        delay = BACKOFF_MIN_S
        while True:
            lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            try:
                conn = await asyncpg.connect(self._url, server_settings={"application_name": listen_application_name()})
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("live: cannot LISTEN (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            try:
                conn.add_termination_listener(lambda _conn: self._lost(lost))
                await conn.add_listener(notify.CHANNEL, self._on_notification)
                self.connected.set()
                if self._cache is not None:
                    self._cache.listening()
                delay = BACKOFF_MIN_S
                # Notifications sent while we were not listening are lost: re-read.
                self._wake_all()
                while not lost.done():
                    done, _ = await asyncio.wait([lost], timeout=PING_S)
                    if not done:
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), PING_S)
                log.warning("live: LISTEN connection lost; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("live: LISTEN connection failed (%s: %s); reconnecting", type(exc).__name__, exc)
            finally:
                if self._cache is not None:
                    self._cache.unlistening()
                self.connected.clear()
                conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _lost(self, lost: asyncio.Future[None]) -> None:
        """The LISTEN connection closed: stop the cache at once, then reconnect."""
        if self._cache is not None:
            self._cache.unlistening()
        _resolve(lost)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


LISTENER = web.AppKey("live_listener", Listener)
"""The app's :class:`Listener` (run by :func:`listen` for the app's lifetime)."""
SLOTS = web.AppKey("live_slots", StreamSlots)
"""The caps on open streams, in total and per principal (``live_streams_*`` settings)."""


async def listen(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: run the LISTEN connection in the background for the app's lifetime.

    Startup does not wait for the database (the API comes up while it is down, like the
    pool); the listener keeps trying in the background.
    """
    listener = Listener(reader_url(app[SETTINGS]), app.get(CACHE))
    app[LISTENER] = listener
    task = asyncio.create_task(listener.run(), name="runstream-live-listener")
    try:
        yield
    finally:
        listener.close_all()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _end_streams(app: web.Application) -> None:
    """on_shutdown: runs before the server waits for open requests."""
    if LISTENER in app:
        app[LISTENER].close_all()


# ---------------------------------------------------------------- the endpoint


def _after_seq(request: web.Request) -> int:
    """``Last-Event-ID`` (an EventSource reconnecting) wins over ``after_seq``."""
    last_id = request.headers.get("Last-Event-ID", "").strip()
    if last_id:
        try:
            seq = int(last_id)
        except ValueError:
            seq = -2
        if not -1 <= seq <= 2**63 - 1:
            raise BadRequest(f"invalid Last-Event-ID={last_id!r}: expected an event seq (integer >= -1)")
        return seq
    return query_int(request, "after_seq", -1, -1, 2**63 - 1)


def _message(seq: int, type_: str, body: bytes) -> bytes:
    if b"\n" in body or b"\r" in body:  # JSON may be pretty-printed; SSE joins data lines with \n
        data = b"".join(b"data: " + line + b"\n" for line in body.replace(b"\r\n", b"\n").split(b"\n"))
    else:
        data = b"data: " + body + b"\n"
    return b"id: %d\nevent: %s\n%s\n" % (seq, type_.encode(), data)


async def live(request: web.Request) -> web.StreamResponse:
    """The run's events after ``after_seq`` (or ``Last-Event-ID``), then new ones as they land."""
    after = _after_seq(request)
    run_id = await run_scope(request)  # 400 / 404 / 504 as JSON, before the stream starts
    # 429 past the caps (an open stream holds a connection's memory for as long as it lasts);
    # a revoked token's stream ends.
    with request.app[SLOTS].hold(principal_key(request)), request.app[LISTENER].subscribe(run_id) as sub, \
            auth.closed_on_revoke(request, sub.close):
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        })
        await response.prepare(request)
        try:
            await _stream(request.app[POOL], run_id, workspace(request), after, sub, response)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Headers are sent: no error response is possible. Ending without `end` makes
            # the client reconnect (with Last-Event-ID), which resumes where it was.
            log.warning("live: stream of run %s interrupted (%s: %s)", run_id, type(exc).__name__, exc)
        return response


async def _stream(
    pool: asyncpg.Pool, run_id: uuid.UUID, workspace: str, last: int, sub: Subscription,
    response: web.StreamResponse
) -> None:
    await response.write(b"retry: %d\n\n" % RETRY_MS)
    while not sub.closing:
        sub.clear()
        # State first: every event up to its last_seq is committed, so the reads below see them.
        state = await pool.fetchrow(queries.LIVE_RUN_STATE, run_id, workspace)
        while True:
            rows = await pool.fetch(queries.LIVE_EVENTS, run_id, last, PAGE)
            if rows:
                await response.write(b"".join(_message(r["seq"], r["type"], r["body"]) for r in rows))
                last = rows[-1]["seq"]
            if len(rows) < PAGE:
                break
        if state is not None and state["status"] in TERMINAL_STATUSES and last >= state["last_seq"]:
            end_data: api.LiveEnd = {"status": state["status"], "last_seq": state["last_seq"]}
            end = orjson.dumps(end_data)
            await response.write(b"event: end\ndata: " + end + b"\n\n")
            return
        if not await sub.wait(HEARTBEAT_S):
            await response.write(b": heartbeat\n\n")


def setup(app: web.Application) -> None:
    """Register the live route and its background listener on ``app``."""
    settings = app[SETTINGS]
    app[SLOTS] = StreamSlots(settings.live_streams_max, settings.live_streams_per_principal)
    app.cleanup_ctx.append(listen)
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/api/runs/{run_id}/live", live, name="run_live")
