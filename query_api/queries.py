"""Every SQL statement of the query API, and the functions that run them.

Each upper-case ``str`` constant is one complete statement with ``$n`` parameters only,
valid on PostgreSQL 15 and on PostgreSQL 17 + TimescaleDB (tests/support/sql.py runs each
with example parameters on both). Functions take a pool (or connection) and return plain
data ready for orjson: UUIDs and datetimes as such, metric values already in their JSON
form (:func:`schemas.values.encode`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias, cast

import asyncpg
import orjson

from runstream.query_api import downsample as ds
from runstream.query_api import history
from runstream.query_api.errors import BadRequest, NotFound, WaitTimeout
from runstream.query_api.search import Expr, compile_filter
from runstream.schemas import api
from runstream.schemas.events import SERVER_SEQ_BASE
from runstream.schemas.values import encode

Db: TypeAlias = "asyncpg.Pool[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]"
"""Anything that runs a statement: the app's pool or one connection."""

READY = "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = 1)"

# Every statement that reads runs or experiments takes the principal's workspace as a bind
# parameter (query_api.auth): another workspace's rows are never read. Statements keyed by
# a run id alone (points, tags, files, events, ...) run only after the run was found in
# the workspace (wait_for_run, run_detail), so they need no second check.
EXPERIMENTS = """
SELECT e.name, e.created_at, count(r.run_id) AS run_count, max(r.updated_at) AS last_activity
FROM experiments e LEFT JOIN runs r ON r.workspace = e.workspace AND r.experiment = e.name
WHERE e.workspace = $1
GROUP BY e.name, e.created_at ORDER BY e.name"""

_run_columns = """r.run_id, r.experiment, r.name, r.status, r.kind, r.parent_run_id, r.error,
       r.started_at, r.ended_at, r.updated_at, r.last_seq, r.deleted_at"""

# The run detail in one statement (one round trip, one snapshot): the run's row, its tags
# and metric summaries as arrays of records in the order of _tag_fields / _summary_fields,
# and its children's ids in start order.
_tag_fields = "t.key, t.value"
_summary_fields = """s.name, s.kind, s.description, s.count, s.last_step, s.last_value, s.last_text,
                s.last_kind, s.min_value, s.max_value"""
RUN_BY_ID = f"""
SELECT {_run_columns}, r.properties,
       ARRAY(SELECT ROW({_tag_fields}) FROM tags t WHERE t.run_id = r.run_id ORDER BY t.key) AS tags,
       ARRAY(SELECT ROW({_summary_fields}) FROM metric_summaries s
             WHERE s.run_id = r.run_id ORDER BY s.name) AS summaries,
       ARRAY(SELECT ROW(p.key, p.value) FROM params p WHERE p.run_id = r.run_id ORDER BY p.key) AS params,
       r.server_seq,
       ARRAY(SELECT c.run_id FROM runs c WHERE c.parent_run_id = r.run_id AND c.workspace = r.workspace
             ORDER BY c.started_at, c.run_id) AS children,
       (SELECT count(*) FROM dead_letters d WHERE d.run_id = r.run_id AND d.retried_at IS NULL) AS dead_letters
FROM runs r WHERE r.run_id = $1 AND r.workspace = $2"""

RUNS_BY_IDS = f"SELECT {_run_columns} FROM runs r WHERE r.run_id = ANY($1::uuid[]) AND r.workspace = $2"

# last_seq: the run's own numbering; server_seq: the query API's events for it (>= SERVER_SEQ_BASE).
RUN_LAST_SEQ = "SELECT last_seq, server_seq FROM runs WHERE run_id = $1 AND workspace = $2"

PARAMS_FOR_RUNS = "SELECT run_id, key, value FROM params WHERE run_id = ANY($1::uuid[]) ORDER BY run_id, key"

# Pending dead letters of a run up to a seq (the as-of detail's count).
DEAD_LETTERS_UP_TO = ("SELECT count(*) FROM dead_letters WHERE run_id = $1 AND retried_at IS NULL "
                      "AND (seq IS NULL OR seq <= $2)")

# UNION (not UNION ALL) so that a parent cycle in bad data still terminates.
RUN_TREE = """
WITH RECURSIVE tree(run_id, last_seq) AS (
    SELECT run_id, last_seq FROM runs WHERE run_id = $1 AND workspace = $2
    UNION
    SELECT r.run_id, r.last_seq FROM runs r JOIN tree t ON r.parent_run_id = t.run_id WHERE r.workspace = $2
)
SELECT run_id, last_seq FROM tree"""

TAGS_FOR_RUNS = "SELECT run_id, key, value FROM tags WHERE run_id = ANY($1::uuid[]) ORDER BY run_id, key"

# $2 = metric names to keep; an empty array keeps all. Image summaries carry their
# artifact path in last_text; the artifact row gives its sha256.
SUMMARIES_FOR_RUNS = """
SELECT s.run_id, s.name, s.kind, s.description, s.count, s.last_step, s.last_value,
       s.last_text, s.last_kind, s.min_value, s.max_value, a.sha256 AS artifact_sha256
FROM metric_summaries s
LEFT JOIN artifacts a ON s.kind = 'image' AND a.run_id = s.run_id AND a.path = s.last_text
WHERE s.run_id = ANY($1::uuid[]) AND (cardinality($2::text[]) = 0 OR s.name = ANY($2::text[]))
ORDER BY s.run_id, s.name"""

# Every point of the given (run_id, name) pairs: the vectors of get_metrics.
POINTS_FOR = """
SELECT p.run_id, p.name, p.value, p.text, p.kind
FROM unnest($1::uuid[], $2::text[]) AS w(run_id, name)
JOIN metric_points p ON p.run_id = w.run_id AND p.name = w.name
ORDER BY p.run_id, p.name, p.step, p.ts"""

TABLE_ROWS_FOR = """
SELECT t.run_id, t.name, t.cells
FROM unnest($1::uuid[], $2::text[]) AS w(run_id, name)
JOIN table_rows t ON t.run_id = w.run_id AND t.name = w.name
ORDER BY t.run_id, t.name, t.seq, t.idx"""

_points_in_range = "FROM metric_points WHERE run_id = $1 AND name = $2 AND step BETWEEN $3 AND $4"
_point_columns = "step, date_part('epoch', ts) AS time, value, text, kind"

VECTOR_POINTS = f"SELECT {_point_columns} {_points_in_range} ORDER BY step, ts"

# The first and last point of the range. The edge step is found on its own (ORDER BY
# step, which the index gives) and then its earliest/latest point: with ORDER BY step, ts
# a metric without statistics yet (just ingested) got a sort of every point.
_edge_step = "step = (SELECT step {points} ORDER BY step {order} LIMIT 1)"
VECTOR_BOUNDS = f"""
(SELECT {_point_columns} FROM metric_points
 WHERE run_id = $1 AND name = $2 AND {_edge_step.format(points=_points_in_range, order="ASC")}
 ORDER BY ts LIMIT 1)
UNION ALL
(SELECT {_point_columns} FROM metric_points
 WHERE run_id = $1 AND name = $2 AND {_edge_step.format(points=_points_in_range, order="DESC")}
 ORDER BY ts DESC LIMIT 1)"""

# Per bucket of width $5: count, whether it holds strings, and the (value, step) of its
# minimum and maximum. The step travels as float8 plus an exact remainder so that steps
# above 2**53 survive; array order is float order (NaN highest), as in downsample.py.
_value_step = "ARRAY[value, step::float8, (step - step::float8::bigint)::float8]"
VECTOR_BUCKETS = f"""
SELECT count(*) AS n, bool_or(kind = 3) AS has_text,
       min({_value_step}) AS lo, max({_value_step}) AS hi
{_points_in_range}
GROUP BY (step - $3) / $5"""

