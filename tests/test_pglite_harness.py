"""The PGlite harness: a real TimescaleDB (WASM PostgreSQL 17) reached by both drivers.

One server for the module; each test uses its own tables and ONE connection at a time
(the server has a single backend; see tests/support/pglite.py).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psycopg
import pytest

from tests.support.pglite import PgliteServer, node_available, start_pglite

pytestmark = pytest.mark.skipif(
    not node_available(), reason="node and npm are needed to run the PGlite TimescaleDB server"
)

EXTVERSION = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
DAY1 = datetime(2024, 1, 1, tzinfo=UTC)


def one(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """The single row a query returns."""
    row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row


@pytest.fixture(scope="module")
def bare_pg() -> Iterator[PgliteServer]:
    """An empty server (the shared ``pg`` fixture is a migrated one)."""
    with start_pglite() as server:
        yield server


def test_psycopg_sees_timescaledb(bare_pg: PgliteServer) -> None:
    with psycopg.connect(bare_pg.dsn) as conn:
        (version,) = one(conn, EXTVERSION)
        assert version.startswith("2.")
        # what schemas.migrate uses to decide whether hypertable migrations can run
        assert one(conn, "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'") == (1,)
        # past prepare_threshold (5): psycopg switches to named prepared statements
        assert [one(conn, "SELECT %s::int * 2", (i,))[0] for i in range(8)] == [i * 2 for i in range(8)]


async def test_asyncpg_sees_timescaledb(bare_pg: PgliteServer) -> None:
    conn = await asyncpg.connect(bare_pg.dsn)
    try:
        assert (await conn.fetchval(EXTVERSION)).startswith("2.")
        await conn.execute("CREATE TABLE apg_params (id int PRIMARY KEY, label text)")
        await conn.executemany(
            "INSERT INTO apg_params VALUES ($1, $2)", [(i, f"row{i}") for i in range(50)]
        )
        rows = await conn.fetch("SELECT id, label FROM apg_params WHERE id >= $1 ORDER BY id", 47)
        assert [tuple(r) for r in rows] == [(47, "row47"), (48, "row48"), (49, "row49")]
        async with conn.transaction():
            await conn.execute("INSERT INTO apg_params VALUES ($1, $2)", 100, "tx")
        assert await conn.fetchval("SELECT count(*) FROM apg_params") == 51
    finally:
        await conn.close()  # returns: the server hangs up on Terminate
    conn = await asyncpg.connect(bare_pg.dsn)  # a second connection after the first closed
    try:
        assert await conn.fetchval("SELECT label FROM apg_params WHERE id = $1", 100) == "tx"
    finally:
        await conn.close()


async def test_hypertable_time_bucket_and_compression(bare_pg: PgliteServer) -> None:
    with psycopg.connect(bare_pg.dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE ts_points (ts timestamptz NOT NULL, run_id int NOT NULL,"
            " name text NOT NULL, step int NOT NULL, value double precision)"
        )
        (created,) = one(
            conn, "SELECT create_hypertable('ts_points', 'ts', chunk_time_interval => INTERVAL '1 day')"
        )
        assert "ts_points" in created
        conn.execute("CREATE TABLE ts_ranged (ts timestamptz NOT NULL, v int)")
        conn.execute("SELECT create_hypertable('ts_ranged', by_range('ts', INTERVAL '7 days'))")

        # two days, two runs, six rows per run and day; plain INSERT (no COPY here)
        rows = [
            (DAY1 + timedelta(days=d, hours=h), run, "loss", d * 6 + h, float(run * 100 + d * 10 + h))
            for d in range(2)
            for run in (1, 2)
            for h in range(6)
        ]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO ts_points VALUES (%s, %s, %s, %s, %s)", rows)
        conn.execute("INSERT INTO ts_ranged VALUES ('2024-01-01', 1), ('2024-01-20', 2)")

        hypertables: dict[str, int] = dict(
            conn.execute(
                "SELECT hypertable_name, num_chunks FROM timescaledb_information.hypertables"
                " WHERE hypertable_name IN ('ts_points', 'ts_ranged')"
            ).fetchall()
        )
        assert hypertables == {"ts_points": 2, "ts_ranged": 2}

        conn.execute(
            "ALTER TABLE ts_points SET (timescaledb.compress,"
            " timescaledb.compress_segmentby = 'run_id, name',"
            " timescaledb.compress_orderby = 'step')"
        )
        (job_id,) = one(conn, "SELECT add_compression_policy('ts_points', INTERVAL '7 days')")
        job = one(
            conn,
            "SELECT proc_name, config->>'compress_after' FROM timescaledb_information.jobs"
            " WHERE job_id = %s",
            (job_id,),
        )
        assert job == ("policy_compression", "7 days")
        # no background workers here: compress by hand (or CALL run_job(job_id))
        assert one(conn, "SELECT count(compress_chunk(c)) FROM show_chunks('ts_points') c") == (2,)
        assert one(
            conn,
            "SELECT compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_name = 'ts_points'",
        ) == (True,)
        (retention_job,) = one(conn, "SELECT add_retention_policy('ts_ranged', INTERVAL '90 days')")
        assert retention_job > 0

    # time_bucket over the compressed chunks, through asyncpg with a bound interval
    conn = await asyncpg.connect(bare_pg.dsn)
    try:
        buckets = await conn.fetch(
            "SELECT time_bucket($1::interval, ts) AS day, run_id, count(*) AS n, avg(value) AS mean"
            " FROM ts_points WHERE name = $2 GROUP BY day, run_id ORDER BY day, run_id",
            timedelta(days=1),
            "loss",
        )
    finally:
        await conn.close()
    assert [(b["day"], b["run_id"], b["n"], b["mean"]) for b in buckets] == [
        (DAY1 + timedelta(days=d), run, 6, run * 100 + d * 10 + 2.5) for d in range(2) for run in (1, 2)
    ]


def test_one_client_at_a_time(bare_pg: PgliteServer) -> None:
    first = psycopg.connect(bare_pg.dsn)
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(bare_pg.dsn, connect_timeout=2)  # queued behind `first`, gives up
        gc.collect()  # psycopg keeps a timed-out attempt's socket until collected
    finally:
        first.close()
    with psycopg.connect(bare_pg.dsn, connect_timeout=10) as conn:
        assert one(conn, "SELECT 1") == (1,)


def test_each_connection_starts_clean(bare_pg: PgliteServer) -> None:
    conn = psycopg.connect(bare_pg.dsn)  # not autocommit: a transaction is left open
    conn.execute("CREATE TABLE never_committed (a int)")
    conn.execute("CREATE TEMP TABLE session_temp (a int)")
    conn.execute("PREPARE session_stmt AS SELECT 1")
    conn.execute("SET application_name = 'left-behind'")
    conn.close()  # psycopg discards the open transaction; the server must too
    with psycopg.connect(bare_pg.dsn, autocommit=True) as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert one(
            conn,
            "SELECT to_regclass('never_committed'), to_regclass('session_temp'),"
            " (SELECT count(*) FROM pg_prepared_statements),"
            " current_setting('application_name'), current_setting('search_path')",
        ) == (None, None, 0, "", "public")


async def test_large_messages_and_copy(bare_pg: PgliteServer) -> None:
    big = "x" * 2_000_000  # spans many TCP reads
    with psycopg.connect(bare_pg.dsn) as conn:
        assert one(conn, "SELECT length(%s::text)", (big,)) == (len(big),)
        with conn.cursor() as cur, cur.copy("COPY (SELECT generate_series(1, 1000)) TO STDOUT") as copy:
            assert sum(1 for _ in copy.rows()) == 1000
    conn = await asyncpg.connect(bare_pg.dsn)
    try:
        await conn.execute("CREATE TABLE copy_target (a int)")
        with pytest.raises(asyncpg.FeatureNotSupportedError, match="COPY FROM STDIN"):
            await conn.copy_records_to_table("copy_target", records=[(1,), (2,)])
        assert await conn.fetchval("SELECT length($1::text)", big) == len(big)  # still alive
    finally:
        await conn.close()
