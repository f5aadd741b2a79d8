"""The OpenAPI 3.1 document of the query API (served at /api/openapi.json).

Paths and parameters are written here; every response schema is generated from the
contract's answer types (:mod:`schemas.api`), which the query API builds.

Conventions stated once here and in ``info.description``: database timestamps are ISO
8601 strings; point and event times are float seconds since the epoch (the client's
clock); metric values use the ``schemas.values`` encoding.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from runstream.schemas import api
from runstream.schemas.events import EVENT_TYPES, STATUSES, TERMINAL_STATUSES

__all__ = ["document"]

DESCRIPTION = """Read side of runstream (SPEC section 5).

* Record timestamps (started_at, created_at, ...) are ISO 8601 strings with offset.
* Point times (`times` of a vector) and event `ts` are float seconds since the epoch, as
  stamped by the client.
* Values: ints stay ints, bools stay bools, strings are strings; NaN and infinities are
  `{"f": "NaN" | "Infinity" | "-Infinity"}`.
* Errors: `{"error": {"status": N, "message": "..."}}`; a bad parameter is a 400 whose
  message names the parameter and the value.
* Authentication (docs/SECURITY.md): every route except health, readiness, this document
  and login/logout needs a token: `Authorization: Bearer rs_<id>_<secret>` (or HTTP Basic
  with the token as password, or the web UI's `runstream_token` cookie). No, a bad, revoked
  or expired token: 401 with `WWW-Authenticate: Bearer`. A token sees only its workspace:
  another workspace's run or experiment is a 404 exactly like a missing one, and lists
  leave them out. (A server run with authentication off answers every request as the
  `default` workspace.)
* Every run-scoped endpoint accepts `min_seq` and `wait_ms`: the answer waits until the
  run's last materialized event seq reaches `min_seq` (polling every 20 ms), or is a 504
  after `wait_ms`.
* A run's detail, metrics, metric vectors and tables are cached by the server and carry
  `X-Cache: hit` (answered from the cache, no database read) or `X-Cache: miss` (read
  from the database). A cached answer is dropped when the processors commit an event of
  the run (for a run's detail also of its children, or a new run; for `recursive`
  metrics of any run of the tree), and is not used for a `min_seq` it has not reached;
  while the server cannot listen for those commits, every answer is a miss. A request
  with `Cache-Control: no-cache` is always read from the database.
* Run management (`PATCH /api/runs/{run_id}`, `POST .../delete`, `POST .../restore`) writes
  an event and answers once it is materialized. Deleted runs are left out of the runs
  listings unless `deleted=true` (or `only`).
* MLflow's tracking REST API is served at `/api/2.0/mlflow/` (and `/ajax-api/2.0/mlflow/`,
  `/api/2.0/mlflow-artifacts/`) with MLflow's own shapes; docs/MLFLOW.md lists what is covered.
"""

LIVE_DESCRIPTION = """The run's events after `after_seq` (or the `Last-Event-ID` header), then each
new event within a second of its being materialized. One message per event:

    id: <seq>
    event: <event type: run.started, run.status, metric.points, log.lines, ...>
    data: <the event object as sent: type, v, event_id, run_id, seq, ts, payload (RunEvent)>

The stream opens with `retry: 1000`; an idle stream carries a `: heartbeat` comment every
15 s. When the run has reached a terminal status ({terminal}) and every
event up to its last materialized seq was sent, a final message

    event: end
    data: {"status": "<terminal status>", "last_seq": N}   (LiveEnd)

is sent and the stream closes. A stream that closes without `end` (server shutdown, lost
connection) is resumed by reconnecting with `Last-Event-ID: <last id received>`: no event
is repeated or skipped. An unknown run is a 404 (JSON) before the stream starts; with
`min_seq=0` a run not materialized yet is waited for up to `wait_ms` (then 504).
""".replace("{terminal}", ", ".join(sorted(TERMINAL_STATUSES)))


AS_OF_DESCRIPTION = """With `as_of_seq` or `as_of` (not both): the run as it was after one of its
events, computed from its archived events (`/events`) with the processors' own fold
(`processors.materialize`), in the same shape as the live answer plus
`as_of: {"seq": <last event seq included>, "ts": <that event's ts, epoch seconds>}`.
`last_seq`, status, error, times, tags, properties and metric summaries (count, last,
min, max, last_step) are those the projections held once that event was materialized.