# One index lookup per step (a LATERAL subquery kept as such by OFFSET 0, not
# step = ANY(...) or a join the planner may hash): right after a large ingest, before
# autoanalyze, the planner otherwise reads every point of the metric.
VECTOR_AT_STEPS = f"""
SELECT p.* FROM unnest($3::bigint[]) AS s(at)
CROSS JOIN LATERAL (SELECT {_point_columns} FROM metric_points
                    WHERE run_id = $1 AND name = $2 AND step = s.at OFFSET 0) AS p
ORDER BY p.step, p.time"""

# The same per-bucket figures from the rollups of level $3 (blocks of 2^$3 steps): the
# blocks strictly between the first ($4) and last ($5) block of the range come from
# metric_rollups, the points of those two edge blocks inside [$6, $7] from metric_points.
# Origin $8 and width $9 are aligned to the blocks (query_api.downsample.bucket_grid), so
# each block falls in one bucket. "blocks" counts rollup rows (0: no rollups kept here).
_rollup_step = "ARRAY[{v}, {s}::float8, ({s} - {s}::float8::bigint)::float8]"
VECTOR_ROLLUP_BUCKETS = f"""
WITH parts AS (
    SELECT block << $3::int AS s, n, n_text, lo_value, lo_step, hi_value, hi_step, 1 AS blocks
    FROM metric_rollups
    WHERE run_id = $1 AND name = $2 AND shift = $3 AND block > $4 AND block < $5
    UNION ALL
    SELECT step, 1, (kind = 3)::int, value, step, value, step, 0 FROM metric_points
    WHERE run_id = $1 AND name = $2 AND step BETWEEN $6 AND LEAST($7, (($4 + 1) << $3::int) - 1)
    UNION ALL
    SELECT step, 1, (kind = 3)::int, value, step, value, step, 0 FROM metric_points
    WHERE run_id = $1 AND name = $2 AND step BETWEEN GREATEST($6, $5 << $3::int) AND $7 AND $5 > $4
)
SELECT sum(n)::bigint AS n, sum(n_text) > 0 AS has_text, sum(blocks)::bigint AS blocks,
       min({_rollup_step.format(v="lo_value", s="lo_step")}) AS lo,
       max({_rollup_step.format(v="hi_value", s="hi_step")}) AS hi
FROM parts
GROUP BY (s - $8) / $9"""

SUMMARY_ONE = """
SELECT kind, count FROM metric_summaries WHERE run_id = $1 AND name = $2"""

TABLE_ROWS = "SELECT cells FROM table_rows WHERE run_id = $1 AND name = $2 ORDER BY seq, idx"

ARTIFACTS = """
SELECT path, size, sha256, content_type, created_at FROM artifacts WHERE run_id = $1 ORDER BY path"""

ARTIFACT = "SELECT path, sha256, size, content_type FROM artifacts WHERE run_id = $1 AND path = $2"

EVENTS_PAGE = "SELECT seq, body FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"

# The run's history (query_api.history): a page of events after a seq, optionally only
# some types (an empty array: all).
HISTORY_PAGE = """
SELECT seq, ts, type, body FROM events
WHERE run_id = $1 AND seq > $2 AND (cardinality($4::text[]) = 0 OR type = ANY($4::text[]))
ORDER BY seq LIMIT $3"""

# A run's state as of an event (query_api.asof): how many archived events and body bytes
# (uncompressed size; octet_length reads the TOAST header, not the data) a fold up to seq
# $2 would read, then the bodies themselves in seq order.
# The events of the other numbering (the run's own below SERVER_SEQ_BASE, the query API's
# above it: docs/ARCHITECTURE.md "Seq ownership") count in when stamped no later than $3.
_as_of_events = f"""FROM events WHERE run_id = $1 AND CASE WHEN $2::bigint < {SERVER_SEQ_BASE}
    THEN seq <= $2 OR (seq >= {SERVER_SEQ_BASE} AND ts <= $3)
    ELSE (seq >= {SERVER_SEQ_BASE} AND seq <= $2) OR (seq < {SERVER_SEQ_BASE} AND ts <= $3) END"""
AS_OF_EXTENT = f"""
SELECT count(*) AS events, COALESCE(sum(octet_length(body)), 0)::bigint AS bytes
{_as_of_events}"""

AS_OF_EVENTS = f"SELECT seq, body {_as_of_events} ORDER BY seq"

AS_OF_TS = "SELECT ts FROM events WHERE run_id = $1 AND seq = $2 ORDER BY ts LIMIT 1"

# The first event stamped after a time: the state as of that time is every event before it.
AS_OF_FIRST_AFTER = f"""SELECT seq FROM events WHERE run_id = $1 AND ts > $2 AND seq < {SERVER_SEQ_BASE}
ORDER BY seq LIMIT 1"""

# The children a run had as of a time: those whose run.started is stamped no later.
AS_OF_CHILDREN = """
SELECT run_id FROM runs WHERE parent_run_id = $1 AND started_at <= $2 AND workspace = $3
ORDER BY started_at, run_id"""

# The live endpoint: a page of events after a seq (with the type for the SSE `event:`
# field), and the run's status and last materialized seq to know when the run is over.
# Only the run's own numbering: the API's events for a run numbered elsewhere (seq >=
# SERVER_SEQ_BASE) are read with the run, not streamed (their seqs would pass the cursor).
LIVE_EVENTS = f"""SELECT seq, type, body FROM events WHERE run_id = $1 AND seq > $2 AND seq < {SERVER_SEQ_BASE}
ORDER BY seq LIMIT $3"""

LIVE_RUN_STATE = "SELECT status, last_seq FROM runs WHERE run_id = $1 AND workspace = $2"

LOG_LINES_PAGE = """
SELECT seq, idx, ts, stream, line FROM log_lines
WHERE run_id = $1 AND (seq, idx) > ($2, $3) ORDER BY seq, idx LIMIT $4"""

# Runs of an experiment. Every filter is always present and switched off by an empty
# array (or parent mode 'any'), so the statement is fixed text; only the ORDER BY is
# chosen from _ORDERINGS and the search filter (query_api.search) is compiled in after
# the fixed parameters: {where}, "TRUE" without one. $1 experiments, $2 statuses, $3 parent mode ('any' | 'none' |
# 'id'), $4 parent run id, $5/$6 tag keys/values (NULL value = key only), $7/$8/$9
# metric names/operators/thresholds against last_value, $10 metric to order by.
_runs_from_where = """
FROM runs r
LEFT JOIN metric_summaries o ON o.run_id = r.run_id AND o.name = $10::text
WHERE r.experiment = ANY($1::text[])
  AND (cardinality($2::text[]) = 0 OR r.status = ANY($2::text[]))
  AND ($3::text = 'any' OR ($3::text = 'none' AND r.parent_run_id IS NULL)
       OR ($3::text = 'id' AND r.parent_run_id = $4::uuid))
  AND NOT EXISTS (
      SELECT 1 FROM unnest($5::text[], $6::text[]) AS f(key, value)
      WHERE NOT EXISTS (
          SELECT 1 FROM tags t WHERE t.run_id = r.run_id AND t.key = f.key
            AND (f.value IS NULL OR t.value = f.value)))
  AND NOT EXISTS (
      SELECT 1 FROM unnest($7::text[], $8::text[], $9::float8[]) AS m(name, op, threshold)
      WHERE NOT EXISTS (
          SELECT 1 FROM metric_summaries s WHERE s.run_id = r.run_id AND s.name = m.name
            AND CASE m.op
                WHEN '<' THEN s.last_value < m.threshold
                WHEN '<=' THEN s.last_value <= m.threshold
                WHEN '>' THEN s.last_value > m.threshold
                WHEN '>=' THEN s.last_value >= m.threshold
                WHEN '=' THEN s.last_value = m.threshold
                WHEN '!=' THEN s.last_value <> m.threshold
            END))
  AND ({where}) AND {lifecycle}"""

