"""Every name and value the SDK or the gateway accepts is one the database stores exactly.

What happens to each kind of unstorable input: at the SDK the call raises a LimitError
naming the argument, the run and its sender carry on and the values logged around it are
stored; at the gateway the batch gets a 422 naming the event's index and JSON path, and
nothing of it is produced. ints within int64 come back exactly, everywhere they are read.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest

from runstream import Experiment, LimitError, Workspace
from runstream.settings import Settings
from tests.support import events
from tests.support.names import unique
from tests.support.waiting import wait_for

EXTREMES = [2**63 - 1, -(2**63), 2**53 + 1, -(2**53 + 1), 2**62 + 3, 0, -1]
"""ints float64 cannot hold (and two it can), each a boundary of int64 or of float64's ints."""


def api(settings: Settings, path: str, **params: Any) -> Any:
    """GET an API path; orjson reads every int64 exactly (as the SDK does)."""
    query = f"?{urllib.parse.urlencode(params, doseq=True)}" if params else ""
    with urllib.request.urlopen(f"{settings.api_url}/api{path}{query}", timeout=30) as resp:
        return orjson.loads(resp.read())


SDK_CASES: list[tuple[str, Callable[[Any], Any], str]] = [
    ("NUL in a metric name", lambda r: r.log("lo\x00ss", 1.0), "name 'lo\\x00ss' contains a NUL character"),
    ("lone surrogate in a metric name", lambda r: r.log("a\ud800", 1.0), "contains a lone surrogate '\\ud800'"),
    ("lone surrogate in a str value", lambda r: r.log("s", "x\udfff"), "value contains a lone surrogate"),
    ("NUL in a str value", lambda r: r.log("s", "a\x00b"), "value contains a NUL character"),
    ("int 2**63", lambda r: r.log("i", 2**63), "run.log('i'): value is the int 9223372036854775808, outside the 64-bit range"),
    ("int 2**64", lambda r: r.log("i", 2**64), "outside the 64-bit range"),
    ("int -2**63-1", lambda r: r.log("i", -(2**63) - 1), "outside the 64-bit range"),
    ("numpy uint64 max", lambda r: r.log("i", np.uint64(2**64 - 1)), "int 18446744073709551615, outside"),
    ("int beyond int64 in a list", lambda r: r.log_list("l", [1, 2**64]), "l[1] is the int 18446744073709551616"),
    ("surrogate in a list", lambda r: r.log_list("l", ["ok", "\ud800"]), "l[1] contains a lone surrogate"),
    ("int beyond int64 in a row cell", lambda r: r.log_row("t", a=1, b=2**64), "row 't' column 'b' is the int"),
    ("NUL in a row column name", lambda r: r.log_row("t", **{"a\x00": 1}), "row 't' column name 'a\\x00' contains a NUL"),
    ("int beyond int64 in a table cell", lambda r: r.log_table("tab", {"a": [1, -(2**63) - 1]}),
     "table 'tab' column 'a' is the int -9223372036854775809"),
    ("NUL in a table column name", lambda r: r.log_table("tab", {"\x00": [1]}), "column name '\\x00' contains a NUL"),
    ("NUL in a table name", lambda r: r.log_table("t\x00", {"a": [1]}), "name 't\\x00' contains a NUL"),
    ("NUL in a tag key", lambda r: r.tag("k\x00", "v"), "tag key 'k\\x00' contains a NUL"),
    ("NUL in a tag value", lambda r: r.tag("k", "v\x00"), "tag 'k' value contains a NUL"),
    ("surrogate in a tag value", lambda r: r.tag("k", "\udc80"), "tag 'k' value contains a lone surrogate"),
    ("NUL in a description", lambda r: r.log("d", 1.0, description="x\x00"), "description contains a NUL"),
    ("surrogate in a list description", lambda r: r.log_list("l", [1], description="\ud800"),
     "description contains a lone surrogate"),
    ("NUL in a row description", lambda r: r.log_row("t", "\x00", a=1), "description contains a NUL"),
    ("LF in an artifact path", lambda r: r.upload_file("a\nb.txt", b"x"), "file name 'a\\nb.txt' contains a control character"),
    ("CR in an artifact path", lambda r: r.upload_file("a\rb.txt", b"x"), "contains a control character '\\r'"),
    ("NUL in an artifact path", lambda r: r.upload_file("a\x00", b"x"), "contains a NUL character"),
    ("surrogate in an artifact path", lambda r: r.upload_file("\ud800.txt", b"x"), "contains a lone surrogate"),
    ("int beyond int64 as a property", lambda r: r.child_run("c", big=2**64), "property 'big' is the int"),
    ("surrogate in a property name", lambda r: r.child_run("c", **{"p\ud800": 1}), "property name 'p\\ud800' contains"),
    ("NUL in a property value", lambda r: r.child_run("c", p="\x00"), "property 'p' contains a NUL"),
    ("NUL in a child run's name", lambda r: r.child_run("c\x00"), "run name 'c\\x00' contains a NUL"),
    ("NUL in an experiment name", lambda r: Experiment(r.experiment.workspace, "e\x00"),
     "experiment name 'e\\x00' contains a NUL"),
]


