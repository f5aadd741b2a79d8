"""Rebuild every projection from the event archive into fresh tables, then swap them in.

``python -m runstream.processors.replay [--json] [--no-swap] [--workers N]`` (database from
``RUNSTREAM_DATABASE_URL``).

1. The projection tables are created empty in the schema ``runstream_rebuild`` (``LIKE``
   the live ones; TimescaleDB hypertables as hypertables with the live tables'
   dimensions and compression settings, :mod:`processors.replay_timescale`); the bulk
   tables get their indexes after loading.
2. The ``events`` archive is read in one REPEATABLE READ snapshot, run by run in ``seq``
   order, decoded, materialized and written with the processors' own code
   (:mod:`processors.materialize`, :mod:`processors.store`), whose unqualified table
   names resolve to the new tables through ``search_path`` (:mod:`processors.replay_load`).
   With ``--workers N`` the snapshot is exported and the archive cut into ranges of
   ``run_id`` (4 per loader, of about equal archived bytes); this process and N-1 worker
   processes each take the next range (heaviest first) until none is left. Runs are
   independent: every projection row belongs to one run, except ``experiments``, whose
   rows (earliest run start) are gathered from the loaders and written once.
3. The swap is one transaction: ``events`` is locked against new inserts (processors
   wait; none is lost), the events archived since the snapshot are applied (Kafka
   offsets only grow within a partition, so "since" is "offset above the snapshot's
   highest for that partition"), then each live table moves to a scratch schema and its
   rebuilt twin to ``public``, the old tables are dropped and the twins get the old
   ones' TimescaleDB policies. Readers and processors see the old tables until the
   commit and the new ones after it.

Only projections are rebuilt; ``events``, ``consumer_offsets`` and ``dead_letters`` are
kept. Rows that did not come from events (written around the processors) are not in the
log and therefore not in the rebuilt tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TypeVar

import asyncpg
import orjson

from runstream.processors import replay_timescale, store
from runstream.processors.replay_load import (
    REBUILD_SCHEMA,
    Channel,
    Loaded,
    Loader,
    NextRange,
    Range,
    ReplayError,
    connect_writer,
    load_ranges,
    no_gc,
    quote,
    read_into,
    serve,
)

PROJECTIONS = ("experiments", "runs", "tags", "artifacts", "metric_summaries", "metric_rollups", "params",
               "experiment_meta",
               "metric_points", "table_rows", "log_lines")
"""Every table that is a function of the events archive."""
BULK = ("metric_points", "table_rows", "log_lines")
"""Append-only projections: loaded without indexes, indexed afterwards."""
OLD_SCHEMA = "runstream_replaced"

A = TypeVar("A")
B = TypeVar("B")


@dataclass(frozen=True)
class Report:
    events: int
    """Events replayed (the archive, including those archived during the rebuild)."""
    points: int
    runs: int
    seconds: float
    caught_up: int
    """Of ``events``: archived while the rebuild ran, applied in the swap transaction."""
    swapped: bool


@dataclass
class _Tables:
    deferred: list[str]
    """Index DDL of the bulk tables, run once they are loaded."""
    policies: list[replay_timescale.Statement]
    """TimescaleDB policies of the live tables, added to their twins in the swap."""


async def _create_tables(conn: asyncpg.Connection) -> _Tables:
    """Empty twins of the projections in the rebuild schema (hypertables where the live
    tables are)."""
    try:
        hypertables = await replay_timescale.hypertables(conn, "public", PROJECTIONS)
    except replay_timescale.Unsupported as exc:
        raise ReplayError(str(exc)) from None
    await conn.execute(f"DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE; CREATE SCHEMA {REBUILD_SCHEMA}")
    tables = _Tables([], [])
    for table in PROJECTIONS:
        if table in BULK:
            await conn.execute(f"CREATE TABLE {REBUILD_SCHEMA}.{table} "
                               f"(LIKE public.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
            for (definition,) in await conn.fetch(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1", table):
                tables.deferred.append(definition.replace(" ON public.", f" ON {REBUILD_SCHEMA}.", 1))
        else:
            await conn.execute(f"CREATE TABLE {REBUILD_SCHEMA}.{table} (LIKE public.{table} INCLUDING ALL)")
        if table in hypertables:
            for sql, args in replay_timescale.twin(hypertables[table], REBUILD_SCHEMA):
                await conn.execute(sql, *args)
            tables.policies += replay_timescale.policies(hypertables[table], "public")
    return tables


async def rebuild(database_url: str, *, swap: bool = True, workers: int = 1) -> Report:
    """Rebuild every projection from ``events`` and (``swap``) put the new tables live.

    ``workers`` > 1: this process and ``workers - 1`` others load the archive together,
    in the same snapshot, each taking the next range of ``run_id`` when it is done with
    one (a run's events all go to one loader, in order)."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    started = time.perf_counter()
    procs = await _start_workers(workers - 1)
    try:
        with no_gc():
            return await _rebuild(database_url, swap, procs, started)
    finally:
        await asyncio.gather(*(p.stop() for p in procs))


async def _rebuild(database_url: str, swap: bool, procs: list[_Worker],
                   started: float) -> Report:
    source, target = await asyncio.gather(asyncpg.connect(database_url), connect_writer(database_url))
    try:
        # Not `async with` (see replay_load._work): a failure's error is the one to report.
        reading = source.transaction(isolation="repeatable_read", readonly=True)
        await reading.start()
        snapshot = await source.fetchval("SELECT pg_export_snapshot()")
        # The tables are made while the archive's shape is read (in the snapshot).
        tables, shape = await _both(_create_tables(target), _archive_shape(source) if procs else _nothing())
        if shape is not None:
            weights, since = shape
            ranges = _ranges(weights, CHUNKS_PER_LOADER * (len(procs) + 1))
            bulk = await _load_parallel(database_url, snapshot, source, target, procs, ranges)
        else:
            bulk, since = await _load_alone(database_url, snapshot, source, target)
        await reading.commit()
        await _write_experiments(target, bulk.experiments)
        for ddl in tables.deferred:
            await target.execute(ddl)
        runs = {uuid.UUID(r) for r in bulk.runs}
        caught_up = Loaded()
        if swap:
            caught_up = await _swap(target, since, tables.policies)
            runs.update(uuid.UUID(r) for r in caught_up.runs)
        return Report(bulk.events + caught_up.events, bulk.points + caught_up.points, len(runs),
                      time.perf_counter() - started, caught_up.events, swap)
    finally:
        await source.close()
        await target.close()


HighWater = dict[tuple[str, int], int]
"""The highest archived offset per (topic, partition): where the catch-up starts."""

_HIGH_WATER = 'SELECT topic, partition, max("offset") FROM public.events GROUP BY topic, partition'

EVENT_COST = 150
"""An event's fixed replay cost in archived bytes: a run's weight is its bytes plus this
per event (a one-point event is ~300 bytes and costs ~5 µs; a point in a large event
~25 bytes and ~1 µs)."""

_ARCHIVE_SHAPE = f"""
SELECT run_id, topic, partition, max("offset"), sum(length(body))::float8 + {EVENT_COST} * count(*)
FROM public.events GROUP BY run_id, topic, partition"""

CHUNKS_PER_LOADER = 4
"""Ranges per loader: each takes the next (heaviest first) when it is done with one, so
the loaders finish within about a range of each other."""


async def _nothing() -> None:
    return None


async def _both(a: Awaitable[A], b: Awaitable[B]) -> tuple[A, B]:
    """Both results; if one fails, its error once the other is done too."""
    x, y = await asyncio.gather(a, b, return_exceptions=True)
    for r in (x, y):
        if isinstance(r, BaseException):
            raise r
    return x, y  # type: ignore[return-value]


async def _load_alone(database_url: str, snapshot: str, source: asyncpg.Connection,
                      target: asyncpg.Connection) -> tuple[Loaded, HighWater]:
    """Everything in this process; the high water read alongside, in the same snapshot."""
    high_water = asyncio.ensure_future(_high_water(database_url, snapshot))
    try:
        bulk = await load_ranges(source, target, _handing_out([(None, None)]))
    except BaseException:
        high_water.cancel()
        await asyncio.gather(high_water, return_exceptions=True)
        raise
    return bulk, await high_water


async def _high_water(database_url: str, snapshot: str) -> HighWater:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(f"SET TRANSACTION SNAPSHOT {quote(snapshot)}")
            return {(t, p): o for t, p, o in await conn.fetch(_HIGH_WATER)}
    finally:
        await conn.close()


async def _archive_shape(conn: asyncpg.Connection) -> tuple[list[tuple[uuid.UUID, float]], HighWater]:
    """In one pass over the archive: each run's weight, and the high water."""
    weights: dict[uuid.UUID, float] = {}
    high_water: HighWater = {}
    for run_id, topic, partition, offset, weight in await conn.fetch(_ARCHIVE_SHAPE):
        weights[run_id] = weights.get(run_id, 0.0) + weight
        if offset > high_water.get((topic, partition), -1):
            high_water[(topic, partition)] = offset
    return list(weights.items()), high_water


def _ranges(weights: list[tuple[uuid.UUID, float]], parts: int) -> list[tuple[Range, float]]:
    """At most ``parts`` contiguous ranges of run_id, ``(after, up_to)`` (None: open), of
    about equal weight (a run heavier than a part is a range of its own), with their
    weights; together they cover every run_id."""
    points = sorted(weights)  # uuid order is PostgreSQL's (bytes, big-endian)
    total = sum(w for _, w in points)
    ranges: list[tuple[Range, float]] = []
    after: str | None = None
    acc = last_cut = 0.0
    for run_id, w in points[:-1]:
        acc += w
        if len(ranges) < parts - 1 and acc * parts >= total * (len(ranges) + 1):
            ranges.append(((after, str(run_id)), acc - last_cut))
            after, last_cut = str(run_id), acc
    ranges.append(((after, None), total - last_cut))
    return ranges


def _handing_out(ranges: Sequence[Range]) -> NextRange:
    """``ranges`` one at a time, to whichever loader asks first."""
    pending = deque(ranges)

    async def next_range() -> Range | None:
        return pending.popleft() if pending else None
    return next_range


@dataclass
class _Worker:
    """A loader process and the JSON-lines channel to it (see replay_load.serve)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reap: Callable[[], Awaitable[int]]
    """Wait for it to exit (its exit code); one wait however often called or cancelled."""
    kill: Callable[[], None]
    exit_code: int | None = None

    async def wait(self) -> int:
        self.exit_code = await self.reap()
        return self.exit_code

    async def stop(self) -> None:
        if self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                self.kill()
            await self.wait()
        self.writer.close()


async def _start_workers(n: int) -> list[_Worker]:
    """``n`` loader processes: forked from this one when it runs a single thread (they
    start at once, with everything imported), else started as ``python -m
    processors.replay_load`` (fork is not safe in a process with other threads)."""
    if n and threading.active_count() == 1 and hasattr(os, "fork"):
        return await _fork_workers(n)
    return list(await asyncio.gather(*[_spawn_worker() for _ in range(n)]))


async def _fork_workers(n: int) -> list[_Worker]:
    ours: list[socket.socket] = []
    pids: list[int] = []
    for _ in range(n):
        mine, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the worker: it never returns from here
            code = 1
            try:
                for s in [*ours, mine]:
                    s.close()
                signal.set_wakeup_fd(-1)  # not the parent's event loop's
                code = serve(Channel(theirs.makefile("rb"), theirs.makefile("wb")))
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        ours.append(mine)
        pids.append(pid)
    workers = []
    for mine, pid in zip(ours, pids):
        reader, writer = await asyncio.open_unix_connection(sock=mine, limit=1 << 30)
        workers.append(_Worker(reader, writer, _waiter(pid), functools.partial(os.kill, pid, signal.SIGKILL)))
    return workers


def _waiter(pid: int) -> Callable[[], Awaitable[int]]:
    reaped: asyncio.Future[tuple[int, int]] | None = None

    async def wait() -> int:
        nonlocal reaped
        if reaped is None:  # one waitpid: a second would fail, or find another process
            reaped = asyncio.ensure_future(asyncio.to_thread(os.waitpid, pid, 0))
        return os.waitstatus_to_exitcode((await asyncio.shield(reaped))[1])
    return wait


async def _spawn_worker() -> _Worker:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "runstream.processors.replay_load",
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                limit=1 << 30)  # the result line lists the runs
    assert proc.stdin is not None and proc.stdout is not None
    return _Worker(proc.stdout, proc.stdin, proc.wait, proc.kill)


async def _load_parallel(database_url: str, snapshot: str, source: asyncpg.Connection, target: asyncpg.Connection,
                         procs: list[_Worker], ranges: list[tuple[Range, float]]) -> Loaded:
    """Load ``ranges`` here (in ``source``'s transaction, the exported snapshot's) and in
    the workers, heaviest first, each range to whichever loader is free; wait for all
    (the first failure stops the rest)."""
    next_range = _handing_out([r for r, _ in sorted(ranges, key=lambda r: -r[1])])

    async def remote(worker: _Worker) -> Loaded:
        worker.writer.write(orjson.dumps({"database_url": database_url, "snapshot": snapshot}) + b"\n")
        while line := await worker.reader.readline():
            message = orjson.loads(line)
            if "next" in message:
                worker.writer.write(orjson.dumps(await next_range()) + b"\n")
            elif "error" in message:
                raise ReplayError(message["error"])
            else:
                await worker.wait()
                return Loaded(message["events"], message["points"],
                              {(ws, name): datetime.fromisoformat(v) for ws, name, v in message["experiments"]},
                              set(message["runs"]))
        raise ReplayError(f"a replay worker exited with code {await worker.wait()}")

    tasks = [asyncio.ensure_future(load_ranges(source, target, next_range)),
             *(asyncio.ensure_future(remote(p)) for p in procs)]
    try:
        results = await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    total = Loaded()
    for r in results:
        total.events += r.events
        total.points += r.points
        total.runs |= r.runs
        for name, when in r.experiments.items():
            if name not in total.experiments or when < total.experiments[name]:
                total.experiments[name] = when
    return total


async def _write_experiments(conn: asyncpg.Connection, experiments: dict[tuple[str, str], datetime]) -> None:
    if experiments:
        await conn.executemany(store.INSERT_EXPERIMENT, [(ws, n, t) for (ws, n), t in sorted(experiments.items())])


_CATCH_UP = """
SELECT e.body FROM public.events e
LEFT JOIN unnest($1::text[], $2::int[], $3::bigint[]) AS h(topic, partition, high)
       ON h.topic = e.topic AND h.partition = e.partition
WHERE h.high IS NULL OR e."offset" > h.high
ORDER BY e.run_id, e.seq"""


async def _swap(conn: asyncpg.Connection, high_water: HighWater,
                policies: list[replay_timescale.Statement]) -> Loaded:
    """Apply what was archived since the snapshot and put the rebuilt tables live, in one
    transaction that holds new archive inserts back (and give them the live tables'
    TimescaleDB ``policies``)."""
    topics = [t for t, _ in high_water]
    partitions = [p for _, p in high_water]
    offsets = list(high_water.values())
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = on")
        await conn.execute("LOCK TABLE public.events IN SHARE MODE")  # waits for in-flight batches
        async with Loader(conn, pipelined=False) as loader:
            await read_into(loader, conn, _CATCH_UP, topics, partitions, offsets)
        await _write_experiments(conn, loader.result.experiments)
        await conn.execute(f"DROP SCHEMA IF EXISTS {OLD_SCHEMA} CASCADE; CREATE SCHEMA {OLD_SCHEMA}")
        for table in PROJECTIONS:
            await conn.execute(f"ALTER TABLE public.{table} SET SCHEMA {OLD_SCHEMA}")
            await conn.execute(f"ALTER TABLE {REBUILD_SCHEMA}.{table} SET SCHEMA public")
        await conn.execute(f"DROP SCHEMA {OLD_SCHEMA} CASCADE; DROP SCHEMA {REBUILD_SCHEMA} CASCADE")
        for sql, args in policies:
            await conn.execute(sql, *args)
        await conn.execute(store.NOTIFY_ANY)  # at commit: the API's cache and live streams re-read
    return loader.result


def default_workers() -> int:
    """One loader process per core (PostgreSQL's backends share them)."""
    return max(1, min(8, os.cpu_count() or 1))


def main(argv: list[str] | None = None) -> int:
    from runstream.settings import ServiceSettings

    parser = argparse.ArgumentParser(prog="runstream replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-swap", action="store_true",
                        help=f"leave the rebuilt tables in schema {REBUILD_SCHEMA} (to compare them)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="loader processes, each a range of runs (default: one per core, here %(default)s)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        report = asyncio.run(rebuild(ServiceSettings.from_env().database_url, swap=not args.no_swap, workers=args.workers))
    except ReplayError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the workers are stopped; the live tables were not touched
        print(f"replay: interrupted (the partial rebuild is left in schema {REBUILD_SCHEMA})", file=sys.stderr)
        return 130
    if args.json:
        sys.stdout.write(orjson.dumps(asdict(report)).decode() + "\n")
    else:
        print(f"replayed {report.events:,} events ({report.points:,} points, {report.runs:,} runs) in "
              f"{report.seconds:.1f} s: {report.events / max(report.seconds, 1e-9):,.0f} events/s; "
              f"{report.caught_up} archived meanwhile; " + ("swapped in" if report.swapped else
                                                            f"left in schema {REBUILD_SCHEMA}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