METRIC_OPERATORS = ("<=", ">=", "!=", "<", ">", "=")
"""Operators of a metric filter, longest first (the order a parser must try them)."""

# A NaN last value sorts with the missing ones: "best run by metric" never picks NaN.
_metric_key = "NULLIF(o.last_value, 'NaN'::float8)"
# A parameter orders as text (as MLflow orders params); $10 names it.
_ORDERINGS: dict[tuple[str, str], str] = {
    ("started_at", "asc"): "r.started_at ASC, r.run_id ASC",
    ("started_at", "desc"): "r.started_at DESC, r.run_id DESC",
    ("name", "asc"): "r.name ASC NULLS LAST, r.started_at DESC, r.run_id",
    ("name", "desc"): "r.name DESC NULLS LAST, r.started_at DESC, r.run_id",
    ("status", "asc"): "r.status ASC, r.started_at DESC, r.run_id",
    ("status", "desc"): "r.status DESC, r.started_at DESC, r.run_id",
    ("metric", "asc"): f"{_metric_key} ASC NULLS LAST, r.started_at DESC, r.run_id",
    ("metric", "desc"): f"{_metric_key} DESC NULLS LAST, r.started_at DESC, r.run_id",
}
# Sorting by any column of the table (issue 13): a metric's min or max, a param (numbers
# numerically, before strings), a tag (numerically where it reads as a number, then as text) and the duration.
# The name ($10) is always a bind parameter; only these fixed expressions are spliced in.
# A tag value PostgreSQL's numeric input accepts (exponent bounded: never overflows).
_numeric_tag = r"'^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d{1,4})?\s*$'"
_tag_value = "(SELECT t.value FROM tags t WHERE t.run_id = r.run_id AND t.key = $10::text)"
# A param: the params projection's value, else the start_logging property of that name (as text).
_param_value = ("COALESCE((SELECT p.value FROM params p WHERE p.run_id = r.run_id AND p.key = $10::text), "
                "r.properties ->> $10::text)")
_SORT_KEYS = {
    "metric_min": "NULLIF(o.min_value, 'NaN'::float8) {o} NULLS LAST",
    "metric_max": "NULLIF(o.max_value, 'NaN'::float8) {o} NULLS LAST",
    "param": (f"(CASE WHEN {_param_value} ~ {_numeric_tag} THEN {_param_value}::numeric END) {{o}} NULLS LAST, "
              f"{_param_value} {{o}} NULLS LAST"),
    "tag": (f"(CASE WHEN {_tag_value} ~ {_numeric_tag} THEN {_tag_value}::numeric END) {{o}} NULLS LAST, "
            f"{_tag_value} {{o}} NULLS LAST"),
    "duration": "(r.ended_at - r.started_at) {o} NULLS LAST",
}
for _field, _key in _SORT_KEYS.items():
    for _order in ("asc", "desc"):
        _ORDERINGS[(_field, _order)] = _key.replace("{o}", _order.upper()) + ", r.started_at DESC, r.run_id"
ORDER_FIELDS = ("started_at", "name", "status", "duration")
"""``order_by`` values besides ``<prefix>:<name>`` (:data:`ORDER_PREFIXES`)."""
ORDER_PREFIXES = {"metric": "metric", "metric.last": "metric", "metric.min": "metric_min",
                  "metric.max": "metric_max", "param": "param", "tag": "tag"}
"""``order_by=<prefix>:<name>``: the ordering each prefix selects (the name is ``$10``)."""


LIFECYCLES = {"active": "r.deleted_at IS NULL", "deleted": "r.deleted_at IS NOT NULL", "all": "TRUE"}
"""Which runs a listing shows: not deleted (the default), only deleted ones, or all."""


def _from_where(where: str, lifecycle: str) -> str:
    return _runs_from_where.replace("{where}", where).replace("{lifecycle}", LIFECYCLES[lifecycle])


def runs_page_sql(order_by: str, order: str, where: str = "TRUE", lifecycle: str = "active") -> str:
    """The runs page statement for a whitelisted ordering ($11 limit, $12 offset), a
    compiled search filter (:func:`query_api.search.compile_filter` from $13) and a
    :data:`LIFECYCLES` key."""
    return (
        f"SELECT {_run_columns}, r.properties, count(*) OVER () AS total {_from_where(where, lifecycle)}\n"
        f"ORDER BY {_ORDERINGS[(order_by, order)]}\nLIMIT $11 OFFSET $12"
    )


def runs_count_sql(where: str = "TRUE", lifecycle: str = "active") -> str:
    """The runs count for a compiled search filter (numbered from $11)."""
    return f"SELECT count(*) {_from_where(where, lifecycle)}"


def runs_export_sql(order_by: str, order: str, where: str = "TRUE", lifecycle: str = "active") -> str:
    """Every run the runs listing would page through (same filters and ordering, no
    LIMIT), each with its tags, its params (the projection's over its properties') and its
    scalar/list metrics' summaries as arrays of records: the CSV export reads it with a
    cursor. The search filter is numbered from $11."""
    return (
        f"SELECT {_run_columns}, r.properties,\n"
        f"  ARRAY(SELECT ROW(t.key, t.value) FROM tags t WHERE t.run_id = r.run_id) AS tags,\n"
        f"  ARRAY(SELECT ROW(p.key, p.value) FROM params p WHERE p.run_id = r.run_id) AS params,\n"
        f"  ARRAY(SELECT ROW(s.name, s.last_value, s.last_text, s.last_kind, s.min_value, s.max_value)\n"
        f"        FROM metric_summaries s WHERE s.run_id = r.run_id AND s.kind IN ('scalar', 'list')) AS summaries\n"
        f"{_from_where(where, lifecycle)}\nORDER BY {_ORDERINGS[(order_by, order)]}"
    )


def runs_export_keys_sql(where: str = "TRUE", lifecycle: str = "active") -> str:
    """The CSV export's columns: the tag keys, param names (the params projection's and the
    properties') and scalar/list metric names of the filtered runs, each sorted (filter
    numbered from $11)."""
    return (
        f"WITH f AS (SELECT r.run_id, r.properties {_from_where(where, lifecycle)})\n"
        "SELECT ARRAY(SELECT DISTINCT t.key FROM tags t JOIN f ON t.run_id = f.run_id ORDER BY 1) AS tags,\n"
        "       ARRAY(SELECT k FROM (SELECT jsonb_object_keys(f.properties) AS k FROM f\n"
        "                            UNION SELECT p.key FROM params p JOIN f ON p.run_id = f.run_id) AS n\n"
        "             ORDER BY 1) AS params,\n"
        "       ARRAY(SELECT DISTINCT s.name FROM metric_summaries s JOIN f ON s.run_id = f.run_id\n"
        "             WHERE s.kind IN ('scalar', 'list') ORDER BY 1) AS metrics"
    )


# A metric's whole history in step order (the CSV export reads it with a cursor).
METRIC_HISTORY = """
SELECT step, ts, value, text, kind FROM metric_points WHERE run_id = $1 AND name = $2 ORDER BY step, ts"""

# The step range of a metric over many runs: each run's ends from the index.
METRIC_STEP_BOUNDS = """
SELECT min(b.lo) AS lo, max(b.hi) AS hi FROM unnest($1::uuid[]) AS w(run_id)
CROSS JOIN LATERAL (SELECT min(step) AS lo, max(step) AS hi FROM metric_points
                    WHERE run_id = w.run_id AND name = $2) AS b"""