def test_sdk_rejects_each_unstorable_value_at_the_call_and_keeps_the_rest(workspace: Workspace) -> None:
    exp = Experiment(workspace, unique("unstorable"))
    with pytest.raises(LimitError, match=r"property 'seed' is the int 18446744073709551616"):
        exp.start_logging(seed=2**64)
    with pytest.raises(LimitError, match=r"run name 'r\\x00' contains a NUL"):
        exp.start_logging(name="r\x00")
    run = exp.start_logging(name="kept", seed=np.int64(2**63 - 1))
    for i, (label, call, message) in enumerate(SDK_CASES):
        run.log("kept", float(i))  # a good value before each bad one...
        with pytest.raises(LimitError) as err:
            call(run)
        assert message in str(err.value), f"{label}: {err.value}"
    run.log("kept", -1.0)  # ...and after the last: the sender is alive
    run.log_row("t", a=1, b=2)
    run.tag("k", "v")
    run.complete()
    metrics = run.get_metrics()
    assert metrics == {"kept": [float(i) for i in range(len(SDK_CASES))] + [-1.0], "t": {"a": [1], "b": [2]}}
    detail = run.get_details()
    assert detail["tags"] == {"k": "v"} and detail["status"] == "completed"
    assert detail["properties"] == {"seed": 2**63 - 1} and detail["children"] == []


def test_a_failed_runs_error_text_is_made_storable(workspace: Workspace) -> None:
    run = Experiment(workspace, unique("fail-text")).start_logging()
    run.fail("bad byte \x00 and \ud800 in the traceback")
    assert run.get_details()["error"] == "bad byte \ufffd and \ufffd in the traceback"


def _envelope(run_id: str, seq: int, type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": type_, "v": 1, "event_id": str(uuid.uuid4()), "run_id": run_id, "seq": seq,
            "ts": 1_800_000_000.0, "payload": payload}


def _series(name: str, value: Any) -> dict[str, Any]:
    return {"series": [{"name": name, "steps": [0, 1], "values": [1.0, value], "times": [1.0, 1.0]}]}


# (what, type, payload, field named in the 422) — encoded with the stdlib's json, which
# writes ints of any size and escapes lone surrogates as \udxxx (orjson refuses both).
GATEWAY_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("int 2**64 in a metric value", "metric.points", _series("x", 2**64), "$.payload.series[0].values[1]"),
    ("int 2**63 in a metric value", "metric.points", _series("x", 2**63), "$.payload.series[0].values[1]"),
    ("int -2**63-1 in a list value", "metric.list", {"name": "l", "start_step": 0, "values": [-(2**63) - 1]},
     "$.payload.values[0]"),
    ("NUL in a metric name", "metric.points", _series("a\x00", 1.0), "$.payload.series[0].name"),
    ("NUL in a str value", "metric.points", _series("x", "a\x00"), "$.payload.series[0].values[1]"),
    ("lone surrogate in a metric name", "metric.points", _series("\ud800", 1.0), "$.payload.series[0].name"),
    ("lone surrogate in a str value", "metric.points", _series("x", "\udc00"), "$.payload.series[0].values[1]"),
    ("int 2**64 in a run property", "run.started", {"experiment": "e", "properties": {"p": 2**64}},
     "$.payload.properties"),
    ("NUL in a property name", "run.started", {"experiment": "e", "properties": {"p\x00": 1}}, "$.payload.properties"),
    ("NUL in an experiment name", "run.started", {"experiment": "e\x00"}, "$.payload.experiment"),
    ("int 2**64 in a table cell", "metric.table", {"name": "t", "columns": {"a": [2**64]}}, "$.payload.columns"),
    ("NUL in a row column name", "metric.rows", {"name": "t", "rows": [{"a\x00": 1}]}, "$.payload.rows[0]"),
    ("NUL in a tag value", "tag.set", {"key": "k", "value": "v\x00"}, "$.payload.value"),
    ("NUL in a tag key", "tag.set", {"key": "k\x00", "value": "v"}, "$.payload.key"),
    ("NUL in a log line", "log.lines", {"stream": "stdout", "lines": ["a\x00"], "times": [1.0]},
     "$.payload.lines[0]"),
    ("LF in an artifact path", "artifact.recorded", {"path": "a\nb", "sha256": "0" * 64, "size": 1},
     "$.payload.path"),
]


