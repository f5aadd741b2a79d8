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

from runstream.schemas.events import LogStream, NonFinite, RunKind, Status, TerminalStatus

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


class Run(RunRecord):
    """A run in the runs listing."""

    tags: dict[str, str | None]
    metrics: dict[str, Summary]


class RunsPage(TypedDict):
    runs: list[Run]
    total: int


class AsOf(TypedDict):
    """The point an as-of answer reflects."""

    seq: Annotated[int, Meta(description="the last event seq folded")]
    ts: Annotated[float, Meta(description="its ts (epoch seconds)")]


class RunDetail(Run):
    """``/api/runs/{run_id}``: a run with properties and child ids."""

    properties: dict[str, Value]
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


class EventsPage(TypedDict):
    events: list[RunEvent]
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


class LiveEnd(TypedDict):
    """The ``data`` of the live stream's final ``end`` message (other messages carry a RunEvent)."""

    status: TerminalStatus
    last_seq: int


RESPONSES: tuple[Any, ...] = (
    ErrorResponse, Health, Experiments, RunsPage, RunDetail, MetricsAsOf, Vector, Table, Files, EventsPage, LogsPage,
    Compare, LiveEnd, RunEvent, ImageRef, Principal, LoggedOut,
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
