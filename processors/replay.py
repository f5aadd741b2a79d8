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
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
import orjson

from processors import store
from processors.materialize import Materialized, materialize
from schemas import events as ev

PROJECTIONS = ("experiments", "runs", "tags", "artifacts", "metric_summaries", "metric_rollups",
               "metric_points", "table_rows", "log_lines")
"""Every table that is a function of the events archive."""
BULK = ("metric_points", "table_rows", "log_lines")
"""Append-only projections: loaded without indexes, indexed afterwards."""
REBUILD_SCHEMA = "runstream_rebuild"
OLD_SCHEMA = "runstream_replaced"

FETCH_EVENTS = 2_000
"""Archive rows read per round trip."""
WRITE_POINTS = 200_000
"""A write transaction is cut after this many points (or FETCH_EVENTS * 5 events)."""

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


class _Writer:
    """Materializes decoded events in batches and writes them to the rebuild schema.

    With ``pipelined`` the writes run in a task of their own, one batch behind, so that
    reading and decoding the next batch overlaps PostgreSQL's work on the previous one."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.pending: list[ev.Event] = []
        self.pending_points = 0
        self.events = self.points = 0
        self.runs: set[str] = set()
        self.queue: asyncio.Queue[Materialized | None] = asyncio.Queue(maxsize=1)
        self.task: asyncio.Task[None] | None = None

    async def add(self, event: ev.Event) -> None:
        self.pending.append(event)
        if isinstance(event, ev.MetricPoints):
            self.pending_points += sum(len(s.steps) for s in event.payload.series)
        if self.pending_points >= WRITE_POINTS or len(self.pending) >= FETCH_EVENTS * 5:
            await self.flush()

    def start(self) -> None:
        self.task = asyncio.create_task(self._write_loop())

    async def stop(self) -> None:
        """Write what is left and end the write task (which re-raises its error, if any)."""
        await self.flush()
        if self.task is not None:
            await self._put(None)
            task, self.task = self.task, None
            await task

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

    async def flush(self, transaction: bool = True) -> None:
        if not self.pending:
            return
        m: Materialized = materialize(self.pending, columnar=True)
        self.events += len(self.pending)
        self.points += m.point_count
        self.runs.update(m.runs)
        self.pending, self.pending_points = [], 0
        if self.task is not None:
            await self._put(m)
        elif transaction:
            async with self.conn.transaction():
                await store.write_projections(self.conn, m, notify=False)
        else:
            await store.write_projections(self.conn, m, notify=False)


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


async def _replay(source: asyncpg.Connection, writer: _Writer, query: str, *args: Any) -> None:
    async for record in source.cursor(query, *args, prefetch=FETCH_EVENTS):
        await writer.add(ev.decode(record[0]))


async def rebuild(database_url: str, *, swap: bool = True) -> Report:
    """Rebuild every projection from ``events`` and (``swap``) put the new tables live."""
    started = time.perf_counter()
    source = await asyncpg.connect(database_url)
    target = await asyncpg.connect(database_url, server_settings={"search_path": f"{REBUILD_SCHEMA}, public"})
    try:
        await target.execute("SET synchronous_commit = off")  # a crash just means: rebuild again
        deferred = await _create_tables(target)
        writer = _Writer(target)
        writer.start()
        try:
            async with source.transaction(isolation="repeatable_read", readonly=True):
                high_water = {(t, p): o for t, p, o in await source.fetch(_HIGH_WATER)}
                await _replay(source, writer, "SELECT body FROM events ORDER BY run_id, seq")
        finally:
            await writer.stop()
        for ddl in deferred:
            await target.execute(ddl)
        bulk_events = writer.events
        if swap:
            await _swap(target, writer, high_water)
        return Report(writer.events, writer.points, len(writer.runs), time.perf_counter() - started,
                      writer.events - bulk_events, swap)
    finally:
        await source.close()
        await target.close()


async def _swap(conn: asyncpg.Connection, writer: _Writer, high_water: dict[tuple[str, int], int]) -> None:
    topics = [t for t, _ in high_water]
    partitions = [p for _, p in high_water]
    offsets = list(high_water.values())
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = on")
        await conn.execute("LOCK TABLE public.events IN SHARE MODE")  # waits for in-flight batches
        await _replay(conn, writer, """
            SELECT e.body FROM public.events e
            LEFT JOIN unnest($1::text[], $2::int[], $3::bigint[]) AS h(topic, partition, high)
                   ON h.topic = e.topic AND h.partition = e.partition
            WHERE h.high IS NULL OR e."offset" > h.high
            ORDER BY e.run_id, e.seq""", topics, partitions, offsets)
        await writer.flush(transaction=False)
        await conn.execute(f"DROP SCHEMA IF EXISTS {OLD_SCHEMA} CASCADE; CREATE SCHEMA {OLD_SCHEMA}")
        for table in PROJECTIONS:
            await conn.execute(f"ALTER TABLE public.{table} SET SCHEMA {OLD_SCHEMA}")
            await conn.execute(f"ALTER TABLE {REBUILD_SCHEMA}.{table} SET SCHEMA public")
        await conn.execute(f"DROP SCHEMA {OLD_SCHEMA} CASCADE; DROP SCHEMA {REBUILD_SCHEMA} CASCADE")


def main(argv: list[str] | None = None) -> int:
    from runstream.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m processors.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-swap", action="store_true",
                        help=f"leave the rebuilt tables in schema {REBUILD_SCHEMA} (to compare them)")
    args = parser.parse_args(argv)
    try:
        report = asyncio.run(rebuild(Settings.from_env().database_url, swap=not args.no_swap))
    except ReplayError as exc:
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
