"""The event contract: decode, errors for each kind of bad input, the published schema."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from runstream.schemas import events, values
from runstream.schemas.limits import MAX_COLUMNS_PER_ROW, MAX_NAME_LENGTH, MAX_POINTS_PER_EVENT, MAX_STRING_VALUE_LENGTH
from tests.support import events as made

RUN = "01a21e1d-ef53-7c69-83bb-c2fcc112304b"
PUBLISHED = Path(__file__).resolve().parent.parent / "schemas" / "json" / "events.schema.json"


def event(type_: str = "metric.points", payload: Any = None, **over: Any) -> dict[str, Any]:
    payload = payload if payload is not None else {
        "series": [{"name": "loss", "steps": [0, 1], "values": [0.5, 0.25], "times": [1.0, 2.0]}]}
    return {**made.body(RUN, 0, type_, payload, event_id=RUN, ts=1.0), **over}


def test_valid_event_decodes_to_its_frozen_struct() -> None:
    e = events.decode(orjson.dumps(event()))
    assert isinstance(e, events.MetricPoints)
    assert e.payload.series[0].values == [0.5, 0.25]
    with pytest.raises(AttributeError):
        e.seq = 3  # type: ignore[misc]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_round_trip_exactly(value: float) -> None:
    body = orjson.dumps(event(payload={"series": [{"name": "x", "steps": [0], "values": [values.encode(value)],
                                                    "times": [1.0]}]}))
    decoded = events.decode(body).payload.series[0].values[0]
    got = decoded.value
    assert (math.isnan(got) and math.isnan(value)) or got == value
    assert values.decode(orjson.loads(orjson.dumps(values.encode(value)))).__repr__() == repr(value)


@pytest.mark.parametrize("raw, expected", [
    (b"\x00\xffgarbage", "not a JSON event object"),
    (b"{\"type\": \"metric.points\"", "not a JSON event object"),
    (orjson.dumps(event(type_="metric.sparkle")), "unknown event type 'metric.sparkle'"),
    (orjson.dumps(event(v=2)), "unsupported version v=2 for event type 'metric.points'; this build reads v=1"),
    (orjson.dumps(event(seq="seven")), "Expected `int`, got `str` - at `$.seq`"),
    (orjson.dumps(event(run_id="not-a-uuid")), "at `$.run_id`"),
    (orjson.dumps(event(payload={"series": [{"name": "x" * (MAX_NAME_LENGTH + 1), "steps": [0], "values": [1],
                                             "times": [1.0]}]})), "at `$.payload.series[0].name`"),
    (orjson.dumps(event(payload={"series": [{"name": "x", "steps": [0], "values": ["s" * (MAX_STRING_VALUE_LENGTH + 1)],
                                             "times": [1.0]}]})), "at `$.payload.series[0].values[0]`"),
    (orjson.dumps(event(payload={"series": [{"name": "x", "steps": [0, 1], "values": [1], "times": [1.0]}]})),
     "steps, values and times must have the same length"),
    (orjson.dumps(event(payload={"series": [{"name": "x", "steps": list(range(MAX_POINTS_PER_EVENT + 1)),
                                             "values": [1] * (MAX_POINTS_PER_EVENT + 1),
                                             "times": [1.0] * (MAX_POINTS_PER_EVENT + 1)}]})), "length <="),
    (orjson.dumps(event("metric.rows", {"name": "t", "rows": [{f"c{i}": 1 for i in range(MAX_COLUMNS_PER_ROW + 1)}]})),
     "at `$.payload.rows[0]`"),
    (orjson.dumps(event("metric.table", {"name": "t", "columns": {"a": [1, 2], "b": [1]}})), "different lengths"),
    (orjson.dumps(event(payload={"series": [{"name": "x", "steps": [0], "values": [{"f": "nan"}], "times": [1.0]}]})),
     "at `$.payload.series[0].values[0]"),
    (orjson.dumps({**event(), "extra": 1}), "unknown field `extra`"),
])
def test_each_kind_of_bad_event_is_rejected_with_a_message_naming_it(raw: bytes, expected: str) -> None:
    with pytest.raises(events.EventError) as err:
        events.decode(raw)
    assert expected in str(err.value)


def test_published_json_schema_is_the_generated_one() -> None:
    published = json.loads(PUBLISHED.read_text())
    assert published == json.loads(json.dumps(events.json_schema())), "run `runstream schema` and commit the result"


def test_published_schema_agrees_with_the_decoder_on_valid_and_invalid_events() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(PUBLISHED.read_text()))
    good = [
        event(),
        event("run.started", {"experiment": "e", "name": None, "properties": {"lr": 0.1}}),
        event("run.status", {"status": "failed", "error": "boom"}),
        event("metric.list", {"name": "fib", "start_step": 0, "values": [0, 1, {"f": "Infinity"}]}),
        event("metric.rows", {"name": "t", "rows": [{"x": 1, "y": "a"}]}),
        event("metric.table", {"name": "t", "columns": {"x": [1, 2], "y": [True, False]}}),
        event("tag.set", {"key": "k", "value": "<script>"}),
        event("tag.removed", {"key": "k"}),
        event("artifact.recorded", {"path": "outputs/m.pkl", "sha256": "a" * 64, "size": 3}),
        event("log.lines", {"stream": "stdout", "lines": ["hi"], "times": [1.0]}),
    ]
    for e in good:
        validator.validate(e)
        events.decode(orjson.dumps(e))
    for bad in [event(v=2), event(type_="nope"), event(seq=-1)]:
        assert not validator.is_valid(bad)
        with pytest.raises(events.EventError):
            events.decode(orjson.dumps(bad))