# Grouped bands: per group ($2, one per run of $1) and bucket of $5 steps from $4, the
# mean, minimum and maximum of every finite numeric point of metric $3 (full fidelity:
# from metric_points, not from a downsampled answer).
METRIC_GROUP_BANDS = """
SELECT w.grp, min(p.step) AS step, avg(p.value) AS mean, min(p.value) AS lo, max(p.value) AS hi
FROM unnest($1::uuid[], $2::text[]) AS w(run_id, grp)
JOIN metric_points p ON p.run_id = w.run_id AND p.name = $3
WHERE p.step BETWEEN $4 AND $6 AND p.value NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)
GROUP BY w.grp, (p.step - $4) / $5
ORDER BY w.grp NULLS LAST, step"""

EXPERIMENT_NAMES = """
SELECT name FROM experiments WHERE workspace = $2 AND (cardinality($1::text[]) = 0 OR name = ANY($1::text[]))"""


# Tokens (query_api.tokens): one row per token, found by its id; only a salted hash of the
# secret. A revocation notifies its id to every process caching verified tokens ($2: the
# channel, schemas.notify.TOKENS_CHANNEL), delivered at commit.
TOKEN_INSERT = """
INSERT INTO tokens (token_id, workspace, scope, name, kdf, salt, hash, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING token_id, workspace, scope, name, created_at, expires_at"""

TOKEN_BY_ID = """
SELECT workspace, scope, kdf, salt, hash, expires_at, revoked_at FROM tokens WHERE token_id = $1"""

TOKENS_LIST = """
SELECT token_id, workspace, scope, name, created_at, expires_at, revoked_at FROM tokens
WHERE $1::text IS NULL OR workspace = $1::text ORDER BY workspace, created_at, token_id"""

TOKEN_REVOKE = """
WITH revoked AS (UPDATE tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL
                 RETURNING token_id)
SELECT token_id, pg_notify($2, token_id) FROM revoked"""

# The workspace of each stored run of a batch (the gateway refuses events for another
# workspace's run).
RUN_WORKSPACES = "SELECT run_id::text, workspace FROM runs WHERE run_id = ANY($1::uuid[])"

_INT64_LIMIT = 2.0**63
"""A kind-1 value is an int64: never written as a JSON int outside [-2**63, 2**63)."""

MAX_STEP = 2**63 - 1
"""Upper bound of an open step range (bigint's maximum)."""

POLL_INTERVAL_S = 0.02
"""How often :func:`wait_for_run` looks at ``runs.last_seq``."""


# ---------------------------------------------------------------- value shaping


def value(kind: int | None, number: float | None, text: str | None) -> Any:
    """One stored value (``kind`` 0 float, 1 int, 2 bool, 3 str) in its JSON form."""
    if kind == 3 or number is None:
        return text
    if kind == 1:
        if text is not None:  # an int beyond 2**53 keeps its exact decimal (processors.materialize)
            return int(text)
        if -_INT64_LIMIT <= number < _INT64_LIMIT:  # else not an int64 (legacy rows): the double
            return int(number)
    if kind == 2:
        return bool(number)
    return encode(number)


def _point(r: asyncpg.Record) -> ds.Point:
    return ds.Point(r["step"], r["time"], r["value"], r["text"], r["kind"])


def _summary(r: asyncpg.Record) -> api.Summary:
    return summary_of(r["kind"], r["description"], r["count"], r["last_step"], r["last_value"], r["last_text"],
                       r["last_kind"], r["min_value"], r["max_value"])


def summary_of(
    kind: str, description: str | None, count: int, last_step: int | None, last_value: float | None,
    last_text: str | None, last_kind: int | None, min_value: float | None, max_value: float | None,
) -> api.Summary:
    return {
        "kind": kind,  # type: ignore[typeddict-item]  # the column holds only the Summary kinds
        "last": value(last_kind, last_value, last_text),
        "min": None if min_value is None else encode(min_value),
        "max": None if max_value is None else encode(max_value),
        "count": count,
        "last_step": last_step,
        "description": description,
    }


def run_of(r: Mapping[str, Any]) -> api.RunRecord:
    """A ``runs`` row (or a mapping with its columns) in the API's shape."""
    started, ended = r["started_at"], r["ended_at"]
    return {
        "run_id": r["run_id"],
        "name": r["name"],
        "experiment": r["experiment"],
        "status": r["status"],
        "kind": r["kind"],
        "parent_run_id": r["parent_run_id"],
        "error": r["error"],
        "started_at": started,
        "ended_at": ended,
        "duration_s": None if ended is None else (ended - started).total_seconds(),
        "updated_at": r["updated_at"],
        "last_seq": r["last_seq"],
        "deleted": r["deleted_at"] is not None,
    }


