"""The seed's option 1 (examples/seed_option1.py) as a function tests call: one
``start_logging`` run per alpha of a Ridge sweep on the diabetes data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runstream import Workspace


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
