"""Rebuild every projection from the event archive into fresh tables, then swap them in.

``python -m processors.replay [--json] [--no-swap]`` (database from ``RUNSTREAM_DATABASE_URL``).

1. The projection tables are created empty in the schema ``runstream_rebuild`` (``LIKE``
   the live ones); the bulk tables get their indexes after loading.
2. The ``events`` archive is read in one REPEATABLE READ snapshot, run by run in ``seq``
   order, decoded, materialized and written with the processors' own code
   (:mod:`processors.materialize`, :mod:`processors.store`), whose unqualified table
   names resolve to the new tables through ``search_path``.
3. The swap is one transaction: ``events`` is locked against new inserts (processors
   wait; none is lost), the events archived since the snapshot are applied (Kafka
   offsets only grow within a partition, so "since" is "offset above the snapshot's
   highest for that partition"), then each live table moves to a scratch schema and its
   rebuilt twin to ``public``, and the old tables are dropped. Readers and processors
   see the old tables until the commit and the new ones after it.

Only projections are rebuilt; ``events``, ``consumer_offsets`` and ``dead_letters`` are
kept. Rows that did not come from events (written around the processors) are not in the
log and therefore not in the rebuilt tables. TimescaleDB hypertables are refused for
now: a rebuilt twin would be a plain table (recreating it as a hypertable with its
compression settings is the follow-up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from processors import store
from processors.replay_load import (REBUILD_SCHEMA, Loaded, Loader, LoadError, Range, connect_writer,
                                    load_range, no_gc, quote, read_into)

PROJECTIONS = ("experiments", "runs", "tags", "artifacts", "metric_summaries", "metric_rollups",
               "metric_points", "table_rows", "log_lines")
"""Every table that is a function of the events archive."""
BULK = ("metric_points", "table_rows", "log_lines")
"""Append-only projections: loaded without indexes, indexed afterwards."""
OLD_SCHEMA = "runstream_replaced"

_HIGH_WATER = 'SELECT topic, partition, max("offset") FROM events GROUP BY topic, partition'


class ReplayError(RuntimeError):
    """The rebuild cannot run on this database as it is."""


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


async def _create_tables(conn: asyncpg.Connection) -> list[str]:
    """Empty twins of the projections in the rebuild schema; returns the deferred index DDL."""
    hypertables = await conn.fetchval("SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL")
    if hypertables:
        rows = await conn.fetch("SELECT hypertable_name FROM timescaledb_information.hypertables "
                                "WHERE hypertable_schema = 'public'")
        clash = sorted({r[0] for r in rows} & set(PROJECTIONS))
        if clash:
            raise ReplayError(f"{', '.join(clash)} are TimescaleDB hypertables; rebuilding them as "
                              "hypertables is not implemented yet")
    await conn.execute(f"DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE; CREATE SCHEMA {REBUILD_SCHEMA}")
    deferred = []
    for table in PROJECTIONS:
        if table in BULK:
            await conn.execute(f"CREATE TABLE {REBUILD_SCHEMA}.{table} "
                               f"(LIKE public.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
            for (definition,) in await conn.fetch(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1", table):
                deferred.append(definition.replace(" ON public.", f" ON {REBUILD_SCHEMA}.", 1))
        else:
            await conn.execute(f"CREATE TABLE {REBUILD_SCHEMA}.{table} (LIKE public.{table} INCLUDING ALL)")
    return deferred


async def rebuild(database_url: str, *, swap: bool = True, workers: int = 1) -> Report:
    """Rebuild every projection from ``events`` and (``swap``) put the new tables live.

    ``workers`` > 1: the archive is split into that many ranges of ``run_id`` of about
    equal size, loaded at the same time in the same snapshot: one in this process, each
    other by a process of its own (``python -m processors.replay_load``). A run's
    events all go to one of them, in order."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    started = time.perf_counter()
    procs = list(await asyncio.gather(*[_spawn_worker() for _ in range(workers - 1)]))
    try:  # the workers import while the tables are made
        with no_gc():
            return await _rebuild(database_url, swap, procs, started)
    finally:
        await _stop(procs)


async def _rebuild(database_url: str, swap: bool, procs: list[asyncio.subprocess.Process],
                   started: float) -> Report:
    source = await asyncpg.connect(database_url)
    target = await connect_writer(database_url)
    try:
        deferred = await _create_tables(target)
        async with source.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await source.fetchval("SELECT pg_export_snapshot()")
            # The catch-up's starting point, read in the same snapshot alongside the load.
            high_water = asyncio.ensure_future(_high_water(database_url, snapshot))
            try:
                ranges = _ranges(await _run_weights(source) if procs else [], len(procs) + 1)
                bulk = await _load_parallel(database_url, snapshot, source, target, procs, ranges)
            except BaseException:
                high_water.cancel()
                await asyncio.gather(high_water, return_exceptions=True)
                raise
            since = await high_water
        await _write_experiments(target, bulk.experiments)
        for ddl in deferred:
            await target.execute(ddl)
        runs = {uuid.UUID(r) for r in bulk.runs}
        caught_up = Loaded()
        if swap:
            caught_up = await _swap(target, since)
            runs.update(uuid.UUID(r) for r in caught_up.runs)
        return Report(bulk.events + caught_up.events, bulk.points + caught_up.points, len(runs),
                      time.perf_counter() - started, caught_up.events, swap)
    finally:
        await source.close()
        await target.close()


