"""The SDK's side of sweep analysis (issue 13): ``runstream.search_runs`` as a pandas
DataFrame for the seed's sweep, and system metrics of submitted and interactive runs
against the session's real services."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

import runstream
from runstream import Experiment, RunstreamError, ScriptRunConfig, Workspace
from runstream.frames import order_param
from runstream.settings import Settings
from runstream.sysmetrics import PREFIX, _Gpus
from tests.support.names import unique
from tests.support.sweep import run_sweep
from tests.support.waiting import wait_for

INTERVAL = 0.2


@pytest.fixture()
def fast_ws(services: Settings) -> Iterator[Workspace]:
    """A workspace sampling system metrics every 0.2 s."""
    ws = Workspace(settings=replace(services, system_metrics_interval=INTERVAL))
    yield ws
    ws.close()


# ---------------------------------------------------------------- search_runs


@pytest.mark.parametrize(("given", "expected"), [
    (None, (None, None)),
    (["metrics.mse ASC"], ("metric:mse", "asc")),
    ("metrics.mse.min DESC", ("metric.min:mse", "desc")),
    ("metrics.`val.loss`", ("metric:val.loss", None)),
    (["params.alpha desc"], ("param:alpha", "desc")),
    ("tags.team", ("tag:team", None)),
    ("attributes.start_time ASC", ("started_at", "asc")),
    ("duration", ("duration", None)),
])
def test_order_by_translation(given: object, expected: tuple[str | None, str | None]) -> None:
    assert order_param(given) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("given", [["metrics.a", "metrics.b"], "colour ASC", "metrics."])
def test_order_by_refusals_name_the_value(given: object) -> None:
    with pytest.raises(ValueError, match="order_by="):
        order_param(given)  # type: ignore[arg-type]


def test_search_runs_dataframe_of_the_seed_sweep(workspace: Workspace, tmp_path: Path) -> None:
    name = unique("sweep-frame")
    logged = run_sweep(workspace, name, tmp_path)
    expected = sorted((r for r in logged if r["mse"] < 3300), key=lambda r: r["mse"])
    assert 0 < len(expected) < 20

    df = runstream.search_runs(experiment_names=[name], filter_string="metrics.mse < 3300",
                               order_by=["metrics.mse ASC"], workspace=workspace)
    assert list(df["run_id"]) == [r["run_id"] for r in expected]
    assert list(df.columns) == ["run_id", "experiment", "name", "status", "start_time", "end_time", "duration_s",
                                "parent_run_id", "metrics.alpha", "metrics.mse"]
    assert df["metrics.mse"].dtype == "float64" and df["metrics.alpha"].dtype == "float64"
    assert list(df["metrics.mse"]) == [r["mse"] for r in expected]
    assert list(df["metrics.alpha"]) == [r["alpha"] for r in expected]
    for col in ("start_time", "end_time"):
        assert isinstance(df[col].dtype, pd.DatetimeTZDtype) and str(df[col].dtype.tz) == "UTC"
    assert df["duration_s"].dtype == "float64" and (df["duration_s"] >= 0).all()
    assert set(df["status"]) == {"completed"} and set(df["experiment"]) == {name}

    # the experiment's own variant, and every run of the sweep without a filter
    same = Experiment(workspace, name).search_runs("metrics.mse < 3300", order_by="metrics.mse ASC")
    assert list(same["run_id"]) == list(df["run_id"])
    assert len(Experiment(workspace, name).search_runs(max_results=7)) == 7
    assert len(runstream.search_runs(name, workspace=workspace)) == 20
    # a malformed filter names its position, as the API does
    with pytest.raises(RunstreamError, match="end of filter at position 13"):
        runstream.search_runs([name], "metrics.mse <", workspace=workspace)


def test_search_runs_without_pandas_says_how_to_get_it(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # what an install without pandas looks like to import
    with pytest.raises(RunstreamError, match=r"pip install \"runstream\[pandas\]\""):
        runstream.search_runs(["x"], workspace=workspace)


# ---------------------------------------------------------------- system metrics


BURN = """
import time
from runstream import Run
run = Run.get_context()
end = time.monotonic() + 3
x = 0
while time.monotonic() < end:
    x += 1
run.log("spins", x)
"""


def _system(metrics: dict[str, object]) -> dict[str, list[float]]:
    out = {}
    for name, value in metrics.items():
        if name.startswith(PREFIX):
            out[name[len(PREFIX):]] = value if isinstance(value, list) else [value]
    return out  # type: ignore[return-value]


def test_a_submitted_script_that_burns_cpu_records_system_metrics(fast_ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "burn.py").write_text(textwrap.dedent(BURN))
    run = Experiment(fast_ws, unique("sysmetrics")).submit(ScriptRunConfig(str(tmp_path), "burn.py"))
    run.wait_for_completion()
    assert run.get_status() == "completed"
    system = _system(run.get_metrics())
    for name in ("cpu_utilization_percentage", "system_memory_usage_megabytes", "system_memory_usage_percentage",
                 "disk_usage_megabytes", "disk_usage_percentage", "disk_available_megabytes",
                 "network_receive_megabytes", "network_transmit_megabytes", "process_cpu_percentage",
                 "process_memory_megabytes"):
        assert len(system.get(name, [])) >= 5, (name, sorted(system))  # 3 s at 0.2 s
    # the script spun a core for 3 s (on a shared machine it gets what it gets): the samples
    # saw its process tree busy, far above a sleeping process's ~0
    assert max(system["process_cpu_percentage"]) > 10
    assert min(system["process_memory_megabytes"]) > 1
    assert all(0 <= v <= 100 for v in system["cpu_utilization_percentage"])
    assert all(0 < v <= 100 for v in system["system_memory_usage_percentage"])
    gpus = _Gpus()
    has_gpu = bool(gpus.handles)
    gpus.close()
    assert any(name.startswith("gpu_") for name in system) == has_gpu  # skipped cleanly without one
    # the step is the sample index and the last sample is before the run's end
    vector = fast_ws._api.get(f"/runs/{run.id}/metrics/{PREFIX}cpu_utilization_percentage")
    assert vector["steps"] == list(range(len(vector["steps"])))
    assert max(vector["times"]) <= pd.Timestamp(run.get_details()["ended_at"]).timestamp()


def test_system_metrics_switched_off(services: Settings, tmp_path: Path) -> None:
    ws = Workspace(settings=replace(services, system_metrics_interval=0))
    try:
        (tmp_path / "quick.py").write_text("print('hi')\n")
        run = Experiment(ws, unique("sysmetrics-off")).submit(ScriptRunConfig(str(tmp_path), "quick.py"))
        run.wait_for_completion()
        assert run.get_status() == "completed" and not _system(run.get_metrics())
    finally:
        ws.close()


def test_interactive_runs_opt_in_and_stop_at_the_end(fast_ws: Workspace) -> None:
    exp = Experiment(fast_ws, unique("sysmetrics-interactive"))
    plain = exp.start_logging()
    assert plain._system_metrics is None
    plain.complete()

    run = exp.start_logging(log_system_metrics=True, lr=0.1)
    monitor = run._system_metrics
    assert monitor is not None
    wait_for(lambda: monitor._step >= 3, timeout=20, what="three samples")
    run.complete()
    assert run._system_metrics is None and not monitor._thread.is_alive()
    system = _system(run.get_metrics())
    assert "process_cpu_percentage" not in system  # no script: the machine only
    assert len(system["cpu_utilization_percentage"]) >= 3
    assert run.get_details()["properties"] == {"lr": 0.1}
    assert not _system(plain.get_metrics())
