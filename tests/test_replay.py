"""processors.replay: projections rebuilt from the events archive equal the live ones,
and the processors keep writing into the swapped-in tables."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import uuid
from typing import Any

import orjson
import pytest

from runstream import Experiment, Workspace
from runstream.processors import replay
from runstream.processors.replay import PROJECTIONS, REBUILD_SCHEMA, ReplayError, rebuild
from runstream.settings import Settings
from tests.support.names import unique

# Every projection row of the given runs, in a fixed order. metric_summaries.updated_at
# is the processor's wall clock at write time, not a function of the events: left out.
SNAPSHOTS = {
    "runs": "SELECT * FROM runs WHERE run_id = ANY(%(ids)s) ORDER BY run_id",
    "tags": "SELECT * FROM tags WHERE run_id = ANY(%(ids)s) ORDER BY run_id, key",
    "artifacts": "SELECT * FROM artifacts WHERE run_id = ANY(%(ids)s) ORDER BY run_id, path",
    "metric_summaries": "SELECT run_id, name, kind, description, count, last_seq, last_step, last_value::text, "
                        "last_text, last_kind, min_value::text, max_value::text FROM metric_summaries "
                        "WHERE run_id = ANY(%(ids)s) ORDER BY run_id, name",
    "metric_rollups": "SELECT run_id, name, shift, block, n, n_text, lo_value::text, lo_step, hi_value::text, hi_step "
                      "FROM metric_rollups WHERE run_id = ANY(%(ids)s) ORDER BY 1, 2, 3, 4",
    "metric_points": "SELECT run_id, name, step, ts, value::text, text, kind FROM metric_points "
                     "WHERE run_id = ANY(%(ids)s) ORDER BY 1, 2, 3, 4, 5, 6, 7",
    "table_rows": "SELECT run_id, name, seq, idx, ts, cells::text FROM table_rows WHERE run_id = ANY(%(ids)s) "
                  "ORDER BY run_id, name, seq, idx",
    "log_lines": "SELECT * FROM log_lines WHERE run_id = ANY(%(ids)s) ORDER BY run_id, seq, idx",
    "experiments": "SELECT * FROM experiments WHERE name = %(experiment)s",
}

# The rollups as the migration computes them from the points (the SQL definition).
ROLLUPS_FROM_POINTS = """
SELECT run_id, name, shift, block, n, n_text, lo[1]::text, lo[2]::bigint, hi[1]::text, hi[2]::bigint FROM (
    SELECT p.run_id, p.name, l.shift, p.step >> l.shift AS block, count(*) AS n,
           count(*) FILTER (WHERE p.kind = 3) AS n_text,
           min(ARRAY[p.value, p.step::float8]) FILTER (WHERE p.kind <> 3) AS lo,
           max(ARRAY[p.value, p.step::float8]) FILTER (WHERE p.kind <> 3) AS hi
    FROM metric_points p CROSS JOIN (VALUES (4), (8), (12)) AS l(shift)
    WHERE p.run_id = ANY(%(ids)s) GROUP BY 1, 2, 3, 4) g