* `as_of_seq=N`: events with seq <= N. An N beyond the run's last materialized seq is a
  404 naming it and the last seq (add `min_seq=N` to wait for it instead).
* `as_of=T`: ISO 8601 with a zone (`2026-01-01T12:00:00Z`, `...+02:00`; a `+` left
  unencoded arrives as a space and is read as `+`) or seconds since the epoch
  (`1767268800.5`). The events before the first one stamped after T (client clock): the
  answer is the one for `as_of_seq` = the last of them. A T after the last materialized
  event gives the latest state; one before the run's first event is a 404.
* Children (run detail): runs of this parent whose `run.started` is stamped at or
  before `as_of.ts` (client clocks).
* Bounded: at most 50,000 events and 16 MiB of event bodies are folded; a larger
  history is a 422 naming its size (ask for an earlier point).
* Cached like the live answer, under its own query string (the `as_of_seq` or `as_of`
  value as given).
"""


def _q(name: str, schema: dict[str, Any], description: str, repeat: bool = False) -> dict[str, Any]:
    if repeat:
        schema = {"type": "array", "items": schema}
    p: dict[str, Any] = {"name": name, "in": "query", "schema": schema, "description": description}
    if repeat:
        p.update(style="form", explode=True)
    return p


def _path(name: str, description: str, fmt: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if fmt:
        schema["format"] = fmt
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_RUN_ID = _path("run_id", "The run's id.", "uuid")
_WAIT = [
    _q("min_seq", {"type": "integer", "minimum": 0}, "Wait until the run has materialized this event seq."),
    _q("wait_ms", {"type": "integer", "minimum": 0, "maximum": 30000, "default": 10000}, "Longest wait for min_seq."),
]
_AS_OF = [
    _q("as_of_seq", {"type": "integer", "minimum": 0}, "The state after this event seq (see the description)."),
    _q("as_of", {"type": "string"}, "The state as of this time: ISO 8601 with a zone, or epoch seconds."),
]
_MAX_POINTS = _q(
    "max_points",
    {"type": "integer", "minimum": 0, "maximum": 100000},
    "0 = every point; otherwise 4..100000: per-bucket min and max over the step range plus "
    "the first and last point (never more than max_points). NaN sorts above +Infinity, so "
    "a bucket holding a NaN keeps it as its maximum. A string metric with more points than "
    "max_points is a 400 (strings are not downsampled).",
)


def _described(path_item: dict[str, Any], description: str) -> dict[str, Any]:
    path_item["get"]["description"] = description
    return path_item


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad parameter", 401: "No, bad, revoked or expired token", 404: "Not found",
            422: "as-of history too large to fold",
            503: "Database unavailable or not ready (see Retry-After)", 504: "min_seq not reached in time"}
    return {str(c): _json(_ref("ErrorResponse"), text[c]) for c in codes}


def _get(summary: str, params: list[dict[str, Any]], ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": params, "responses": {"200": ok, **_errors(401, *errors)}}}


def _public(path_item: dict[str, Any]) -> dict[str, Any]:
    """An operation open to anyone: no security requirement, no 401 (unless a bad token is sent)."""
    for operation in path_item.values():
        operation["security"] = [{}, *_SECURITY]
    return path_item


_SECURITY = [{"bearer": []}, {"basic": []}, {"cookie": []}]
_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "A token from `runstream token create`."},
    "basic": {"type": "http", "scheme": "basic", "description": "Any user name, the token as password."},
    "cookie": {"type": "apiKey", "in": "cookie", "name": "runstream_token",
               "description": "Set by POST /api/login (the web UI)."},
}

_LOGIN_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}}}}}


_X_CACHE = {"X-Cache": {
    "description": "hit: answered from the server's response cache; miss: read from the database.",
    "schema": {"enum": ["hit", "miss"]},
}}


def _cached(ok: dict[str, Any]) -> dict[str, Any]:
    """A 200 response that carries ``X-Cache``."""
    return {**ok, "headers": _X_CACHE}


_METRICS = {"anyOf": [
    {**api.response_schema(api.Metrics), "description": "The run's metrics: name -> get_metrics shape."},
    {**api.response_schema(api.MetricsByRun), "description": "With recursive: run id -> its metrics."},
    {**_ref("MetricsAsOf"), "description": "With as_of_seq or as_of."},
]}
"""Which one is given follows from the parameters (an empty object is all three)."""


_FILTER = _q("filter", _STR, """The search language (query_api/search.py), e.g.
`metrics.mse < 3300 and params.alpha >= 0.2 or tags.team = "a"`: `and` (binds tighter), `or`,
parentheses; `= != < <= > >= like ilike in (..) not in (..)`; fields `metrics.<name>[.min|.max|.last]`
(last by default), `params.<name>` (the run's parameter, else its property), `tags.<key>`,
`attributes.<status|name|run_id|start_time|end_time|duration|experiment>` (or bare); names with
dots or spaces in backticks; values are numbers or quoted strings; MLflow's filter grammar and
status names (FINISHED, KILLED, ...) are accepted. A run lacking a field never matches a
comparison on it. A malformed filter is a 400 naming the position and the token.""")


_ORDER_BY = _q("order_by", {"type": "string", "default": "started_at"}, "started_at, name, status, duration, "
              "metric:<name> (last value), metric.min:<name>, metric.max:<name>, param:<name> (numbers "
              "numerically, before strings) or tag:<key> (numerically where numbers, then as text); missing "
              "values and NaN last.")
_DELETED = _q("deleted", {"enum": ["false", "true", "only"], "default": "false"},
              "Deleted runs: left out (false), included (true) or only them (only).")
_RUN_FILTERS = [
    _FILTER,
    _q("status", _STR, f"{', '.join(sorted(STATUSES))}; repeat or comma-separate.", True),
    _q("tag", _STR, "`key` (has the tag) or `key:value`; repeatable, all must match.", True),
    _q("metric", _STR, "`name<op>number` against the metric's last value; repeatable.", True),
    _q("parent", _STR, "`none` = top-level runs only; a run id = its children."),
    _ORDER_BY,
    _q("order", {"enum": ["asc", "desc"]}, "Default desc for started_at, asc otherwise."),
    _DELETED,
]
_CSV = {"description": "CSV (UTF-8, header row first), streamed with chunked transfer encoding",
        "content": {"text/csv": {"schema": {"type": "string"}}}}


_MANAGE_ERRORS = (400, 404, 503, 504)


def _manage(summary: str, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": [_RUN_ID],
                          "responses": {"200": _json(_ref("RunDetail"), "The run once the change is materialized"),
                                        **_errors(*_MANAGE_ERRORS)}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return {method: op}


_PATCH_BODY = {
    "type": "object", "additionalProperties": False, "minProperties": 1,
    "properties": {
        "name": {"type": "string", "description": "The run's new name."},
        "tags": {"type": "object", "additionalProperties": {"type": ["string", "null"]},
                 "description": "Tags to set; null removes the tag."},
        "note": {"type": ["string", "null"], "description": "The free-text note (tag mlflow.note.content); null clears it."},
    },
}


def _paths() -> dict[str, Any]:
    return {
        "/api/health": _public(_get("Liveness", [], _json(_ref("Health")))),
        "/api/ready": _public(_get("Readiness: database answers and is migrated", [], _json(_ref("Health")), 503)),
        "/api/whoami": _get("The caller's workspace and scope", [], _json(_ref("Principal"))),
        "/api/login": _public({"post": {
            "summary": "Web UI login: sets the HttpOnly, SameSite=Strict cookie runstream_token",
            "requestBody": _LOGIN_BODY, "parameters": [],
            "responses": {"200": _json(_ref("Principal")), **_errors(400, 401)}}}),
        "/api/logout": _public({"post": {
            "summary": "Web UI logout: clears the cookie", "parameters": [],
            "responses": {"200": _json(_ref("LoggedOut"))}}}),
        "/api/openapi.json": _public(_get("This document", [], _json({"type": "object"}))),
        "/api/experiments": _get(
            "Experiments with run count and last activity", [],
            _json(_ref("Experiments")),
        ),
        "/api/experiments/{name}/runs": _get(
            "Runs of an experiment, filtered, ordered and paged",
            [
                _path("name", "Experiment name."),
                _FILTER,
                _q("status", _STR, f"{', '.join(sorted(STATUSES))}; repeat or comma-separate.", True),
                _q("tag", _STR, "`key` (has the tag) or `key:value`; repeatable, all must match.", True),
                _q("metric", _STR, "`name<op>number`, op one of < <= > >= = !=, against the metric's last "
                   "value; repeatable, all must hold.", True),
                _ORDER_BY,
                _q("order", {"enum": ["asc", "desc"]}, "Default desc for started_at, asc otherwise."),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Page size."),
                _q("offset", {"type": "integer", "minimum": 0, "default": 0}, "Page start."),
                _q("parent", _STR, "`none` = top-level runs only; a run id = its children."),
                _q("columns", _STR, "Only these metric summaries per run (default all); repeatable.", True),
                _DELETED,
            ],
            _json(_ref("RunsPage")), 400, 404,
        ),
        "/api/experiments/{name}/runs.csv": _get(
            "The experiment's runs as CSV: every run the runs listing would page through with the same "
            "filters and ordering. Columns: run fields, tags.<key>, params.<name>, and per metric "
            "metrics.<name> (last), metrics.<name>.min, metrics.<name>.max",
            [_path("name", "Experiment name."), *_RUN_FILTERS,
             _q("columns", _STR, "Only these metrics (default every scalar/list metric); repeatable.", True)],
            _CSV, 400, 404,
        ),
        "/api/experiments/{name}/groups": _get(
            "A metric of the experiment's filtered runs grouped by a tag or param: per group and bucket of "
            "steps, the mean, min and max over every finite point of its runs (computed from all points)",
            [_path("name", "Experiment name."),
             _q("name", _STR, "The metric (required)."),
             _q("group_by", _STR, "tag:<key> or param:<name>; absent: every run in one group (group null)."),
             {**_MAX_POINTS, "schema": {"type": "integer", "minimum": 0, "maximum": 100000, "default": 1000},
              "description": "Buckets of steps per group at most (0: one per step)."},
             *_RUN_FILTERS,
             _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000},
                "Runs read at most (in the order given; `truncated` says more matched).")],
            _json(_ref("MetricGroups")), 400, 404,
        ),
        "/api/runs": _get(
            "Runs across experiments: searched with `filter`, ordered and paged as an experiment's runs",
            [
                _q("experiments", _STR, "Experiment names, comma-separated or repeated; default all. An "
                   "unknown one is a 404.", True),
                _FILTER,
                _ORDER_BY,
                _q("order", {"enum": ["asc", "desc"]}, "Default desc for started_at, asc otherwise."),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Page size."),
                _q("offset", {"type": "integer", "minimum": 0, "default": 0}, "Page start."),
                _q("columns", _STR, "Only these metric summaries per run (default all); repeatable.", True),
                _DELETED,
            ],
            _json(_ref("RunsPage")), 400, 404,
        ),
        "/api/runs/{run_id}": {**_described(_get(
            "One run with properties, tags, summaries and child ids; or as of an event or time",
            [_RUN_ID, *_WAIT, *_AS_OF],
            _cached(_json(_ref("RunDetail"))),
            400, 404, 422, 503, 504,
        ), AS_OF_DESCRIPTION), **_manage("Rename the run, set or remove tags, set or clear its note", "patch",
                                         _PATCH_BODY)},
        "/api/runs/{run_id}/delete": _manage("Delete the run: hidden from listings and search, restorable", "post"),
        "/api/runs/{run_id}/restore": _manage("Restore a deleted run", "post"),
        "/api/runs/{run_id}/metrics": _described(_get(
            "get_metrics; or as of an event or time", [
                _RUN_ID, *_WAIT, _q("name", _STR, "Only these metrics; repeatable.", True),
                _q("recursive", _BOOL, "Include descendants: {run_id: {name: value}} (not with as_of_seq/as_of)."),
                *_AS_OF,
            ],
            _cached(_json(_METRICS)),
            400, 404, 422, 504,
        ), "With `as_of_seq` or `as_of` the answer is `{\"metrics\": <get_metrics shape>, \"as_of\": {seq, ts}}` as "
           "of that point, folded from the archived events as for `GET /api/runs/{run_id}` (whose description "
           "gives the parameters, limits and errors); `recursive` cannot be combined with them."),
        "/api/runs/{run_id}/metrics/{name}": _get(
            "One metric vector", [
                _RUN_ID, _path("name", "Metric name."), *_WAIT,
                _q("from_step", {"type": "integer", "minimum": 0}, "First step, inclusive."),
                _q("to_step", {"type": "integer", "minimum": 0}, "Last step, inclusive."), _MAX_POINTS,
            ],
            _cached(_json(_ref("Vector"))), 400, 404, 504,
        ),
        "/api/runs/{run_id}/metrics.csv": _get(
            "One metric's every point as CSV (step,time,value; time ISO 8601 UTC), streamed",
            [_RUN_ID, _q("name", _STR, "The metric (required)."), *_WAIT],
            _CSV, 400, 404, 504,
        ),
        "/api/runs/{run_id}/tables/{name}": _get(
            "A table metric as column lists (rows in logging order)",
            [_RUN_ID, _path("name", "Table name."), *_WAIT],
            _cached(_json(_ref("Table"))),
            400, 404, 504,
        ),
        "/api/runs/{run_id}/files": _get(
            "The run's files", [_RUN_ID, *_WAIT],
            _json(_ref("Files")),
            400, 404, 504,
        ),
        "/api/runs/{run_id}/files/{path}": _get(
            "Download one file (Content-Type as stored, attachment with the file's basename)",
            [_RUN_ID, _path("path", "The file's path in the run (may contain /)."), *_WAIT],
            {"description": "The file's bytes", "content": {"application/octet-stream": {}}}, 400, 404, 504,
        ),
        "/api/runs/{run_id}/events": _get(
            "The run's event history, by seq", [
                _RUN_ID, *_WAIT,
                _q("after_seq", {"type": "integer", "minimum": -1, "default": -1}, "Events with a greater seq."),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Page size."),
            ],
            _json(_ref("EventsPage")),
            400, 404, 504,
        ),
        "/api/runs/{run_id}/history": _get(
            "Who made each change: the run's events as one-line entries with their principal, by seq", [
                _RUN_ID, *_WAIT,
                _q("after_seq", {"type": "integer", "minimum": -1, "default": -1}, "Entries with a greater seq."),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Page size."),
                _q("type", {"type": "string", "enum": sorted(EVENT_TYPES)},
                   "Only these event types (default all); repeat or comma-separate.", True),
            ],
            _json(_ref("History")),
            400, 404, 504,
        ),
        "/api/runs/{run_id}/logs": _get(
            "Captured output lines", [
                _RUN_ID, *_WAIT,
                _q("after_seq", {"type": "integer", "minimum": -1, "default": -1}, "Cursor: event seq."),
                _q("after_idx", {"type": "integer", "minimum": -1}, "Cursor: resume after this line index of "
                   "event after_seq (default: after all its lines)."),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}, "Page size."),
            ],
            _json(_ref("LogsPage")),
            400, 404, 504,
        ),
        "/api/runs/{run_id}/live": {"get": {
            "summary": "Live updates of a run (Server-Sent Events)",
            "description": LIVE_DESCRIPTION,
            "parameters": [
                _RUN_ID, *_WAIT,
                _q("after_seq", {"type": "integer", "minimum": -1, "default": -1},
                   "Send events with a greater seq first (-1: the whole history)."),
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer", "minimum": -1},
                 "description": "The id of the last message received; set by EventSource on reconnect. "
                 "Overrides after_seq."},
            ],
            "responses": {
                "200": {"description": "An event stream; see the operation's description.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                **_errors(400, 404, 504),
            },
        }},
        "/api/compare": _get(
            "Compare runs on chosen metrics", [
                _q("run", {"type": "string", "format": "uuid"}, "Run ids (1..100); repeat or comma-separate.", True),
                _q("metric", _STR, "Metric names (default all); repeatable.", True),
                _q("vectors", _BOOL, "Also return each scalar/list metric's downsampled vector."),
                {**_MAX_POINTS, "schema": {"type": "integer", "minimum": 0, "maximum": 100000, "default": 1000}},
            ],
            _json(_ref("Compare")),
            400, 404,
        ),
    }


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once; treat as read-only)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "runstream query API", "version": "1", "description": DESCRIPTION},
        "paths": _paths(),
        "security": _SECURITY,
        "components": {"schemas": api.components(), "securitySchemes": _SECURITY_SCHEMES},
    }
