"""TimescaleDB in :mod:`processors.replay`: a projection that is a hypertable is rebuilt
into a twin that is one too, made from what the live table is (its dimensions, its
compression settings), and its policies are added again once the twin is swapped in.

What is read comes from ``timescaledb_information`` (hypertables, dimensions,
compression_settings, jobs, continuous_aggregates), so the twin follows whatever
``schemas/migrations/0002_timescale.sql`` (or a later change) made of the live table
instead of a second copy of those settings. Chunks of the twin start uncompressed; the
compression policy compresses them on its schedule, as it does for new data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

Statement = tuple[str, list[Any]]
"""SQL and its parameters."""

POLICIES = {"policy_compression": ("add_compression_policy", "compress_after"),
            "policy_retention": ("add_retention_policy", "drop_after")}
"""Job procedures that are re-created on the twin: (function, its argument in the job's config)."""


class Unsupported(RuntimeError):
    """A hypertable the rebuild does not know how to recreate (the message says why)."""


@dataclass
class Hypertable:
    table: str
    dimensions: list[tuple[str, Any, int | None]] = field(default_factory=list)
    """(column, chunk interval (an interval or an integer), partitions of a space dimension)."""
    compression: bool = False
    segmentby: list[str] = field(default_factory=list)
    orderby: list[str] = field(default_factory=list)
    """Each ``"column" ASC|DESC NULLS FIRST|LAST``."""
    policies: list[tuple[str, str, Any]] = field(default_factory=list)
    """(function, argument, value), e.g. ("add_compression_policy", "compress_after", "7 days")."""


async def available(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL"))


async def hypertables(conn: asyncpg.Connection, schema: str, tables: tuple[str, ...]) -> dict[str, Hypertable]:
    """Those of ``tables`` (in ``schema``) that are hypertables, described."""
    if not await available(conn):
        return {}
    found: dict[str, Hypertable] = {}
    for name, compression in await conn.fetch(
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = $1 AND hypertable_name = ANY($2::text[])", schema, list(tables)):
        h = found[name] = Hypertable(name, compression=compression)
        for column, kind, interval, integer_interval, partitions in await conn.fetch(
                "SELECT column_name, dimension_type, time_interval, integer_interval, num_partitions "
                "FROM timescaledb_information.dimensions WHERE hypertable_schema = $1 AND hypertable_name = $2 "
                "ORDER BY dimension_number", schema, name):
            h.dimensions.append((column, interval if interval is not None else integer_interval,
                                 partitions if kind == "Space" else None))
        if compression:
            await _compression(conn, schema, h)
        for proc, config in await conn.fetch(
                "SELECT proc_name, config FROM timescaledb_information.jobs "
                "WHERE hypertable_schema = $1 AND hypertable_name = $2 ORDER BY job_id", schema, name):
            if proc not in POLICIES:
                raise Unsupported(f"{schema}.{name} has a {proc} job, which a rebuild would not carry over")
            function, argument = POLICIES[proc]
            value = orjson.loads(config).get(argument) if isinstance(config, str) else (config or {}).get(argument)
            if value is None:
                raise Unsupported(f"{schema}.{name}'s {proc} job has no {argument} (config {config})")
            h.policies.append((function, argument, value))
    if found and await conn.fetchval("SELECT to_regclass('timescaledb_information.continuous_aggregates') IS NOT NULL"):
        caggs = await conn.fetch("SELECT view_name, hypertable_name FROM timescaledb_information.continuous_aggregates "
                                 "WHERE hypertable_schema = $1 AND hypertable_name = ANY($2::text[])",
                                 schema, list(found))
        if caggs:
            raise Unsupported("continuous aggregates on rebuilt tables would be dropped with them: "
                              + ", ".join(f"{v} on {t}" for v, t in caggs))
    return found


async def _compression(conn: asyncpg.Connection, schema: str, h: Hypertable) -> None:
    if await conn.fetchval("SELECT to_regclass('timescaledb_information.compression_settings') IS NOT NULL"):
        rows = await conn.fetch(
            "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc, orderby_nullsfirst "
            "FROM timescaledb_information.compression_settings WHERE hypertable_schema = $1 AND hypertable_name = $2",
            schema, h.table)
        h.segmentby = [ident(r[0]) for r in sorted((r for r in rows if r[1] is not None), key=lambda r: r[1])]
        h.orderby = [f"{ident(r[0])} {'ASC' if r[3] else 'DESC'} NULLS {'FIRST' if r[4] else 'LAST'}"
                     for r in sorted((r for r in rows if r[2] is not None), key=lambda r: r[2])]
        return
    # Later versions only have the per-table view, with both lists as text as given to ALTER TABLE.
    row = await conn.fetchrow("SELECT segmentby, orderby FROM timescaledb_information.hypertable_compression_settings "
                              "WHERE hypertable = $1::regclass", f"{schema}.{h.table}")
    if row is not None:
        h.segmentby = [row[0]] if row[0] else []
        h.orderby = [row[1]] if row[1] else []


def twin(h: Hypertable, schema: str) -> list[Statement]:
    """Make ``schema.<table>`` (created empty, without indexes yet) a hypertable like ``h``."""
    relation = f"{schema}.{h.table}"
    if not h.dimensions:
        raise Unsupported(f"{h.table}: a hypertable without dimensions")
    (column, interval, partitions), *more = h.dimensions
    if partitions is not None:
        raise Unsupported(f"{h.table}: the first dimension is a space dimension")
    out: list[Statement] = [(
        f"SELECT create_hypertable($1::regclass, $2::name, chunk_time_interval => $3::{_type(interval)}, "
        "create_default_indexes => false)", [relation, column, interval])]
    for column, interval, partitions in more:
        if partitions is not None:
            out.append(("SELECT add_dimension($1::regclass, $2::name, number_partitions => $3::int)",
                        [relation, column, partitions]))
        else:
            out.append((f"SELECT add_dimension($1::regclass, $2::name, chunk_time_interval => $3::{_type(interval)})",
                        [relation, column, interval]))
    if h.compression:
        options = ["timescaledb.compress"]
        if h.segmentby:
            options.append(f"timescaledb.compress_segmentby = {literal(', '.join(h.segmentby))}")
        if h.orderby:
            options.append(f"timescaledb.compress_orderby = {literal(', '.join(h.orderby))}")
        out.append((f"ALTER TABLE {relation} SET ({', '.join(options)})", []))
    return out


def policies(h: Hypertable, schema: str) -> list[Statement]:
    """Add ``h``'s policies to ``schema.<table>`` (the twin, once it has the live name)."""
    return [(f"SELECT {function}($1::regclass, {argument} => $2::{'bigint' if isinstance(value, int) else 'text::interval'})",
             [f"{schema}.{h.table}", value]) for function, argument, value in h.policies]


def _type(interval: Any) -> str:
    return "bigint" if isinstance(interval, int) else "interval"


def ident(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
