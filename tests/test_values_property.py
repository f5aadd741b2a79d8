"""Property tests: the SDK's checks, the event schema, the gateway and the storage
representation agree on every value and name.

Whatever ``runstream.checks`` accepts decodes with ``schemas.events.decode`` and comes
back from the stored form unchanged (value and type); whatever it rejects, the schema and
the gateway reject too (a 422, never a 202 and a dead letter later). The last test logs
generated values and names through the real SDK, Kafka, processors and API.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from runstream import Experiment, LimitError, Workspace, checks
from runstream.ingest.gateway import validate_batch
from runstream.processors.materialize import cell_json, split_value
from runstream.query_api.errors import BadRequest, Unprocessable
from runstream.query_api.queries import value as stored_value
from runstream.schemas import events
from tests.support.names import unique

RUN_ID = "0190a3c4-1111-7000-8000-000000000002"
ANY_CHAR = st.characters(exclude_categories=())
"""Every code point, NUL and lone surrogates included."""

PURE = settings(max_examples=1000, derandomize=True, database=None, deadline=None)

raw_values = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**63) - 3, max_value=2**64 + 3),
    st.sampled_from([2**53 - 1, 2**53, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64]),
    st.floats(),
    st.booleans(),
    st.text(ANY_CHAR, max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(np.int64),
    st.integers(min_value=0, max_value=2**64 - 1).map(np.uint64),
    st.floats(width=32).map(np.float32),
    st.booleans().map(np.bool_),
)


def envelope(type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": type_, "v": 1, "event_id": "0190a3c4-1111-7000-8000-000000000001", "run_id": RUN_ID,
            "seq": 1, "ts": 1_800_000_000.0, "payload": payload}


def as_python(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def stdlib_json(event: dict[str, Any]) -> bytes:
    """Any value as JSON: ints of any size, lone surrogates as \\udxxx escapes."""
    return json.dumps(event).encode()


def rejected_everywhere(event: dict[str, Any]) -> None:
    raw = stdlib_json(event)
    with pytest.raises(events.EventError):
        events.decode(raw)
    with pytest.raises(Unprocessable) as err:
        validate_batch(b"[" + raw + b"]")
    assert err.value.details["events"][0]["index"] == 0


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type (True is not 1, 1.0 is not 1); NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@PURE
@given(raw_values)
def test_checks_schema_and_storage_agree_on_every_value(v: Any) -> None:
    try:
        accepted = checks.scalar(v)
    except LimitError:
        accepted = None
    payload = {"series": [{"name": "m", "steps": [0], "values": [as_python(v)], "times": [1.0]}]}
    if accepted is None:
        assert not isinstance(v, float)
        rejected_everywhere(envelope("metric.points", payload))
        rejected_everywhere(envelope("metric.rows", {"name": "t", "rows": [{"c": as_python(v)}]}))
        return
    payload["series"][0]["values"] = [accepted]  # the value as the SDK's sender writes it (orjson)
    event = events.decode(orjson.dumps(envelope("metric.points", payload)))
    decoded = event.payload.series[0].values[0]  # type: ignore[union-attr]
    assert same(stored_value(*_columns(decoded)), accepted)
    assert same(orjson.loads(orjson.dumps(cell_json(decoded))), accepted)
    validate_batch(b"[" + orjson.dumps(envelope("metric.points", payload)) + b"]")


def _columns(decoded: Any) -> tuple[Any, Any, Any]:
    number, text, kind = split_value(decoded)
    return kind, number, text


@PURE
@given(st.text(ANY_CHAR, max_size=300))
def test_checks_and_schema_agree_on_every_name(name: str) -> None:
    try:
        checks.name(name, "metric name")
    except LimitError:
        rejected_everywhere(envelope("metric.points", {"series": [
            {"name": name, "steps": [0], "values": [1.0], "times": [1.0]}]}))
        rejected_everywhere(envelope("run.started", {"experiment": name}))
        rejected_everywhere(envelope("metric.rows", {"name": "t", "rows": [{name: 1}]}))
        return
    event = events.decode(orjson.dumps(envelope("metric.rows", {"name": name, "rows": [{name: 1}]})))
    assert event.payload.name == name and list(event.payload.rows[0]) == [name]  # type: ignore[union-attr]


@PURE
@given(st.text(ANY_CHAR, max_size=60))
def test_an_artifact_path_or_tag_the_schema_refuses_is_refused_at_the_call(text: str) -> None:
    payload = {"path": text, "sha256": "0" * 64, "size": 1}
    try:
        events.decode(stdlib_json(envelope("artifact.recorded", payload)))
    except events.EventError:
        with pytest.raises(LimitError):
            checks.artifact_path(text)
    else:
        with_control = any(ord(c) < 32 or 127 <= ord(c) <= 159 for c in text)  # C0, DEL and C1
        assert not with_control
    try:
        events.decode(stdlib_json(envelope("tag.set", {"key": text, "value": text})))
    except events.EventError:
        with pytest.raises(LimitError):
            checks.tag_key(text)
            checks.text(text, "tag value")


@PURE
@given(st.binary(max_size=40))
def test_any_bytes_in_a_string_are_an_event_error_or_a_valid_event(data: bytes) -> None:
    raw = orjson.dumps(envelope("tag.set", {"key": "k", "value": "VALUE"})).replace(b"VALUE", data.replace(b'"', b""))
    try:
        event = events.decode(raw)
    except events.EventError:
        with pytest.raises((Unprocessable, BadRequest)):
            validate_batch(b"[" + raw + b"]")
    else:
        checks.text(event.payload.value, "tag value")  # type: ignore[union-attr,arg-type]


# ---------------------------------------------------------------- end to end

storable_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([2**63 - 1, -(2**63), 2**53 + 1, -(2**53) - 1]),
    st.floats(),
    st.booleans(),
    st.text(st.characters(exclude_characters="\x00"), max_size=20),
)
names = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=8, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(logged=st.lists(st.tuples(names, storable_values), min_size=1, max_size=12),
       row=st.dictionaries(names.filter(lambda n: n not in ("name", "description")), storable_values,
                           min_size=1, max_size=5))
def test_what_the_sdk_accepts_comes_back_exactly(workspace: Workspace, logged: list[tuple[str, Any]],
                                                 row: dict[str, Any]) -> None:
    assume("row" not in {n for n, _ in logged})
    run = Experiment(workspace, unique("prop")).start_logging(**{k: v for k, v in list(row.items())[:3]})
    expected: dict[str, list[Any]] = {}
    for name, v in logged:
        run.log(name, v)
        expected.setdefault(name, []).append(v)
    run.log_row("row", **row)
    run.complete()
    metrics = run.get_metrics()
    assert set(metrics) == set(expected) | {"row"}
    for name, vs in expected.items():
        got = metrics[name] if len(vs) > 1 else [metrics[name]]
        assert len(got) == len(vs) and all(same(a, b) for a, b in zip(got, vs)), (name, got, vs)
    assert set(metrics["row"]) == set(row)
    assert all(same(metrics["row"][k][0], v) for k, v in row.items()), (metrics["row"], row)
    properties = run.get_details()["properties"]
    assert all(same(properties[k], v) for k, v in list(row.items())[:3])


# Names of every kind a user gives: any storable text (controls, ANSI escapes, bidi overrides,
# URL and HTML syntax included); artifact names without control characters or path syntax.
RISKY = "?#%&/\\<>\"'\x1b\u202e\u200b \t\n+;=:@"
any_name = st.text(st.one_of(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)),
                             st.sampled_from(RISKY)), min_size=1, max_size=24)
file_name = st.text(st.one_of(st.characters(exclude_categories=("Cs", "Cc")), st.sampled_from("?#%&<>\"' +;=:@\u202e")),
                    min_size=1, max_size=24).filter(lambda n: "/" not in n and "\\" not in n and n not in (".", ".."))


@settings(max_examples=6, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(experiment=any_name, run_name=any_name, key=any_name, value=any_name, artifact=file_name,
       folder=file_name)
@example(experiment="a?b#c%2F..%00", run_name="\x1b[31mred\u202eevil", key="k?#&=", value="<img src=x onerror=alert(1)>",
         artifact="q?#%25 \"x\".txt", folder="d#%3F")
def test_every_kind_of_name_comes_back_exactly(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory,
                                               experiment: str, run_name: str, key: str, value: str,
                                               artifact: str, folder: str) -> None:
    """Experiment, run, tag and artifact names through the SDK, Kafka, processors and the
    API's URLs (path segments and query strings) come back as given."""
    experiment = f"{unique('names')}-{experiment}"
    exp = Experiment(workspace, experiment)
    run = exp.start_logging(name=run_name)
    run.tag(key, value)
    path = f"{folder}/{artifact}"
    data = orjson.dumps([experiment, run_name, key, value, path])
    run.upload_file(path, data)
    run.complete()
    details = run.get_details()
    assert details["experiment"] == experiment and details["name"] == run_name
    assert run.get_tags() == {key: value}
    assert run.get_file_names() == [path]
    target = run.download_file(path, tmp_path_factory.mktemp("dl") / "file")
    assert target.read_bytes() == data
    assert [r.id for r in exp.get_runs()] == [run.id]
