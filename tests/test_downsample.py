"""Unit tests of query_api.downsample (pure functions, no database)."""

from __future__ import annotations

import math
import random

import pytest

from runstream.query_api.downsample import (
    MIN_MAX_POINTS,
    Point,
    bucket_count,
    bucket_width,
    downsample,
    pick_points,
    value_key,
)

NAN, INF = math.nan, math.inf


def points(values: list[float], steps: list[int] | None = None) -> list[Point]:
    steps = list(range(len(values))) if steps is None else steps
    return [Point(s, 1000.0 + s, v, None, 0) for s, v in zip(steps, values)]


def num(p: Point) -> float:
    assert p.value is not None
    return p.value


def same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


def test_short_vectors_and_zero_budget_are_returned_whole() -> None:
    pts = points([3.0, 1.0, 2.0])
    assert downsample(pts, 0) == (pts, False)
    assert downsample(pts, 4) == (pts, False)
    assert downsample(pts, 3) == (pts, False)


def test_budget_below_minimum_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        downsample(points([1.0] * 10), MIN_MAX_POINTS - 1)
    assert bucket_count(4) == 1 and bucket_count(1000) == 499


def test_bucket_width_covers_the_range_with_at_most_bucket_count_buckets() -> None:
    for first, last, budget in [(0, 999_999, 1000), (5, 5, 10), (0, 6, 4), (10, 2**62, 1000), (0, 997, 1000)]:
        width = bucket_width(first, last, budget)
        buckets = (last - first) // width + 1
        assert 1 <= buckets <= bucket_count(budget)


def test_keeps_first_last_and_each_bucket_min_max() -> None:
    rng = random.Random(7)
    values = [rng.uniform(-1, 1) for _ in range(10_000)]
    values[1234], values[8765] = 50.0, -50.0  # spikes
    kept, dropped = downsample(points(values), 100)
    assert dropped and len(kept) <= 100
    assert kept[0].step == 0 and kept[-1].step == 9_999
    assert [p.step for p in kept] == sorted(p.step for p in kept)
    kept_values = {p.value for p in kept}
    assert 50.0 in kept_values and -50.0 in kept_values
    width = bucket_width(0, 9_999, 100)
    for b in range(0, 10_000 // width + 1):
        chunk = values[b * width:(b + 1) * width]
        if chunk:
            assert min(chunk) in kept_values and max(chunk) in kept_values


def test_never_exceeds_budget() -> None:
    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(1, 3000)
        steps = sorted(rng.sample(range(10 * n), n))
        budget = rng.choice([0, 4, 5, 7, 10, 33, 100, 1000])
        kept, dropped = downsample(points([rng.random() for _ in range(n)], steps), budget)
        assert (len(kept) <= budget) if budget else len(kept) == n
        assert dropped == (budget != 0 and n > budget)


def test_non_finite_values_stay_visible() -> None:
    values = [float(i % 7) for i in range(1000)]
    values[100], values[500], values[900] = NAN, INF, -INF
    kept, _ = downsample(points(values), 20)
    got = [p.value for p in kept]
    assert any(v is not None and math.isnan(v) for v in got)
    assert INF in got and -INF in got


def test_nan_orders_above_infinity_like_postgresql() -> None:
    ordered = sorted([NAN, 1.0, INF, -INF, 0.0], key=value_key)
    assert ordered[:4] == [-INF, 0.0, 1.0, INF] and math.isnan(ordered[4])


def test_all_nan_vector_does_not_crash() -> None:
    kept, dropped = downsample(points([NAN] * 500), 10)
    assert dropped and 2 <= len(kept) <= 10
    assert all(math.isnan(p.value or 0.0) for p in kept)


def test_strings_are_refused() -> None:
    pts = [Point(i, 0.0, None, f"s{i}", 3) for i in range(10)]
    with pytest.raises(ValueError, match="string"):
        downsample(pts, 4)
    assert downsample(pts, 10) == (pts, False)


def test_ints_and_bools_keep_their_kind() -> None:
    pts = [Point(i, 0.0, float(i % 5), None, 1) for i in range(100)]
    kept, _ = downsample(pts, 10)
    assert {p.kind for p in kept} == {1}


def test_pick_points_matches_the_reference_on_repeated_steps_and_nans() -> None:
    rng = random.Random(3)
    for _ in range(50):
        n = rng.randint(5, 400)
        steps = sorted(rng.choice(range(n)) for _ in range(n))  # repeated steps
        pts = sorted(
            (Point(s, rng.random(), rng.choice([0.0, 1.0, 2.0, NAN, INF]), None, 0) for s in steps),
            key=lambda p: (p.step, p.time),
        )
        budget = rng.choice([4, 6, 10, 50])
        expected, dropped = downsample(pts, budget)
        if not dropped:
            continue  # the API calls pick_points only when the range exceeds the budget
        # What the SQL path computes: per bucket the (value, step) of min and max.
        width = bucket_width(pts[0].step, pts[-1].step, budget)
        buckets: dict[int, list[Point]] = {}
        for p in pts:
            buckets.setdefault((p.step - pts[0].step) // width, []).append(p)
        extremes: list[tuple[float, int, bool]] = []
        for members in buckets.values():
            lo = min(members, key=lambda p: (value_key(num(p)), p.step))
            hi = max(members, key=lambda p: (value_key(num(p)), p.step))
            extremes += [(num(lo), lo.step, False), (num(hi), hi.step, True)]
        candidates = [p for p in pts if p.step in {s for _, s, _ in extremes}]
        got = pick_points(extremes, candidates, pts[0], pts[-1])
        assert [(p.step, p.time) for p in got] == [(p.step, p.time) for p in expected]
        assert all(same(a.value, b.value) for a, b in zip(got, expected))
