"""The seed's example, end to end: a Ridge sweep on the diabetes data, one run per alpha.

``runstream demo`` starts Kafka and PostgreSQL, runs the processors, gateway and query
API, logs the sweep through the SDK, then asks the API for the best run by mse.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from runstream.settings import Settings
from runstream.workspace import Workspace


def run_sweep(ws: Workspace, experiment_name: str, model_dir: Path) -> list[dict[str, Any]]:
    """Option 1 of the seed, once per alpha in 0.0, 0.05, ..., 0.95; returns what was logged."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_squared_error
    from sklearn.model_selection import train_test_split

    from runstream import Experiment

    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    experiment = Experiment(workspace=ws, name=experiment_name)
    logged = []
    for alpha in np.arange(0.0, 1.0, 0.05):
        run = experiment.start_logging()
        run.log("alpha", alpha)
        model = Ridge(alpha=alpha).fit(X_train, y_train)
        mse = mean_squared_error(y_test, model.predict(X_test))
        run.log("mse", mse)
        model_file = model_dir / f"ridge_{alpha:.2f}.pkl"
        joblib.dump(value=model, filename=model_file)
        run.upload_file(name=f"outputs/{model_file.name}", path_or_stream=str(model_file))
        run.complete()
        logged.append({"run_id": run.id, "alpha": float(alpha), "mse": float(mse)})
    return logged


def best_run(api_url: str, experiment_name: str) -> dict[str, Any]:
    """The run with the lowest mse, as the query API orders it."""
    url = f"{api_url}/api/experiments/{experiment_name}/runs?order_by=metric:mse&order=asc&limit=1"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return orjson.loads(resp.read())["runs"][0]  # type: ignore[no-any-return]


def wait_ready(settings: Settings, process: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    """Wait until the query API is ready and the gateway answers (``runstream serve`` is up)."""
    urls = [f"{settings.api_url}/api/ready", f"{settings.ingest_url}/api/v1/health"]
    deadline = time.monotonic() + deadline_s
    while urls and time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"runstream serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(urls[0], timeout=2) as resp:
                if resp.status == 200:
                    urls.pop(0)
                    continue
        except OSError:
            pass
        time.sleep(0.1)  # poll interval while waiting for the condition above
    if urls:
        raise RuntimeError(f"{urls[0]} not ready after {deadline_s} s")


def main(state_dir: Path, keep_running: bool = False) -> None:
    from runstream import devstack
    from runstream.devstack.stack import free_ports

    started = time.monotonic()
    info = devstack.up(state_dir, fresh=False)
    api_port, gateway_port = free_ports(2)
    settings = replace(
        Settings.from_env(),
        kafka_bootstrap=info.kafka_bootstrap, database_url=info.database_url,
        blob_dir=str(state_dir / "blobs"), api_port=api_port, gateway_port=gateway_port,
        api_url=f"http://127.0.0.1:{api_port}", ingest_url=f"http://127.0.0.1:{gateway_port}",
    )
    env = {**os.environ, **settings.to_env()}
    server = subprocess.Popen([sys.executable, "-m", "runstream.cli", "serve"], env=env)
    try:
        wait_ready(settings, server)
        ready = time.monotonic()
        experiment = f"diabetes-ridge-{time.strftime('%Y%m%d-%H%M%S')}"
        ws = Workspace(settings=settings)
        with tempfile.TemporaryDirectory() as models:
            logged = run_sweep(ws, experiment, Path(models))
        ws.close()
        best = best_run(settings.api_url, experiment)
        done = time.monotonic()
        mse = best["metrics"]["mse"]["last"]
        alpha = best["metrics"]["alpha"]["last"]
        print(f"experiment {experiment}: {len(logged)} runs logged through Kafka in {done - ready:.2f} s "
              f"({done - started:.1f} s including service start-up)")
        print(f"best run: {best['run_id']}  alpha={alpha:.2f}  mse={mse:.4f}")
        print(f"query API: {settings.api_url}/api/experiments/{experiment}/runs?order_by=metric:mse")
        if keep_running:
            print("services left running; stop them with: runstream services down; kill", server.pid)
            return
    except BaseException:
        keep_running = False
        raise
    finally:
        if not keep_running:
            server.terminate()
            server.wait(30)
            devstack.down(state_dir)