async def _high_water(database_url: str, snapshot: str) -> dict[tuple[str, int], int]:
    """The highest archived offset per (topic, partition) in ``snapshot``."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(f"SET TRANSACTION SNAPSHOT {quote(snapshot)}")
            return {(t, p): o for t, p, o in await conn.fetch(_HIGH_WATER)}
    finally:
        await conn.close()


_RUN_STATS = """
SELECT most_common_vals::text::uuid[], most_common_freqs, histogram_bounds::text::uuid[]
FROM pg_stats WHERE schemaname = 'public' AND tablename = 'events' AND attname = 'run_id'"""

_RUN_SIZES = "SELECT run_id, sum(length(body))::float8 FROM public.events GROUP BY run_id"


async def _run_weights(conn: asyncpg.Connection) -> list[tuple[uuid.UUID, float]]:
    """How the archive is spread over run ids, as (run_id, weight) points: from the
    planner's statistics of ``events.run_id`` (most common values with their
    frequencies, and the histogram's equal-frequency buckets), which cost nothing to
    read; exactly (archived bytes per run, one pass over the archive) without them."""
    stats = await conn.fetchrow(_RUN_STATS)
    if stats is not None and (stats[0] or stats[2]):
        common, freqs, bounds = stats[0] or [], stats[1] or [], stats[2] or []
        points = list(zip(common, freqs))
        if len(bounds) > 1:
            share = max(0.0, 1.0 - sum(freqs)) / (len(bounds) - 1)
            points += [(b, share) for b in bounds[1:]]
        return points
    return [(r, w) for r, w in await conn.fetch(_RUN_SIZES)]


def _ranges(weights: list[tuple[uuid.UUID, float]], parts: int) -> list[Range]:
    """At most ``parts`` contiguous ranges of run_id, ``(after, up_to)`` (None: open), of
    about equal weight; together they cover every run_id."""
    points = sorted(weights)  # uuid order is PostgreSQL's (bytes, big-endian)
    total = sum(w for _, w in points)
    cuts: list[str] = []
    acc = 0.0
    for run_id, w in points[:-1]:
        acc += w
        if len(cuts) < parts - 1 and acc * parts >= total * (len(cuts) + 1):
            cuts.append(str(run_id))
    bounds: list[str | None] = [None, *cuts, None]
    return list(zip(bounds[:-1], bounds[1:]))


_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


async def _spawn_worker() -> asyncio.subprocess.Process:
    """A loader process (it waits for its job on stdin), importing this same code."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "processors.replay_load", env=env,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)


async def _load_parallel(database_url: str, snapshot: str, source: asyncpg.Connection, target: asyncpg.Connection,
                         procs: list[asyncio.subprocess.Process], ranges: list[Range]) -> Loaded:
    """The first range here (in ``source``'s transaction, the exported snapshot's), each
    other in a worker; waits for all (the first failure stops the rest)."""

    async def remote(proc: asyncio.subprocess.Process, bounds: Range | None) -> Loaded:
        job = bounds and {"database_url": database_url, "snapshot": snapshot, "after": bounds[0], "up_to": bounds[1]}
        out, _ = await proc.communicate(orjson.dumps(job))  # null: nothing to do (fewer ranges than workers)
        result = orjson.loads(out) if out else {}
        if proc.returncode != 0:
            raise ReplayError(f"replay worker for runs {bounds} failed: "
                              f"{result.get('error') or f'exit code {proc.returncode}'}")
        return Loaded(result.get("events", 0), result.get("points", 0),
                      {k: datetime.fromisoformat(v) for k, v in result.get("experiments", {}).items()},
                      set(result.get("runs", ())))

    others: list[Range | None] = [*ranges[1:]]
    others += [None] * (len(procs) - len(others))
    tasks = [asyncio.ensure_future(load_range(source, target, ranges[0])),
             *(asyncio.ensure_future(remote(p, r)) for p, r in zip(procs, others))]
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


async def _stop(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _write_experiments(conn: asyncpg.Connection, experiments: dict[str, datetime]) -> None:
    if experiments:
        await conn.executemany(store.INSERT_EXPERIMENT, sorted(experiments.items()))


_CATCH_UP = """
SELECT e.body FROM public.events e
LEFT JOIN unnest($1::text[], $2::int[], $3::bigint[]) AS h(topic, partition, high)
       ON h.topic = e.topic AND h.partition = e.partition
WHERE h.high IS NULL OR e."offset" > h.high
ORDER BY e.run_id, e.seq"""


async def _swap(conn: asyncpg.Connection, high_water: dict[tuple[str, int], int]) -> Loaded:
    """Apply what was archived since the snapshot and put the rebuilt tables live, in one
    transaction that holds new archive inserts back."""
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
    return loader.result


def default_workers() -> int:
    """One loader process per core (PostgreSQL's backends share them)."""
    return max(1, min(8, os.cpu_count() or 1))


def main(argv: list[str] | None = None) -> int:
    from runstream.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m processors.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-swap", action="store_true",
                        help=f"leave the rebuilt tables in schema {REBUILD_SCHEMA} (to compare them)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="loader processes, each a range of runs (default: one per core, here %(default)s)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        report = asyncio.run(rebuild(Settings.from_env().database_url, swap=not args.no_swap, workers=args.workers))
    except (ReplayError, LoadError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
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
