"""Writes one batch of events into PostgreSQL inside the caller's transaction.

Order of work: archive the events (the dedup: ``ON CONFLICT DO NOTHING RETURNING`` says
which are new), materialize only the new ones, COPY the bulk rows, upsert the
projections, record dead letters and the consumer offsets. The caller commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import asyncpg
import msgspec
import orjson

from runstream.processors import integrity
from runstream.processors.columnar import copy_data
from runstream.processors.materialize import Materialized, materialize, to_datetime
from runstream.schemas import events as ev
from runstream.schemas.notify import ANY, CHANNEL, run_payload

# A batch larger than SMALL_BATCH_EVENTS goes into the archive through a per-session
# staging table: asyncpg's binary COPY of plain records costs the client about a third of
# encoding the same values as ten unnest() arrays (and the wire a quarter), and INSERT ...
# SELECT keeps ON CONFLICT's dedup. The table is emptied at every commit; creating it is a
# no-op after the first. Within one transaction it keeps the rows of earlier, successful
# calls: they are in ``events`` by then, so they conflict and are neither inserted nor
# counted again. A rolled-back savepoint takes its staged rows along.
# INCLUDING COMPRESSION: a body is compressed once, in the staging table, with the
# archive's method (migration 0004), and INSERT ... SELECT moves it as it is.
ARCHIVE_STAGE_TABLE = "events_in"
CREATE_ARCHIVE_STAGE = (f"CREATE TEMP TABLE IF NOT EXISTS {ARCHIVE_STAGE_TABLE} (LIKE events INCLUDING COMPRESSION) "
                        f"ON COMMIT DELETE ROWS")
ARCHIVE_STAGE = f"SET LOCAL client_min_messages = warning; {CREATE_ARCHIVE_STAGE}"
ARCHIVE_COLUMNS = ("run_id", "seq", "ts", "type", "v", "event_id", "body", "topic", "partition", "offset")
_ARCHIVE_INSERT = f"INSERT INTO events SELECT * FROM {ARCHIVE_STAGE_TABLE} ON CONFLICT DO NOTHING"

# One round trip: how many rows were new and, only when that is not all of the call's
# ($1; the normal case, nothing redelivered, returns one row), which ones: (count, run_id,
# seq) per inserted row, or a single (0, NULL, NULL) when none was.
ARCHIVE = f"""
WITH new AS ({_ARCHIVE_INSERT}
    RETURNING run_id, seq),
n AS (SELECT count(*) AS n FROM new)
SELECT n.n, new.run_id::text, new.seq FROM n LEFT JOIN new ON n.n <> $1
"""

# Created on first use: the earliest run start seen, whatever order partitions arrive in
# (so a rebuild from the archive gives the same row as live processing did).
INSERT_EXPERIMENT = """
INSERT INTO experiments AS e (workspace, name, created_at) VALUES ($1, $2, $3)
ON CONFLICT (workspace, name) DO UPDATE SET created_at = excluded.created_at WHERE excluded.created_at < e.created_at
"""

# Rollup blocks (schemas/migrations/0003): counts add up; lo/hi keep the lower/higher
# (value, step) in PostgreSQL's float order; NULL lo/hi means "only strings so far".
# Parameters $1..$10 of ``TAIL`` below.
_UPSERT_ROLLUPS = """
INSERT INTO metric_rollups AS r (run_id, name, shift, block, n, n_text, lo_value, lo_step, hi_value, hi_step)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::smallint[], $4::bigint[], $5::bigint[], $6::bigint[],
                     $7::float8[], $8::bigint[], $9::float8[], $10::bigint[])
ON CONFLICT (run_id, name, shift, block) DO UPDATE SET
    n = r.n + excluded.n,
    n_text = r.n_text + excluded.n_text,
    lo_value = CASE WHEN r.lo_value IS NULL OR (excluded.lo_value, excluded.lo_step) < (r.lo_value, r.lo_step)
                    THEN excluded.lo_value ELSE r.lo_value END,
    lo_step = CASE WHEN r.lo_value IS NULL OR (excluded.lo_value, excluded.lo_step) < (r.lo_value, r.lo_step)
                   THEN excluded.lo_step ELSE r.lo_step END,
    hi_value = CASE WHEN r.hi_value IS NULL OR (excluded.hi_value, excluded.hi_step) >= (r.hi_value, r.hi_step)
                    THEN excluded.hi_value ELSE r.hi_value END,
    hi_step = CASE WHEN r.hi_value IS NULL OR (excluded.hi_value, excluded.hi_step) >= (r.hi_value, r.hi_step)
                   THEN excluded.hi_step ELSE r.hi_step END
