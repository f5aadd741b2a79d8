"""A run's state as of one of its events or a time (SPEC §5), folded from the ``events`` archive.

The state as of seq ``S`` is what the processors would have written for the run had its
archived events with ``seq <= S`` been its whole log: the bodies are read in seq order,
decoded with :func:`schemas.events.decode` and folded with the processors' own
:func:`processors.materialize.materialize` as one batch; this module only shapes what
that returns (the ``runs`` row :func:`processors.store.write_projections` would insert
and update, the tags it would keep, the summaries it would upsert) the way
:mod:`query_api.queries` shapes the live rows. No event is interpreted here.

* **As of a time** ``T``: the longest prefix of the run's log whose events are all
  stamped ``ts <= T`` (event times are the client's clock), i.e. every event before the
  first one stamped after ``T``. It is resolved to that prefix's last seq ``S``, and the
  answer is the one for ``as_of_seq=S``. A time after the run's last materialized event
  gives its latest state; one before its first event is a 404.
* **Bounded.** A fold reads at most :data:`MAX_EVENTS` events and :data:`MAX_BYTES`
  bytes of event bodies (uncompressed), counted before any body is read; a larger one is
  refused with a 422 (:class:`AsOfTooLarge`) naming the figures. It runs on a worker
  thread, so the event loop keeps serving.
* **At most** :data:`FOLDS_AT_ONCE` folds read and fold at the same time per API
  process (the others wait their turn), so memory stays within a few times the bounds.
* **Children**: the runs whose parent is this run and whose ``run.started`` is stamped
  no later than the as-of point's ``ts`` (both client clocks: exact when the children
  were started on the same machine as the parent's events, e.g. by ``child_run``).
"""

from __future__ import annotations

import asyncio
import heapq
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from runstream.processors.materialize import Materialized, RunChange, materialize, to_datetime
from runstream.query_api import queries
from runstream.query_api.errors import HttpError, NotFound
from runstream.schemas import api
from runstream.schemas import events as ev

__all__ = ["FOLDS_AT_ONCE", "MAX_BYTES", "MAX_EVENTS", "AsOf", "AsOfTooLarge", "Fold", "detail", "fold", "metrics"]

MAX_EVENTS = 50_000
"""Most archived events one as-of answer folds."""
MAX_BYTES = 16 << 20
"""Most bytes of archived event bodies (uncompressed) one as-of answer folds."""
FOLDS_AT_ONCE = 2
"""Folds running at once in one API process (each holds its bodies and decoded events)."""
_FOLDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _fold_slot() -> asyncio.Semaphore:
    """The running loop's semaphore of :data:`FOLDS_AT_ONCE` (one per loop: tests run several)."""
    loop = asyncio.get_running_loop()
    slot = _FOLDS.get(loop)
    if slot is None:
        slot = _FOLDS[loop] = asyncio.Semaphore(FOLDS_AT_ONCE)
    return slot


class AsOfTooLarge(HttpError):
    """The fold an as-of answer needs is larger than :data:`MAX_EVENTS` / :data:`MAX_BYTES`."""

    status = 422


@dataclass(frozen=True)
class AsOf:
    """The requested point: an event seq or a time (exactly one), and the parameter as
    given (for messages)."""

    seq: int | None
    when: datetime | None
    param: str
    """e.g. ``as_of_seq=12`` or ``as_of='2026-01-01T00:00:00Z'``."""


@dataclass(frozen=True)
class Fold:
    """A run's archived events up to ``seq`` (stamped ``ts``), materialized as one batch."""

    run_id: uuid.UUID
    m: Materialized
    seq: int
    ts: float

    @property
    def change(self) -> RunChange:
        return next(iter(self.m.runs.values()))  # the events are one run's


async def fold(db: queries.Db, run_id: uuid.UUID, last_seq: int, point: AsOf, *, columnar: bool) -> Fold:
    """The run's archived events up to ``point``, folded. ``last_seq``: the run's last
    materialized seq (a seq beyond it is a 404; a time resolves to at most it).
    ``columnar``: long numeric series take materialize's columnar path (summaries only;
    the values are then not in ``m.points``)."""
    cutoff = point.when
    if point.seq is not None and point.seq >= ev.SERVER_SEQ_BASE:
        # An event the query API wrote for a run numbered elsewhere: the other numbering
        # counts in up to its time.
        cutoff = await queries.as_of_ts(db, run_id, point.seq)
        if cutoff is None:
            raise NotFound(f"run {run_id} has no event {point.param}")
        seq = point.seq
    elif point.seq is not None:
        if point.seq > last_seq:
            raise NotFound(
                f"run {run_id} has no event {point.param}: its last materialized event is seq {last_seq} "
                f"(add min_seq={point.seq} to wait for it)"
            )
        seq = point.seq
    else:
        assert point.when is not None
        after = await queries.as_of_first_after(db, run_id, point.when)
        seq = last_seq if after is None else min(after - 1, last_seq)
    if cutoff is None:
        cutoff = await queries.as_of_ts(db, run_id, seq) if seq >= 0 else None
    events, size = (0, 0) if cutoff is None else await queries.as_of_extent(db, run_id, seq, cutoff)
    if events == 0:
        raise NotFound(f"run {run_id} has no event at or before {point.param}")
    if events > MAX_EVENTS or size > MAX_BYTES:
        raise AsOfTooLarge(
            f"{point.param}: run {run_id} has {events} events ({size} bytes) up to seq {seq}; an as-of "
            f"state folds at most {MAX_EVENTS} events and {MAX_BYTES} bytes: ask for an earlier point"
        )
    async with _fold_slot():
        bodies = await queries.as_of_bodies(db, run_id, seq, cutoff)
        return await asyncio.to_thread(_fold, run_id, bodies, seq, columnar)


