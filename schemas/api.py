"""The query API's answers: one TypedDict per JSON shape, the single source of them.

The query API builds these shapes (``query_api.queries`` and ``query_api.asof`` are
annotated with them, so a type checker holds the SQL side to them); the OpenAPI
document's response schemas are generated from them (:func:`components`), and so is the
web UI's ``ui/src/contract.ts`` (:mod:`schemas.typescript`). A test validates real
answers of a running API against the generated document.

Conventions: record timestamps are ISO 8601 strings (``datetime`` here), point and event
times float seconds since the epoch; a metric value is :data:`Value`, non-finite floats
travelling as ``{"f": "NaN" | "Infinity" | "-Infinity"}`` (:mod:`schemas.values`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired, TypeAlias, TypedDict

import msgspec
from msgspec import Meta

from runstream.schemas.events import Event, LogStream, NonFinite, RunKind, Status, TerminalStatus

__all__ = [
    "ALIASES",
    "REF_TEMPLATE",
    "RESPONSES",
    "components",
    "response_schema",
]

REF_TEMPLATE = "#/components/schemas/{name}"
"""Where a named shape's schema is referenced from (OpenAPI's components)."""

Value: TypeAlias = bool | int | float | str | NonFinite | None
"""A metric value or table cell as JSON carries it (None: missing)."""

Columns = dict[str, list[Value]]
"""A table as column lists (rows in logging order; a missing cell is None)."""


class ImageRef(TypedDict):
    """An image metric in ``get_metrics``: the artifact holding its last image."""

    artifact: str | None
    sha256: str | None


def _any_of(*types: Any) -> dict[str, Any]:
    schemas, _ = msgspec.json.schema_components(types, ref_template=REF_TEMPLATE)
    return {"anyOf": schemas}


MetricShape = Annotated[Any, Meta(
    description="get_metrics shape: a Value if logged once, a list if repeated or logged with "
    "log_list, Columns for a table, an ImageRef for an image.",
    extra_json_schema=_any_of(Value, list[Value], Columns, ImageRef),
)]
"""One metric in Azure ML's ``get_metrics`` shape (msgspec cannot express this union of
dict-like types as a type, so its schema is given explicitly)."""

Metrics = dict[str, MetricShape]
"""``get_metrics``: metric name -> its shape."""

MetricsByRun = dict[str, Metrics]
"""``get_metrics(recursive=True)``: run id -> its metrics."""


class ErrorBody(TypedDict):
    status: int
    message: str


class ErrorResponse(TypedDict):
    """Every error answer; a bad parameter's message names the parameter and its value."""

    error: ErrorBody


class Health(TypedDict):
    """``/api/health`` (``ok``) and ``/api/ready`` (``ready``)."""

    status: str


class Principal(TypedDict):
    """``/api/whoami`` and ``/api/login``: who the token acts as (token_id null: authentication off)."""

    workspace: str
    scope: Literal["read", "write", "admin"]
    token_id: str | None


class LoggedOut(TypedDict):
    """``/api/logout``: the login cookie is cleared."""

    logged_out: bool


class Experiment(TypedDict):
    name: str
    created_at: datetime
    run_count: int
    last_activity: datetime | None


class Experiments(TypedDict):
    experiments: list[Experiment]


class Summary(TypedDict):
    """A metric's summary in a run's answer."""

    kind: Literal["scalar", "list", "table", "image"]
    last: Value
    min: Value
    max: Value
    count: int
    last_step: int | None
    description: str | None


class RunRecord(TypedDict):
    """A ``runs`` row in the API's shape."""

    run_id: uuid.UUID
    name: str | None
    experiment: str
    status: Status
    kind: RunKind
    parent_run_id: uuid.UUID | None
    error: str | None
    started_at: datetime
    ended_at: datetime | None
    duration_s: Annotated[float | None, Meta(description="null until the run ends")]
    updated_at: datetime
    last_seq: int
    deleted: Annotated[bool, Meta(description="deleted runs are hidden from listings unless asked for; restorable")]


class Run(RunRecord):
    """A run in the runs listing."""

    tags: dict[str, str | None]
    metrics: dict[str, Summary]
    properties: Annotated[dict[str, Value], Meta(description="start_logging's keyword arguments (params.* in filters)")]
    params: Annotated[dict[str, str], Meta(description="parameters (immutable once logged)")]


class RunsPage(TypedDict):
    runs: list[Run]
    total: int


class AsOf(TypedDict):
    """The point an as-of answer reflects."""

    seq: Annotated[int, Meta(description="the last event seq folded")]
    ts: Annotated[float, Meta(description="its ts (epoch seconds)")]


class RunDetail(Run):
    """``/api/runs/{run_id}``: a run with properties and child ids."""

    children: list[uuid.UUID]
    as_of: NotRequired[AsOf]
    """Only with ``as_of_seq`` or ``as_of``."""
    dead_letters: NotRequired[int]
    """Events of the run the processors could not materialize (when the API counts them)."""


class MetricsAsOf(TypedDict):
    """``/api/runs/{run_id}/metrics`` with ``as_of_seq`` or ``as_of``."""

    metrics: Metrics
    as_of: AsOf


