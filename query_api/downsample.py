"""Downsampling a metric vector so its chart keeps its shape (pure functions).

The step range ``[first, last]`` of the points is cut into at most
``(max_points - 2) // 2`` buckets of equal integer width; each bucket keeps its minimum
and its maximum point, and the global first and last points are always kept. The
result is ordered by step and never holds more than ``max_points`` points, so spikes
and dips survive whatever the zoom level.

Ordering of values is PostgreSQL's float ordering, so that the SQL path
(:mod:`query_api.queries`) and this reference agree: ``-Infinity < finite < +Infinity <
NaN``. ±Inf are therefore ordinary extremes, and a bucket that holds a NaN keeps a NaN
as its "maximum" point: a divergence never disappears from the chart (in that bucket
the NaN takes the place of the largest finite value).

The API downsamples in SQL (one aggregate over the range, then an index lookup of the
picked points), which measured faster than fetching every point and calling
:func:`downsample`; this module holds the shared arithmetic (:func:`bucket_width`,
:func:`value_key`) and the reference implementation the SQL path is tested against.
String values cannot be ordered against numbers and are never downsampled.

Long ranges are downsampled from rollups (``metric_rollups``: min/max per block of
``2**shift`` steps, kept by the processors) instead of from every point. Then the
bucket grid is aligned to the blocks (:func:`bucket_grid` with that ``shift``: the origin
rounded down to a block boundary, the width rounded up to whole blocks), so a bucket is
made of whole blocks and its min/max are the min/max of its blocks. The result is what
:func:`downsample` returns with the same ``shift``: still at most ``max_points`` points
with every bucket's extremes and the first and last point, on a slightly coarser grid
(at most 25% wider buckets, since a level is used only when a bucket spans four blocks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "MIN_MAX_POINTS",
    "ROLLUP_SHIFTS",
    "Point",
    "bucket_count",
    "bucket_grid",
    "bucket_width",
    "downsample",
    "pick_points",
    "rollup_shift",
    "value_key",
]

MIN_MAX_POINTS = 4
"""Smallest useful ``max_points``: one bucket (min, max) plus the first and last point."""


class Point(NamedTuple):
    """One metric point as the API returns it."""

    step: int
    """The point's step (x axis)."""
    time: float
    """Client timestamp, seconds since the epoch."""
    value: float | None
    """Numeric value (kind 0-2); ``None`` for strings."""
    text: str | None
    """String value (kind 3)."""
    kind: int
    """0 float, 1 int, 2 bool, 3 string."""


def bucket_count(max_points: int) -> int:
    """Buckets for a budget of ``max_points`` (two picks each, plus first and last)."""
    if max_points < MIN_MAX_POINTS:
        raise ValueError(f"max_points must be at least {MIN_MAX_POINTS}, got {max_points}")
    return (max_points - 2) // 2


def bucket_width(first_step: int, last_step: int, max_points: int) -> int:
    """Integer width of a bucket so that ``[first_step, last_step]`` needs at most
    :func:`bucket_count` buckets; a point's bucket is ``(step - first_step) // width``."""
    span = last_step - first_step + 1
    buckets = bucket_count(max_points)
    return max(1, -(-span // buckets))


ROLLUP_SHIFTS = (4, 8, 12)
"""Levels of ``metric_rollups``: blocks of 16, 256 and 4,096 steps (the processors'
``processors.columnar.ROLLUP_SHIFTS``; a test keeps the two equal)."""

ROLLUP_BLOCKS_PER_BUCKET = 4
"""A level is used only when a bucket spans at least this many of its blocks."""


def rollup_shift(first_step: int, last_step: int, max_points: int) -> int:
    """The coarsest rollup level whose blocks fit :data:`ROLLUP_BLOCKS_PER_BUCKET` times in
    a bucket of ``[first_step, last_step]``; 0 when none does (downsample the points)."""
    width = bucket_width(first_step, last_step, max_points)
    for shift in reversed(ROLLUP_SHIFTS):
        if (ROLLUP_BLOCKS_PER_BUCKET << shift) <= width:
            return shift
    return 0


def bucket_grid(first_step: int, last_step: int, max_points: int, shift: int = 0) -> tuple[int, int]:
    """``(origin, width)``: a point's bucket is ``(step - origin) // width``, and
    ``[first_step, last_step]`` needs at most :func:`bucket_count` buckets. With ``shift``
    the origin is a multiple of ``2**shift`` and the width a whole number of blocks."""
    if not shift:
        return first_step, bucket_width(first_step, last_step, max_points)
    block = 1 << shift
    origin = (first_step >> shift) << shift
    width = -(-(last_step - origin + 1) // bucket_count(max_points))
    return origin, -(-width // block) * block


def value_key(value: float) -> tuple[int, float]:
    """Sort key matching PostgreSQL's float order (NaN above +Infinity)."""
    return (1, 0.0) if math.isnan(value) else (0, value)


def downsample(points: Sequence[Point], max_points: int, shift: int = 0) -> tuple[list[Point], bool]:
    """Return ``(kept points ordered by step, whether anything was dropped)``.

    ``points`` must be ordered by (step, time). ``max_points == 0`` or a short enough
    vector returns every point. ``shift``: the bucket grid of rollup level ``shift``
    (:func:`bucket_grid`). Raises ``ValueError`` for string points or a
    ``max_points`` below :data:`MIN_MAX_POINTS`.
    """
    if max_points == 0 or len(points) <= max_points:
        return list(points), False
    first_step, width = bucket_grid(points[0].step, points[-1].step, max_points, shift)
    lows: dict[int, tuple[tuple[int, float], int, float, int]] = {}
    highs: dict[int, tuple[tuple[int, float], int, float, int]] = {}
    for i, p in enumerate(points):
        if p.value is None:
            raise ValueError("string values cannot be downsampled")
        b = (p.step - first_step) // width
        key = (value_key(p.value), p.step, p.time, i)
        low = lows.get(b)
        if low is None or key[:3] < low[:3]:
            lows[b] = key
        high = highs.get(b)
        if high is None or key[:3] >= high[:3]:
            highs[b] = key
    keep = {0, len(points) - 1}
    keep.update(k[3] for k in lows.values())
    keep.update(k[3] for k in highs.values())
    return [points[i] for i in sorted(keep)], True


def pick_points(
    extremes: Sequence[tuple[float, int, bool]],
    candidates: Sequence[Point],
    first: Point,
    last: Point,
) -> list[Point]:
    """Assemble the SQL path's result, ordered by (step, time), without duplicates.

    ``extremes`` are the per-bucket picks as ``(value, step, is_max)``; ``candidates``
    are every point at those steps, ordered by (step, time). A minimum takes the
    earliest point at its step with its value, a maximum the latest, as
    :func:`downsample` does.
    """
    at_step: dict[int, list[Point]] = {}
    for p in candidates:
        at_step.setdefault(p.step, []).append(p)
    kept = {_identity(first): first, _identity(last): last}
    for value, step, is_max in extremes:
        want = value_key(value)
        matches = [p for p in at_step.get(step, ()) if p.value is not None and value_key(p.value) == want]
        if matches:  # always, on append-only data
            p = matches[-1] if is_max else matches[0]
            kept.setdefault(_identity(p), p)
    return sorted(kept.values(), key=lambda p: (p.step, p.time))


def _identity(p: Point) -> tuple[int, float, int, object]:
    return (p.step, p.time, p.kind, p.text if p.value is None else value_key(p.value))