def columns(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows of a table (cells already JSON-encoded) as column lists; missing cells → None."""
    cols: dict[str, list[Any]] = {}
    for i, cells in enumerate(rows):
        for key in cells:
            if key not in cols:
                cols[key] = [None] * i
        for key, col in cols.items():
            col.append(cells.get(key))
    return cols


# ---------------------------------------------------------------- service


async def ready(db: Db) -> bool:
    """True when the database answers and the core migration is applied."""
    try:
        return bool(await db.fetchval(READY))
    except asyncpg.UndefinedTableError:
        return False


async def experiments(db: Db, workspace: str) -> list[dict[str, Any]]:
    """Every experiment of ``workspace`` with its run count and last activity (latest run update)."""
    return [dict(r) for r in await db.fetch(EXPERIMENTS, workspace)]


def reached(row: Mapping[str, Any], min_seq: int) -> bool:
    """Whether a ``runs`` row has materialized seq ``min_seq``: a seq of the run's own
    numbering against ``last_seq``, one the query API gave (>= SERVER_SEQ_BASE) against
    ``server_seq``."""
    if min_seq >= SERVER_SEQ_BASE:
        return row["server_seq"] is not None and row["server_seq"] >= min_seq
    return row["last_seq"] >= min_seq


async def wait_for_run(db: Db, run_id: uuid.UUID, min_seq: int | None, wait_ms: int, workspace: str) -> int:
    """Once the run exists and (if ``min_seq`` is given) ``runs.last_seq >= min_seq``, its
    ``last_seq`` as read then (what any later read of the run reflects at least).

    Without ``min_seq`` an unknown run is :class:`NotFound` at once. With it, a run that
    does not exist yet is waited for too (its first events may still be in flight);
    past ``wait_ms`` this raises :class:`WaitTimeout`.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_ms / 1000
    while True:
        row = await db.fetchrow(RUN_LAST_SEQ, run_id, workspace)
        last_seq = None if row is None else row["last_seq"]
        if min_seq is None:
            if last_seq is None:
                raise NotFound(f"run {run_id} not found")
            return int(last_seq)
        if row is not None and reached(row, min_seq):
            return int(row["last_seq"])
        remaining = deadline - loop.time()
        if remaining <= 0:
            seen = "does not exist yet" if last_seq is None else f"is at seq {last_seq}"
            raise WaitTimeout(
                f"run {run_id} {seen}; min_seq={min_seq} not reached within wait_ms={wait_ms}"
            )
        await asyncio.sleep(min(POLL_INTERVAL_S, remaining))


# ---------------------------------------------------------------- runs


async def _tags_and_summaries(
    db: Db, run_ids: list[uuid.UUID], names: Sequence[str] = ()
) -> tuple[dict[uuid.UUID, dict[str, str | None]], dict[uuid.UUID, dict[str, Any]]]:
    tags: dict[uuid.UUID, dict[str, str | None]] = {rid: {} for rid in run_ids}
    for r in await db.fetch(TAGS_FOR_RUNS, run_ids):
        tags[r["run_id"]][r["key"]] = r["value"]
    summaries: dict[uuid.UUID, dict[str, Any]] = {rid: {} for rid in run_ids}
    for r in await db.fetch(SUMMARIES_FOR_RUNS, run_ids, list(names)):
        summaries[r["run_id"]][r["name"]] = _summary(r)
    return tags, summaries


async def dead_letters_up_to(db: Db, run_id: uuid.UUID, seq: int) -> int:
    """Pending dead letters of ``run_id`` at or below ``seq`` (those with no seq included)."""
    return await db.fetchval(DEAD_LETTERS_UP_TO, run_id, seq)


async def run_detail(db: Db, run_id: uuid.UUID, workspace: str, min_seq: int | None = None,
                     wait_ms: int = 0) -> api.RunDetail:
    """One run with its properties, tags, metric summaries and child run ids.

    One statement when the run is there (and has reached ``min_seq``, if given);
    otherwise :func:`wait_for_run` waits for it (or raises), then the run is read.
    """
    r = await db.fetchrow(RUN_BY_ID, run_id, workspace)
    if r is None or (min_seq is not None and not reached(r, min_seq)):
        if min_seq is None:
            raise NotFound(f"run {run_id} not found")
        await wait_for_run(db, run_id, min_seq, wait_ms, workspace)
        r = await db.fetchrow(RUN_BY_ID, run_id, workspace)
        if r is None:  # only if the run's row was deleted meanwhile
            raise NotFound(f"run {run_id} not found")
    return {
        **run_of(r),
        "properties": r["properties"],
        "tags": dict(r["tags"]),
        "metrics": {s[0]: summary_of(*s[1:]) for s in r["summaries"]},
        "params": dict(r["params"]),
        "children": r["children"],
        "dead_letters": r["dead_letters"],
    }


@dataclass(frozen=True)
class RunFilter:
    """Parsed filters, ordering and page of ``GET /api/experiments/{name}/runs``."""

    experiments: Sequence[str]
    """Experiments searched (each must exist); empty = all."""
    statuses: Sequence[str] = ()
    parent: str | uuid.UUID | None = None
    """``None`` any run, ``"none"`` top-level runs only, a run id: its children."""
    tags: Sequence[tuple[str, str | None]] = ()
    """``(key, value)``, all must match; value ``None`` matches any value."""
    metrics: Sequence[tuple[str, str, float]] = ()
    """``(name, operator, threshold)`` against the metric's last value, all must hold."""
    order_by: str = "started_at"
    """A field of :data:`ORDER_FIELDS` or an ordering of :data:`ORDER_PREFIXES` (then
    ``order_metric`` names the metric, param or tag)."""
    order_metric: str | None = None
    order: str = "desc"
    limit: int = 100
    offset: int = 0
    columns: Sequence[str] = ()
    """Metric summaries to return per run; empty = all."""
    search: Expr | None = None
    """The ``filter`` expression (:mod:`query_api.search`), all other filters also hold."""
    workspace: str = "default"
    """The principal's workspace: only its runs are listed."""
    lifecycle: str = "active"
    """:data:`LIFECYCLES` key: deleted runs are left out unless asked for."""

    def __post_init__(self) -> None:
        if (self.order_by, self.order) not in _ORDERINGS:
            raise ValueError(f"unknown ordering {self.order_by!r} {self.order!r}")
        if any(op not in METRIC_OPERATORS for _, op, _ in self.metrics):
            raise ValueError("unknown metric filter operator")

    def args(self) -> tuple[Any, ...]:
        """Parameters $1..$10 of the runs statements."""
        mode = "any" if self.parent is None else "none" if self.parent == "none" else "id"
        return (
            list(self.experiments),
            list(self.statuses),
            mode,
            self.parent if mode == "id" else None,
            [k for k, _ in self.tags],
            [v for _, v in self.tags],
            [n for n, _, _ in self.metrics],
            [op for _, op, _ in self.metrics],
            [t for _, _, t in self.metrics],
            self.order_metric,
        )


async def _known_experiments(db: Db, names: Sequence[str], workspace: str) -> list[str]:
    """The experiments of ``workspace`` named (all when none is), :class:`NotFound` for an
    unknown one (another workspace's is unknown here)."""
    known = [r["name"] for r in await db.fetch(EXPERIMENT_NAMES, list(names), workspace)]
    for name in names:
        if name not in known:
            raise NotFound(f"experiment {name!r} not found")
    return known


async def runs_page(db: Db, f: RunFilter) -> api.RunsPage:
    """``{"runs": [...], "total": N}`` for the experiments (all if none named; an unknown
    one is :class:`NotFound`), filtered, ordered and paged."""
    args = (await _known_experiments(db, f.experiments, f.workspace), *f.args()[1:])
    where, values = workspace_where(f.workspace, f.search, 13)
    rows = await db.fetch(runs_page_sql(f.order_by, f.order, where, f.lifecycle), *args, f.limit, f.offset, *values)
    if rows or not f.offset:
        total = rows[0]["total"] if rows else 0
    else:
        where, values = workspace_where(f.workspace, f.search, 11)
        total = await db.fetchval(runs_count_sql(where, f.lifecycle), *args, *values)
    ids = [r["run_id"] for r in rows]
    tags, summaries = await _tags_and_summaries(db, ids, f.columns)
    params = await params_for_runs(db, ids)
    runs: list[api.Run] = [{**run_of(r), "tags": tags[r["run_id"]], "metrics": summaries[r["run_id"]],
                            "properties": r["properties"], "params": params[r["run_id"]]} for r in rows]
    return {"runs": runs, "total": total}


async def params_for_runs(db: Db, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, str]]:
    """Each run's parameters (empty for a run without)."""
    params: dict[uuid.UUID, dict[str, str]] = {rid: {} for rid in run_ids}
    for r in await db.fetch(PARAMS_FOR_RUNS, run_ids):
        params[r["run_id"]][r["key"]] = r["value"]
    return params


EXPORT_CHUNK_ROWS = 2000
"""Rows a CSV export fetches from its cursor at a time (what it holds in memory)."""