class Vector(TypedDict):
    name: str
    kind: Literal["scalar", "list"]
    count: Annotated[int, Meta(description="points in the step range before downsampling")]
    steps: list[int]
    values: list[Value]
    times: Annotated[list[float], Meta(description="epoch seconds")]
    downsampled: bool


class Table(TypedDict):
    name: str
    columns: Columns
    rows: int


class FileInfo(TypedDict):
    path: str
    size: int
    sha256: str
    content_type: str
    created_at: datetime


class Files(TypedDict):
    files: list[FileInfo]


class RunEvent(TypedDict):
    """An archived event exactly as sent (its payload per ``schemas/json/events.schema.json``)."""

    type: str
    v: int
    event_id: str
    run_id: str
    seq: int
    ts: float
    payload: dict[str, Any]
    principal: NotRequired[str | None]
    """Who wrote it: the token id the gateway stamped (absent or None: unauthenticated)."""


class EventsPage(TypedDict):
    events: list[RunEvent]
    next_after_seq: int | None


class HistoryEntry(TypedDict):
    """One event of a run's history: who wrote it and what it changed."""

    seq: int
    type: str
    ts: datetime
    principal: str | None
    """The token id that wrote the event (None: an unauthenticated, local stack)."""
    summary: str
    """One line; user text in it is quoted with escapes, and is to be shown as text."""


class History(TypedDict):
    entries: list[HistoryEntry]
    next_after_seq: int | None


class LogLine(TypedDict):
    seq: int
    idx: int
    ts: datetime
    stream: LogStream
    line: str


class LogsPage(TypedDict):
    lines: list[LogLine]
    next_after_seq: int | None
    next_after_idx: int | None


class CompareRun(RunRecord):
    metrics: dict[str, Summary]
    vectors: NotRequired[dict[str, Vector]]
    """Only with ``vectors=true``: each scalar/list metric's downsampled vector."""


class Compare(TypedDict):
    runs: list[CompareRun]


class GroupBand(TypedDict):
    """One group of runs' metric: per step bucket, the mean, minimum and maximum over every
    finite point of the group's runs in it."""

    group: Annotated[str | None, Meta(description="the tag or param value (JSON text for a non-string param); "
                                                  "null: runs without it, or every run when not grouped")]
    runs: Annotated[int, Meta(description="runs of the group that have points")]
    steps: Annotated[list[int], Meta(description="each bucket's first step")]
    mean: list[float]
    min: list[float]
    max: list[float]


class MetricGroups(TypedDict):
    """``/api/experiments/{name}/groups``: a metric of the filtered runs, grouped."""

    metric: str
    group_by: str | None
    runs: Annotated[int, Meta(description="runs read (at most max_runs, newest first)")]
    truncated: Annotated[bool, Meta(description="more runs matched than max_runs")]
    groups: list[GroupBand]


class LiveEnd(TypedDict):
    """The ``data`` of the live stream's final ``end`` message (other messages carry a RunEvent)."""

    status: TerminalStatus
    last_seq: int


RESPONSES: tuple[Any, ...] = (
    ErrorResponse, Health, Experiments, RunsPage, RunDetail, MetricsAsOf, Vector, Table, Files, EventsPage, LogsPage,
    Compare, LiveEnd, RunEvent, ImageRef, MetricGroups, History, Principal, LoggedOut,
)
"""Every named shape; with their members they make the OpenAPI components."""

ALIASES: dict[str, Any] = {
    "Status": Status, "TerminalStatus": TerminalStatus, "Value": Value, "Columns": Columns,
    "MetricShape": MetricShape, "Metrics": Metrics, "MetricsByRun": MetricsByRun,
}
"""Unnamed types (unions, maps) the TypeScript side gets under these names."""


def response_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema of one response type, named shapes as ``$ref`` to the components."""
    (schema,), _ = msgspec.json.schema_components([tp], ref_template=REF_TEMPLATE)
    return schema


def components() -> dict[str, Any]:
    """The schemas of every named shape (OpenAPI ``components.schemas``)."""
    _, found = msgspec.json.schema_components(RESPONSES, ref_template=REF_TEMPLATE)
    return found


# ---------------------------------------------------------------- the ingest gateway's answers


class Accepted(TypedDict):
    """``POST /api/v1/events``: every event of the batch was acknowledged by Kafka."""

    accepted: int


class BlobStored(TypedDict):
    """``PUT /api/v1/blobs/{sha256}``: ``stored`` false when the bytes were there already
    (then no ``size``)."""

    sha256: str
    stored: bool
    size: NotRequired[int]


GATEWAY_RESPONSES: tuple[Any, ...] = (ErrorResponse, Health, Accepted, BlobStored)
"""The gateway's answer shapes (its OpenAPI document's components, with the event types)."""


def gateway_components() -> dict[str, Any]:
    """The schemas of the gateway's answers and of every event type (``Event`` and its members)."""
    (*_, event), found = msgspec.json.schema_components((*GATEWAY_RESPONSES, Event), ref_template=REF_TEMPLATE)
    return {**found, "Event": event}