ORDER BY 1, 2, 3, 4"""


def snapshot(db: Any, ids: list[str], experiment: str) -> dict[str, list[Any]]:
    params = {"ids": ids, "experiment": experiment}
    return {table: db.execute(sql, params).fetchall() for table, sql in SNAPSHOTS.items()}


def log_everything(ws: Workspace, experiment: str) -> list[str]:
    exp = Experiment(ws, experiment)
    run = exp.start_logging(name="main", lr=0.1, tag=math.nan)
    for i in range(3_000):  # long enough for the columnar path, with steps across rollup blocks
        run.log("loss", 1.0 / (i + 1))
    for i in range(100):
        run.log("mixed", [1.5, 2, True, "s", math.nan, math.inf][i % 6])
    run.log("stepped", 5.0, step=7_000)
    run.log("stepped", -5.0, step=3)
    run.log_list("list", list(range(500)))
    run.log_list("short", [0.5, math.nan])
    for i in range(5):
        run.log_row("rows", x=i, y=i * 0.5)
    run.log_table("table", {"a": [1, 2, 3], "b": ["x", "y", "z"]})
    run.tag("keep", "yes")
    run.tag("gone")
    run.remove_tag("gone")
    run.tag("keep", "changed")
    run.upload_file("notes.txt", b"replay me")
    child = run.child_run("child")
    child.log("acc", 0.9)
    child.fail("boom")
    run.complete()
    run.get_metrics(recursive=True)  # flushes and waits until both runs are materialized
    return [run.id, child.id]


async def test_rebuilt_projections_equal_the_live_ones_and_processing_continues(
        workspace: Workspace, settings: Settings, db: Any) -> None:
    experiment = unique("replay")
    ids = log_everything(workspace, experiment)
    live = snapshot(db, ids, experiment)
    assert len(live["metric_points"]) > 3_600 and live["tags"] and live["table_rows"] and live["artifacts"]
    assert live["metric_rollups"] == db.execute(ROLLUPS_FROM_POINTS, {"ids": ids}).fetchall()

    report = await rebuild(settings.database_url)

    assert report.swapped and report.events >= 10
    rebuilt = snapshot(db, ids, experiment)
    for table in SNAPSHOTS:
        assert rebuilt[table] == live[table], table
    schemas = {r[0] for r in db.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'runstream_%'")}
    assert schemas == set(), "the scratch schemas are dropped after the swap"
    in_public = {r[0] for r in db.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY(%s)", (list(PROJECTIONS),))}
    assert in_public == set(PROJECTIONS)

    # The processors write into the swapped-in tables.
    after = Experiment(workspace, experiment).start_logging(name="after")
    after.log("loss", 0.25)
    assert after.get_metrics() == {"loss": 0.25}
    after.complete()


async def test_a_rebuild_without_swap_leaves_the_live_tables_alone(workspace: Workspace, settings: Settings,
                                                                   db: Any) -> None:
    experiment = unique("replay-noswap")
    exp = Experiment(workspace, experiment)
    run = exp.start_logging()
    run.log_list("x", [1.0, 2.0, 3.0])
    run.complete()
    run.get_metrics()
    report = await rebuild(settings.database_url, swap=False)
    assert not report.swapped
    rebuilt = db.execute("SELECT count(*) FROM runstream_rebuild.metric_points WHERE run_id = %s", (run.id,))
    assert rebuilt.fetchone()[0] == 3
    assert db.execute("SELECT count(*) FROM metric_points WHERE run_id = %s", (run.id,)).fetchone()[0] == 3
    db.execute("DROP SCHEMA runstream_rebuild CASCADE")


def rebuilt_snapshot(db: Any, ids: list[str], experiment: str) -> dict[str, list[Any]]:
    """``snapshot`` of the tables a ``swap=False`` rebuild left in its schema."""
    db.execute(f"SET search_path = {REBUILD_SCHEMA}")
    try:
        return snapshot(db, ids, experiment)
    finally:
        db.execute("SET search_path = public")


async def test_several_workers_give_the_same_tables_as_one(workspace: Workspace, settings: Settings, db: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = unique("replay-workers")
    ids = log_everything(workspace, experiment) + log_everything(workspace, experiment)
    live = snapshot(db, ids, experiment)

    one = await rebuild(settings.database_url, swap=False, workers=1)
    assert rebuilt_snapshot(db, ids, experiment) == live

    # Cut the archive between this test's runs (whatever else it holds), so that they
    # are loaded by three different loaders: this process and two workers.
    ordered = sorted(uuid.UUID(i) for i in ids)
    monkeypatch.setattr(replay, "_archive_shape", _fixed_weights([(r, 1.0) for r in ordered]))
    monkeypatch.setattr(replay, "CHUNKS_PER_LOADER", 1)
    ranges = [b for b, _ in replay._ranges([(r, 1.0) for r in ordered], 3)]
    assert len(ranges) == 3 and all(sum(_in(r, b) for r in ordered) >= 1 for b in ranges)
    three = await rebuild(settings.database_url, swap=False, workers=3)
    rebuilt = rebuilt_snapshot(db, ids, experiment)
    for table in SNAPSHOTS:
        assert rebuilt[table] == live[table], table
    assert (three.events, three.points, three.runs) >= (one.events, one.points, one.runs)
    db.execute(f"DROP SCHEMA {REBUILD_SCHEMA} CASCADE")


async def test_events_archived_during_the_rebuild_are_applied_in_the_swap(
        workspace: Workspace, settings: Settings, db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = unique("replay-catch-up")
    exp = Experiment(workspace, experiment)
    early = exp.start_logging(name="early")
    for i in range(100):
        early.log("loss", float(i))
    early.get_metrics()
    late: list[Any] = []
    live: dict[str, list[Any]] = {}

    def log_more() -> None:  # after the rebuild's snapshot, before its swap
        for i in range(100, 200):
            early.log("loss", -float(i))
        early.tag("phase", "during")
        early.complete()
        run = exp.start_logging(name="late")
        run.log_list("list", [1.0, 2.0, 3.0])
        run.complete()
        early.get_metrics()
        run.get_metrics()  # both are materialized live: archived before the swap runs
        late.append(run)
        live.update(snapshot(db, [early.id, run.id], experiment))

    real_swap = replay._swap

    async def swap_after_more_events(*args: Any) -> Any:
        await asyncio.to_thread(log_more)
        return await real_swap(*args)

    monkeypatch.setattr(replay, "_swap", swap_after_more_events)
    report = await rebuild(settings.database_url, workers=2)

    # Points, a tag and the status of one run; start, list and status of the other.
    assert report.swapped and report.caught_up >= 6
    assert {(r[1], r[4]) for r in live["metric_summaries"]} == {("loss", 200), ("list", 3)}
    rebuilt = snapshot(db, [early.id, late[0].id], experiment)
    for table in SNAPSHOTS:
        assert rebuilt[table] == live[table], table


async def test_a_worker_that_fails_stops_the_rebuild(settings: Settings, db: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An archived body this build cannot decode: the worker that reads it says so, the
    rebuild fails with that message, the live tables stay, no worker is left running."""
    bogus = uuid.UUID(int=(1 << 128) - 1)  # the highest run id, in the lighter range: a worker's
    # (this process takes the heavier one the moment the load starts; a worker asks later)
    db.execute("INSERT INTO events (run_id, seq, ts, type, v, event_id, body, topic, partition, \"offset\") "
               "VALUES (%s, 0, now(), 'metric.points', 1, %s, %s, 'test-replay-bogus', 0, 0)",
               (bogus, uuid.uuid4(), b'{"type": "metric.points", "v": 99}'))
    try:
        monkeypatch.setattr(replay, "_archive_shape", _fixed_weights([(uuid.UUID(int=1 << 127), 2.0),
                                                                      (bogus, 1.0)]))
        monkeypatch.setattr(replay, "CHUNKS_PER_LOADER", 1)
        before = db.execute("SELECT count(*) FROM runs").fetchone()
        with pytest.raises(ReplayError, match="cannot be decoded.*unsupported version v=99"):
            await rebuild(settings.database_url, workers=2)
        assert db.execute("SELECT count(*) FROM runs").fetchone() >= before
        assert db.execute("SELECT to_regclass('public.runs') IS NOT NULL").fetchone() == (True,)
    finally:
        db.execute("DELETE FROM events WHERE run_id = %s", (bogus,))
        db.execute(f"DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE")


