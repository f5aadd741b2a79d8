"""The event contract: one versioned envelope, one frozen struct per event type.

Every event is one JSON object::

    {"type": "metric.points", "v": 1, "event_id": "<uuid7>", "run_id": "<uuid>",
     "seq": 7, "ts": 1732700000.123456, "payload": {...}}

``seq`` is per run, gap-free and assigned by the SDK; ``ts`` is the client's clock in
seconds since the epoch. Kafka's key is ``run_id``. :func:`decode` is the only way bytes
become events: it validates with msgspec (types, lengths, limits) and rejects versions
this build does not know, naming them. The published JSON Schema
(``schemas/json/events.schema.json``) is generated from these classes.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from schemas import limits

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "Event",
    "EventError",
    "decode",
    "json_schema",
]

SCHEMA_VERSION = 1
"""The envelope/payload version this build writes and reads."""

Name = Annotated[str, Meta(min_length=1, max_length=limits.MAX_NAME_LENGTH)]
Text = Annotated[str, Meta(max_length=limits.MAX_STRING_VALUE_LENGTH)]
Uuid = Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")]
Seq = Annotated[int, Meta(ge=0)]
Step = Annotated[int, Meta(ge=0, le=2**62)]
Timestamp = Annotated[float, Meta(ge=0, le=32503680000)]  # up to year 3000


class NonFinite(Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """A float JSON cannot carry: NaN, +Infinity or -Infinity."""

    f: Literal["NaN", "Infinity", "-Infinity"]

    @property
    def value(self) -> float:
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[self.f]


Value = bool | int | float | Text | NonFinite
"""A metric value or table cell."""

Row = Annotated[dict[Name, Value], Meta(max_length=limits.MAX_COLUMNS_PER_ROW)]


class _Payload(Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """Base of every payload. ``gc=False`` (here, on the envelope and on NonFinite): decoded
    events hold only scalars and containers of scalars, so they cannot be part of a
    reference cycle, and a processor decodes tens of thousands a second; untracked, they
    cost the garbage collector nothing."""


class RunStartedPayload(_Payload):
    experiment: Name
    name: Annotated[str, Meta(max_length=limits.MAX_NAME_LENGTH)] | None = None
    parent_run_id: Uuid | None = None
    properties: Annotated[dict[Name, Value], Meta(max_length=limits.MAX_PROPERTIES)] = {}
    kind: Literal["interactive", "submitted", "child", "offline"] = "interactive"


class RunStatusPayload(_Payload):
    status: Literal["running", "completed", "failed", "canceled"]
    error: Annotated[str, Meta(max_length=65_536)] | None = None


class Series(_Payload):
    """Consecutive points of one metric: parallel arrays, one entry per point."""

    name: Name
    steps: Annotated[list[Step], Meta(min_length=1, max_length=limits.MAX_POINTS_PER_EVENT)]
    values: Annotated[list[Value], Meta(min_length=1, max_length=limits.MAX_POINTS_PER_EVENT)]
    times: Annotated[list[Timestamp], Meta(min_length=1, max_length=limits.MAX_POINTS_PER_EVENT)]
    description: Text | None = None

    def __post_init__(self) -> None:
        if not (len(self.steps) == len(self.values) == len(self.times)):
            raise ValueError(
                f"series {self.name!r}: steps, values and times must have the same length "
                f"(got {len(self.steps)}, {len(self.values)}, {len(self.times)})"
            )


class MetricPointsPayload(_Payload):
    series: Annotated[list[Series], Meta(min_length=1)]

    def __post_init__(self) -> None:
        if len(self.series) == 1:  # one series is bounded by its own max_length
            return
        total = sum(len(s.steps) for s in self.series)
        if total > limits.MAX_POINTS_PER_EVENT:
            raise ValueError(f"{total} points in one event; the limit is {limits.MAX_POINTS_PER_EVENT}")


class MetricListPayload(_Payload):
    name: Name
    start_step: Step
    values: Annotated[list[Value], Meta(max_length=limits.MAX_POINTS_PER_EVENT)]
    description: Text | None = None


class MetricRowsPayload(_Payload):
    name: Name
    rows: Annotated[list[Row], Meta(min_length=1, max_length=limits.MAX_ROWS_PER_EVENT)]
    description: Text | None = None


class MetricTablePayload(_Payload):
    name: Name
    columns: Annotated[
        dict[Name, Annotated[list[Value], Meta(max_length=limits.MAX_ROWS_PER_EVENT)]],
        Meta(max_length=limits.MAX_COLUMNS_PER_ROW),
    ]
    description: Text | None = None

    def __post_init__(self) -> None:
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"table {self.name!r}: columns have different lengths {sorted(lengths)}")


Sha256 = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
ArtifactPath = Annotated[str, Meta(min_length=1, max_length=limits.MAX_ARTIFACT_PATH_LENGTH)]


class ArtifactPayload(_Payload):
    path: ArtifactPath
    sha256: Sha256
    size: Annotated[int, Meta(ge=0, le=limits.MAX_ARTIFACT_BYTES)]
    content_type: Annotated[str, Meta(max_length=255)] = "application/octet-stream"


class MetricImagePayload(_Payload):
    name: Name
    artifact: ArtifactPayload
    description: Text | None = None


class TagSetPayload(_Payload):
    key: Annotated[str, Meta(min_length=1, max_length=limits.MAX_TAG_KEY_LENGTH)]
    value: Text | None = None


class TagRemovedPayload(_Payload):
    key: Annotated[str, Meta(min_length=1, max_length=limits.MAX_TAG_KEY_LENGTH)]


class LogLinesPayload(_Payload):
    stream: Literal["stdout", "stderr", "log"]
    lines: Annotated[
        list[Annotated[str, Meta(max_length=limits.MAX_LOG_LINE_LENGTH)]],
        Meta(min_length=1, max_length=limits.MAX_LOG_LINES_PER_EVENT),
    ]
    times: Annotated[list[Timestamp], Meta(min_length=1, max_length=limits.MAX_LOG_LINES_PER_EVENT)]

    def __post_init__(self) -> None:
        if len(self.lines) != len(self.times):
            raise ValueError("lines and times must have the same length")


class _Envelope(Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", gc=False):
    event_id: Uuid
    run_id: Uuid
    seq: Seq
    ts: Timestamp
    v: Literal[1]


class RunStarted(_Envelope, tag="run.started"):
    payload: RunStartedPayload


class RunStatus(_Envelope, tag="run.status"):
    payload: RunStatusPayload


class MetricPoints(_Envelope, tag="metric.points"):
    payload: MetricPointsPayload


class MetricList(_Envelope, tag="metric.list"):
    payload: MetricListPayload


class MetricRows(_Envelope, tag="metric.rows"):
    payload: MetricRowsPayload


class MetricTable(_Envelope, tag="metric.table"):
    payload: MetricTablePayload


class MetricImage(_Envelope, tag="metric.image"):
    payload: MetricImagePayload


class TagSet(_Envelope, tag="tag.set"):
    payload: TagSetPayload


class TagRemoved(_Envelope, tag="tag.removed"):
    payload: TagRemovedPayload


class ArtifactRecorded(_Envelope, tag="artifact.recorded"):
    payload: ArtifactPayload


class LogLines(_Envelope, tag="log.lines"):
    payload: LogLinesPayload


Event = (
    RunStarted
    | RunStatus
    | MetricPoints
    | MetricList
    | MetricRows
    | MetricTable
    | MetricImage
    | TagSet
    | TagRemoved
    | ArtifactRecorded
    | LogLines
)

EVENT_TYPES: dict[str, type[Any]] = {
    cls.__struct_config__.tag: cls  # type: ignore[attr-defined]
    for cls in Event.__args__  # type: ignore[attr-defined]
}


class EventError(ValueError):
    """Bytes that are not a valid event of a version this build reads."""


class _Header(Struct):
    type: Any = None
    v: Any = None


_decoder = msgspec.json.Decoder(Event)
_header_decoder = msgspec.json.Decoder(_Header)


def decode(raw: bytes | str) -> Event:
    """Validate and decode one event, or raise :class:`EventError` naming what is wrong."""
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise EventError(_explain(raw, exc)) from None


def _explain(raw: bytes | str, exc: msgspec.DecodeError) -> str:
    """Turn a decode failure into a message that names the unknown type or version first."""
    try:
        header = _header_decoder.decode(raw)
    except msgspec.DecodeError:
        return f"not a JSON event object: {exc}"
    if header.type not in EVENT_TYPES:
        return f"unknown event type {header.type!r}; known types: {', '.join(sorted(EVENT_TYPES))}"
    if header.v != SCHEMA_VERSION:
        return (
            f"unsupported version v={header.v!r} for event type {header.type!r}; "
            f"this build reads v={SCHEMA_VERSION}"
        )
    return f"invalid {header.type!r} event: {exc}"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of one event, generated from the classes above."""
    schema = msgspec.json.schema(Event)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "runstream event"
    schema["description"] = (
        f"One runstream event, envelope version {SCHEMA_VERSION}. Kafka key = run_id. "
        'Non-finite floats are written as {"f": "NaN" | "Infinity" | "-Infinity"}.'
    )
    return schema