"""

_FINAL = "status IN (" + ", ".join(f"'{t}'" for t in sorted(ev.TERMINAL_STATUSES)) + ")"

# A run's row is created by its run.started. Events of the run archived before it (a
# status or points that overtook the start on the way) are counted in: last_seq is the
# archive's highest seq, and the status/error/end are those of the first terminal
# run.status archived (status-final, processors.integrity: the archive holds at most one),
# else of the latest. (Cheap: when the start comes first, as usual, only the start itself
# is in the archive.)
# Seqs the query API gave its own events for the run (>= SERVER_SEQ_BASE) are not the
# run's numbering: last_seq ignores them (a replay meets them in the archive).
INSERT_RUN = f"""
INSERT INTO runs (run_id, experiment, name, parent_run_id, kind, status, properties,
                  started_at, updated_at, last_seq, error, ended_at, workspace)
SELECT $1, $2, $3, $4, $5, COALESCE(early.status, $6), $7::jsonb, $8, GREATEST($8, early.ts),
       COALESCE((SELECT max(seq) FROM events WHERE run_id = $1 AND seq < {ev.SERVER_SEQ_BASE}), -1), early.error,
       CASE WHEN early.status IS NULL OR early.status = 'running' THEN NULL ELSE early.ts END, $9
FROM (SELECT 1) AS one LEFT JOIN LATERAL (
    SELECT status, error, ts FROM (
        SELECT b->'payload'->>'status' AS status, b->'payload'->>'error' AS error, ts, seq
        FROM (SELECT convert_from(body, 'UTF8')::json AS b, ts, seq FROM events
              WHERE run_id = $1 AND type = 'run.status') AS e) AS s
    ORDER BY status = 'running', CASE WHEN status = 'running' THEN -seq ELSE seq END LIMIT 1
) AS early ON true
ON CONFLICT (run_id) DO NOTHING
"""

# A terminal status is final (status-final, processors.integrity): the check refuses a
# later status before it gets here; this keeps a rebuilt or legacy archive to the rule too.
# Per run: rename (flag, name), deleted (NULL: unchanged) at deleted_at, server_seq (NULL: none).
# Parameters $11..$21 of ``TAIL``.
_UPDATE_RUNS = f"""
UPDATE runs AS r SET
    last_seq = GREATEST(r.last_seq, c.last_seq),
    updated_at = GREATEST(r.updated_at, c.updated_at),
    status = CASE WHEN r.{_FINAL} THEN r.status ELSE COALESCE(c.status, r.status) END,
    error = CASE WHEN c.status IS NULL OR r.{_FINAL} THEN r.error ELSE c.error END,
    ended_at = CASE WHEN c.status IS NULL OR r.{_FINAL} THEN r.ended_at ELSE c.ended_at END,
    name = CASE WHEN c.renamed THEN c.name ELSE r.name END,
    deleted_at = CASE WHEN c.deleted IS NULL THEN r.deleted_at WHEN c.deleted THEN c.deleted_at END,
    server_seq = GREATEST(r.server_seq, c.server_seq)
FROM unnest($11::uuid[], $12::bigint[], $13::timestamptz[], $14::text[], $15::text[], $16::timestamptz[],
            $17::boolean[], $18::text[], $19::boolean[], $20::timestamptz[], $21::bigint[])
    AS c(run_id, last_seq, updated_at, status, error, ended_at, renamed, name, deleted, deleted_at, server_seq)
WHERE r.run_id = c.run_id
"""

# Params are immutable: the first value stored for a key stays (in log order).
INSERT_PARAM = """
INSERT INTO params (run_id, key, value, logged_at) VALUES ($1, $2, $3, $4) ON CONFLICT (run_id, key) DO NOTHING
"""

# $3 deleted (NULL: unchanged) at $4; $5 tags to merge (a JSON object text).
UPSERT_EXPERIMENT_META = """
INSERT INTO experiment_meta AS m (name, display_name, deleted_at, tags, updated_at, last_seq, workspace)
VALUES ($1, $2, CASE WHEN $3::boolean THEN $4::timestamptz END, $5::text::jsonb, $4, $6, $7)
ON CONFLICT (workspace, name) DO UPDATE SET
    display_name = COALESCE(excluded.display_name, m.display_name),
    deleted_at = CASE WHEN $3::boolean IS NULL THEN m.deleted_at WHEN $3::boolean THEN $4::timestamptz END,
    tags = m.tags || excluded.tags,
    updated_at = GREATEST(m.updated_at, excluded.updated_at),
    last_seq = GREATEST(m.last_seq, excluded.last_seq)