async def stream_rows(pool: asyncpg.Pool, sql: str, *args: Any) -> AsyncIterator[list[asyncpg.Record]]:
    """The rows of ``sql`` in chunks of :data:`EXPORT_CHUNK_ROWS`, read with a server-side
    cursor in a read-only transaction on one connection (held until the caller stops)."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        cursor = await conn.cursor(sql, *args)
        while rows := await cursor.fetch(EXPORT_CHUNK_ROWS):
            yield rows


async def runs_export(db: Db, f: RunFilter) -> tuple[dict[str, list[str]], str, tuple[Any, ...]]:
    """The CSV export of the filtered runs: its columns (``tags``, ``params``, ``metrics``:
    names), and the statement and arguments to stream with :func:`stream_rows`."""
    args = (await _known_experiments(db, f.experiments, f.workspace), *f.args()[1:])
    where, values = workspace_where(f.workspace, f.search, 11)
    keys = await db.fetchrow(runs_export_keys_sql(where, f.lifecycle), *args, *values)
    return dict(keys), runs_export_sql(f.order_by, f.order, where, f.lifecycle), (*args, *values)


async def metric_history_check(db: Db, run_id: uuid.UUID, name: str) -> None:
    """:class:`NotFound` unless the run has a scalar or list metric ``name``."""
    summary = await db.fetchrow(SUMMARY_ONE, run_id, name)
    if summary is None:
        raise NotFound(f"run {run_id} has no metric {name!r}")
    if summary["kind"] not in ("scalar", "list"):
        raise NotFound(f"metric {name!r} of run {run_id} is a {summary['kind']}, not a vector")


MAX_GROUP_RUNS = 1000
"""Most runs one grouped-band answer reads (the newest first of the filtered runs)."""


async def metric_groups(db: Db, f: RunFilter, metric: str, group_by: tuple[str, str] | None,
                        max_points: int) -> api.MetricGroups:
    """``metric`` over the filtered runs (at most ``f.limit``), grouped by a tag or param
    value (``("tag" | "param", name)``; None: one group), as per-bucket mean/min/max bands
    computed from every point (buckets of steps so that at most ``max_points`` remain)."""
    page = await runs_page(db, f)
    ids: list[uuid.UUID] = []
    groups: list[str | None] = []
    members: dict[str | None, int] = {}
    for r in page["runs"]:
        if r["metrics"].get(metric, {}).get("kind") not in ("scalar", "list"):
            continue
        grp = None if group_by is None else _group_value(r, *group_by)
        ids.append(r["run_id"])
        groups.append(grp)
        members[grp] = members.get(grp, 0) + 1
    bands: list[api.GroupBand] = []
    bounds = await db.fetchrow(METRIC_STEP_BOUNDS, ids, metric) if ids else None
    if bounds is not None and bounds["lo"] is not None:
        lo, hi = bounds["lo"], bounds["hi"]
        width = ds.bucket_width(lo, hi, max_points) if max_points else 1
        by_group: dict[str | None, api.GroupBand] = {}
        for b in await db.fetch(METRIC_GROUP_BANDS, ids, groups, metric, lo, width, hi):
            band = by_group.get(b["grp"])
            if band is None:
                band = by_group[b["grp"]] = {"group": b["grp"], "runs": members[b["grp"]], "steps": [],
                                             "mean": [], "min": [], "max": []}
                bands.append(band)
            band["steps"].append(b["step"])
            band["mean"].append(b["mean"])
            band["min"].append(b["lo"])
            band["max"].append(b["hi"])
    return {
        "metric": metric,
        "group_by": None if group_by is None else f"{group_by[0]}:{group_by[1]}",
        "runs": len(page["runs"]),
        "truncated": page["total"] > len(page["runs"]),
        "groups": bands,
    }


def _group_value(run: api.Run, kind: str, name: str) -> str | None:
    """A run's group: its tag value (a tag without a value: its key), or its param as text
    (the params projection's, else a start_logging property: a non-string one as JSON,
    0.05 → "0.05"); None when it has neither."""
    if kind == "tag":
        if name not in run["tags"]:
            return None
        return run["tags"][name] or name
    if name in run["params"]:
        return run["params"][name]
    if name not in run["properties"]:
        return None
    v = run["properties"][name]
    return v if isinstance(v, str) else orjson.dumps(v).decode()


def workspace_where(workspace: str, search: Expr | None, first: int) -> tuple[str, list[Any]]:
    """The runs statements' extra condition and its parameters from ``$first``: the
    workspace (a bind parameter), then the compiled search filter if any."""
    if search is None:
        return f"r.workspace = ${first}::text", [workspace]
    where, values = compile_filter(search, first + 1)
    return f"r.workspace = ${first}::text AND ({where})", [workspace, *values]


async def run_tree(db: Db, run_id: uuid.UUID, workspace: str) -> dict[uuid.UUID, int]:
    """The run and all its descendants (children, their children, ...) in ``workspace``,
    each with its ``last_seq``."""
    return {r["run_id"]: r["last_seq"] for r in await db.fetch(RUN_TREE, run_id, workspace)}


# ---------------------------------------------------------------- metrics


async def get_metrics(
    db: Db, run_ids: list[uuid.UUID], names: Sequence[str] = ()
) -> dict[uuid.UUID, dict[str, Any]]:
    """Azure ML ``get_metrics`` shapes per run: scalar if logged once, list if repeated
    or logged as a list, ``{col: [...]}`` for tables, an artifact reference for images."""
    summaries = await db.fetch(SUMMARIES_FOR_RUNS, run_ids, list(names))
    vectors = [s for s in summaries if is_vector(s["kind"], s["count"])]
    tables = [s for s in summaries if s["kind"] == "table"]
    values: dict[tuple[uuid.UUID, str], list[Any]] = {(s["run_id"], s["name"]): [] for s in vectors}
    if vectors:
        keys = ([s["run_id"] for s in vectors], [s["name"] for s in vectors])
        for p in await db.fetch(POINTS_FOR, *keys):
            values[(p["run_id"], p["name"])].append(value(p["kind"], p["value"], p["text"]))
    rows: dict[tuple[uuid.UUID, str], list[dict[str, Any]]] = {(s["run_id"], s["name"]): [] for s in tables}
    if tables:
        keys = ([s["run_id"] for s in tables], [s["name"] for s in tables])
        for t in await db.fetch(TABLE_ROWS_FOR, *keys):
            rows[(t["run_id"], t["name"])].append(t["cells"])
    result: dict[uuid.UUID, dict[str, Any]] = {rid: {} for rid in run_ids}
    for s in summaries:
        key = (s["run_id"], s["name"])
        result[s["run_id"]][s["name"]] = metric_shape(
            s["kind"], s["count"], s["last_kind"], s["last_value"], s["last_text"],
            values.get(key, []), rows.get(key, []), s["artifact_sha256"],
        )
    return result


def is_vector(kind: str, count: int) -> bool:
    """Whether ``get_metrics`` gives a metric as the list of its values."""
    return kind == "list" or (kind == "scalar" and count != 1)


def metric_shape(
    kind: str, count: int, last_kind: int | None, last_value: float | None, last_text: str | None,
    vector: list[Any], rows: Sequence[dict[str, Any]], artifact_sha256: str | None,
) -> Any:
    """One metric in its ``get_metrics`` shape from its summary, its values in step order
    (used if :func:`is_vector`), its table rows (for a table) and an image's sha256."""
    if is_vector(kind, count):
        return vector
    if kind == "table":
        return columns(rows)
    if kind == "image":
        return {"artifact": last_text, "sha256": artifact_sha256}
    return value(last_kind, last_value, last_text)


def _vector(
    name: str, kind: Literal["scalar", "list"], count: int, points: Sequence[ds.Point], downsampled: bool
) -> api.Vector:
    return {
        "name": name,
        "kind": kind,
        "count": count,
        "steps": [p.step for p in points],
        "values": [value(p.kind, p.value, p.text) for p in points],
        "times": [p.time for p in points],
        "downsampled": downsampled,
    }


async def metric_vector(
    db: Db,
    run_id: uuid.UUID,
    name: str,
    from_step: int | None = None,
    to_step: int | None = None,
    max_points: int = 0,
) -> api.Vector:
    """One metric's points in ``[from_step, to_step]``; with ``max_points`` > 0 and more
    points than that, downsampled in SQL to per-bucket min/max plus first and last."""
    summary = await db.fetchrow(SUMMARY_ONE, run_id, name)
    if summary is None:
        raise NotFound(f"run {run_id} has no metric {name!r}")
    kind = summary["kind"]
    if kind not in ("scalar", "list"):
        hint = f"; read it at /api/runs/{run_id}/tables/{name}" if kind == "table" else ""
        raise NotFound(f"metric {name!r} of run {run_id} is a {kind}, not a vector{hint}")
    lo = 0 if from_step is None else from_step
    hi = MAX_STEP if to_step is None else to_step
    bounds = [_point(r) for r in await db.fetch(VECTOR_BOUNDS, run_id, name, lo, hi)]
    if not bounds:
        return _vector(name, kind, 0, [], False)
    first, last = bounds
    if max_points:
        whole = from_step is None and to_step is None
        buckets = await _rollup_buckets(db, run_id, name, first.step, last.step, max_points,
                                        summary["count"] if whole else None)
        if buckets is None:
            width = ds.bucket_width(first.step, last.step, max_points)
            buckets = await db.fetch(VECTOR_BUCKETS, run_id, name, first.step, last.step, width)
        total = sum(b["n"] for b in buckets)
        if total > max_points:
            if any(b["has_text"] for b in buckets):
                raise BadRequest(
                    f"max_points={max_points}: metric {name!r} holds strings, which cannot be "
                    f"downsampled ({total} points in range); omit max_points or narrow the step range"
                )
            # (value, exact step = float part + remainder, is_max) of every bucket's picks
            extremes = [
                (b[col][0], int(b[col][1]) + int(b[col][2]), col == "hi") for b in buckets for col in ("lo", "hi")
            ]
            steps = sorted({s for _, s, _ in extremes})
            candidates = [_point(r) for r in await db.fetch(VECTOR_AT_STEPS, run_id, name, steps)]
            return _vector(name, kind, total, ds.pick_points(extremes, candidates, first, last), True)
    points = [_point(r) for r in await db.fetch(VECTOR_POINTS, run_id, name, first.step, last.step)]
    return _vector(name, kind, len(points), points, False)


