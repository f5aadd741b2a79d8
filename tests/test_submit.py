"""experiment.submit(ScriptRunConfig): the seed's option 2 and the ways a script ends."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split

import runstream
from runstream import Environment, Experiment, LimitError, Run, RunstreamError, ScriptRunConfig, Workspace, progress
from runstream.devstack.demo import EXAMPLES, best_run, copy_example, submit_option2
from runstream.progress import RunFailedError
from runstream.schemas.limits import MAX_SNAPSHOT_BYTES
from tests.support.names import unique
from tests.support.waiting import wait_for


def log_lines(ws: Workspace, run_id: str, stream: str | None = None) -> list[str]:
    lines = ws._api.get(f"/runs/{run_id}/logs", limit=10_000, min_seq=0)["lines"]
    return [line["line"] for line in lines if stream is None or line["stream"] == stream]


def write_script(folder: Path, body: str, name: str = "script.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(body))
    return folder


def test_seed_option2_submitted_with_one_child_run_per_alpha(
        workspace: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = copy_example("seed_option2", tmp_path)
    (source / "outputs").mkdir()
    (source / "outputs" / "stale.txt").write_text("from an earlier run")  # neither snapshotted nor uploaded
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    name = unique("train-on-local")

    run = submit_option2(workspace, name, source, show_output=True)

    details = run.get_details()
    assert details["status"] == "completed" and details["kind"] == "submitted" and run.returncode == 0
    assert details["properties"]["script"] == "train.py"

    # stdout: the seed's print, once per alpha, in order, through the API and printed live
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    direct = {float(a): mean_squared_error(Ridge(alpha=a).fit(X_train, y_train).predict(X_test), y_test)
              for a in np.arange(0.0, 1.0, 0.05)}
    expected = [f'alpha is {a:.2f}, and mse is {m:0.2f}' for a, m in direct.items()]
    assert log_lines(workspace, run.id, "stdout") == expected
    printed = capsys.readouterr().out
    positions = [printed.index(line) for line in expected]
    assert positions == sorted(positions) and run.get_portal_url() in printed

    # one child run per alpha, with the seed's metrics and model file
    children = run.get_children()
    assert len(children) == 20
    by_alpha = {}
    for child in children:
        metrics = child.get_metrics()
        assert set(metrics) == {"alpha", "mse"} and metrics["mse"] == direct[metrics["alpha"]]
        assert child.get_file_names() == [f"outputs/ridge_{metrics['alpha']:.2f}.pkl"]
        assert child.get_status() == "completed" and child.parent.id == run.id  # type: ignore[union-attr]
        by_alpha[metrics["alpha"]] = child.id
    assert sorted(by_alpha) == sorted(direct)
    best_alpha = min(direct, key=direct.__getitem__)
    best = best_run(workspace.settings.api_url, name, parent_run_id=run.id)
    assert best["run_id"] == by_alpha[best_alpha] and best["metrics"]["mse"]["last"] == direct[best_alpha]
    assert set(run.get_metrics(recursive=True)) == {run.id, *by_alpha.values()}

    # the snapshot (per .gitignore) and the files the script wrote in ./outputs
    files = run.get_file_names()
    models = sorted(f"outputs/ridge_{a:.2f}.pkl" for a in direct)
    assert files == models + ["snapshot.zip"]
    snapshot = zipfile.ZipFile(run.download_file("snapshot.zip", tmp_path / "snapshot.zip"))
    assert snapshot.namelist() == [".gitignore", "README.md", "mylib.py", "train.py"]
    assert snapshot.read("train.py") == (EXAMPLES / "seed_option2" / "train.py").read_bytes()
    model = run.download_file("outputs/ridge_0.50.pkl", tmp_path / "model.pkl")
    assert model.read_bytes() == (source / "outputs" / "ridge_0.50.pkl").read_bytes()


def test_script_arguments_environment_and_logging_through_the_relay(workspace: Workspace, tmp_path: Path) -> None:
    folder = write_script(tmp_path / "src", """
        import os, sys
        from runstream import Run

        run = Run.get_context()
        assert Run.get_context() is run
        run.log("arg", float(sys.argv[1]))
        for i in range(2_000):
            run.log("loss", 1 / (i + 1))
        run.log_row("t", x=1, y=sys.argv[2])
        run.tag("env", os.environ["MY_SETTING"])
        run.upload_file("notes.txt", b"from the script")
        metrics = run.get_metrics()  # read-your-writes through the submitting process
        print("seen", metrics["arg"], len(metrics["loss"]), metrics["t"]["y"][0])
        print("to stderr", file=sys.stderr)
        run.complete()  # a submitted run's status still follows the exit code
    """)
    env = Environment("custom")
    env.python.interpreter_path = sys.executable
    env.environment_variables["MY_SETTING"] = "set-by-environment"
    config = ScriptRunConfig(source_directory=folder, script="script.py", arguments=[0.5, "word"], environment=env)
    run = Experiment(workspace, unique("relay")).submit(config, tags={"via": "submit"})
    details = run.wait_for_completion()
    assert details["status"] == "completed", details
    assert log_lines(workspace, run.id, "stdout") == ["seen 0.5 2000 word"]
    assert log_lines(workspace, run.id, "stderr") == ["to stderr"]
    metrics = run.get_metrics()
    assert metrics["arg"] == 0.5 and metrics["loss"] == [1 / (i + 1) for i in range(2_000)]
    assert run.get_tags() == {"via": "submit", "env": "set-by-environment"}
    assert run.get_file_names() == ["notes.txt", "snapshot.zip"]
    # one seq space: every event of the run, gap-free, none twice
    events = workspace._api.get(f"/runs/{run.id}/events", limit=1000)["events"]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "run.started" and events[-1]["type"] == "run.status"


def test_following_a_run_with_and_without_the_live_endpoint(
        workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_script(tmp_path / "src", """
        from runstream import Run
        for i in range(3):
            Run.get_context().log("i", i)
            print("line", i, flush=True)
    """)
    run = Experiment(workspace, unique("follow")).submit(ScriptRunConfig(folder, "script.py"))
    api_url = workspace.settings.api_url
    followed = list(progress.follow_events(api_url, run.id))  # live while the script runs
    monkeypatch.setitem(sys.modules, "runstream.live", None)  # a server without the live endpoint:
    monkeypatch.delattr(runstream, "live", raising=False)  # the SDK falls back to polling
    polled = list(progress.follow_events(api_url, run.id))
    archived = workspace._api.get(f"/runs/{run.id}/events", limit=1000)["events"]
    assert followed == polled == archived
    assert followed[-1]["type"] == "run.status" and followed[-1]["payload"] == {"status": "completed"}
    assert [e["seq"] for e in followed] == list(range(len(followed)))


def test_a_script_that_raises_fails_with_the_error_tail(workspace: Workspace, tmp_path: Path) -> None:
    folder = write_script(tmp_path / "src", """
        print("about to fail")
        def train():
            raise ValueError("diverged at step 7")
        train()
    """)
    run = Experiment(workspace, unique("raises")).submit(ScriptRunConfig(folder, "script.py"))
    with pytest.raises(RunFailedError) as raised:
        run.wait_for_completion(show_output=False)
    details = raised.value.details
    assert details["status"] == "failed" and run.returncode == 1
    assert details["error"].startswith("script script.py exited with code 1")
    assert "Traceback (most recent call last)" in details["error"]
    assert details["error"].rstrip().endswith("ValueError: diverged at step 7")
    assert log_lines(workspace, run.id, "stdout") == ["about to fail"]


def test_a_script_that_declares_failure_fails(workspace: Workspace, tmp_path: Path) -> None:
    folder = write_script(tmp_path / "src", """
        from runstream import Run
        Run.get_context().fail("bad data")
    """)
    run = Experiment(workspace, unique("declares")).submit(ScriptRunConfig(folder, "script.py"))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "failed" and details["error"] == "bad data" and run.returncode == 0


@pytest.mark.parametrize("ignores_sigterm", [False, True])
def test_cancel_stops_the_script_and_records_canceled(
        workspace: Workspace, tmp_path: Path, ignores_sigterm: bool) -> None:
    folder = write_script(tmp_path / "src", f"""
        import signal, subprocess, sys, time
        from runstream import Run

        run = Run.get_context()
        if {ignores_sigterm}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        run.log("helper_pid", helper.pid)
        print("ready", flush=True)
        while True:
            run.log("tick", 1)
            time.sleep(0.05)
    """)
    run = Experiment(workspace, unique("cancel")).submit(ScriptRunConfig(folder, "script.py"))
    try:
        wait_for(lambda: "ready" in log_lines(workspace, run.id), timeout=60, what="the script to start")
        helper = int(wait_for(lambda: run.get_metrics("helper_pid").get("helper_pid"), what="the helper's pid"))
    finally:
        run.cancel(grace_period_s=1.0 if ignores_sigterm else 10.0)

    assert run.returncode == (-9 if ignores_sigterm else 143)
    for pid in (run.pid, helper):  # the script and what it started are gone
        wait_for(lambda: not _alive(pid), timeout=10, what=f"process {pid} to exit")
    details = run.get_details()
    assert details["status"] == "canceled" and details["ended_at"] is not None
    if not ignores_sigterm:  # exited through SystemExit: what it logged was relayed first
        assert run.get_metrics()["tick"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_bad_configurations_are_named(workspace: Workspace, tmp_path: Path) -> None:
    exp = Experiment(workspace, unique("bad-config"))
    with pytest.raises(RunstreamError, match="source_directory .* is not a directory"):
        exp.submit(ScriptRunConfig(tmp_path / "missing", "train.py"))
    folder = write_script(tmp_path / "src", "print(1)\n")
    with pytest.raises(RunstreamError, match="script 'train.py' not found"):
        exp.submit(ScriptRunConfig(folder, "train.py"))
    with pytest.raises(RunstreamError, match="outside source_directory"):
        exp.submit(ScriptRunConfig(folder, "../x.py"))
    env = Environment("broken")
    env.python.interpreter_path = "/nonexistent/python"
    with pytest.raises(RunstreamError, match="interpreter_path='/nonexistent/python' is not an executable"):
        exp.submit(ScriptRunConfig(folder, "script.py", environment=env))
    with open(folder / "big.bin", "wb") as f:  # sparse: no bytes written
        f.truncate(MAX_SNAPSHOT_BYTES + 1)
    with pytest.raises(LimitError, match=r"MAX_SNAPSHOT_BYTES=.*Largest: big.bin .*\.runstreamignore"):
        exp.submit(ScriptRunConfig(folder, "script.py"))
    (folder / ".runstreamignore").write_text("*.bin\n")
    run = exp.submit(ScriptRunConfig(folder, "script.py"))
    assert run.wait_for_completion()["status"] == "completed"
    names = zipfile.ZipFile(io.BytesIO(_download(run, tmp_path))).namelist()
    assert names == [".runstreamignore", "script.py"]
    assert [r.id for r in exp.get_runs()] == [run.id]  # the rejected submits started no run


def _download(run: Run, tmp_path: Path) -> bytes:
    return run.download_file("snapshot.zip", tmp_path / "snap.zip").read_bytes()


def test_seed_option1_example_runs_as_written(workspace: Workspace, tmp_path: Path) -> None:
    env = {**os.environ, **workspace.settings.to_env()}
    env.pop("RUNSTREAM_RUN_CONTEXT", None)
    done = subprocess.run([sys.executable, str(EXAMPLES / "seed_option1.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[-1]
    run = Run(Experiment(workspace, "train-within-notebook"), run_id)
    metrics = run.get_metrics()
    assert metrics["alpha"] == 0.03 and f"Mean Squared Error is {metrics['mse']}" in done.stdout
    assert run.get_status() == "completed" and run.get_file_names() == ["outputs/model.pkl"]
