"""The TimescaleDB path, kept from rotting: migrations and every query-API statement run on
PostgreSQL 17 + TimescaleDB 2.23 (the PGlite WASM build from npm; no Docker or apt needed)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import psycopg
import pytest

from runstream.query_api import queries
from runstream.query_api.app import init_connection
from runstream.schemas.migrate import migrate
from tests.support.pglite import PgliteServer, node_available
from tests.support.sql import EXAMPLE_PARAMS, STATEMENTS

pytestmark = pytest.mark.skipif(not node_available(), reason="node and npm are needed for the PGlite TimescaleDB server")

def test_migrations_make_hypertables_with_compression_policies(pg: PgliteServer) -> None:
    with psycopg.connect(pg.dsn) as conn:
        hypertables = dict(conn.execute(
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables").fetchall())
        policies = {r[0] for r in conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'")}
        applied = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY version")]
    assert {"metric_points", "table_rows", "events"} <= set(hypertables)
    assert all(hypertables[t] for t in ("metric_points", "table_rows", "events"))
    assert {"metric_points", "table_rows", "events"} <= policies
    assert applied[:2] == ["core", "timescale"]
    assert "events_lz4" in applied  # on a hypertable too (lz4 or, where not built in, a warning)


def test_migrating_again_changes_nothing(pg: PgliteServer) -> None:
    assert migrate(pg.dsn).applied == []


def test_every_query_has_example_parameters() -> None:
    assert set(STATEMENTS) == set(EXAMPLE_PARAMS)


async def test_every_query_api_statement_runs_on_timescaledb(pg: PgliteServer) -> None:
    conn = await asyncpg.connect(pg.dsn)
    try:
        await init_connection(conn)
        await _seed(conn)
        for name, sql in sorted(STATEMENTS.items()):
            try:
                await conn.fetch(sql, *EXAMPLE_PARAMS[name])
            except asyncpg.PostgresError as exc:
                pytest.fail(f"{name} fails on TimescaleDB: {exc.__class__.__name__}: {exc}")
        vector = await conn.fetch(queries.VECTOR_POINTS, *EXAMPLE_PARAMS["VECTOR_POINTS"])
        assert [r["step"] for r in vector] == list(range(0, 101))
    finally:
        await conn.close()


async def _seed(conn: asyncpg.Connection) -> None:
    """A run with what every statement reads, written with INSERT (COPY is not supported here)."""
    run = uuid.UUID(str(EXAMPLE_PARAMS["RUN_BY_ID"][0]))
    now = datetime.now(UTC)
    await conn.execute("INSERT INTO experiments (name, created_at) VALUES ('exp', $1) ON CONFLICT DO NOTHING", now)
    await conn.execute(
        "INSERT INTO runs (run_id, experiment, name, kind, status, started_at, updated_at, last_seq) "
        "VALUES ($1, 'exp', 'r', 'interactive', 'running', $2, $2, 3) ON CONFLICT DO NOTHING", run, now)
    await conn.execute("INSERT INTO tags (run_id, key, value, updated_at) VALUES ($1, 'k', 'v', $2) "
                       "ON CONFLICT DO NOTHING", run, now)
    await conn.executemany(
        "INSERT INTO metric_points (run_id, name, step, ts, value, kind) VALUES ($1, 'mse', $2, $3, $4, 0)",
        [(run, step, now, 1.0 / (step + 1)) for step in range(200)])
    await conn.execute(
        "INSERT INTO metric_summaries (run_id, name, kind, count, last_seq, last_step, last_value, min_value, "
        "max_value, updated_at) VALUES ($1, 'mse', 'scalar', 200, 1, 199, 0.005, 0.005, 1, $2) ON CONFLICT DO NOTHING",
        run, now)
    await conn.execute("INSERT INTO table_rows (run_id, name, seq, idx, ts, cells) VALUES ($1, 't', 2, 0, $2, $3)",
                       run, now, {"x": 1, "y": {"f": "NaN"}})
    await conn.execute("INSERT INTO artifacts (run_id, path, sha256, size, content_type, created_at) "
                       "VALUES ($1, 'outputs/model.pkl', $2, 3, 'application/octet-stream', $3) ON CONFLICT DO NOTHING",
                       run, "a" * 64, now)
    await conn.execute("INSERT INTO events (run_id, seq, ts, type, v, event_id, body, topic, partition, \"offset\") "
                       "VALUES ($1, 0, $2, 'run.started', 1, $1, $3, 't', 0, 0) ON CONFLICT DO NOTHING",
                       run, now, b'{"type":"run.started"}')
    await conn.execute("INSERT INTO log_lines (run_id, seq, idx, ts, stream, line) VALUES ($1, 3, 0, $2, 'stdout', 'hi')",
                       run, now)
