"""The event contract: one versioned envelope, one frozen struct per event type.

Every event is one JSON object::

    {"type": "metric.points", "v": 1, "event_id": "<uuid7>", "run_id": "<uuid>",
     "seq": 7, "ts": 1732700000.123456, "payload": {...}}

plus an optional ``principal`` (the audit trail, stamped by the gateway).

``seq`` is per run, gap-free and assigned by the SDK; ``ts`` is the client's clock in
seconds since the epoch. Kafka's key is ``run_id``. :func:`decode` is the only way bytes
become events: it validates with msgspec (types, lengths, limits) and rejects versions
this build does not know, naming them. The published JSON Schema
(``schemas/json/events.schema.json``) is generated from these classes.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta, Struct

from runstream.schemas import blobs, limits

__all__ = [
    "EVENT_TYPES",
    "EXPERIMENT_EVENTS",
    "SERVER_SEQ_BASE",
    "experiment_stream_id",
    "STATUSES",
    "TERMINAL_STATUSES",
    "SCHEMA_VERSION",
    "WORKSPACE_PATTERN",
    "DEFAULT_WORKSPACE",
    "Event",
    "EventError",
    "decode",
    "find_lone_surrogate",
    "json_schema",
]

SCHEMA_VERSION = 1
"""The envelope/payload version this build writes and reads."""

DEFAULT_WORKSPACE = "default"
"""The workspace of events without one, of rows from before workspaces, and of every
request when authentication is off."""

STORABLE_TEXT = "^[^\\u0000\\ud800-\\udfff]*$"
"""Strings PostgreSQL can store in ``text`` and ``jsonb``: no NUL, no lone UTF-16 surrogate
(JSON can escape one, UTF-8 cannot encode it). Every other code point is fine."""

STORABLE_PATH = "^(?![\\s\\S]*[\\u0000-\\u001f\\u007f-\\u009f\\ud800-\\udfff])"
"""An artifact path: storable text without control characters, C0 and C1 (it becomes part
of a URL and of an HTTP header when downloaded)."""

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The ints a value may be: PostgreSQL's bigint (and orjson's signed range)."""

Name = Annotated[str, Meta(min_length=1, max_length=limits.MAX_NAME_LENGTH, pattern=STORABLE_TEXT)]
Text = Annotated[str, Meta(max_length=limits.MAX_STRING_VALUE_LENGTH, pattern=STORABLE_TEXT)]
Int64 = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)]
Uuid = Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")]
Seq = Annotated[int, Meta(ge=0, le=INT64_MAX)]
Step = Annotated[int, Meta(ge=0, le=2**62)]
Timestamp = Annotated[float, Meta(ge=0, le=32503680000)]  # up to year 3000


