"""``runstream.search_runs``: runs found with the search language, as a pandas DataFrame.

pandas is optional (``pip install "runstream[pandas]"``) and imported only when a frame
is made, so ``import runstream`` stays light; without it the call says how to get it.
One row per run; columns as MLflow's ``search_runs`` names them: ``run_id``,
``experiment``, ``name``, ``status``, ``start_time``, ``end_time`` (UTC datetimes),
``duration_s``, ``parent_run_id``, then ``metrics.<name>`` (last value, float; a string
metric's last value as text), ``params.<name>`` (the run's properties) and
``tags.<key>``, each group sorted by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from runstream.errors import RunstreamError
from runstream.schemas import values

if TYPE_CHECKING:
    import pandas

    from runstream.workspace import Workspace

PAGE = 1000
"""Runs asked per request (the API's largest page)."""

_ORDER_FIELDS = {"start_time": "started_at", "started_at": "started_at", "name": "name", "run_name": "name",
                 "status": "status", "duration": "duration", "end_time": "duration"}
_ORDER_PREFIXES = {"metrics": "metric", "metric": "metric", "params": "param", "param": "param",
                   "tags": "tag", "tag": "tag"}


def order_param(order_by: str | Sequence[str] | None) -> tuple[str | None, str | None]:
    """MLflow's ``order_by`` (``["metrics.mse ASC"]``, ``"params.alpha DESC"``,
    ``"metrics.mse.min"``, ``"attributes.start_time"``) as the API's ``order_by`` and
    ``order`` (one ordering: the API sorts by one column)."""
    if order_by is None or order_by == [] or order_by == ():
        return None, None
    items = [order_by] if isinstance(order_by, str) else list(order_by)
    if len(items) != 1:
        raise ValueError(f"order_by={order_by!r}: one ordering is supported (the server sorts by one column)")
    text = items[0].strip()
    field, _, direction = text.rpartition(" ") if text.lower().endswith((" asc", " desc")) else (text, "", "")
    order = direction.lower() or None
    prefix, dot, rest = field.strip().partition(".")
    if prefix in ("attributes", "attribute", "attr") and rest in _ORDER_FIELDS:
        return _ORDER_FIELDS[rest], order
    if not dot and prefix in _ORDER_FIELDS:
        return _ORDER_FIELDS[prefix], order
    if prefix in _ORDER_PREFIXES and rest:
        kind = _ORDER_PREFIXES[prefix]
        name = rest.strip("`")
        if kind == "metric" and rest.rsplit(".", 1)[-1] in ("min", "max", "last") and "." in rest:
            name, agg = rest.rsplit(".", 1)
            return f"metric.{agg}:{name.strip('`')}", order
        return f"{kind}:{name}", order
    raise ValueError(f"order_by={text!r}: expected metrics.<name>[.min|.max], params.<name>, tags.<key>, "
                     "attributes.start_time, name, status or duration, optionally followed by ASC or DESC")


def fetch_runs(workspace: Workspace, path: str, params: dict[str, Any], max_results: int | None) -> list[dict[str, Any]]:
    """Every run the API lists at ``path`` with ``params`` (paged), at most ``max_results``."""
    runs: list[dict[str, Any]] = []
    while max_results is None or len(runs) < max_results:
        limit = PAGE if max_results is None else min(PAGE, max_results - len(runs))
        page = workspace._api.get(path, **params, limit=limit, offset=len(runs))
        runs.extend(page["runs"])
        if len(page["runs"]) < limit or len(runs) >= page["total"]:
            break
    return runs


def search_runs(experiment_names: Iterable[str] | None = None, filter_string: str = "",
                order_by: str | Sequence[str] | None = None, max_results: int | None = None,
                workspace: Workspace | None = None) -> pandas.DataFrame:
    """Runs of ``experiment_names`` (all experiments if None) matching ``filter_string``
    (the search language: ``"metrics.mse < 3300 and params.alpha >= 0.2"``; MLflow's
    grammar is a subset), ordered by ``order_by`` (``"metrics.mse ASC"``; newest first
    by default), as a pandas DataFrame (see the module for its columns). ``workspace``
    defaults to ``Workspace()``. Raises :class:`RunstreamError` without pandas or for an
    error answer (a malformed filter names its position and token)."""
    pandas = _pandas()
    from runstream.errors import ApiError
    from runstream.workspace import Workspace

    ws = workspace if workspace is not None else Workspace()
    api_order, direction = order_param(order_by)
    params: dict[str, Any] = {"filter": filter_string or None, "order_by": api_order, "order": direction}
    if experiment_names is not None:
        names = [experiment_names] if isinstance(experiment_names, str) else list(experiment_names)
        params["experiments"] = ",".join(names)
    try:
        runs = fetch_runs(ws, "/runs", params, max_results)
    except ApiError as exc:
        raise RunstreamError(f"search_runs: {exc.message}") from exc
    return runs_frame(pandas, runs)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise RunstreamError('search_runs returns a pandas DataFrame, and pandas is not installed: '
                             'pip install "runstream[pandas]"') from None
    return pandas


def _metric(summary: dict[str, Any]) -> Any:
    last = values.decode(summary["last"]) if isinstance(summary["last"], dict) else summary["last"]
    if isinstance(last, bool):
        return float(last)
    return float(last) if isinstance(last, (int, float)) else last


def runs_frame(pandas: Any, runs: list[dict[str, Any]]) -> pandas.DataFrame:
    """The API's runs (``Run`` answers) as a DataFrame."""
    metric_names = sorted({m for r in runs for m, s in r["metrics"].items() if s["kind"] in ("scalar", "list")})
    param_names = sorted({p for r in runs for p in r.get("properties", {})})
    tag_names = sorted({t for r in runs for t in r["tags"]})
    columns: dict[str, Any] = {
        "run_id": [r["run_id"] for r in runs],
        "experiment": [r["experiment"] for r in runs],
        "name": [r["name"] for r in runs],
        "status": [r["status"] for r in runs],
        "start_time": pandas.to_datetime([r["started_at"] for r in runs], utc=True, format="ISO8601"),
        "end_time": pandas.to_datetime([r["ended_at"] for r in runs], utc=True, format="ISO8601"),
        "duration_s": pandas.Series([float("nan") if r["duration_s"] is None else r["duration_s"] for r in runs],
                                    dtype="float64"),
        "parent_run_id": [r["parent_run_id"] for r in runs],
    }
    for m in metric_names:
        cells = [_metric(r["metrics"][m]) if m in r["metrics"] else float("nan") for r in runs]
        numeric = all(isinstance(c, float) for c in cells)
        columns[f"metrics.{m}"] = pandas.Series(cells, dtype="float64" if numeric else "object")
    for p in param_names:
        columns[f"params.{p}"] = [r.get("properties", {}).get(p) for r in runs]
    for t in tag_names:
        columns[f"tags.{t}"] = [r["tags"].get(t) for r in runs]
    return pandas.DataFrame(columns)