async def _rollup_buckets(
    db: Db, run_id: uuid.UUID, name: str, first: int, last: int, max_points: int, count: int | None
) -> list[asyncpg.Record] | None:
    """Per-bucket figures from the rollups when the range is long enough for a level and
    the rollups are there (processors keep them; rows written around them are not
    covered); None: aggregate the points instead. ``count``: the metric's point count,
    checked against the rollups when the range is the whole metric."""
    shift = ds.rollup_shift(first, last, max_points)
    if not shift:
        return None
    origin, width = ds.bucket_grid(first, last, max_points, shift)
    buckets: list[asyncpg.Record] = await db.fetch(VECTOR_ROLLUP_BUCKETS, run_id, name, shift, first >> shift,
                                                   last >> shift, first, last, origin, width)
    if not sum(b["blocks"] for b in buckets) or (count is not None and sum(b["n"] for b in buckets) != count):
        return None
    return buckets


async def table(db: Db, run_id: uuid.UUID, name: str) -> api.Table:
    """A table metric (``log_row``/``log_table``) as column lists."""
    summary = await db.fetchrow(SUMMARY_ONE, run_id, name)
    if summary is None or summary["kind"] != "table":
        what = "no table" if summary is None else f"a {summary['kind']} metric, not a table,"
        raise NotFound(f"run {run_id} has {what} named {name!r}")
    rows = [r["cells"] for r in await db.fetch(TABLE_ROWS, run_id, name)]
    return {"name": name, "columns": columns(rows), "rows": len(rows)}


async def compare(
    db: Db, run_ids: list[uuid.UUID], names: Sequence[str], vectors: bool, max_points: int, workspace: str
) -> api.Compare:
    """Summaries (and optionally downsampled vectors) of chosen metrics for many runs of
    ``workspace`` (another workspace's run is not found, as a missing one)."""
    found = {r["run_id"]: r for r in await db.fetch(RUNS_BY_IDS, run_ids, workspace)}
    missing = [str(rid) for rid in run_ids if rid not in found]
    if missing:
        raise NotFound(f"runs not found: {', '.join(missing)}")
    _, summaries = await _tags_and_summaries(db, run_ids, names)
    out: list[api.CompareRun] = []
    for rid in run_ids:
        entry: api.CompareRun = {**run_of(found[rid]), "metrics": summaries[rid]}
        if vectors:
            entry["vectors"] = {
                name: await metric_vector(db, rid, name, max_points=max_points)
                for name, s in summaries[rid].items()
                if s["kind"] in ("scalar", "list")
            }
        out.append(entry)
    return {"runs": out}


# ---------------------------------------------------------------- files, events, logs


