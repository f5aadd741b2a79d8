"""The loading half of :mod:`processors.replay`: archived bodies → events → rows in the
rebuild schema, one range of runs after another.

Runs in the replay process itself (its own share of the ranges, and the catch-up in the
swap) and in each worker process (:func:`serve`: forked from the replay process, or
started as ``python -m runstream.processors.replay_load``), each on connections of its own, in the
snapshot the replay process exported.

Per event the work is the processors' own: :func:`schemas.events.decode`'s schema
(bodies are decoded a batch at a time as one JSON array of ``Event``, the same type;
a batch that fails is decoded body by body with :func:`schemas.events.decode` for its
message), :func:`processors.materialize.materialize` and
:func:`processors.store.write_projections`. The archive is read through a cursor in
large fetches, in ``(run_id, seq)`` order (the primary key's).
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

import asyncpg
import msgspec
import orjson

from runstream.processors import items, store
from runstream.processors.materialize import Materialized, materialize
from runstream.schemas import events as ev

REBUILD_SCHEMA = "runstream_rebuild"

BATCH_BYTES = 4 << 20
"""Archived bytes materialized and written together (~16k one-point events, or a few
hundred thousand points of large events)."""

Range = tuple[str | None, str | None]
"""Run ids ``(after, up_to]``; None: no bound on that side."""

FETCH_ROWS = 5_000
"""Archive rows per cursor round trip."""

_EVENTS = msgspec.json.Decoder(list[ev.Event])
"""The schema's Event type, a batch at a time (one call instead of one per event)."""


class ReplayError(RuntimeError):
    """The rebuild cannot run on this database as it is (re-exported by processors.replay)."""


def decode_all(bodies: list[bytes]) -> list[ev.Event]:
    """Decode archived bodies (each a JSON object) with the event schema."""
    try:
        return _EVENTS.decode(b"[" + b",".join(bodies) + b"]")
    except msgspec.DecodeError:
        pass
    out = []
    for body in bodies:  # the same schema one by one, for the first failure's message
        try:
            out.append(ev.decode(body))
        except ev.EventError as exc:
            raise ReplayError(f"an archived event cannot be decoded: {exc}; body {bytes(body[:200])!r}") from None
    return out


DEAD_ITEMS = ("SELECT run_id, seq, array_agg(item) FROM dead_letters "
              "WHERE retried_at IS NULL AND item >= 0 AND run_id IS NOT NULL GROUP BY run_id, seq")


def _canonical(run_id: str) -> str:
    return str(uuid.UUID(run_id))


def _stored_items(event: ev.Event, dead: set[int]) -> list[Materialized]:
    """The rows of ``event`` without its dead-lettered items, one Materialized per run of
    consecutive stored items (each keeps the row/line indexes it has in the event)."""
    out, lo, n = [], 0, items.item_count(event)
    for i in sorted(dead) + [n]:
        if lo < i:
            out.append(items.materialize_items(event, lo, i))
        lo = i + 1
    return out


@dataclass
class Loaded:
    """What one load wrote."""

    events: int = 0
    points: int = 0
    experiments: dict[tuple[str, str], datetime] = field(default_factory=dict)
    """Earliest run start per experiment: written once by the coordinator, not by each
    worker (every worker's batches would wait on the same experiment rows)."""
    runs: set[str] = field(default_factory=set)
    """Run ids as the events spell them."""


