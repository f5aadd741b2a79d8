"""What happens to each kind of bad input. In every case the error names what was wrong,
and nothing that was already accepted is lost."""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from runstream import Experiment, LimitError, Workspace
from runstream.schemas import limits
from runstream.settings import Settings
from tests.support import events
from tests.support.names import unique
from tests.support.waiting import wait_for


async def post(settings: Settings, body: bytes) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(settings.ingest_url + "/api/v1/events", data=body,
                                headers={"Content-Type": "application/json"}) as resp:
            return resp.status, await resp.json()


def seqs(db: Any, run_id: str) -> list[int]:
    return [r[0] for r in db.execute("SELECT seq FROM events WHERE run_id = %s ORDER BY seq", (run_id,))]


async def test_gateway_rejects_malformed_json_with_400(services: Settings) -> None:
    status, body = await post(services, b'[{"type": "run.started", ')
    assert status == 400
    assert "request body must be a JSON array of events" in body["error"]["message"]
    status, body = await post(services, b'{"not": "an array"}')
    assert status == 400


async def test_gateway_rejects_a_batch_with_one_bad_event_whole_and_names_the_field(services: Settings, db: Any) -> None:
    run_id = events.new_run_id()
    good = events.started(run_id, unique("gw"))
    wrong_type = events.event(run_id, 1, "metric.points", {"series": [
        {"name": "loss", "steps": ["one"], "values": [1.0], "times": [1.0]}]})
    status, body = await post(services, b"[" + good + b"," + wrong_type + b"]")
    assert status == 422
    assert "1 of 2 events are invalid; none were accepted" in body["error"]["message"]
    (bad,) = body["error"]["events"]
    assert bad["index"] == 1 and "$.payload.series[0].steps[0]" in bad["message"]

    # A later valid event of the same run (same partition, so after anything produced
    # before it) lands; the valid half of the rejected batch never does.
    marker = events.event(run_id, 5, "tag.set", {"key": "k", "value": "v"})
    assert (await post(services, b"[" + marker + b"]"))[0] == 202
    wait_for(lambda: seqs(db, run_id), what="the marker event")
    assert seqs(db, run_id) == [5]


async def test_gateway_rejects_unknown_event_version_and_oversize_names(services: Settings) -> None:
    run_id = events.new_run_id()
    future = events.started(run_id, "e").replace(b'"v":1', b'"v":7')
    status, body = await post(services, b"[" + future + b"]")
    assert status == 422
    assert "unsupported version v=7 for event type 'run.started'; this build reads v=1" in body["error"]["events"][0]["message"]
    long_name = events.points(run_id, 1, "n" * (limits.MAX_NAME_LENGTH + 1), [0])
    status, body = await post(services, b"[" + long_name + b"]")
    assert status == 422 and "$.payload.series[0].name" in body["error"]["events"][0]["message"]


async def test_garbage_bytes_on_the_topic_are_dead_lettered_and_the_partition_keeps_flowing(
        services: Settings, db: Any) -> None:
    run_id = events.new_run_id()
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap)
    await producer.start()
    try:
        key = run_id.encode()
        garbage = await producer.send_and_wait(services.topic, b"\x00\x9f not json", key=key)
        future = await producer.send_and_wait(services.topic, events.started(run_id, "e").replace(b'"v":1', b'"v":2'), key=key)
        nul = await producer.send_and_wait(services.topic, events.event(run_id, 0, "run.started", {"experiment": "nul\x00"}), key=key)
        await producer.send_and_wait(services.topic, events.started(run_id, unique("after-garbage"), seq=1), key=key)
    finally:
        await producer.stop()
    wait_for(lambda: seqs(db, run_id) == [1], what="the valid event after the garbage")
    rows = db.execute('SELECT partition, "offset", raw, reason FROM dead_letters WHERE topic = %s AND partition = %s '
                      'AND "offset" = ANY(%s) ORDER BY "offset"',
                      (services.topic, garbage.partition, [garbage.offset, future.offset, nul.offset])).fetchall()
    assert [r[1] for r in rows] == [garbage.offset, future.offset, nul.offset]
    assert bytes(rows[0][2]) == b"\x00\x9f not json" and "not a JSON event object" in rows[0][3]
    assert "unsupported version v=2" in rows[1][3]
    assert "without NUL or lone surrogates" in rows[2][3] and "$.payload.experiment" in rows[2][3]  # the schema refuses it


def test_sdk_limits_raise_clear_errors_and_keep_what_was_logged(workspace: Workspace) -> None:
    run = Experiment(workspace, unique("limits")).start_logging()
    run.log("kept", 1.0)
    cases = [
        (lambda: run.log("n" * (limits.MAX_NAME_LENGTH + 1), 1), "MAX_NAME_LENGTH=255"),
        (lambda: run.log("", 1), "must not be empty"),
        (lambda: run.log(3, 1), "name must be a str, not int"),  # type: ignore[arg-type]
        (lambda: run.log("s", "x" * (limits.MAX_STRING_VALUE_LENGTH + 1)), "MAX_STRING_VALUE_LENGTH=4096"),
        (lambda: run.log("s", "a\x00b"), "NUL character"),
        (lambda: run.log("obj", object()), "must be a float, int, bool or str, not object"),
        (lambda: run.log("s", [1, 2]), "not list"),
        (lambda: run.log("s", 1, step=-1), "step must be an int"),
        (lambda: run.log_row("r", **{f"c{i}": i for i in range(limits.MAX_COLUMNS_PER_ROW + 1)}), "MAX_COLUMNS_PER_ROW=1000"),
        (lambda: run.log_row("r"), "needs at least one column"),
        (lambda: run.log_table("t", {"a": [1, 2], "b": [1]}), "different lengths"),
        (lambda: run.tag("k" * (limits.MAX_TAG_KEY_LENGTH + 1), "v"), "MAX_TAG_KEY_LENGTH=255"),
        (lambda: run.upload_file("../escape.txt", b"x"), "must be a relative path"),
        (lambda: run.upload_file("/abs.txt", b"x"), "must be a relative path"),
    ]
    for call, message in cases:
        with pytest.raises(LimitError) as err:
            call()
        assert message in str(err.value)
    run.log("kept", math.inf)
    assert run.get_metrics() == {"kept": [1.0, math.inf]}
    run.complete()
