"""processors.replay: projections rebuilt from the events archive equal the live ones,
and the processors keep writing into the swapped-in tables."""

from __future__ import annotations

import math
from typing import Any

from processors.replay import PROJECTIONS, rebuild
from runstream import Experiment, Workspace
from runstream.settings import Settings
from tests.conftest import unique

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