"""

UPSERT_TAG = """
INSERT INTO tags (run_id, key, value, updated_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
"""

DELETE_TAG = "DELETE FROM tags WHERE run_id = $1 AND key = $2"

# artifact-immutable (processors.integrity): a recorded path keeps its first record.
UPSERT_ARTIFACT = """
INSERT INTO artifacts (run_id, path, sha256, size, content_type, created_at) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (run_id, path) DO NOTHING
"""

# Parameters $22..$33 of ``TAIL``.
_UPSERT_SUMMARIES = """
INSERT INTO metric_summaries AS s (run_id, name, kind, description, count, last_seq, last_step,
    last_value, last_text, last_kind, min_value, max_value, updated_at)
SELECT *, now() FROM unnest($22::uuid[], $23::text[], $24::text[], $25::text[], $26::bigint[], $27::bigint[],
                            $28::bigint[], $29::float8[], $30::text[], $31::smallint[], $32::float8[], $33::float8[])
ON CONFLICT (run_id, name) DO UPDATE SET
    kind = CASE WHEN 'list' IN (s.kind, excluded.kind) THEN 'list' ELSE excluded.kind END,
    description = COALESCE(excluded.description, s.description),
    count = s.count + excluded.count,
    last_seq = GREATEST(s.last_seq, excluded.last_seq),
    last_step = CASE WHEN excluded.last_seq >= s.last_seq THEN excluded.last_step ELSE s.last_step END,
    last_value = CASE WHEN excluded.last_seq >= s.last_seq THEN excluded.last_value ELSE s.last_value END,
    last_text = CASE WHEN excluded.last_seq >= s.last_seq THEN excluded.last_text ELSE s.last_text END,
    last_kind = CASE WHEN excluded.last_seq >= s.last_seq THEN excluded.last_kind ELSE s.last_kind END,
    min_value = LEAST(s.min_value, excluded.min_value),
    max_value = GREATEST(s.max_value, excluded.max_value),
    updated_at = now()
"""

# The consumer's offsets, stored with the rows they produced. Parameters $34..$37 of ``TAIL``.
_UPSERT_OFFSETS = """
INSERT INTO consumer_offsets AS o (group_id, topic, partition, "offset", updated_at)
SELECT $34::text, t, p, x, now() FROM unnest($35::text[], $36::integer[], $37::bigint[]) AS c(t, p, x)
ON CONFLICT (group_id, topic, partition) DO UPDATE
SET "offset" = GREATEST(o."offset", excluded."offset"), updated_at = now()
"""

INSERT_DEAD_LETTER = """
INSERT INTO dead_letters (topic, partition, "offset", key, raw, reason, run_id, seq, item)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (topic, partition, "offset", item) DO NOTHING
"""

# (run, seq) pairs of the staged batch that the archive already holds with another
# timestamp or event id: a re-send with different content. Only events at or below their
# run's stored last_seq can be one, so the archive is probed for those alone. They are
# taken out of the stage (the first copy is kept) and dead-lettered by the caller.
_CONFLICT = """r.run_id = s.run_id AND s.seq <= r.last_seq
  AND EXISTS (SELECT 1 FROM events AS e WHERE e.run_id = s.run_id AND e.seq = s.seq
              AND (e.ts <> s.ts OR e.event_id <> s.event_id))"""
TAKE_CONFLICTS = f"""
DELETE FROM {ARCHIVE_STAGE_TABLE} AS s USING runs AS r
WHERE {_CONFLICT}
RETURNING s.partition, s."offset"
"""

SMALL_BATCH_EVENTS = 64
"""Batches of at most this many events (a live chart's, a quiet topic's) are archived from
arrays in one statement, ``ARCHIVE_SMALL``: no staging COPY and no separate conflict
probe, two round trips fewer. Larger ones go through the staging table, whose binary
COPY costs the client a third of the CPU of the same rows as arrays."""

# ``TAKE_CONFLICTS`` and ``ARCHIVE`` in one statement, over rows given as arrays ($1..$10,
# ARCHIVE_COLUMNS; $11 how many). Rows out: the conflicts' (partition, offset), then
# (count, run_id, seq) as ``ARCHIVE`` gives them.
ARCHIVE_SMALL = f"""
WITH s AS (
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[], $4::text[], $5::smallint[], $6::uuid[],
                         $7::bytea[], $8::text[], $9::integer[], $10::bigint[])
        AS s(run_id, seq, ts, type, v, event_id, body, topic, partition, "offset")
),
taken AS (SELECT s.partition, s."offset" FROM s, runs AS r WHERE {_CONFLICT}),
new AS (
    INSERT INTO events SELECT * FROM s WHERE (s.partition, s."offset") NOT IN (SELECT * FROM taken)
    ON CONFLICT DO NOTHING
    RETURNING run_id, seq
),
n AS (SELECT count(*) AS n FROM new)
SELECT partition, "offset", NULL::bigint AS n, NULL::text AS run_id, NULL::bigint AS seq FROM taken
UNION ALL
SELECT NULL, NULL, n.n, new.run_id::text, new.seq FROM n LEFT JOIN new ON n.n <> $11 - (SELECT count(*) FROM taken)
"""

# The workspace each run's run.started recorded (migration 0006), for the runs of a batch.
RUN_WORKSPACES = "SELECT run_id::text, workspace FROM runs WHERE run_id = ANY($1::uuid[])"

# The end of every batch in one round trip (it was five: each one waits for a wake-up of
# both processes, which under load is most of a small transaction's time): the runs'
# changes, metric summaries and rollups, the consumer offsets (none: nothing to store) and
# a NOTIFY per run ($38, delivered at commit to every LISTENer, the query API's live
# endpoint and cache; the channel and payloads are the contract's, schemas.notify).
# Data-modifying CTEs all run, to completion, on the statement's snapshot; they touch
# different tables, so none needs to see another's effect. Empty arrays: nothing to do.
# A small batch's point rows ($39..$45, POINT_COLUMNS) come along too (SMALL_POINT_ROWS).
TAIL = f"""
WITH rollups AS ({_UPSERT_ROLLUPS}),
runs_changed AS ({_UPDATE_RUNS}),
summaries AS ({_UPSERT_SUMMARIES}),
offsets AS ({_UPSERT_OFFSETS}),
points AS (
    INSERT INTO metric_points (run_id, name, step, ts, value, text, kind)
    SELECT * FROM unnest($39::uuid[], $40::text[], $41::bigint[], $42::timestamptz[], $43::float8[], $44::text[],
                         $45::smallint[])
)
SELECT pg_notify('{CHANNEL}', p) FROM unnest($38::text[]) AS p
"""

SMALL_POINT_ROWS = 256
"""Point rows (``Materialized.points``) up to this many go into ``TAIL`` as arrays; more
are copied (a COPY is a round trip of its own)."""

NOTIFY_ANY = f"SELECT pg_notify('{CHANNEL}', '{ANY}')"

LOAD_OFFSETS = 'SELECT partition, "offset" FROM consumer_offsets WHERE group_id = $1 AND topic = $2'

POINT_COLUMNS = ("run_id", "name", "step", "ts", "value", "text", "kind")
TABLE_ROW_COLUMNS = ("run_id", "name", "seq", "idx", "ts", "cells")
LOG_LINE_COLUMNS = ("run_id", "seq", "idx", "ts", "stream", "line")


class ProcessorConnection(asyncpg.Connection):
    """The processors' pool connections: the archive's staging table is created once per
    session, when the connection opens (:func:`open_session`), instead of in every
    transaction (one round trip fewer per batch). Other connections create it as they go."""

    archive_stage_ready = False


async def open_session(conn: asyncpg.Connection) -> None:
    """The processors' pool ``init``: create the staging table outside any transaction (so
    no rollback can take it away) and mark the connection."""
    await conn.execute(CREATE_ARCHIVE_STAGE)
    if isinstance(conn, ProcessorConnection):
        conn.archive_stage_ready = True


class Received(msgspec.Struct, frozen=True, gc=False):
    """One decoded Kafka message and where it came from (a Struct: one per message, so
    cheap to create and not tracked by the garbage collector; it holds no containers)."""

    event: ev.Event
    raw: bytes
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class DeadLetter:
    """A message (or one item of it) set aside with the reason; see migration 0005."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes
    reason: str
    run_id: str | None = None
    seq: int | None = None
    item: int = -1
    """The rejected point/row/line of the event (processors.items); -1: the whole event."""

    @classmethod
    def of(cls, r: Received, reason: str, item: int = -1) -> DeadLetter:
        """A dead letter for a decoded message ``r``."""
        return cls(r.topic, r.partition, r.offset, r.event.run_id.encode(), r.raw, reason, r.event.run_id,
                   r.event.seq, item)


