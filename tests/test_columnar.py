"""processors.columnar (the numpy fast path) gives exactly what the per-point path gives."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from runstream.processors import columnar
from runstream.processors.materialize import COLUMNAR_MIN_POINTS, materialize
from runstream.query_api import downsample
from runstream.schemas import events
from tests.support import events as made

RUN = "01a21e1d-ef53-7c69-83bb-c2fcc112304b"
EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)


def event(seq: int, name: str, steps: list[int], values: list[Any], times: list[float]) -> events.Event:
    return made.decoded(RUN, seq, "metric.points", made.series(name, steps, values, times), event_id=RUN, ts=1000.0 + seq)


def rows_of(copy_rows: list[bytes]) -> list[tuple[Any, ...]]:
    """Parse the fast path's binary COPY rows back into metric_points tuples."""
    out = []
    for chunk in copy_rows:
        name_len = int.from_bytes(chunk[22:26], "big")
        rows = np.frombuffer(chunk, dtype=columnar._row_dtype(name_len))
        for r in rows:
            out.append((str(uuid.UUID(bytes=bytes(r["run"]))), bytes(r["name"]).decode(), int(r["step"]),
                        int(r["ts"]), float(r["value"]), None, int(r["kind"])))
    return out


_US = timedelta(microseconds=1)


def point_key(p: tuple[Any, ...]) -> tuple[Any, ...]:
    """(run, name, step, value as text so NaN compares, text, kind) of a tuple row."""
    return (p[0], p[1], p[2], repr(p[4]), p[5], p[6])


def both(batch: list[events.Event]) -> tuple[Any, Any]:
    return materialize(batch), materialize(batch, columnar=True)


def rollups(m: Any) -> dict[tuple[Any, ...], list[Any]]:
    cols = m.rollup_rows()
    return {tuple(row[:4]): list(row[4:]) for row in zip(*cols)}


def test_float_series_rows_summary_and_rollups_match_the_per_point_path() -> None:
    rng = random.Random(5)
    steps = sorted(rng.sample(range(50_000), 5_000)) + [50_000, 50_000]  # gaps and a repeated step
    values = [rng.uniform(-1e3, 1e3) for _ in steps]
    values[100] = values[101] = max(values) + 1  # ties: the highest step wins the maximum
    times = [1.7e9 + i * 0.0012345 + rng.random() * 1e-7 for i in range(len(steps))]
    slow, fast = both([event(0, "loss/train", steps, values, times)])
    assert not fast.points and fast.point_count == slow.point_count == len(steps)
    parsed = rows_of(fast.point_copy)
    assert [r[:3] + r[4:7] for r in parsed] == [(p[0], p[1], p[2], p[4], p[5], p[6]) for p in slow.points]
    assert [r[3] for r in parsed] == [(p[3] - EPOCH_2000) // _US for p in slow.points]
    assert vars(fast.summaries[(RUN, "loss/train")]) == vars(slow.summaries[(RUN, "loss/train")])
    assert repr(sorted(rollups(fast).items())) == repr(sorted(rollups(slow).items()))


def test_ints_out_of_order_steps_and_several_events_match_too() -> None:
    n = COLUMNAR_MIN_POINTS * 3
    steps = list(range(n))
    random.Random(1).shuffle(steps)
    batch = [
        event(0, "ints", list(range(n)), [i * 7 - 100 for i in range(n)], [1.5e9] * n),
        event(1, "shuffled", steps, [float(s % 17) for s in steps], [1.5e9] * n),
        event(2, "ints", list(range(n, 2 * n)), list(range(n)), [1.6e9] * n),
        event(3, "short", [1, 2], [0.5, 0.25], [1.6e9] * 2),
        event(4, "mixed", list(range(n)), [1.5, 2, True, "s"] * (n // 4), [1.6e9] * n),
        event(5, "nonfinite", list(range(n)), [0.5] * (n - 1) + [{"f": "NaN"}], [1.6e9] * n),
    ]
    slow, fast = both(batch)
    assert {(r[1], r[6]) for r in rows_of(fast.point_copy)} == {("ints", 1), ("shuffled", 0)}
    fast_points = [r[:3] + (repr(r[4]), r[5], r[6]) for r in rows_of(fast.point_copy)]
    fast_points += [point_key(p) for p in fast.points]
    assert sorted(fast_points) == sorted(point_key(p) for p in slow.points)
    for key, s in slow.summaries.items():
        assert vars(fast.summaries[key]) == vars(s), key
    fast_rollups, slow_rollups = rollups(fast), rollups(slow)
    assert fast_rollups.keys() == slow_rollups.keys()
    for key, r in slow_rollups.items():
        assert repr(fast_rollups[key]) == repr(r), key


def test_timestamps_round_like_datetime_fromtimestamp() -> None:
    rng = random.Random(9)
    times = [rng.uniform(0, 4e9) for _ in range(20_000)] + [1.0000005, 2.0000015, 1e9 + 0.9999995]
    got = columnar.microseconds(times)
    want = [(datetime.fromtimestamp(t, UTC) - EPOCH_2000) // _US for t in times]
    assert got.tolist() == want


def test_the_rollup_levels_are_the_same_for_writer_and_reader() -> None:
    assert columnar.ROLLUP_SHIFTS == downsample.ROLLUP_SHIFTS
