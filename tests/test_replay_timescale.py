"""processors.replay on TimescaleDB (the PGlite build, see tests/support/pglite.py): the
rebuilt twins of hypertables are hypertables with the live tables' dimensions,
compression settings and policies, and the swap keeps them so.

PGlite serves one connection at a time and refuses COPY FROM STDIN, while a rebuild reads
the archive on one connection as it writes on another and writes points with COPY; so
what runs here is the part that is TimescaleDB's own: the twins' DDL and the swap (on an
empty archive), on one connection."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import pytest

from runstream.processors import replay
from runstream.processors.replay_load import REBUILD_SCHEMA
from tests.support.pglite import PgliteServer, node_available

pytestmark = pytest.mark.skipif(not node_available(), reason="node and npm are needed for the PGlite TimescaleDB server")

SETTINGS = """
SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc, orderby_nullsfirst
FROM timescaledb_information.compression_settings WHERE hypertable_schema = $1 AND hypertable_name = $2
ORDER BY attname"""
DIMENSIONS = """
SELECT column_name, dimension_type, time_interval, integer_interval, num_partitions
FROM timescaledb_information.dimensions WHERE hypertable_schema = $1 AND hypertable_name = $2
ORDER BY dimension_number"""
JOBS = """
SELECT hypertable_name, proc_name, config FROM timescaledb_information.jobs
WHERE hypertable_schema = $1 AND hypertable_name IS NOT NULL ORDER BY 1, 2"""


async def describe(conn: asyncpg.Connection, schema: str) -> dict[str, Any]:
    tables = [r[0] for r in await conn.fetch(
        "SELECT hypertable_name FROM timescaledb_information.hypertables WHERE hypertable_schema = $1 "
        "AND hypertable_name <> 'events' ORDER BY 1", schema)]
    return {t: ([tuple(r) for r in await conn.fetch(DIMENSIONS, schema, t)],
                [tuple(r) for r in await conn.fetch(SETTINGS, schema, t)]) for t in tables}


async def jobs(conn: asyncpg.Connection) -> list[tuple[str, str, dict[str, Any]]]:
    """The projections' jobs, without the (internal) hypertable id."""
    out = []
    for table, proc, config in await conn.fetch(JOBS, "public"):
        if table != "events":
            settings = orjson.loads(config)
            settings.pop("hypertable_id")
            out.append((table, proc, settings))
    return out


async def test_hypertables_are_rebuilt_as_hypertables_with_their_settings_and_policies(pg: PgliteServer) -> None:
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute("SELECT add_retention_policy('table_rows', INTERVAL '90 days')")
        live = await describe(conn, "public")
        live_jobs = await jobs(conn)
        assert ("table_rows", "policy_retention", {"drop_after": "90 days"}) in live_jobs
        assert ("metric_points", "policy_compression", {"compress_after": "7 days"}) in live_jobs
        assert set(live) == {"metric_points", "table_rows"} and live["metric_points"][1]

        tables = await replay._create_tables(conn)
        assert await describe(conn, REBUILD_SCHEMA) == live
        await conn.execute(f"INSERT INTO {REBUILD_SCHEMA}.metric_points (run_id, name, step, ts, value, kind) "
                           "VALUES (gen_random_uuid(), 'loss', 0, now(), 0.5, 0)")
        for ddl in tables.deferred:
            await conn.execute(ddl)
        rebuilt_indexes = {r[0] for r in await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'metric_points'", REBUILD_SCHEMA)}
        assert rebuilt_indexes == {r[0] for r in await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'metric_points'")}

        caught_up = await replay._swap(conn, {}, tables.policies)  # the archive is empty here

        assert caught_up.events == 0
        assert await describe(conn, "public") == live
        assert await jobs(conn) == live_jobs
        assert await conn.fetchval("SELECT count(*) FROM metric_points") == 1  # the twin is live
        assert await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'runstream_%'") == 0
        assert await conn.fetchval("SELECT count(*) FROM timescaledb_information.jobs "
                                   "WHERE hypertable_schema <> 'public'") == 0  # the old tables' went with them
        chunk = await conn.fetchval("SELECT show_chunks('metric_points') LIMIT 1")
        await conn.execute("SELECT compress_chunk($1::regclass)", chunk)  # the settings work, not just read back
        assert await conn.fetchval("SELECT count(*) FROM metric_points WHERE name = 'loss'") == 1
    finally:
        await conn.close()


async def test_a_job_the_rebuild_would_not_carry_over_is_refused(pg: PgliteServer) -> None:
    conn = await asyncpg.connect(pg.dsn)
    try:
        job = await conn.fetchval("SELECT add_reorder_policy('metric_points', 'metric_points_run_name_step')")
        try:
            with pytest.raises(replay.ReplayError, match="policy_reorder"):
                await replay._create_tables(conn)
        finally:
            await conn.execute("SELECT delete_job($1)", job)
    finally:
        await conn.close()