async def post(settings: Settings, body: bytes) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(settings.ingest_url + "/api/v1/events", data=body,
                                headers={"Content-Type": "application/json"}) as resp:
            return resp.status, await resp.json()


@pytest.mark.parametrize(("what", "type_", "payload", "field"), GATEWAY_CASES, ids=[c[0] for c in GATEWAY_CASES])
async def test_gateway_answers_422_naming_index_and_field(
        services: Settings, what: str, type_: str, payload: dict[str, Any], field: str) -> None:
    import json

    run_id = events.new_run_id()
    batch = [_envelope(run_id, 0, "run.started", {"experiment": "e"}), _envelope(run_id, 1, type_, payload)]
    status, body = await post(services, json.dumps(batch).encode())
    assert status == 422, (what, body)
    (bad,) = body["error"]["events"]
    assert bad["index"] == 1 and field in bad["message"], (what, bad)
    assert "none were accepted" in body["error"]["message"]


async def test_gateway_refuses_a_seq_beyond_int64_and_invalid_utf8(services: Settings, db: Any) -> None:
    run_id = events.new_run_id()
    good = events.started(run_id, unique("gw-values"))
    status, body = await post(services, b"[" + good + b"," + events.points(run_id, 2**63, "x", [0]) + b"]")
    assert status == 422 and "Expected `int` <= 9223372036854775807 - at `$.seq`" in body["error"]["events"][0]["message"]
    bad_utf8 = events.points(run_id, 1, "NAME", [0]).replace(b"NAME", b"N\xffME")
    status, body = await post(services, b"[" + good + b"," + bad_utf8 + b"]")
    assert status == 422, body
    assert body["error"]["events"] == [{"index": 1, "message": "not valid UTF-8: byte 0xff in $.payload.series[0].name"}]
    status, body = await post(services, b"[\xff]")
    assert status == 400 and "request body must be a JSON array of events" in body["error"]["message"]
    # Nothing of the rejected batches was produced: a later marker is the run's only event.
    assert (await post(services, b"[" + events.event(run_id, 9, "tag.set", {"key": "k", "value": "v"}) + b"]"))[0] == 202
    wait_for(lambda: db.execute("SELECT 1 FROM events WHERE run_id = %s AND seq = 9", (run_id,)).fetchone(),
             what="the marker event")
    assert [r[0] for r in db.execute("SELECT seq FROM events WHERE run_id = %s", (run_id,))] == [9]