class Refused(NamedTuple):
    """An event the archive does not take, and why (the dead letter's reason)."""

    received: Received
    reason: str


def conflict_reason(r: Received) -> str:
    """Why a re-sent (run, seq) with other content is set aside."""
    return (f"conflict: seq {r.event.seq} of run {r.event.run_id} was already stored with different content "
            f"(another ts or event_id); the first copy is kept")


@dataclass(frozen=True)
class WriteResult:
    new: int
    duplicates: int
    points: int
    refused: tuple[Refused, ...] = ()
    """Not stored, to dead-letter: re-sends of an archived (run, seq) with other content,
    and events that break a rule of :mod:`processors.integrity`."""
    foreign: tuple[DeadLetter, ...] = ()
    """Events whose workspace is not their run's (see :func:`take_foreign`): not stored."""


INT64_MAX = 2**63 - 1
REASON_MAX_CHARS = 4000


def reason_text(reason: str) -> str:
    """A reason PostgreSQL can store (no NUL, whatever the exception quoted) and bounded."""
    reason = reason.replace("\x00", "\\x00")
    return reason if len(reason) <= REASON_MAX_CHARS else reason[:REASON_MAX_CHARS] + "..."


async def archive(conn: asyncpg.Connection, received: list[Received]) -> tuple[list[ev.Event], list[Refused]]:
    """Insert into the event archive; return the events that were not there yet, in order,
    and the refused ones, not archived: conflicts (events whose (run, seq) is archived, or
    earlier in the batch, with another timestamp or event id; the first copy stays) and
    events that break a rule of :mod:`processors.integrity` (what the run recorded stays).

    A small batch goes in one statement (``ARCHIVE_SMALL``); a larger one is copied into
    the staging table, its conflicts taken out, and inserted from it. Either way the
    insert says which rows were new only when not all were (the normal case builds no
    per-event result)."""
    if not received:
        return [], []
    received, conflicts = _first_copies(received)
    refused = [Refused(r, conflict_reason(r)) for r in conflicts]
    broken = await integrity.refusals(conn, [r.event for r in received], lock=True)
    if broken:
        out = {b.index for b in broken}
        refused += [Refused(received[b.index], b.reason) for b in broken]
        received = [r for i, r in enumerate(received) if i not in out]
    if not received:
        return [], refused
    rows = [(r.event.run_id, r.event.seq, to_datetime(r.event.ts), r.event.__struct_config__.tag, r.event.v,
             r.event.event_id, r.raw, r.topic, r.partition, r.offset) for r in received]
    if len(rows) <= SMALL_BATCH_EVENTS:
        out = await conn.fetch(ARCHIVE_SMALL, *_columns(rows, len(ARCHIVE_COLUMNS)), len(rows))
        taken = {(p, o) for p, o, *_ in out if p is not None}
        counts = [row[2:] for row in out if row[0] is None]
    else:
        if not getattr(conn, "archive_stage_ready", False):
            await conn.execute(ARCHIVE_STAGE)
        await conn.copy_records_to_table(ARCHIVE_STAGE_TABLE, columns=ARCHIVE_COLUMNS, records=rows)
        taken = {(p, o) for p, o in await conn.fetch(TAKE_CONFLICTS)}
        counts = None
    if taken:
        refused += [Refused(r, conflict_reason(r)) for r in received if (r.partition, r.offset) in taken]
        received = [r for r in received if (r.partition, r.offset) not in taken]
    events = [r.event for r in received]
    if counts is None:
        counts = await conn.fetch(ARCHIVE, len(events))
    if counts[0][0] == len(events):
        return events, refused
    inserted = {(run_id, seq) for _, run_id, seq in counts if run_id is not None}
    new = []
    for r in received:
        key = (str(_uuid(r.event.run_id)), r.event.seq)
        if key in inserted:
            inserted.discard(key)  # a duplicate inside the same batch is new only once
            new.append(r.event)
    return new, refused


