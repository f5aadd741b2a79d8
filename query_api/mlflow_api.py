"""MLflow's tracking REST API at the query API's base URL (docs/MLFLOW.md).

Every route is served under ``/api/2.0/mlflow/`` and its mirror ``/ajax-api/2.0/mlflow/``
(what MLflow's own web UI calls), plus the proxied artifact store under
``/api/2.0/mlflow-artifacts/``. Errors are MLflow's ``{"error_code", "message"}``; a path
under the prefixes that is not served is a 404 ``ENDPOINT_NOT_FOUND``.
"""

from __future__ import annotations

from aiohttp import web

from runstream.ingest.quota import BlobQuota
from runstream.query_api import mlflow_artifacts, mlflow_experiments, mlflow_runs
from runstream.query_api.handlers import SETTINGS
from runstream.query_api.mlflow_shapes import MlflowError, mlflow_errors

PREFIXES = ("/api/2.0/mlflow/", "/ajax-api/2.0/mlflow/")


async def not_found(request: web.Request) -> web.Response:
    raise MlflowError(404, f"{request.method} {request.path} is not an endpoint runstream serves (docs/MLFLOW.md)",
                      "ENDPOINT_NOT_FOUND")


ARTIFACT_UPLOAD = "mlflow_artifact_put"
"""The artifact upload's route name: it streams (capped by max_upload_bytes), exempt from the body limit."""


def setup(app: web.Application) -> None:
    """Register MLflow's routes on ``app`` (before any catch-all route)."""
    for prefix in PREFIXES:
        for method, path, handler in mlflow_experiments.ROUTES + mlflow_runs.ROUTES:
            app.router.add_route(method, prefix + path, mlflow_errors(handler))
        app.router.add_route("*", prefix + "{tail:.*}", mlflow_errors(not_found))
    store = mlflow_artifacts.PREFIX
    app.router.add_get(store, mlflow_errors(mlflow_artifacts.list_folder))
    app[mlflow_artifacts.QUOTA] = BlobQuota(app[SETTINGS].blob_dir, app[SETTINGS].blob_quota_bytes)
    app.router.add_put(store + "/{path:.+}", mlflow_errors(mlflow_artifacts.upload), name=ARTIFACT_UPLOAD)
    app.router.add_get(store + "/{path:.+}", mlflow_errors(mlflow_artifacts.download))