class NonFinite(Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """A float JSON cannot carry: NaN, +Infinity or -Infinity."""

    f: Literal["NaN", "Infinity", "-Infinity"]

    @property
    def value(self) -> float:
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[self.f]


Value = bool | Int64 | float | Text | NonFinite
"""A metric value or table cell."""

Row = Annotated[dict[Name, Value], Meta(max_length=limits.MAX_COLUMNS_PER_ROW)]


class _Payload(Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """Base of every payload. ``gc=False`` (here, on the envelope and on NonFinite): decoded
    events hold only scalars and containers of scalars, so they cannot be part of a
    reference cycle, and a processor decodes tens of thousands a second; untracked, they
    cost the garbage collector nothing."""


RunKind = Literal["interactive", "submitted", "child", "offline"]
"""How a run was started."""


class RunStartedPayload(_Payload):
    experiment: Name
    name: Annotated[str, Meta(max_length=limits.MAX_NAME_LENGTH, pattern=STORABLE_TEXT)] | None = None
    parent_run_id: Uuid | None = None
    properties: Annotated[dict[Name, Value], Meta(max_length=limits.MAX_PROPERTIES)] = {}
    kind: RunKind = "interactive"


Status = Literal["running", "completed", "failed", "canceled"]
"""A run's status; every status but ``running`` is terminal."""
TerminalStatus = Literal["completed", "failed", "canceled"]
"""The statuses a run ends with (checked against :data:`Status` below)."""

STATUSES: frozenset[str] = frozenset(get_args(Status))
"""Every run status."""
TERMINAL_STATUSES: frozenset[str] = STATUSES - {"running"}
"""The statuses after which a run records nothing more (its live stream ends)."""
if TERMINAL_STATUSES != frozenset(get_args(TerminalStatus)):  # the Literal is for type checkers; keep it derived
    raise AssertionError(f"TerminalStatus must be Status minus running: {sorted(TERMINAL_STATUSES)}")


class RunStatusPayload(_Payload):
    status: Status
    error: Annotated[str, Meta(max_length=65_536, pattern=STORABLE_TEXT)] | None = None


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


Sha256 = Annotated[str, Meta(pattern=blobs.SHA256_PATTERN)]
ArtifactPath = Annotated[str, Meta(min_length=1, max_length=limits.MAX_ARTIFACT_PATH_LENGTH, pattern=STORABLE_PATH)]


class ArtifactPayload(_Payload):
    path: ArtifactPath
    sha256: Sha256
    size: Annotated[int, Meta(ge=0, le=limits.MAX_ARTIFACT_BYTES)]
    content_type: Annotated[str, Meta(max_length=255, pattern=STORABLE_TEXT)] = "application/octet-stream"


class MetricImagePayload(_Payload):
    name: Name
    artifact: ArtifactPayload
    description: Text | None = None


class TagSetPayload(_Payload):
    key: Annotated[str, Meta(min_length=1, max_length=limits.MAX_TAG_KEY_LENGTH, pattern=STORABLE_TEXT)]
    value: Text | None = None


class TagRemovedPayload(_Payload):
    key: Annotated[str, Meta(min_length=1, max_length=limits.MAX_TAG_KEY_LENGTH, pattern=STORABLE_TEXT)]


LogStream = Literal["stdout", "stderr", "log"]
"""Where a captured output line came from."""


class LogLinesPayload(_Payload):
    stream: LogStream
    lines: Annotated[
        list[Annotated[str, Meta(max_length=limits.MAX_LOG_LINE_LENGTH, pattern=STORABLE_TEXT)]],
        Meta(min_length=1, max_length=limits.MAX_LOG_LINES_PER_EVENT),
    ]
    times: Annotated[list[Timestamp], Meta(min_length=1, max_length=limits.MAX_LOG_LINES_PER_EVENT)]

    def __post_init__(self) -> None:
        if len(self.lines) != len(self.times):
            raise ValueError("lines and times must have the same length")


PrincipalId = Annotated[str, Meta(min_length=1, max_length=limits.MAX_NAME_LENGTH, pattern=STORABLE_TEXT)]
"""Who wrote an event: the id of the API token that authenticated it (never the secret)."""


ParamKey = Annotated[str, Meta(min_length=1, max_length=limits.MAX_PARAM_KEY_LENGTH, pattern=STORABLE_TEXT)]
ParamValue = Annotated[str, Meta(max_length=limits.MAX_PARAM_VALUE_LENGTH, pattern=STORABLE_TEXT)]


class ParamsLoggedPayload(_Payload):
    """Parameters of a run (MLflow's params, ``run.log_params``): immutable once logged; the
    projection keeps a key's first value (writers refuse a different one before sending)."""

    params: Annotated[dict[ParamKey, ParamValue], Meta(min_length=1, max_length=limits.MAX_PARAMS_PER_EVENT)]


class RunRenamedPayload(_Payload):
    name: Annotated[str, Meta(max_length=limits.MAX_NAME_LENGTH, pattern=STORABLE_TEXT)]


class EmptyPayload(_Payload):
    """A payload without fields (run.deleted, run.restored)."""


class ExperimentPayload(_Payload):
    """Base of the experiment events. An experiment's events form their own stream: the
    envelope's ``run_id`` is the experiment's id (:func:`experiment_stream_id`), and
    ``experiment`` names it by the key runs use (its name at creation)."""

    experiment: Name


class ExperimentCreatedPayload(ExperimentPayload):
    tags: Annotated[dict[Annotated[str, Meta(min_length=1, max_length=limits.MAX_TAG_KEY_LENGTH, pattern=STORABLE_TEXT)],
                         Text], Meta(max_length=limits.MAX_PROPERTIES)] = {}


class ExperimentRenamedPayload(ExperimentPayload):
    name: Name
    """The new display name (the key in ``experiment`` stays what runs refer to)."""


class ExperimentTagSetPayload(ExperimentPayload):
    key: Annotated[str, Meta(min_length=1, max_length=limits.MAX_TAG_KEY_LENGTH, pattern=STORABLE_TEXT)]
    value: Text


WORKSPACE_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""A workspace name: letters, digits, ``_.-``, at most 64 characters (it appears in URLs,
logs and the CLI, so nothing that needs quoting)."""

WorkspaceName = Annotated[str, Meta(pattern=WORKSPACE_PATTERN)]


class _Envelope(Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", gc=False, kw_only=True,
                omit_defaults=True):
    # kw_only: the optional envelope fields may precede each subclass's required payload.
    event_id: Uuid
    run_id: Uuid
    seq: Seq
    ts: Timestamp
    v: Literal[1]
    principal: PrincipalId | None = None
    """The audit trail: the token id of the request that brought the event in, stamped
    by the ingest gateway (whatever the body said is overwritten); None for events of an
    unauthenticated (local) stack, and, over Kafka directly, what the producer wrote
    (unverified: see docs/SECURITY.md)."""
    workspace: WorkspaceName | None = None
    """The workspace the event was written in: stamped by the ingest gateway from the
    authenticated principal (whatever the body said) or by the SDK's Kafka transport;
    absent means ``default``. Processors dead-letter an event whose workspace is not the
    one its run's ``run.started`` recorded."""


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


class ParamsLogged(_Envelope, tag="params.logged"):
    payload: ParamsLoggedPayload


class RunRenamed(_Envelope, tag="run.renamed"):
    payload: RunRenamedPayload


class RunDeleted(_Envelope, tag="run.deleted"):
    """The run is hidden from listings and search (restorable); nothing else changes."""

    payload: EmptyPayload


class RunRestored(_Envelope, tag="run.restored"):
    payload: EmptyPayload


class ExperimentCreated(_Envelope, tag="experiment.created"):
    payload: ExperimentCreatedPayload


class ExperimentRenamed(_Envelope, tag="experiment.renamed"):
    payload: ExperimentRenamedPayload


class ExperimentDeleted(_Envelope, tag="experiment.deleted"):
    payload: ExperimentPayload


class ExperimentRestored(_Envelope, tag="experiment.restored"):
    payload: ExperimentPayload


class ExperimentTagSet(_Envelope, tag="experiment.tag.set"):
    payload: ExperimentTagSetPayload


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
    | ParamsLogged
    | RunRenamed
    | RunDeleted
    | RunRestored
    | ExperimentCreated
    | ExperimentRenamed
    | ExperimentDeleted
    | ExperimentRestored
    | ExperimentTagSet
)

EXPERIMENT_EVENTS: tuple[type[Any], ...] = (
    ExperimentCreated, ExperimentRenamed, ExperimentDeleted, ExperimentRestored, ExperimentTagSet)
"""The events of an experiment's stream (their ``run_id`` is the experiment's id)."""

NOTE_TAG = "mlflow.note.content"
"""The tag a run's free-text note is kept in (MLflow's own, so both APIs and UIs show one
note): the SDK's ``Run.description``, run management's ``note``, the UI."""

SERVER_SEQ_BASE = 2**62
"""Where the seqs of events the server originates for a run it does not number start.

A run has one numbering writer (the SDK process that started it, or the query API for a
run it created through MLflow's API, numbering from 0). Events the API writes for a run
numbered elsewhere (rename, delete, tags, notes of a still-running SDK run) take seqs from
this base up, allocated in PostgreSQL (``seq_allocations``), so they never collide with
the owner's numbering nor between API processes. docs/ARCHITECTURE.md, "Seq ownership"."""

EXPERIMENT_NAMESPACE = uuid.UUID("5b0f6c1e-3d2a-4b8e-9a51-7c0d6e2f9a10")
"""uuid5 namespace of experiment ids (fixed: ids must not change)."""


def experiment_stream_id(name: str, workspace: str = DEFAULT_WORKSPACE) -> str:
    """The id of experiment ``name`` (its key: the name runs refer to) in ``workspace``: the
    ``run_id`` of its events and, as 32 hex digits, its MLflow ``experiment_id``. Derived, so
    every writer and every replay agrees on it without a lookup; two workspaces' experiments
    of one name have two ids (the default workspace's is the name's alone)."""
    key = name if workspace == DEFAULT_WORKSPACE else f"{workspace}\x00{name}"
    return str(uuid.uuid5(EXPERIMENT_NAMESPACE, key))

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
_SURROGATE = re.compile("[\\ud800-\\udfff]")
_header_decoder = msgspec.json.Decoder(_Header)


def decode(raw: bytes | str) -> Event:
    """Validate and decode one event, or raise :class:`EventError` naming what is wrong."""
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        found = find_lone_surrogate(raw)
        if found is None:
            raise EventError(_explain(raw, exc)) from None
        where, char = found
        raise EventError(f"{where} holds a lone surrogate {char!r}, which UTF-8 and PostgreSQL cannot store") from None
    except UnicodeDecodeError as exc:  # msgspec checks UTF-8 lazily, as it reads each string
        found = find_lone_surrogate(raw)
        where = "a string" if found is None else found[0]  # exc.start counts from the string's start
        raise EventError(f"not valid UTF-8: byte 0x{exc.object[exc.start]:02x} in {where}") from None


def find_lone_surrogate(raw: bytes | str) -> tuple[str, str] | None:
    """``(JSON path, character)`` of the first lone surrogate in a string of ``raw``: a
    ``\\ud800`` escape (msgspec only says "truncated"), or, read with ``surrogateescape``,
    a byte that is not UTF-8. Called only after decoding failed: off the hot path."""
    import json

    try:
        text = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
        doc = json.loads(text)
    except ValueError:
        return None
    stack: list[tuple[str, Any]] = [("$", doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            if bad := _SURROGATE.search(node):
                return path, bad.group()
        elif isinstance(node, dict):
            for key, child in node.items():
                if bad := _SURROGATE.search(key):
                    return f"a key of {path}", bad.group()
                stack.append((f"{path}.{key}", child))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(node))
    return None


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
    return f"invalid {header.type!r} event: {_readable(str(exc))}"


def _readable(message: str) -> str:
    """msgspec names a pattern by its regex; say what the storable-text patterns mean."""
    return message.replace(
        f"matching regex {STORABLE_TEXT!r}", "without NUL or lone surrogates (PostgreSQL cannot store them)"
    ).replace(
        f"matching regex {STORABLE_PATH!r}", "without NUL, control characters or lone surrogates"
    )


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