def _fold(run_id: uuid.UUID, bodies: Sequence[bytes], seq: int, columnar: bool) -> Fold:
    """Decode and fold; the two numberings (seq order each) are merged by time, as the
    processors met them on the run's one partition."""
    decoded = [ev.decode(body) for body in bodies]
    own = [e for e in decoded if e.seq < ev.SERVER_SEQ_BASE]
    server = [e for e in decoded if e.seq >= ev.SERVER_SEQ_BASE]
    batch = list(heapq.merge(own, server, key=lambda e: e.ts)) if server else own
    point = next((e for e in batch if e.seq == seq), batch[-1])
    return Fold(run_id, materialize(batch, columnar=columnar), point.seq, point.ts)


def _as_of(f: Fold) -> api.AsOf:
    return {"seq": f.seq, "ts": f.ts}


def detail(f: Fold, children: list[uuid.UUID]) -> api.RunDetail:
    """The run detail (``queries.run_detail``'s shape) as of the fold, plus ``as_of``."""
    change = f.change
    if change.started is None:
        raise NotFound(f"run {f.run_id} had not started as of seq {f.seq} (no run.started event up to it)")
    _, experiment, name, parent, kind, status, properties, started_at, _ = change.started
    ended = change.status is not None  # the runs row as INSERT_RUN then UPDATE_RUN leave it
    row = {
        "run_id": f.run_id,
        "experiment": experiment,
        "name": change.name if change.renamed else name,
        "status": change.status if ended else status,
        "kind": kind,
        "parent_run_id": None if parent is None else uuid.UUID(parent),
        "error": change.error if ended else None,
        "started_at": started_at,
        "ended_at": change.ended_at if ended else None,
        "updated_at": max(started_at, change.updated_at or started_at),
        "last_seq": change.last_seq,
        "deleted_at": change.deleted_at if change.deleted else None,
    }
    m = f.m
    return {
        **queries.run_of(row),
        "properties": orjson.loads(properties),
        "tags": {key: value for (_, key), (value, _, removed) in sorted(m.tags.items()) if not removed},
        "params": {key: value for (_, key), (value, _) in sorted(m.params.items())},
        "metrics": {
            name: queries.summary_of(s.kind, s.description, s.count, s.last_step, s.last_value, s.last_text,
                                     s.last_kind, s.min_value, s.max_value)
            for (_, name), s in sorted(m.summaries.items())
        },
        "children": children,
        "as_of": _as_of(f),
    }


def metrics(f: Fold, names: Sequence[str] = ()) -> api.MetricsAsOf:
    """``{"metrics": <get_metrics shape>, "as_of": {...}}`` as of the fold (which must be
    materialized with ``columnar=False``: the vectors come from ``m.points``)."""
    m, wanted = f.m, set(names)
    points: dict[str, list[tuple[int, datetime, Any]]] = {}
    for _, name, step, when, number, text, kind in m.points:
        points.setdefault(name, []).append((step, when, queries.value(kind, number, text)))
    rows: dict[str, list[dict[str, Any]]] = {}
    for _, name, _, _, _, cells in m.table_rows:  # in (seq, idx) order
        rows.setdefault(name, []).append(orjson.loads(cells))
    shaped: dict[str, Any] = {}
    for (run, name), s in sorted(m.summaries.items()):
        if wanted and name not in wanted:
            continue
        image = m.artifacts.get((run, s.last_text)) if s.kind == "image" and s.last_text else None
        vector = [v for _, _, v in sorted(points.get(name, []), key=lambda p: (p[0], p[1]))]
        shaped[name] = queries.metric_shape(s.kind, s.count, s.last_kind, s.last_value, s.last_text, vector,
                                            rows.get(name, []), None if image is None else image[2])
    return {"metrics": shaped, "as_of": _as_of(f)}


async def children_of(db: queries.Db, f: Fold, workspace: str) -> list[uuid.UUID]:
    """The run's children started (``run.started`` stamped) no later than the fold's last event."""
    return await queries.as_of_children(db, f.run_id, to_datetime(f.ts), workspace)