def _first_copies(received: list[Received]) -> tuple[list[Received], list[Received]]:
    """Split off later copies of a (run, seq) within the batch that differ from the first
    (another ts or event id); identical copies stay (the archive counts them duplicates)."""
    first: dict[tuple[str, int], ev.Event] = {}
    conflicts: list[Received] = []
    for r in received:
        e = r.event
        seen = first.setdefault((e.run_id, e.seq), e)
        if seen is not e and (seen.ts != e.ts or seen.event_id != e.event_id):
            conflicts.append(r)
    if not conflicts:
        return received, conflicts
    out = set(map(id, conflicts))
    return [r for r in received if id(r) not in out], conflicts


def _uuid(value: str) -> str:
    """The canonical text form PostgreSQL returns for a uuid."""
    v = value.replace("-", "").lower()
    return f"{v[:8]}-{v[8:12]}-{v[12:16]}-{v[16:20]}-{v[20:]}"


async def write_projections(conn: asyncpg.Connection, m: Materialized, *, notify: bool = True,
                            offsets: Offsets | None = None) -> None:
    """Write what :func:`materialize` returned (``notify``: tell live readers at commit;
    ``offsets``: the consumer's positions, stored in the same round trip as the rest)."""
    if m.point_copy:
        await conn.copy_to_table("metric_points", source=_chunks(copy_data(m.point_copy)), columns=POINT_COLUMNS,
                                 format="binary")
    if len(m.points) > SMALL_POINT_ROWS:
        await conn.copy_records_to_table("metric_points", records=m.points, columns=POINT_COLUMNS)
    if m.table_rows:
        await conn.copy_records_to_table("table_rows", records=m.table_rows, columns=TABLE_ROW_COLUMNS)
    if m.log_lines:
        await conn.copy_records_to_table("log_lines", records=m.log_lines, columns=LOG_LINE_COLUMNS)
    await _many(conn, INSERT_EXPERIMENT, [(ws, name, when) for (ws, name), when in sorted(m.experiments.items())])
    await _many(conn, INSERT_RUN, [c.started for c in m.runs.values() if c.started])
    await _many(conn, INSERT_PARAM, [(r, k, v, t) for (r, k), (v, t) in sorted(m.params.items())])
    await _many(conn, UPSERT_EXPERIMENT_META, [
        (name, x.display_name, x.deleted, x.updated_at, orjson.dumps(x.tags).decode(), x.last_seq, ws)
        for (ws, name), x in sorted(m.experiment_meta.items())
    ])
    tags = sorted(m.tags.items())
    await _many(conn, UPSERT_TAG, [(r, k, v, t) for (r, k), (v, t, removed) in tags if not removed])
    await _many(conn, DELETE_TAG, [(r, k) for (r, k), (_, _, removed) in tags if removed])
    await _many(conn, UPSERT_ARTIFACT, [m.artifacts[k] for k in sorted(m.artifacts)])
    await write_tail(conn, m, notify=notify, offsets=offsets)


