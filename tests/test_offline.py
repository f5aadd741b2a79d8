"""Offline runs: Run.get_context() outside a submitted script spools locally; `runstream sync` uploads once."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from runstream import Experiment, Run, RunstreamError, Workspace
from runstream.context import OFFLINE_EXPERIMENT
from runstream.settings import Settings
from runstream.spool import EVENTS_FILE, SYNCED_FILE, SpoolSink
from tests.support.waiting import wait_for

OFFLINE_SCRIPT = """
    import math
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from runstream import Run

    run = Run.get_context()
    for i in range(500):
        run.log("loss", 1 / (i + 1))
    run.log("nan", math.nan)
    for i in range(3):
        run.log_row("Y over X", x=i, y=i * 0.5)
    run.tag("where", "offline")
    run.upload_file("outputs/model.bin", bytes(range(256)))
    fig = plt.figure()
    plt.plot([1, 3, 2])
    run.log_image("curve", plot=fig)
    child = run.child_run("child")
    child.log("acc", 0.9)
    child.complete()
    print(run.id, child.id)
    # no run.complete(): the run completes at exit
"""


def offline_env(spool: Path) -> dict[str, str]:
    """No services reachable: Kafka, the gateway and the API point at a closed port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    return {**env, "RUNSTREAM_SPOOL_DIR": str(spool), "RUNSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "RUNSTREAM_API_URL": "http://127.0.0.1:1", "RUNSTREAM_INGEST_URL": "http://127.0.0.1:1"}


def run_script(tmp_path: Path, body: str, spool: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "offline_script.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], env=offline_env(spool), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def sync_cli(settings: Settings, *args: str) -> str:
    env = {**os.environ, **settings.to_env()}
    done = subprocess.run([sys.executable, "-m", "runstream.cli", "sync", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def archived(db: Any, run_ids: list[str]) -> list[tuple[str, int, int]]:
    """(run_id, seq, copies) of every archived event of these runs."""
    return db.execute("SELECT run_id::text, seq, count(*) FROM events WHERE run_id = ANY(%s::uuid[]) "
                      "GROUP BY 1, 2 ORDER BY 1, 2", (run_ids,)).fetchall()


def processed_offsets(db: Any, settings: Settings) -> int:
    return int(db.execute('SELECT coalesce(sum("offset"), 0) FROM consumer_offsets WHERE topic = %s',
                          (settings.topic,)).fetchone()[0])


def test_offline_run_syncs_in_order_exactly_once(workspace: Workspace, settings: Settings, db: Any,
                                                  tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    done = run_script(tmp_path, OFFLINE_SCRIPT, spool)
    assert done.returncode == 0, done.stderr
    run_id, child_id = done.stdout.split()
    lines = {rid: (spool / rid / EVENTS_FILE).read_bytes().splitlines() for rid in (run_id, child_id)}
    total = sum(len(v) for v in lines.values())
    assert [orjson.loads(line)["seq"] for line in lines[run_id]] == list(range(len(lines[run_id])))
    assert orjson.loads(lines[run_id][-1])["payload"] == {"status": "completed"}

    first = sync_cli(settings, str(spool))
    assert f"sent {total} event(s)" in first
    expected = sorted([(rid, i, 1) for rid in (run_id, child_id) for i in range(len(lines[rid]))])
    wait_for(lambda: archived(db, [run_id, child_id]) == expected, what="the synced events in the archive")

    second = sync_cli(settings, str(spool))
    assert f"sent 0 event(s) and 0 file(s); {total} event(s) were already synced" in second

    # even a sync that lost its record re-sends identical bytes: still one copy of each
    before = processed_offsets(db, settings)
    for rid in (run_id, child_id):
        (spool / rid / SYNCED_FILE).unlink()
    for rid in (run_id, child_id):  # sync PATH of one run folder
        assert f"1 run(s); sent {len(lines[rid])} event(s)" in sync_cli(settings, str(spool / rid))
    wait_for(lambda: processed_offsets(db, settings) >= before + total, what="the re-sent events to be consumed")
    assert archived(db, [run_id, child_id]) == expected
    points = db.execute("SELECT count(*) FROM metric_points WHERE run_id = %s AND name = 'loss'", (run_id,)).fetchone()
    assert points[0] == 500

    exp = Experiment(workspace, OFFLINE_EXPERIMENT)
    run = Run(exp, run_id)
    metrics = run.get_metrics()
    assert metrics["loss"] == [1 / (i + 1) for i in range(500)] and math.isnan(metrics["nan"])
    assert metrics["Y over X"] == {"x": [0, 1, 2], "y": [0.0, 0.5, 1.0]}
    assert metrics["curve"]["artifact"] == "images/curve.png"
    details = run.get_details()
    assert details["status"] == "completed" and details["kind"] == "offline" and details["name"] == "offline_script.py"
    assert run.get_tags() == {"where": "offline"}
    assert sorted(run.get_file_names()) == ["images/curve.png", "outputs/model.bin"]
    assert run.download_file("outputs/model.bin", tmp_path / "m.bin").read_bytes() == bytes(range(256))
    assert Run(exp, child_id).get_metrics() == {"acc": 0.9}
    assert Run(exp, child_id).parent.id == run_id  # type: ignore[union-attr]


def test_offline_run_of_a_script_that_raises_is_failed(settings: Settings, db: Any, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    done = run_script(tmp_path, """
        from runstream import Run
        run = Run.get_context()
        run.log("x", 1)
        print(run.id, flush=True)
        raise RuntimeError("offline and broken")
    """, spool)
    assert done.returncode == 1 and "RuntimeError: offline and broken" in done.stderr
    run_id = done.stdout.split()[0]
    assert "sent 3 event(s)" in sync_cli(replace(settings, spool_dir=str(spool)))  # no PATH: RUNSTREAM_SPOOL_DIR
    row = wait_for(lambda: db.execute("SELECT status, error FROM runs WHERE run_id = %s AND last_seq = 2",
                                      (run_id,)).fetchone(), what="the failed run")
    assert row[0] == "failed" and "RuntimeError: offline and broken" in row[1]


def test_an_offline_run_is_readable_only_once_synced(workspace: Workspace, tmp_path: Path) -> None:
    exp = Experiment(workspace, OFFLINE_EXPERIMENT)
    run = Run._start(exp, name=None, parent=None, kind="offline", properties={}, sink=SpoolSink(tmp_path))
    run.log("x", 1)
    with pytest.raises(RunstreamError, match="is offline.*runstream sync"):
        run.get_metrics()
    with pytest.raises(RunstreamError, match="is offline.*runstream sync"):
        run.wait_for_completion()
    run.flush()
    assert len((tmp_path / run.id / EVENTS_FILE).read_bytes().splitlines()) == 2


def test_sync_of_something_that_is_not_a_spool_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    env = {**os.environ, **settings.to_env()}
    done = subprocess.run([sys.executable, "-m", "runstream.cli", "sync", str(tmp_path / "nope")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "is not a spool directory" in done.stderr
