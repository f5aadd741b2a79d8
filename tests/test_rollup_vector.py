"""Downsampling from the processors' rollups gives the reference result on the rollup grid."""

from __future__ import annotations

import math
import random
import uuid
from typing import Any

import asyncpg
import orjson

from runstream.query_api import queries
from runstream.query_api.downsample import Point, downsample, rollup_shift
from runstream.settings import Settings
from tests.support import events
from tests.support.names import unique
from tests.support.waiting import wait_for

N = 120_000


async def test_rollup_downsampling_equals_the_reference_on_its_grid(services: Settings, db: Any) -> None:
    rng = random.Random(11)
    steps = sorted(rng.sample(range(3 * N), N))  # gaps between steps
    values: list[Any] = [math.sin(i / 5_000) + rng.random() * 0.01 for i in range(N)]
    values[N // 3], values[N // 2] = 50.0, -50.0
    run_id = events.new_run_id()
    batch = [(run_id, events.started(run_id, unique("rollup")))]
    for seq, i in enumerate(range(0, N, 10_000), start=1):  # long numeric events: the columnar path
        batch.append((run_id, events.points(run_id, seq, "loss", steps[i:i + 10_000], values[i:i + 10_000])))
    extra = [{"f": "NaN"}, 7.0, {"f": "Infinity"}, 3]  # non-finite values: the per-point path
    batch.append((run_id, events.points(run_id, len(batch), "loss", [3 * N + i for i in range(4)], extra)))
    await events.produce(services, batch)
    wait_for(lambda: db.execute("SELECT count FROM metric_summaries WHERE run_id = %s AND name = 'loss'",
                                (run_id,)).fetchone() == (N + 4,), timeout=120, what="all points")

    async with asyncpg.create_pool(services.database_url, min_size=1, max_size=2) as pool:
        rows = await pool.fetch(queries.VECTOR_POINTS, uuid.UUID(run_id), "loss", 0, queries.MAX_STEP)
        everything = [Point(r["step"], r["time"], r["value"], r["text"], r["kind"]) for r in rows]
        for lo, hi, budget in [(None, None, 1000), (12_345, 298_765, 200), (None, 200_003, 64)]:
            got = await queries.metric_vector(pool, uuid.UUID(run_id), "loss", lo, hi, budget)
            chosen = [p for p in everything if (lo is None or p.step >= lo) and (hi is None or p.step <= hi)]
            shift = rollup_shift(chosen[0].step, chosen[-1].step, budget)
            assert shift, "the range is long enough for a rollup level"
            expected, dropped = downsample(chosen, budget, shift)
            assert dropped and got["downsampled"] and got["count"] == len(chosen)
            assert got["steps"] == [p.step for p in expected]
            assert orjson.dumps(got["values"]) == orjson.dumps([queries.value(p.kind, p.value, p.text)
                                                                for p in expected])
            assert len(got["steps"]) <= budget
        whole = await queries.metric_vector(pool, uuid.UUID(run_id), "loss", max_points=1000)
        assert 50.0 in whole["values"] and -50.0 in whole["values"] and {"f": "NaN"} in whole["values"]
