"""The fast path for numeric series: numpy instead of one Python tuple per point.

A series whose values are all finite floats (or all ints) becomes, in a handful of
vectorised operations, PostgreSQL binary-COPY rows for ``metric_points``, its summary
(count, min, max, last) and its rollup blocks. No per-point ``datetime``, tuple or
driver encoding is made. Everything else (strings, bools, NaN/±Inf, mixed kinds)
takes the per-point path in :mod:`processors.materialize`, which defines the results
this module must reproduce exactly (tests/test_columnar.py checks both agree).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PG_EPOCH_S = 946_684_800
"""PostgreSQL's timestamp epoch (2000-01-01) in Unix seconds."""

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
COPY_TRAILER = struct.pack("!h", -1)

ROLLUP_SHIFTS = (4, 8, 12)
"""Rollup levels: blocks of 2**shift steps (16, 256 and 4,096)."""

_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Blocks:
    """One series' rollup at one level: parallel arrays, one entry per block."""

    shift: int
    block: np.ndarray
    n: np.ndarray
    lo_value: np.ndarray
    lo_step: np.ndarray
    hi_value: np.ndarray
    hi_step: np.ndarray


@dataclass(frozen=True)
class Columnar:
    """What one numeric series adds: COPY rows, summary figures, rollup blocks."""

    copy_rows: bytes
    count: int
    last_step: int
    last_value: float
    min_value: float
    max_value: float
    blocks: list[Blocks] | None
    """None when the steps are not in order (the caller rolls those up point by point)."""


def numeric(values: Sequence[Any]) -> tuple[np.ndarray, int] | None:
    """``(values as float64, kind)`` when every value is a finite float (kind 0) or an int
    (kind 1) of magnitude below 2**53 (float64 holds it exactly); otherwise None (the
    per-point path handles it)."""
    types = set(map(type, values))
    if types == {float}:
        kind = 0
    elif types == {int}:
        kind = 1
    else:
        return None
    try:
        array = np.array(values, dtype=np.float64)
    except OverflowError:
        return None
    if not np.isfinite(array).all():
        return None
    if kind == 1 and np.abs(array).max() >= 2.0**53:  # beyond, the per-point path keeps the exact text
        return None
    return array, kind


def microseconds(times: Sequence[float] | np.ndarray) -> np.ndarray:
    """Unix seconds → microseconds since 2000-01-01, rounded half-even as
    ``datetime.fromtimestamp`` rounds (so both paths store the same timestamp)."""
    t = np.asarray(times, dtype=np.float64)
    frac, whole = np.modf(t)
    return (whole.astype(np.int64) - PG_EPOCH_S) * 1_000_000 + np.rint(frac * 1e6).astype(np.int64)


def _row_dtype(name_len: int) -> np.dtype:
    return np.dtype([
        ("fields", ">i2"), ("run_len", ">i4"), ("run", "V16"), ("name_len", ">i4"), ("name", f"V{name_len}"),
        ("step_len", ">i4"), ("step", ">i8"), ("ts_len", ">i4"), ("ts", ">i8"), ("value_len", ">i4"),
        ("value", ">f8"), ("text_len", ">i4"), ("kind_len", ">i4"), ("kind", ">i2"),
    ])


def copy_rows(run_id: str, name: str, steps: np.ndarray, ts_us: np.ndarray, values: np.ndarray, kind: int) -> bytes:
    """Binary COPY rows (no header) for ``metric_points (run_id, name, step, ts, value, text, kind)``."""
    encoded = name.encode()
    rows = np.empty(len(steps), dtype=_row_dtype(len(encoded)))
    rows["fields"] = 7
    rows["run_len"] = 16
    rows["run"] = np.void(uuid.UUID(run_id).bytes)
    rows["name_len"] = len(encoded)
    rows["name"] = np.void(encoded)
    rows["step_len"] = rows["ts_len"] = rows["value_len"] = 8
    rows["step"] = steps
    rows["ts"] = ts_us
    rows["value"] = values
    rows["text_len"] = -1
    rows["kind_len"] = 2
    rows["kind"] = kind
    return rows.tobytes()


def rollup(steps: np.ndarray, values: np.ndarray, shift: int) -> Blocks:
    """Per block of ``2**shift`` steps: count and the (value, step) of its minimum (lowest
    step on ties) and maximum (highest step on ties). ``steps`` must be non-decreasing."""
    block = steps >> shift
    starts = np.flatnonzero(np.concatenate(([True], block[1:] != block[:-1])))
    ends = np.append(starts[1:], len(steps))
    lo = np.minimum.reduceat(values, starts)
    hi = np.maximum.reduceat(values, starts)
    counts = ends - starts
    lo_hits = np.flatnonzero(values == np.repeat(lo, counts))
    hi_hits = np.flatnonzero(values == np.repeat(hi, counts))
    lo_at = lo_hits[np.searchsorted(lo_hits, starts)]  # first minimum in each block
    hi_at = hi_hits[np.searchsorted(hi_hits, ends) - 1]  # last maximum in each block
    return Blocks(shift, block[starts], counts, lo, steps[lo_at], hi, steps[hi_at])


def series(run_id: str, name: str, steps: Sequence[int], times: Sequence[float] | float,
           values: np.ndarray, kind: int) -> Columnar | None:
    """The fast path for one numeric series, or None if a step is out of int64's range."""
    try:
        step_array = np.array(steps, dtype=np.int64)
    except OverflowError:
        return None
    if isinstance(times, float):
        ts_us = np.full(len(step_array), microseconds([times])[0], dtype=np.int64)
    else:
        ts_us = microseconds(times)
    ordered = bool((step_array[1:] >= step_array[:-1]).all())
    blocks = [rollup(step_array, values, s) for s in ROLLUP_SHIFTS] if ordered else None
    return Columnar(
        copy_rows(run_id, name, step_array, ts_us, values, kind), len(step_array), int(step_array[-1]),
        float(values[-1]), float(values.min()), float(values.max()), blocks,
    )


def copy_data(chunks: list[bytes]) -> bytes:
    """A complete binary COPY stream from row chunks."""
    return b"".join([COPY_HEADER, *chunks, COPY_TRAILER])