class Loader:
    """Materializes batches of archived bodies and writes them to the rebuild schema.

    ``pipelined``: the writes run in a task of their own, one batch behind, each batch in
    its own transaction, so that reading and decoding the next batch overlaps
    PostgreSQL's work on the previous one. Otherwise each batch is written at once in
    the caller's transaction (the catch-up inside the swap)."""

    def __init__(self, conn: asyncpg.Connection, *, pipelined: bool = True, batch_bytes: int = BATCH_BYTES) -> None:
        self.conn = conn
        self.pipelined = pipelined
        self.batch_bytes = batch_bytes
        self.result = Loaded()
        self.bodies: list[bytes] = []
        self.size = 0
        self.queue: asyncio.Queue[Materialized | None] = asyncio.Queue(maxsize=1)
        self.task: asyncio.Task[None] | None = None
        self.dead: dict[tuple[str, int], set[int]] = {}
        """Points/rows dead-lettered out of archived events (processors.salvage): not replayed,
        as live processing did not store them (until ``runstream dead-letters retry``)."""

    async def __aenter__(self) -> Loader:
        self.dead = {(str(r), q): set(i) for r, q, i in await self.conn.fetch(DEAD_ITEMS)}
        if self.pipelined:
            self.task = asyncio.create_task(self._write_loop())
        return self

    async def __aexit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type is None:
                await self.finish()
        finally:
            if self.task is not None:  # failed or cancelled: stop the writer (its error is not the news)
                self.task.cancel()
                await asyncio.gather(self.task, return_exceptions=True)
                self.task = None

    async def add(self, bodies: list[bytes], size: int) -> None:
        self.bodies += bodies
        self.size += size
        if self.size >= self.batch_bytes:
            await self.flush()

    async def finish(self) -> Loaded:
        """Write what is left (and end the write task, re-raising its error, if any)."""
        await self.flush()
        if self.task is not None:
            await self._put(None)
            await self.task
            self.task = None
        return self.result

    async def flush(self) -> None:
        if not self.bodies:
            return
        batch = decode_all(self.bodies)
        self.bodies, self.size = [], 0
        pieces: list[Materialized] = []
        if self.dead:
            whole = [e for e in batch if (_canonical(e.run_id), e.seq) not in self.dead]
            pieces = [p for e in batch if len(whole) != len(batch) and (_canonical(e.run_id), e.seq) in self.dead
                      for p in _stored_items(e, self.dead[(_canonical(e.run_id), e.seq)])]
            self.result.events += len(batch) - len(whole)
            batch = whole
        for piece in pieces:
            self.result.points += piece.point_count
            self.result.runs.update(piece.runs)
            if self.task is not None:
                await self._put(piece)
            else:
                await store.write_projections(self.conn, piece, notify=False)
        m = materialize(batch, columnar=True)
        r = self.result
        r.events += len(batch)
        r.points += m.point_count
        r.runs.update(m.runs)
        for name, when in m.experiments.items():
            if name not in r.experiments or when < r.experiments[name]:
                r.experiments[name] = when
        m.experiments = {}
        if self.task is not None:
            await self._put(m)
        else:
            await store.write_projections(self.conn, m, notify=False)

    async def _put(self, item: Materialized | None) -> None:
        assert self.task is not None
        put = asyncio.ensure_future(self.queue.put(item))
        await asyncio.wait({put, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done() and not put.done():
            put.cancel()
            self.task.result()
            raise RuntimeError("the replay writer stopped")

    async def _write_loop(self) -> None:
        while (m := await self.queue.get()) is not None:
            async with self.conn.transaction():
                await store.write_projections(self.conn, m, notify=False)


async def read_into(loader: Loader, source: asyncpg.Connection, query: str, *args: Any) -> None:
    """Feed ``query``'s single bytea column (archived bodies, in log order) to ``loader``
    (a cursor in ``source``'s open transaction, read in large fetches)."""
    cursor = await source.cursor(query, *args)
    while rows := await cursor.fetch(FETCH_ROWS):
        bodies = [r[0] for r in rows]
        await loader.add(bodies, sum(map(len, bodies)))


@contextmanager
def no_gc() -> Iterator[None]:
    """Without the cyclic collector: a batch keeps ~10^4 decoded events alive, and each
    young-generation pass walks them all (about half of the decode time). Events and rows
    hold no reference cycles; whatever does is collected once the load is over."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def connect_writer(database_url: str) -> asyncpg.Connection:
    """A connection whose unqualified table names are the rebuild schema's."""
    return await asyncpg.connect(database_url, server_settings={
        "search_path": f"{REBUILD_SCHEMA}, public",
        "synchronous_commit": "off",  # a crash just means: rebuild again
    })


def read_query(bounds: Range) -> tuple[str, list[str]]:
    """The archived bodies of the runs in ``bounds``, in log order (the primary key's)."""
    where, args = [], []
    for op, value in zip((">", "<="), bounds):
        if value is not None:
            args.append(value)
            where.append(f"run_id {op} ${len(args)}::uuid")
    return (f"SELECT body FROM public.events {'WHERE ' + ' AND '.join(where) if where else ''} "
            "ORDER BY run_id, seq"), args


NextRange = Callable[[], Awaitable["Range | None"]]
"""Hands out the next range of runs to load, or None when there is none left."""


async def load_ranges(source: asyncpg.Connection, target: asyncpg.Connection, next_range: NextRange) -> Loaded:
    """Load ranges of runs from ``source``'s snapshot into ``target``'s tables until
    ``next_range`` has no more (one loader: batches run on across ranges)."""
    # The primary key gives (run_id, seq) order; for a range of it the planner prefers a
    # parallel scan of the whole table and a sort (2x the cost, and once per range).
    await source.execute("SET LOCAL enable_sort = off")
    async with Loader(target) as loader:
        while (bounds := await next_range()) is not None:
            query, args = read_query(bounds)
            await read_into(loader, source, query, *args)
    return loader.result


class Channel:
    """The worker's side of its JSON-lines conversation with the coordinator."""

    def __init__(self, incoming: BinaryIO, outgoing: BinaryIO) -> None:
        self.incoming = incoming
        self.outgoing = outgoing

    def send(self, message: dict[str, Any]) -> None:
        self.outgoing.write(orjson.dumps(message) + b"\n")
        self.outgoing.flush()

    def receive(self) -> Any:
        line = self.incoming.readline()
        return orjson.loads(line) if line else None

    async def next_range(self) -> Range | None:
        self.send({"next": True})
        bounds = await asyncio.to_thread(self.receive)  # the writes go on meanwhile
        return None if bounds is None else (bounds[0], bounds[1])


async def _work(job: dict[str, Any], channel: Channel) -> Loaded:
    source = await asyncpg.connect(job["database_url"])
    try:
        target = await connect_writer(job["database_url"])
        try:
            # Not `async with`: after a failure the connection may be broken (a cancelled
            # fetch), and its ROLLBACK's error would stand in for the failure's; closing the
            # connection ends the transaction anyway.
            reading = source.transaction(isolation="repeatable_read", readonly=True)
            await reading.start()
            await source.execute(f"SET TRANSACTION SNAPSHOT {quote(job['snapshot'])}")
            loaded = await load_ranges(source, target, channel.next_range)
            await reading.commit()
            return loaded
        finally:
            await target.close()
    finally:
        await source.close()


def quote(literal: str) -> str:
    return "'" + literal.replace("'", "''") + "'"


def serve(channel: Channel) -> int:
    """One loader process's work, JSON lines both ways (the exit code is returned).

    In: the job (``database_url``, ``snapshot``), then one line per ``{"next": true}`` it
    wrote: a range ``[after, up_to]`` (see :data:`Range`), or null when there is no more.
    Out: ``{"next": true}`` when it wants a range, at last the result (``events``,
    ``points``, ``experiments``, ``runs``) or ``{"error": ...}``."""
    # Ctrl-C reaches the whole process group: the coordinator stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    job = channel.receive()
    if job is None:
        return 0
    gc.disable()  # a short-lived process: see no_gc
    try:
        loaded = asyncio.run(_work(job, channel))
    except ReplayError as exc:
        channel.send({"error": str(exc)})
        return 1
    channel.send({"events": loaded.events, "points": loaded.points, "runs": sorted(loaded.runs),
                  "experiments": [[ws, name, v.isoformat()] for (ws, name), v in loaded.experiments.items()]})
    return 0


if __name__ == "__main__":  # python -m runstream.processors.replay_load: a worker on stdin/stdout
    raise SystemExit(serve(Channel(sys.stdin.buffer, sys.stdout.buffer)))
