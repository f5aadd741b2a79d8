"""An event as a sequence of items (points or rows), so a rejected one can be set apart.

When the database (or materializing) rejects one event, the processor bisects it: the
event's items are written in halves, each in its own savepoint, down to the single item
that fails; only that item is dead-lettered (with its index) and every other item of the
event is stored. Items are: the points of ``metric.points`` (counted over its series, in
order) and ``metric.list``, the rows of ``metric.rows`` and ``metric.table``, the lines of
``log.lines``. Other event types are one item. ``runstream dead-letters retry`` uses the
same slicing to re-drive one dead item.
"""

from __future__ import annotations

from typing import Any

from msgspec import structs

from runstream.processors.materialize import Materialized, materialize
from runstream.schemas import events as ev


def item_count(event: ev.Event) -> int:
    """How many separately storable items ``event`` holds (1 for unsplittable types)."""
    p: Any = event.payload
    cls = event.__class__
    if cls is ev.MetricPoints:
        return sum(len(s.values) for s in p.series)
    if cls is ev.MetricList:
        return len(p.values)
    if cls is ev.MetricRows:
        return len(p.rows)
    if cls is ev.MetricTable:
        return len(next(iter(p.columns.values()), []))
    if cls is ev.LogLines:
        return len(p.lines)
    return 1


def slice_event(event: ev.Event, lo: int, hi: int) -> ev.Event:
    """The same event holding only items ``lo`` to ``hi`` (exclusive); not validated again."""
    p: Any = event.payload
    cls = event.__class__
    if cls is ev.MetricPoints:
        series, start = [], 0
        for s in p.series:
            n = len(s.values)
            a, b = max(lo - start, 0), min(hi - start, n)
            if a < b:
                series.append(structs.replace(s, steps=s.steps[a:b], values=s.values[a:b], times=s.times[a:b]))
            start += n
        payload = structs.replace(p, series=series)
    elif cls is ev.MetricList:
        payload = structs.replace(p, start_step=p.start_step + lo, values=p.values[lo:hi])
    elif cls is ev.MetricRows:
        payload = structs.replace(p, rows=p.rows[lo:hi])
    elif cls is ev.MetricTable:
        payload = structs.replace(p, columns={c: v[lo:hi] for c, v in p.columns.items()})
    elif cls is ev.LogLines:
        payload = structs.replace(p, lines=p.lines[lo:hi], times=p.times[lo:hi])
    else:
        return event
    return structs.replace(event, payload=payload)


def materialize_items(event: ev.Event, lo: int, hi: int) -> Materialized:
    """Rows of items ``lo`` to ``hi`` of ``event``, with the row/line indexes they have in
    the whole event (so a re-driven row lands where it would have been)."""
    m = materialize([slice_event(event, lo, hi)], columnar=True)
    if lo:
        m.table_rows = [(r, n, s, i + lo, t, c) for r, n, s, i, t, c in m.table_rows]
        m.log_lines = [(r, s, i + lo, t, st, line) for r, s, i, t, st, line in m.log_lines]
    return m