def test_ranges_cover_every_run_id_in_about_equal_parts() -> None:
    points = [(uuid.UUID(int=i << 100), 1.0) for i in range(100)]
    ranges = replay._ranges(points, 4)
    bounds = [b for b, _ in ranges]
    assert bounds[0][0] is None and bounds[-1][1] is None
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous
    assert [sum(_in(r, b) for r, _ in points) for b in bounds] == [25, 25, 25, 25]
    assert [w for _, w in ranges] == [25.0] * 4
    heavy = [(uuid.UUID(int=1), 98.0), (uuid.UUID(int=2), 1.0), (uuid.UUID(int=3), 1.0)]
    assert [(sum(_in(r, b) for r, _ in heavy), w) for b, w in replay._ranges(heavy, 2)] == [(1, 98.0), (2, 2.0)]
    assert replay._ranges([], 3) == [((None, None), 0.0)]
    assert len(replay._ranges(points[:2], 8)) == 2


def test_the_command_line_takes_a_number_of_workers(settings: Settings, db: Any, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    assert replay.main(["--no-swap", "--json", "--workers", "2"]) == 0  # workers started as processes
    report = orjson.loads(capsys.readouterr().out)
    assert report["swapped"] is False and report["events"] > 0 and report["caught_up"] == 0
    db.execute(f"DROP SCHEMA {REBUILD_SCHEMA} CASCADE")
    with pytest.raises(SystemExit):
        replay.main(["--workers", "0"])


def test_as_a_command_of_its_own_it_forks_its_workers(workspace: Workspace, settings: Settings, db: Any) -> None:
    """``python -m processors.replay`` runs one thread, so its workers are forked (this
    test process has other threads: here they are started as new processes)."""
    experiment = unique("replay-fork")
    ids = log_everything(workspace, experiment)
    live = snapshot(db, ids, experiment)
    env = {**os.environ, **settings.to_env()}
    command = [sys.executable, "-m", "runstream.processors.replay", "--no-swap", "--json", "--workers", "3"]

    done = subprocess.run(command, env=env, capture_output=True, timeout=240)
    assert done.returncode == 0, done.stderr.decode()
    assert orjson.loads(done.stdout)["events"] > 0
    assert rebuilt_snapshot(db, ids, experiment) == live

    bogus = uuid.UUID(int=(1 << 128) - 1)
    db.execute("INSERT INTO events (run_id, seq, ts, type, v, event_id, body, topic, partition, \"offset\") "
               "VALUES (%s, 0, now(), 'metric.points', 1, %s, %s, 'test-replay-bogus', 0, 0)",
               (bogus, uuid.uuid4(), b'{"type": "metric.points", "v": 99}'))
    try:
        failed = subprocess.run(command, env=env, capture_output=True, timeout=240)
    finally:
        db.execute("DELETE FROM events WHERE run_id = %s", (bogus,))
        db.execute(f"DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE")
    assert failed.returncode == 1
    assert b"replay: an archived event cannot be decoded: unsupported version v=99" in failed.stderr


def _fixed_weights(points: list[tuple[uuid.UUID, float]]) -> Any:
    """``_archive_shape`` with made-up weights (and the real high water)."""
    real = replay._archive_shape

    async def shape(conn: Any) -> Any:
        return points, (await real(conn))[1]
    return shape


def _in(run_id: uuid.UUID, bounds: tuple[str | None, str | None]) -> bool:
    after, up_to = bounds
    return (after is None or run_id > uuid.UUID(after)) and (up_to is None or run_id <= uuid.UUID(up_to))


async def test_the_swap_tells_listeners_that_any_run_may_have_changed(workspace: Workspace, settings: Settings,
                                                                       db: Any) -> None:
    """The query API's cache and live streams LISTEN on the processors' channel; the swap
    replaces every projection at once, so it notifies "*" (flush everything) at commit."""
    import asyncpg

    from runstream.schemas import notify

    log_everything(workspace, unique("replay-notify"))
    conn = await asyncpg.connect(settings.database_url)
    payloads: asyncio.Queue[str] = asyncio.Queue()
    try:
        await conn.add_listener(notify.CHANNEL, lambda *args: payloads.put_nowait(args[-1]))
        await rebuild(settings.database_url)
        seen: list[str] = []
        while notify.ANY not in seen:  # the processors' own "<run_id> <seq>" may come first
            seen.append(await asyncio.wait_for(payloads.get(), timeout=30))
    finally:
        await conn.close()
