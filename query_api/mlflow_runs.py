"""MLflow's runs, logging and metric-history API over runstream's runs.

Writes become events (:mod:`query_api.writes`): ``run.started`` + ``tag.set`` at create,
``metric.points`` (one series per key, MLflow's timestamp as the point's time),
``params.logged``, ``tag.set``/``tag.removed``, ``run.status``, ``run.renamed``,
``run.deleted``/``run.restored``. MLflow run ids are runstream run ids as 32 hex digits
(both spellings are accepted). Reads come from the projections: a run's metrics are each
metric's latest point (highest step, then latest time), its history every point in
(step, time) order; the bulk-interval history is the downsampled vector, served from the
rollups (``queries.metric_vector``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from runstream.query_api import auth, queries, search
from runstream.query_api.downsample import MIN_MAX_POINTS
from runstream.query_api.errors import NotFound, json_response
from runstream.query_api.handlers import POOL, workspace
from runstream.query_api.mlflow_experiments import VIEW_TYPES, all_experiments, by_id
from runstream.query_api.mlflow_shapes import (
    DEFAULT_EXPERIMENT_ID,
    STATUS_FROM_MLFLOW,
    STATUS_TO_MLFLOW,
    body,
    double,
    integer,
    invalid,
    missing,
    number,
    page_offset,
    page_token,
    parse_run_id,
    run_info,
    run_json,
    run_uuid,
    text,
    texts,
)
from runstream.query_api.writes import WRITER, Draft
from runstream.schemas.events import TERMINAL_STATUSES

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_BATCH_REQUEST_BYTES = 1_000_000
"""MLflow's log-batch limits (``mlflow.utils.validation``)."""
MAX_RESULTS_SEARCH = 50_000
MAX_HISTORY_PAGE = 10_000_000
MAX_BULK_RUNS = 100
MAX_BULK_RESULTS = 2500
RUN_NAME_TAG = "mlflow.runName"
PARENT_TAG = "mlflow.parentRunId"
MODEL_HISTORY_TAG = "mlflow.log-model.history"
_MAX_STEP = 2**62
"""The events' step bound (``schemas.events.Step``)."""


async def _run(request: web.Request, data: Mapping[str, Any]) -> tuple[uuid.UUID, Any]:
    rid = run_uuid(data)
    state = await queries.run_state(request.app[POOL], rid, workspace(request))
    if state is None:
        raise missing(f"Run with id={rid.hex} not found")
    return rid, state


async def _active_run(request: web.Request, data: Mapping[str, Any]) -> uuid.UUID:
    rid, state = await _run(request, data)
    if state["deleted_at"] is not None:
        raise invalid(f"The run {rid.hex} must be in the 'active' state. Current state is deleted.")
    return rid


async def settle(request: web.Request, rid: uuid.UUID) -> None:
    """Wait until the run's acknowledged writes are materialized (read-your-writes for the
    writes that answered at Kafka's acknowledgement: query_api.writes)."""
    await queries.settle(request.app[POOL], runs=[rid])