def test_int64_extremes_round_trip_exactly(workspace: Workspace) -> None:
    settings = workspace.settings
    numpy_ints = [np.int64(2**63 - 1), np.int64(-(2**63)), np.uint64(2**63 - 1), np.int32(-(2**31))]
    exp = Experiment(workspace, unique("int64"))
    run = exp.start_logging(top=2**63 - 1, bottom=np.int64(-(2**63)), odd=2**53 + 1)
    for v in EXTREMES + numpy_ints:
        run.log("vec", v)
    run.log("last", 2**63 - 1)
    run.log("last_np", np.uint64(2**63 - 1))
    long_list = [2**63 - 1 - i for i in range(100)]  # long enough for the processors' columnar path
    run.log_list("long", long_list)
    run.log_row("rows", a=2**63 - 1, b=-(2**63))
    run.log_table("tab", {"x": EXTREMES})
    run.complete()
    expected_vec = EXTREMES + [int(v) for v in numpy_ints]

    m = run.get_metrics()
    assert m["vec"] == expected_vec and all(type(v) is int for v in m["vec"])
    assert m["last"] == 2**63 - 1 and m["last_np"] == 2**63 - 1
    assert m["long"] == long_list
    assert m["rows"] == {"a": [2**63 - 1], "b": [-(2**63)]}
    assert m["tab"] == {"x": EXTREMES}

    assert api(settings, f"/runs/{run.id}/metrics/vec")["values"] == expected_vec
    assert api(settings, f"/runs/{run.id}/metrics/long", max_points=10)["values"][-1] == long_list[-1]
    assert api(settings, f"/runs/{run.id}/tables/tab")["columns"] == {"x": EXTREMES}
    detail = run.get_details()
    assert detail["properties"] == {"top": 2**63 - 1, "bottom": -(2**63), "odd": 2**53 + 1}
    assert detail["metrics"]["last"]["last"] == 2**63 - 1 and detail["metrics"]["vec"]["last"] == -(2**31)
    assert detail["metrics"]["long"]["last"] == long_list[-1]
    compared = api(settings, "/compare", run=run.id, metric=["last", "vec"], vectors="true")["runs"][0]
    assert compared["metrics"]["last"]["last"] == 2**63 - 1 and compared["vectors"]["vec"]["values"] == expected_vec
    listed = api(settings, f"/experiments/{exp.name}/runs")["runs"][0]
    assert listed["metrics"]["last"]["last"] == 2**63 - 1
    # As of an event: the fold of the archive (processors.materialize) gives the same.
    as_of = api(settings, f"/runs/{run.id}/metrics", as_of_seq=detail["last_seq"])["metrics"]
    assert as_of["vec"] == expected_vec and as_of["long"] == long_list and as_of["tab"] == {"x": EXTREMES}
    assert api(settings, f"/runs/{run.id}", as_of_seq=detail["last_seq"])["metrics"]["last"]["last"] == 2**63 - 1


def test_reads_survive_a_legacy_int_beyond_int64(workspace: Workspace, db: Any) -> None:
    """A kind-1 double of 2**64 (what an older build stored for numpy's uint64 maximum)
    reads back as that double instead of breaking the run's reads with a 500."""
    settings = workspace.settings
    exp = Experiment(workspace, unique("legacy"))
    run = exp.start_logging()
    run.log("big", 1)
    run.log("big", 2)
    run.complete()
    # Materialized (read from the database, so that no API response is cached before the edit).
    wait_for(lambda: db.execute("SELECT status FROM runs WHERE run_id = %s", (run.id,)).fetchone() == ("completed",),
             what="the run materialized")
    db.execute("UPDATE metric_points SET value = 1.8446744073709552e19 WHERE run_id = %s AND step = 1", (run.id,))
    db.execute("UPDATE metric_summaries SET last_value = 1.8446744073709552e19 WHERE run_id = %s", (run.id,))
    assert api(settings, f"/runs/{run.id}/metrics", name="big")["big"] == [1, 2.0**64]
    assert api(settings, f"/runs/{run.id}/metrics/big")["values"] == [1, 2.0**64]
    assert api(settings, f"/experiments/{exp.name}/runs")["runs"][0]["metrics"]["big"]["last"] == 2.0**64


def test_large_floats_stay_floats_in_tables_and_properties(workspace: Workspace) -> None:
    """jsonb keeps numbers as numeric: 1e16 written as "1e+16" would come back as the int
    10000000000000000; the processors write such floats with their exact decimal and ".0"."""
    floats = [1e16, -1e22, 2.0**60, 1.7976931348623157e308, 123.5, 1e-7]
    run = Experiment(workspace, unique("floats")).start_logging(big=1e16, small=0.5)
    run.log_table("tab", {"x": floats})
    run.log_row("row", y=1e20)
    run.complete()
    m = run.get_metrics()
    assert m["tab"] == {"x": floats} and all(type(v) is float for v in m["tab"]["x"])
    assert m["row"] == {"y": [1e20]} and type(m["row"]["y"][0]) is float
    properties = run.get_details()["properties"]
    assert properties == {"big": 1e16, "small": 0.5} and type(properties["big"]) is float