async def artifacts(db: Db, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """The run's files: path, size, sha256, content type, creation time."""
    return [dict(r) for r in await db.fetch(ARTIFACTS, run_id)]


async def artifact(db: Db, run_id: uuid.UUID, path: str) -> dict[str, Any]:
    """One file's record, or :class:`NotFound`."""
    r = await db.fetchrow(ARTIFACT, run_id, path)
    if r is None:
        raise NotFound(f"run {run_id} has no file {path!r}")
    return dict(r)


async def events_page(db: Db, run_id: uuid.UUID, after_seq: int, limit: int) -> api.EventsPage:
    """Archived events with ``seq > after_seq``, each the whole event object as sent."""
    rows = await db.fetch(EVENTS_PAGE, run_id, after_seq, limit)
    return {
        "events": [orjson.loads(r["body"]) for r in rows],
        "next_after_seq": rows[-1]["seq"] if len(rows) == limit else None,
    }


async def history_page(db: Db, run_id: uuid.UUID, after_seq: int, limit: int, types: list[str]) -> api.History:
    """Who did what to the run: events with ``seq > after_seq`` (of ``types``, if any) as entries."""
    rows = await db.fetch(HISTORY_PAGE, run_id, after_seq, limit, types)
    return {
        "entries": [cast(api.HistoryEntry, history.entry(r["seq"], r["ts"], r["type"], r["body"])) for r in rows],
        "next_after_seq": rows[-1]["seq"] if len(rows) == limit else None,
    }


async def as_of_first_after(db: Db, run_id: uuid.UUID, when: datetime) -> int | None:
    """The seq of the run's first archived event stamped after ``when`` (None: none is)."""
    seq = await db.fetchval(AS_OF_FIRST_AFTER, run_id, when)
    return None if seq is None else int(seq)


async def as_of_ts(db: Db, run_id: uuid.UUID, seq: int) -> datetime | None:
    """When the run's event ``seq`` is stamped (None: no such event)."""
    return await db.fetchval(AS_OF_TS, run_id, seq)


async def as_of_extent(db: Db, run_id: uuid.UUID, seq: int, cutoff: datetime) -> tuple[int, int]:
    """(events, body bytes) archived for the run up to ``seq`` (and of the other numbering
    up to ``cutoff``)."""
    r = await db.fetchrow(AS_OF_EXTENT, run_id, seq, cutoff)
    return int(r["events"]), int(r["bytes"])


async def as_of_bodies(db: Db, run_id: uuid.UUID, seq: int, cutoff: datetime) -> list[bytes]:
    """The bodies of :func:`as_of_extent`'s events, in seq order."""
    return [r["body"] for r in await db.fetch(AS_OF_EVENTS, run_id, seq, cutoff)]


async def as_of_children(db: Db, run_id: uuid.UUID, when: datetime, workspace: str) -> list[uuid.UUID]:
    """The run's children (in ``workspace``) whose ``run.started`` is stamped at or before ``when``."""
    return [r["run_id"] for r in await db.fetch(AS_OF_CHILDREN, run_id, when, workspace)]


async def log_lines_page(
    db: Db, run_id: uuid.UUID, after_seq: int, after_idx: int, limit: int
) -> api.LogsPage:
    """Captured output lines after the cursor ``(after_seq, after_idx)``."""
    rows = await db.fetch(LOG_LINES_PAGE, run_id, after_seq, after_idx, limit)
    more = len(rows) == limit
    return {
        "lines": [cast(api.LogLine, dict(r)) for r in rows],  # the columns are LogLine's
        "next_after_seq": rows[-1]["seq"] if more else None,
        "next_after_idx": rows[-1]["idx"] if more else None,
    }


# ---------------------------------------------------------------- the API's own writes (query_api.writes)

# One row per stream the API writes events for: reserve $3 consecutive seqs, the first
# at $2 (0 for a stream the API numbers, SERVER_SEQ_BASE for a run numbered elsewhere)
# when the stream has none yet. One statement, one row lock: no two callers get a seq twice.
ALLOCATE_SEQS = """
INSERT INTO seq_allocations AS a (run_id, next_seq) VALUES ($1, $2::bigint + $3::bigint)
ON CONFLICT (run_id) DO UPDATE SET next_seq = a.next_seq + $3::bigint
RETURNING next_seq - $3::bigint AS first"""

EXPERIMENT_META_SEQ = "SELECT last_seq FROM experiment_meta WHERE workspace = $1 AND name = $2"

# Kafka acknowledged the stream's events up to $2 (a write that answered before they were
# materialized: MLflow's logging calls).
ACK_SEQS = "UPDATE seq_allocations SET acked_seq = GREATEST(acked_seq, $2) WHERE run_id = $1"

# The runs among $1 (or of the experiments $1) with acknowledged events not materialized
# yet: what MLflow's reads wait for.
_unsettled = f"""FROM seq_allocations a JOIN runs r ON r.run_id = a.run_id
WHERE a.acked_seq > CASE WHEN a.acked_seq >= {SERVER_SEQ_BASE} THEN COALESCE(r.server_seq, -1) ELSE r.last_seq END"""
UNSETTLED_RUNS = f"SELECT a.run_id {_unsettled} AND a.run_id = ANY($1::uuid[])"
UNSETTLED_IN_EXPERIMENTS = f"SELECT a.run_id {_unsettled} AND r.experiment = ANY($1::text[]) AND r.workspace = $2"


async def allocate_seqs(db: Db, stream_id: uuid.UUID, base: int, count: int) -> int:
    """The first of ``count`` consecutive seqs reserved for ``stream_id`` (see ALLOCATE_SEQS)."""
    return int(await db.fetchval(ALLOCATE_SEQS, stream_id, base, count))


async def ack_seqs(db: Db, stream_id: uuid.UUID, last: int) -> None:
    """Record that Kafka acknowledged ``stream_id``'s events up to ``last``."""
    await db.execute(ACK_SEQS, stream_id, last)


async def settle(db: Db, *, runs: Sequence[uuid.UUID] = (), experiments: Sequence[str] = (),
                 workspace: str | None = None, wait_ms: int = 10_000) -> None:
    """Wait until the acknowledged events of ``runs`` (or of every run of ``experiments`` in
    ``workspace``, which experiments need) are materialized, or :class:`WaitTimeout`:
    read-your-writes for writes that answered at Kafka's acknowledgement."""
    sql, args = (UNSETTLED_RUNS, (list(runs),)) if runs else (UNSETTLED_IN_EXPERIMENTS, (list(experiments), workspace))
    if not args[0]:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_ms / 1000
    while pending := await db.fetch(sql, *args):
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise WaitTimeout(f"{len(pending)} run(s) have acknowledged events not materialized within {wait_ms} ms")
        await asyncio.sleep(min(POLL_INTERVAL_S, remaining))


async def wait_for_experiment(db: Db, workspace: str, name: str, min_seq: int, wait_ms: int) -> None:
    """Once experiment ``name``'s stream (of ``workspace``) is materialized up to ``min_seq``,
    or :class:`WaitTimeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_ms / 1000
    while True:
        seq = await db.fetchval(EXPERIMENT_META_SEQ, workspace, name)
        if seq is not None and seq >= min_seq:
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise WaitTimeout(f"experiment {name!r}: seq {min_seq} not materialized within {wait_ms} ms")
        await asyncio.sleep(min(POLL_INTERVAL_S, remaining))


# ---------------------------------------------------------------- MLflow's reads (query_api.mlflow_*)

# Every experiment with what MLflow shows of it (display name, lifecycle, tags, times).
MLFLOW_EXPERIMENTS = """
SELECT e.name, e.created_at, m.display_name, m.deleted_at, COALESCE(m.tags, '{}'::jsonb) AS tags,
       GREATEST(m.updated_at, (SELECT max(r.updated_at) FROM runs r
                               WHERE r.workspace = e.workspace AND r.experiment = e.name)) AS updated_at
FROM experiments e LEFT JOIN experiment_meta m ON m.workspace = e.workspace AND m.name = e.name
WHERE e.workspace = $1
ORDER BY e.created_at, e.name"""

MLFLOW_RUN_ROWS = f"SELECT {_run_columns} FROM runs r WHERE r.run_id = ANY($1::uuid[]) AND r.workspace = $2"

# Each run's latest value per metric: the highest step, then the latest timestamp (MLflow's
# rule). One index lookup per (run, metric) from the summaries (metric_points_run_name_step
# read backwards), not a scan of every point of the run.
MLFLOW_LATEST_METRICS = """
SELECT s.run_id, s.name, p.value, p.text, p.kind, date_part('epoch', p.ts) AS time, p.step
FROM metric_summaries s
CROSS JOIN LATERAL (SELECT m.value, m.text, m.kind, m.ts, m.step FROM metric_points m
                    WHERE m.run_id = s.run_id AND m.name = s.name
                    ORDER BY m.step DESC, m.ts DESC LIMIT 1) AS p
WHERE s.run_id = ANY($1::uuid[]) AND s.kind IN ('scalar', 'list')
ORDER BY s.run_id, s.name"""

# One page of a metric's history in (step, time) order.
MLFLOW_HISTORY = """
SELECT step, date_part('epoch', ts) AS time, value, text, kind FROM metric_points
WHERE run_id = $1 AND name = $2 ORDER BY step, ts LIMIT $3 OFFSET $4"""

PARAM_VALUES = "SELECT key, value FROM params WHERE run_id = $1 AND key = ANY($2::text[])"

TAG_VALUE = "SELECT value FROM tags WHERE run_id = $1 AND key = $2"


async def mlflow_experiments(db: Db, workspace: str) -> list[asyncpg.Record]:
    """Every experiment of ``workspace`` with its MLflow attributes (see MLFLOW_EXPERIMENTS)."""
    return list(await db.fetch(MLFLOW_EXPERIMENTS, workspace))


async def mlflow_runs(db: Db, run_ids: list[uuid.UUID], workspace: str) -> list[dict[str, Any]]:
    """The runs of ``workspace`` (in the order given, missing ones left out) with their tags,
    params and latest metrics: what MLflow's ``Run`` holds."""
    rows = {r["run_id"]: r for r in await db.fetch(MLFLOW_RUN_ROWS, run_ids, workspace)}
    found = [rid for rid in run_ids if rid in rows]
    tags: dict[uuid.UUID, dict[str, str | None]] = {rid: {} for rid in found}
    for t in await db.fetch(TAGS_FOR_RUNS, found):
        tags[t["run_id"]][t["key"]] = t["value"]
    params = await params_for_runs(db, found)
    latest: dict[uuid.UUID, list[tuple[str, Any, float, int]]] = {rid: [] for rid in found}
    for m in await db.fetch(MLFLOW_LATEST_METRICS, found):
        latest[m["run_id"]].append((m["name"], value(m["kind"], m["value"], m["text"]), m["time"], m["step"]))
    return [{"row": rows[rid], "tags": tags[rid], "params": params[rid], "metrics": latest[rid]} for rid in found]


async def metric_history(db: Db, run_id: uuid.UUID, name: str, limit: int, offset: int) -> list[asyncpg.Record]:
    """Points ``offset`` to ``offset + limit`` of a metric, in (step, time) order."""
    return list(await db.fetch(MLFLOW_HISTORY, run_id, name, limit, offset))


async def param_values(db: Db, run_id: uuid.UUID, keys: list[str]) -> dict[str, str]:
    """The stored values of those of ``keys`` the run has."""
    return {r["key"]: r["value"] for r in await db.fetch(PARAM_VALUES, run_id, keys)}


async def tag_value(db: Db, run_id: uuid.UUID, key: str) -> tuple[bool, str | None]:
    """(whether the run has tag ``key``, its value)."""
    r = await db.fetchrow(TAG_VALUE, run_id, key)
    return (r is not None, None if r is None else r["value"])

RUN_STATE = "SELECT experiment, status, deleted_at FROM runs WHERE run_id = $1 AND workspace = $2"


async def run_state(db: Db, run_id: uuid.UUID, workspace: str) -> asyncpg.Record | None:
    """A run's experiment, status and deletion time (None: no such run in ``workspace``)."""
    return await db.fetchrow(RUN_STATE, run_id, workspace)
