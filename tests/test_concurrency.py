"""Many runs logging at once from several processes: every point arrives exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson

from runstream.settings import Settings
from tests.support.names import REPO, unique
from tests.support.waiting import wait_for

PROCESSES, RUNS_PER_PROCESS, POINTS = 5, 10, 2_000


def test_fifty_runs_from_five_processes_arrive_exactly_once(services: Settings, db: Any) -> None:
    experiment = unique("parallel")
    env = {**os.environ, **services.to_env()}
    workers = [subprocess.Popen([sys.executable, "-m", "tests.support.log_worker", experiment,
                                 str(RUNS_PER_PROCESS), str(POINTS)], cwd=REPO, env=env, stdout=subprocess.PIPE)
               for _ in range(PROCESSES)]
    run_ids = []
    for w in workers:
        out, _ = w.communicate(timeout=240)
        assert w.returncode == 0
        run_ids += orjson.loads(out)
    assert len(set(run_ids)) == PROCESSES * RUNS_PER_PROCESS

    def completed() -> bool:
        row = db.execute("SELECT count(*) FROM runs WHERE experiment = %s AND status = 'completed'", (experiment,)).fetchone()
        return row[0] == len(run_ids)

    wait_for(completed, timeout=120, what="all runs completed")
    rows = db.execute(
        "SELECT p.run_id::text, p.name, count(*), count(DISTINCT p.step), min(p.step), max(p.step) "
        "FROM metric_points p JOIN runs r USING (run_id) WHERE r.experiment = %s GROUP BY 1, 2", (experiment,),
    ).fetchall()
    assert len(rows) == len(run_ids) * 2
    for run_id, name, count, distinct, lo, hi in rows:
        assert (count, distinct, lo, hi) == (POINTS, POINTS, 0, POINTS - 1), (run_id, name)
    summaries = db.execute(
        "SELECT count(*) FROM metric_summaries s JOIN runs r USING (run_id) "
        "WHERE r.experiment = %s AND s.count = %s", (experiment, POINTS)).fetchone()
    assert summaries[0] == len(run_ids) * 2
    gaps = db.execute(
        "SELECT e.run_id FROM events e JOIN runs r USING (run_id) WHERE r.experiment = %s "
        "GROUP BY e.run_id HAVING count(*) <> max(e.seq) + 1", (experiment,)).fetchall()
    assert gaps == []