async def _read_runs(request: web.Request, run_ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    await queries.settle(request.app[POOL], runs=run_ids)
    return [run_json(r) for r in await queries.mlflow_runs(request.app[POOL], run_ids, workspace(request))]


async def _read_run(request: web.Request, rid: uuid.UUID) -> dict[str, Any]:
    runs = await _read_runs(request, [rid])
    if not runs:
        raise missing(f"Run with id={rid.hex} not found")
    return runs[0]


def _tag_drafts(tags: Mapping[str, str]) -> list[Draft]:
    """tag.set per tag; ``mlflow.runName`` also renames the run (as MLflow's server does)."""
    drafts = [Draft("tag.set", {"key": k, "value": v}) for k, v in tags.items()]
    if RUN_NAME_TAG in tags:
        drafts.append(Draft("run.renamed", {"name": tags[RUN_NAME_TAG]}))
    return drafts


def _pairs(items: Any, what: str, value_required: bool = True) -> dict[str, str]:
    """``[{"key": k, "value": v}, ...]`` as a dict; a key twice with two values is a 400."""
    out: dict[str, str] = {}
    for item in items or []:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"]:
            raise invalid(f"Invalid {what} {item!r}: expected {{'key': ..., 'value': ...}}")
        value = item.get("value", None if value_required else "")
        if not isinstance(value, str):
            raise invalid(f"Invalid value {value!r} for {what} '{item['key']}': expected a string")
        if item["key"] in out and out[item["key"]] != value:
            raise invalid(f"Duplicate {what} key '{item['key']}' with different values in one request")
        out[item["key"]] = value
    return out


# ---------------------------------------------------------------- runs


async def create(request: web.Request) -> web.Response:
    data = await body(request)
    exp = await by_id(request, text(data, "experiment_id", required=False, default=DEFAULT_EXPERIMENT_ID))
    if exp.deleted_at is not None:
        raise invalid(f"The experiment {exp.id} must be in the 'active' state. Current state is deleted.")
    tags = _pairs(data.get("tags"), "tag", value_required=False)
    rid = uuid.uuid4()
    name = text(data, "run_name", required=False) or tags.get(RUN_NAME_TAG) or f"run-{rid.hex[:8]}"
    tags[RUN_NAME_TAG] = name  # user_id (deprecated by MLflow) is not kept: clients send the mlflow.user tag
    parent = tags.get(PARENT_TAG)
    start = integer(data, "start_time", None, 0, 32503680000000)
    started = {"experiment": exp.key, "name": name, "kind": "child" if parent else "interactive",
               "parent_run_id": str(parse_run_id(parent)) if parent else None}
    drafts = [Draft("run.started", started, None if start is None else start / 1000)]
    drafts += [Draft("tag.set", {"key": k, "value": v}) for k, v in tags.items()]
    await request.app[WRITER].write(auth.principal_of(request), rid, drafts, owner=True)
    return json_response({"run": await _read_run(request, rid)})


async def get(request: web.Request) -> web.Response:
    rid, _ = await _run(request, await body(request))
    return json_response({"run": await _read_run(request, rid)})


async def update(request: web.Request) -> web.Response:
    data = await body(request)
    rid, state = await _run(request, data)
    drafts = []
    name = text(data, "run_name", required=False)
    if name is not None:
        drafts += _tag_drafts({RUN_NAME_TAG: name})
    status = text(data, "status", required=False)
    if status is not None:
        if status not in STATUS_FROM_MLFLOW:
            raise invalid(f"Invalid status {status!r}: expected one of {', '.join(STATUS_FROM_MLFLOW)}")
        wanted = STATUS_FROM_MLFLOW[status]
        if state["status"] in TERMINAL_STATUSES and wanted != state["status"]:
            # A terminal status is final (processors.integrity): said now, not dead-lettered later.
            raise invalid(f"The run {rid.hex} is already {STATUS_TO_MLFLOW[state['status']]}; a finished run's "
                          f"status is final and cannot become {status}")
        end = integer(data, "end_time", None, 0, 32503680000000)
        if wanted != state["status"]:  # the same terminal status again changes nothing
            drafts.append(Draft("run.status", {"status": wanted}, None if end is None else end / 1000))
    await request.app[WRITER].write(auth.principal_of(request), rid, drafts)
    run = await _read_run(request, rid)
    return json_response({"run_info": run["info"]})


async def _lifecycle(request: web.Request, kind: str) -> web.Response:
    rid, _ = await _run(request, await body(request))
    await request.app[WRITER].write(auth.principal_of(request), rid, [Draft(kind, {})])
    return json_response({})


async def delete(request: web.Request) -> web.Response:
    return await _lifecycle(request, "run.deleted")


async def restore(request: web.Request) -> web.Response:
    return await _lifecycle(request, "run.restored")


_ORDER_ATTRIBUTES = {"start_time": "started_at", "created": "started_at", "run_name": "name", "name": "name",
                     "status": "status"}


def _order(clauses: Any) -> tuple[str, str | None, str]:
    """MLflow's ``order_by`` (its first clause) as the runs listing's ordering."""
    clauses = clauses if isinstance(clauses, list) else [clauses] if clauses else []
    if not clauses:
        return "started_at", None, "desc"
    clause = str(clauses[0]).strip()
    field, _, direction = clause.rpartition(" ") if clause.upper().endswith((" ASC", " DESC")) else (clause, "", "ASC")
    direction = direction.upper() or "ASC"
    field = field.strip()
    for prefix, kind in (("metrics.", "metric"), ("metric.", "metric"), ("params.", "param"), ("param.", "param")):
        if field.startswith(prefix):
            return kind, field[len(prefix):].strip("`\"'"), direction.lower()
    attribute = field.split(".", 1)[1] if field.startswith(("attributes.", "attribute.", "attr.")) else field
    if attribute in _ORDER_ATTRIBUTES:
        return _ORDER_ATTRIBUTES[attribute], None, direction.lower()
    raise invalid(f"Invalid order_by clause {clause!r}: runstream orders runs by metrics.<key>, params.<key>, "
                  f"attributes.start_time, attributes.run_name or attributes.status")


@auth.requires("read")  # a POST in MLflow's API, but it only reads
async def search_runs(request: web.Request) -> web.Response:
    data = await body(request)
    view = VIEW_TYPES.get(text(data, "run_view_type", required=False) or "ACTIVE_ONLY")
    if view is None:
        raise invalid(f"Invalid run_view_type {data.get('run_view_type')!r}")
    limit = integer(data, "max_results", 1000, 1, MAX_RESULTS_SEARCH)
    assert limit is not None
    offset = page_offset(text(data, "page_token", required=False))
    ids = set(texts(data, "experiment_ids"))
    keys = [e.key for e in await all_experiments(request) if e.id in ids]
    raw_filter = text(data, "filter", required=False)
    expr = search.parse(raw_filter) if raw_filter and raw_filter.strip() else None
    order_by, metric, order = _order(data.get("order_by"))
    if not keys:
        return json_response({"runs": []})
    await queries.settle(request.app[POOL], experiments=keys, workspace=workspace(request))
    f = queries.RunFilter(experiments=keys, order_by=order_by, order_metric=metric, order=order, limit=limit,
                          offset=offset, search=expr, lifecycle=view, workspace=workspace(request),
                          columns=("",))  # no metric is named "": the page's summaries are not needed here
    page = await queries.runs_page(request.app[POOL], f)
    out: dict[str, Any] = {"runs": await _read_runs(request, [r["run_id"] for r in page["runs"]])}
    if offset + limit < page["total"]:
        out["next_page_token"] = page_token(offset + limit)
    return json_response(out)


# ---------------------------------------------------------------- logging


def _metric_series(metrics: list[Any]) -> list[dict[str, Any]]:
    """MLflow metrics as series of one ``metric.points`` event, one per key in request order."""
    series: dict[str, dict[str, list[Any]]] = {}
    for m in metrics:
        if not isinstance(m, dict) or not isinstance(m.get("key"), str) or not m["key"]:
            raise invalid(f"Invalid metric {m!r}: expected {{'key', 'value', 'timestamp', 'step'}}")
        key = m["key"]
        value = double(m.get("value"), f"metrics[{key}].value")
        timestamp = integer(m, "timestamp", None, 0, 32503680000000)
        if timestamp is None:
            raise invalid(f"Missing value for required parameter 'timestamp' of metric '{key}'.")
        step = integer(m, "step", 0, -(2**63), 2**63 - 1)
        assert step is not None
        if not 0 <= step <= _MAX_STEP:
            raise invalid(f"Invalid step {step} for metric '{key}': runstream keeps steps in [0, 2**62]")
        s = series.setdefault(key, {"steps": [], "values": [], "times": []})
        s["steps"].append(step)
        s["values"].append(value if value == value and abs(value) != float("inf") else {"f": number(value)})
        s["times"].append(timestamp / 1000)
    return [{"name": k, **v} for k, v in series.items()]


async def _params_drafts(request: web.Request, rid: uuid.UUID, params: dict[str, str]) -> list[Draft]:
    """params.logged for the keys not logged yet; a key logged with another value is a 400."""
    if not params:
        return []
    await settle(request, rid)
    stored = await queries.param_values(request.app[POOL], rid, list(params))
    for key, value in params.items():
        if key in stored and stored[key] != value:
            raise invalid(
                f"Changing param values is not allowed. Param with key='{key}' was already logged with "
                f"value='{stored[key]}' for run ID='{rid.hex}'. Attempted logging new value '{value}'.")
    new = {k: v for k, v in params.items() if k not in stored}
    return [Draft("params.logged", {"params": new})] if new else []


async def _check_params(request: web.Request, rid: uuid.UUID, params: dict[str, str]) -> None:
    """After the write: a concurrent writer's value may have won (the first logged stays)."""
    if params:
        await _params_drafts(request, rid, params)


async def log_metric(request: web.Request) -> web.Response:
    data = await body(request)
    rid = await _active_run(request, data)
    metric = {k: data.get(k) for k in ("key", "value", "timestamp", "step")}
    await request.app[WRITER].write(
        auth.principal_of(request), rid, [Draft("metric.points", {"series": _metric_series([metric])})], wait=False)
    return json_response({})


async def log_param(request: web.Request) -> web.Response:
    data = await body(request)
    rid = await _active_run(request, data)
    key = text(data, "key")
    assert key is not None
    params = {key: text(data, "value", required=False, default="") or ""}
    await request.app[WRITER].write(auth.principal_of(request), rid, await _params_drafts(request, rid, params))
    await _check_params(request, rid, params)
    return json_response({})


async def set_tag(request: web.Request) -> web.Response:
    data = await body(request)
    rid = await _active_run(request, data)
    key = text(data, "key")
    assert key is not None
    await request.app[WRITER].write(
        auth.principal_of(request), rid, _tag_drafts({key: text(data, "value", required=False, default="") or ""}),
                                    wait=False)
    return json_response({})


async def delete_tag(request: web.Request) -> web.Response:
    data = await body(request)
    rid = await _active_run(request, data)
    key = text(data, "key")
    assert key is not None
    await settle(request, rid)
    found, _ = await queries.tag_value(request.app[POOL], rid, key)
    if not found:
        raise missing(f"No tag with name: {key} in run with id {rid.hex}")
    await request.app[WRITER].write(auth.principal_of(request), rid, [Draft("tag.removed", {"key": key})], wait=False)
    return json_response({})


async def log_batch(request: web.Request) -> web.Response:
    if (request.content_length or 0) > MAX_BATCH_REQUEST_BYTES:
        raise invalid(f"Batched logging API requests must be at most {MAX_BATCH_REQUEST_BYTES} bytes, got a request "
                      f"of {request.content_length} bytes")
    data = await body(request)
    rid = await _active_run(request, data)
    metrics, params_in, tags_in = (data.get(k) or [] for k in ("metrics", "params", "tags"))
    for name, items, most in (("metrics", metrics, MAX_METRICS_PER_BATCH), ("params", params_in, MAX_PARAMS_TAGS_PER_BATCH),
                              ("tags", tags_in, MAX_PARAMS_TAGS_PER_BATCH)):
        if not isinstance(items, list):
            raise invalid(f"Invalid value for '{name}': expected a list")
        if len(items) > most:
            raise invalid(f"A batch logging request can contain at most {most} {name}. Got {len(items)} {name}. "
                          f"Please split up {name} across multiple requests and try again.")
    if len(metrics) + len(params_in) + len(tags_in) > MAX_ENTITIES_PER_BATCH:
        raise invalid(f"A batch logging request can contain at most {MAX_ENTITIES_PER_BATCH} total metrics, params "
                      f"and tags. Got {len(metrics) + len(params_in) + len(tags_in)}.")
    params = _pairs(params_in, "param")
    drafts = await _params_drafts(request, rid, params)
    drafts += _tag_drafts(_pairs(tags_in, "tag", value_required=False))
    if metrics:
        drafts.append(Draft("metric.points", {"series": _metric_series(metrics)}))
    # Params wait for the processors (a conflicting value is checked after); the rest
    # answers at Kafka's acknowledgement and MLflow's reads settle the run first.
    await request.app[WRITER].write(auth.principal_of(request), rid, drafts, wait=bool(params))
    await _check_params(request, rid, params)
    return json_response({})


async def log_inputs(request: web.Request) -> web.Response:
    """Accepted and not kept: runstream has no datasets projection (docs/MLFLOW.md)."""
    await _active_run(request, await body(request))
    return json_response({})


async def log_model(request: web.Request) -> web.Response:
    """MLflow 2's record of a logged model: appended to the run's ``mlflow.log-model.history``
    tag, as MLflow's own stores do."""
    data = await body(request)
    rid = await _active_run(request, data)
    model_json = text(data, "model_json")
    assert model_json is not None
    try:
        model = orjson.loads(model_json)
    except orjson.JSONDecodeError:
        raise invalid("Invalid value for 'model_json': not JSON") from None
    await settle(request, rid)
    _, current = await queries.tag_value(request.app[POOL], rid, MODEL_HISTORY_TAG)
    history = orjson.loads(current) if current else []
    history.append(model)
    value = orjson.dumps(history).decode()
    while len(value) > 4096 and len(history) > 1:  # the tag value limit: keep the latest models
        history.pop(0)
        value = orjson.dumps(history).decode()
    await request.app[WRITER].write(
        auth.principal_of(request), rid, [Draft("tag.set", {"key": MODEL_HISTORY_TAG, "value": value})], wait=False)
    return json_response({})


# ---------------------------------------------------------------- history


async def get_history(request: web.Request) -> web.Response:
    data = await body(request)
    rid, _ = await _run(request, data)
    key = text(data, "metric_key")
    assert key is not None
    limit = integer(data, "max_results", MAX_HISTORY_PAGE, 1, MAX_HISTORY_PAGE)
    assert limit is not None
    offset = page_offset(text(data, "page_token", required=False))
    await settle(request, rid)
    points = await queries.metric_history(request.app[POOL], rid, key, limit, offset)
    metrics = [{"key": key, "value": number(queries.value(p["kind"], p["value"], p["text"])),
                "timestamp": int(p["time"] * 1000), "step": p["step"]} for p in points if p["kind"] != 3]
    out: dict[str, Any] = {"metrics": metrics}
    if len(points) == limit:
        out["next_page_token"] = page_token(offset + limit)
    return json_response(out)


async def get_history_bulk_interval(request: web.Request) -> web.Response:
    data = await body(request)
    run_ids = [parse_run_id(r) for r in texts(data, "run_ids")]
    if not run_ids or len(run_ids) > MAX_BULK_RUNS:
        raise invalid(f"GetMetricHistoryBulkInterval request must specify between 1 and {MAX_BULK_RUNS} run_ids")
    key = text(data, "metric_key")
    assert key is not None
    start = integer(data, "start_step", None, 0, 2**63 - 1)
    end = integer(data, "end_step", None, 0, 2**63 - 1)
    if start is not None and end is not None and start > end:
        raise invalid(f"end_step {end} must be at least start_step {start}")
    most = integer(data, "max_results", 320, 1, MAX_BULK_RESULTS)
    assert most is not None
    out = []
    for rid in run_ids:
        if await queries.run_state(request.app[POOL], rid, workspace(request)) is None:
            raise missing(f"Run with id={rid.hex} not found")
        await settle(request, rid)
        try:
            vector = await queries.metric_vector(request.app[POOL], rid, key, start, end, max(most, MIN_MAX_POINTS))
        except NotFound:
            continue
        for step, v, t in zip(vector["steps"], vector["values"], vector["times"]):
            if not isinstance(v, str):
                out.append({"key": key, "value": number(v), "timestamp": int(t * 1000), "step": step,
                            "run_id": rid.hex})
    return json_response({"metrics": out})


# ---------------------------------------------------------------- artifacts


def children(files: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """The entries directly under ``prefix`` ("" for the root): files with their size,
    folders once, each as ``{"path": <name relative to prefix>, "is_dir", "file_size"}``."""
    base = prefix.strip("/")
    lead = f"{base}/" if base else ""
    seen: dict[str, dict[str, Any]] = {}
    for f in files:
        if not f["path"].startswith(lead) or f["path"] == base:
            continue
        head, sep, _ = f["path"][len(lead):].partition("/")
        if sep:
            seen.setdefault(head, {"path": head, "is_dir": True})
        else:
            seen[head] = {"path": head, "is_dir": False, "file_size": f["size"]}
    return [seen[k] for k in sorted(seen)]


async def list_artifacts(request: web.Request) -> web.Response:
    data = await body(request)
    rid, state = await _run(request, data)
    path = (text(data, "path", required=False) or "").strip("/")
    await settle(request, rid)
    files = await queries.artifacts(request.app[POOL], rid)
    info = run_info({"run_id": rid, "name": None, "experiment": state["experiment"], "status": state["status"],
                     "started_at": None, "ended_at": None, "deleted_at": state["deleted_at"]}, {})
    entries = [{**e, "path": f"{path}/{e['path']}" if path else e["path"]} for e in children(files, path)]
    return json_response({"root_uri": info["artifact_uri"], "files": entries})


ROUTES = [
    ("POST", "runs/create", create),
    ("GET", "runs/get", get),
    ("POST", "runs/update", update),
    ("POST", "runs/delete", delete),
    ("POST", "runs/restore", restore),
    ("POST", "runs/search", search_runs),
    ("POST", "runs/log-metric", log_metric),
    ("POST", "runs/log-parameter", log_param),
    ("POST", "runs/set-tag", set_tag),
    ("POST", "runs/delete-tag", delete_tag),
    ("POST", "runs/log-batch", log_batch),
    ("POST", "runs/log-inputs", log_inputs),
    ("POST", "runs/log-model", log_model),
    ("GET", "metrics/get-history", get_history),
    ("GET", "metrics/get-history-bulk-interval", get_history_bulk_interval),
    ("GET", "artifacts/list", list_artifacts),
]
"""(method, path under ``/api/2.0/mlflow/``, handler)."""