class Offsets(NamedTuple):
    """A consumer group's positions: (topic, partition) -> the last offset written."""

    group_id: str
    positions: dict[tuple[str, int], int]


async def write_tail(conn: asyncpg.Connection, m: Materialized | None, *, notify: bool = True,
                     offsets: Offsets | None = None) -> None:
    """``TAIL``: runs, summaries, rollups and a few point rows (of ``m``; None: nothing),
    offsets and NOTIFYs."""
    runs = sorted(m.runs.items()) if m is not None else []
    summaries = sorted(m.summaries.items()) if m is not None else []
    positions = sorted(offsets.positions.items()) if offsets is not None else []
    points = m.points if m is not None and len(m.points) <= SMALL_POINT_ROWS else []
    has_rollups = m is not None and bool(m.rollups or m.rollup_blocks)
    if not (runs or summaries or positions or points or has_rollups):
        return
    run_cols = _columns([
        (run_id, c.last_seq, c.updated_at, c.status, c.error, c.ended_at, c.renamed, c.name, c.deleted, c.deleted_at,
         c.server_seq if c.server_seq >= 0 else None) for run_id, c in runs], 11)
    summary_cols = _columns([
        (r, n, x.kind, x.description, x.count, x.last_seq, x.last_step, x.last_value, x.last_text, x.last_kind,
         x.min_value, x.max_value) for (r, n), x in summaries], 12)
    rollup_cols = m.rollup_rows() if has_rollups else [[] for _ in range(10)]
    notices = [run_payload(run_id, c.last_seq) for run_id, c in runs] if notify else []
    await conn.execute(TAIL, *rollup_cols, *run_cols, *summary_cols,
                       offsets.group_id if offsets is not None else "",
                       [t for (t, _), _ in positions], [p for (_, p), _ in positions], [o for _, o in positions],
                       notices, *_columns(points, len(POINT_COLUMNS)))


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as ``width`` column lists (for ``unnest``)."""
    return [list(c) for c in zip(*rows)] if rows else [[] for _ in range(width)]


async def _chunks(data: bytes, size: int = 1 << 20) -> AsyncIterator[memoryview]:
    """COPY data for asyncpg (which would take plain bytes for a file name)."""
    view = memoryview(data)
    for i in range(0, len(view), size):
        yield view[i:i + size]


async def _many(conn: asyncpg.Connection, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
    rows = list(rows)
    if rows:
        await conn.executemany(sql, rows)


async def write_dead_letters(conn: asyncpg.Connection, dead: list[DeadLetter]) -> None:
    """Record ``dead`` (a seq beyond bigint is recorded without it: it is why it failed)."""
    await _many(conn, INSERT_DEAD_LETTER, [
        (d.topic, d.partition, d.offset, d.key, d.raw, reason_text(d.reason), d.run_id,
         d.seq if d.seq is not None and 0 <= d.seq <= INT64_MAX else None, d.item) for d in dead])


async def save_offsets(conn: asyncpg.Connection, offsets: Offsets) -> None:
    await write_tail(conn, None, offsets=offsets)


async def load_offsets(conn: asyncpg.Connection, group_id: str, topic: str) -> dict[int, int]:
    """Last offset stored per partition of ``topic`` (the next message is offset + 1)."""
    return {p: o for p, o in await conn.fetch(LOAD_OFFSETS, group_id, topic)}


async def write_events(conn: asyncpg.Connection, received: list[Received],
                       prepared: Materialized | None = None, offsets: Offsets | None = None) -> WriteResult:
    """Archive, dedup and materialize ``received`` (in log order) in the open transaction.

    ``prepared``: ``materialize`` of every event of ``received``, done ahead (while the
    previous batch was being written); used as is when every event turns out new.
    ``offsets``: the consumer's positions to store with it (:func:`write_tail`)."""
    kept, foreign = await take_foreign(conn, received)
    new, refused = await archive(conn, kept)
    if prepared is None or len(new) != len(received):
        prepared = materialize(new, columnar=True)
    await write_projections(conn, prepared, offsets=offsets)
    return WriteResult(new=len(new), duplicates=len(kept) - len(new) - len(refused),
                       points=prepared.point_count, refused=tuple(refused), foreign=tuple(foreign))

