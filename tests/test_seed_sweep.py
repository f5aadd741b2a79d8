"""The seed's example end to end: 20 Ridge runs logged through Kafka, the best found by the API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split

from runstream import Experiment, Workspace
from runstream.devstack.demo import best_run
from tests.support.names import unique
from tests.support.sweep import run_sweep
from tests.support.waiting import wait_for


def test_seed_sweep_logs_twenty_runs_and_the_api_finds_sklearns_best_alpha(workspace: Workspace, tmp_path: Path) -> None:
    name = unique("diabetes-ridge")
    logged = run_sweep(workspace, name, tmp_path)
    assert len(logged) == 20

    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    direct = {float(a): mean_squared_error(y_test, Ridge(alpha=a).fit(X_train, y_train).predict(X_test))
              for a in np.arange(0.0, 1.0, 0.05)}
    best_alpha = min(direct, key=direct.__getitem__)

    # complete() returns once Kafka has the events; the processors materialize them just after
    wait_for(lambda: len(Experiment(workspace, name).get_runs(status="completed")) == 20, timeout=60,
             what="the 20 completed runs in the API")
    best = best_run(workspace.settings.api_url, name)
    assert best["metrics"]["alpha"]["last"] == best_alpha
    assert best["metrics"]["mse"]["last"] == direct[best_alpha]
    assert best["status"] == "completed"

    runs = Experiment(workspace, name).get_runs()
    assert len(runs) == 20
    for run in runs:
        metrics = run.get_metrics()
        assert set(metrics) == {"alpha", "mse"}
        assert isinstance(metrics["alpha"], float) and isinstance(metrics["mse"], float)
        assert metrics["mse"] == direct[metrics["alpha"]]
        assert run.get_file_names() == [f"outputs/ridge_{metrics['alpha']:.2f}.pkl"]