async def take_foreign(conn: asyncpg.Connection, received: list[Received]) -> tuple[list[Received], list[DeadLetter]]:
    """Split off the events whose workspace (absent: ``default``) is not the one their
    run's ``run.started`` recorded (in the database, or earlier in this batch for a new
    run). Kafka producers are not trusted (docs/SECURITY.md): an event forged straight onto
    the topic for another workspace's run is dead-lettered here and changes nothing.
    Events of a run whose start is not known yet are kept (their run id is a random UUID
    the forger would have to know before the run exists)."""
    if not received:
        return received, []
    owner: dict[str, str] = dict(await conn.fetch(RUN_WORKSPACES, list({_uuid(r.event.run_id) for r in received})))
    for r in received:
        if isinstance(r.event, ev.RunStarted):
            owner.setdefault(_uuid(r.event.run_id), r.event.workspace or ev.DEFAULT_WORKSPACE)
    kept: list[Received] = []
    foreign: list[DeadLetter] = []
    for r in received:
        recorded = owner.get(_uuid(r.event.run_id))
        claimed = r.event.workspace or ev.DEFAULT_WORKSPACE
        if recorded is None or recorded == claimed:
            kept.append(r)
        else:
            foreign.append(DeadLetter.of(r, f"workspace: event {r.event.seq} of run {r.event.run_id} is from workspace "
                                            f"{claimed!r}, but the run belongs to workspace {recorded!r}"))
    return kept, foreign
