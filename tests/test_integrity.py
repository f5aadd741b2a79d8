"""What a run recorded cannot be rewritten (issue 11, the probe's first finding).

A victim's run is logged with the SDK and completed; an attacker then sends, through the
gateway and straight onto the topic, another content for its model file, a status that
would re-open or fail it and a second ``run.started`` into another experiment. Each is
refused (409 at the gateway, dead-lettered by the processors with the rule's name) and
the run, its files and ``download_file()`` stay the victim's. Idempotent re-sends stay
harmless no-ops. The pure rules are unit-tested at the end.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from runstream import Experiment, Run, RunstreamError, Workspace
from runstream.devstack.stack import free_ports
from runstream.ingest import gateway
from runstream.processors import integrity
from runstream.settings import Settings
from tests.support import events
from tests.support.names import unique
from tests.support.waiting import wait_for

MODEL = b"the victim's weights"
EVIL = b"cos\nsystem\n(S'echo pwned'\ntR."


def victim_run(workspace: Workspace) -> Run:
    run = Experiment(workspace, unique("victim")).start_logging()
    run.log("loss", 0.5)
    run.upload_file("outputs/model.pkl", MODEL)
    run.complete()
    return run


def attacks(run_id: str, seq: int) -> dict[str, bytes]:
    """Each forged event by the rule it breaks, numbered from ``seq`` (past the run's own)."""
    evil = hashlib.sha256(EVIL).hexdigest()
    return {
        "artifact-immutable": events.event(run_id, seq, "artifact.recorded", {
            "path": "outputs/model.pkl", "sha256": evil, "size": len(EVIL)}),
        "status-final": events.event(run_id, 1, "run.status", {"status": "running"}),  # a low seq
        "status-final/failed": events.event(run_id, seq + 1, "run.status", {"status": "failed", "error": "x"}),
        "start-once": events.event(run_id, seq + 2, "run.started", {"experiment": unique("elsewhere")}),
    }


async def post(settings: Settings, *bodies: bytes) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(settings.ingest_url + "/api/v1/events", data=b"[" + b",".join(bodies) + b"]",
                                headers={"Content-Type": "application/json"}) as resp:
            return resp.status, await resp.json()


def letters(db: Any, run_id: str) -> list[str]:
    return [r[0] for r in db.execute("SELECT reason FROM dead_letters WHERE run_id = %s ORDER BY \"offset\"",
                                     (run_id,))]


def run_row(db: Any, run_id: str) -> tuple[Any, ...]:
    return db.execute("SELECT experiment, status, error, ended_at FROM runs WHERE run_id = %s", (run_id,)).fetchone()


def assert_unharmed(db: Any, run: Run, row: tuple[Any, ...], tmp_path: Path) -> None:
    assert run_row(db, run.id) == row
    assert db.execute("SELECT sha256 FROM artifacts WHERE run_id = %s AND path = 'outputs/model.pkl'",
                      (run.id,)).fetchone() == (hashlib.sha256(MODEL).hexdigest(),)
    assert run.download_file("outputs/model.pkl", tmp_path / "model.pkl").read_bytes() == MODEL
    assert db.execute("SELECT count(*) FROM events WHERE run_id = %s AND type = 'run.started'", (run.id,)).fetchone() == (1,)


async def test_the_gateway_refuses_rewrites_of_a_recorded_run(services: Settings, workspace: Workspace, db: Any,
                                                              tmp_path: Path) -> None:
    run = victim_run(workspace)
    row = run_row(db, run.id)
    assert row[1] == "completed"
    async with aiohttp.ClientSession() as session:  # the attacker's bytes are in the blob store
        async with session.put(f"{services.ingest_url}/api/v1/blobs/{hashlib.sha256(EVIL).hexdigest()}",
                               data=EVIL) as resp:
            assert resp.status in (200, 201)
    for rule, forged in attacks(run.id, 100).items():
        status, body = await post(services, forged)
        assert status == 409, (rule, body)
        (refused,) = body["error"]["events"]
        assert refused["index"] == 0 and refused["run_id"] == run.id and refused["rule"] == rule.split("/")[0]
        assert refused["message"].startswith(rule.split("/")[0]) and run.id in refused["message"]
    # A batch is all or nothing: a good tag beside a forged event is not produced either.
    status, body = await post(services, events.event(run.id, 200, "tag.set", {"key": "owner", "value": "mallory"}),
                              attacks(run.id, 201)["artifact-immutable"])
    assert status == 409 and [e["index"] for e in body["error"]["events"]] == [1]
    assert body["error"]["events"][0]["field"] == "payload.sha256"
    # Contradictions inside one batch are seen too: two starts of a new run.
    fresh = events.new_run_id()
    status, body = await post(services, events.started(fresh, unique("a")), events.started(fresh, unique("b"), seq=1))
    assert status == 409 and body["error"]["events"][0]["index"] == 1
    # The same content for a recorded path again is an idempotent no-op, accepted.
    same = events.event(run.id, 300, "artifact.recorded", {
        "path": "outputs/model.pkl", "sha256": hashlib.sha256(MODEL).hexdigest(), "size": len(MODEL)})
    assert (await post(services, same))[0] == 202
    wait_for(lambda: db.execute("SELECT last_seq FROM runs WHERE run_id = %s", (run.id,)).fetchone() == (300,),
             what="the idempotent re-record")
    assert_unharmed(db, run, row, tmp_path)
    assert letters(db, run.id) == []


async def test_rewrites_straight_onto_the_topic_are_dead_lettered(services: Settings, workspace: Workspace, db: Any,
                                                                   tmp_path: Path) -> None:
    run = victim_run(workspace)
    row = run_row(db, run.id)
    forged = attacks(run.id, 100)
    # An exact re-send of the victim's own terminal status is a duplicate, never refused.
    own_status = next(e for e in await api_events(services, run.id) if e["type"] == "run.status")
    sentinel = events.event(run.id, 400, "tag.set", {"key": "after", "value": "the attacks"})
    await events.produce(services, [(run.id, m) for m in forged.values()] + [(run.id, orjson.dumps(own_status)),
                                                                            (run.id, sentinel)])
    wait_for(lambda: db.execute("SELECT value FROM tags WHERE run_id = %s AND key = 'after'",
                                (run.id,)).fetchone() == ("the attacks",), what="the events behind the attacks")
    reasons = letters(db, run.id)
    assert [r.split(":")[0] for r in reasons] == ["artifact-immutable", "status-final", "status-final", "start-once"]
    assert all(run.id in r for r in reasons)
    assert "cannot move or reset it" in reasons[3] and "is already completed" in reasons[1]
    assert_unharmed(db, run, row, tmp_path)


async def test_a_status_before_its_start_still_counts_and_is_final(services: Settings, db: Any) -> None:
    run_id = events.new_run_id()
    exp = unique("early")
    await events.produce(services, [
        (run_id, events.event(run_id, 2, "run.status", {"status": "failed", "error": "boom"})),
        (run_id, events.event(run_id, 3, "run.status", {"status": "completed"})),  # after the terminal one: refused
        (run_id, events.started(run_id, exp)),
        (run_id, events.points(run_id, 1, "m", [0])),
    ])
    wait_for(lambda: run_row(db, run_id) is not None and db.execute(
        "SELECT count(*) FROM metric_points WHERE run_id = %s", (run_id,)).fetchone() == (1,), what="the run")
    experiment, status, error, ended = run_row(db, run_id)
    assert (experiment, status, error, ended is not None) == (exp, "failed", "boom", True)
    (reason,) = letters(db, run_id)
    assert reason.startswith("status-final: run") and "is already failed" in reason


async def test_the_gateway_ingests_when_the_database_does_not_answer(services: Settings, db: Any) -> None:
    """The early check is advisory: without a database it judges a batch only against
    itself and lets the rest through; the processors still refuse what breaks a rule."""
    (closed,) = free_ports(1)
    server = TestServer(gateway.create_app(replace(services, database_url=f"postgresql://x@127.0.0.1:{closed}/x")))
    await server.start_server()
    run_id, exp = events.new_run_id(), unique("no-db")
    try:
        no_db = replace(services, ingest_url=str(server.make_url("")).rstrip("/"))
        status, body = await post(no_db, events.started(run_id, exp), events.started(run_id, unique("b"), seq=1))
        assert status == 409 and body["error"]["events"][0]["rule"] == "start-once"
        assert (await post(no_db, events.started(run_id, exp)))[0] == 202
        assert (await post(no_db, events.started(run_id, unique("b"), seq=1)))[0] == 202  # unseen here...
    finally:
        await server.close()
    (reason,) = wait_for(lambda: letters(db, run_id), what="the processors to refuse the second start")
    assert reason.startswith("start-once") and run_row(db, run_id)[0] == exp  # ...but not by the processors


def test_the_sdk_keeps_to_the_rules_before_sending(workspace: Workspace, db: Any) -> None:
    """Azure ML's behaviour: a run's file names are taken once; a terminal status is final.
    The mistakes raise in the caller, and nothing is sent that the server would refuse."""
    with Experiment(workspace, unique("sdk-rules")).start_logging() as run:
        run.upload_file("outputs/model.pkl", MODEL)
        run.upload_file("outputs/model.pkl", MODEL)  # the same content: a no-op
        with pytest.raises(RunstreamError, match="files are immutable: upload the new content under another name"):
            run.upload_file("outputs/model.pkl", EVIL)
        run.complete()
        run.complete()  # the same status: a no-op
        with pytest.raises(RunstreamError, match="is already completed; a terminal status is final"):
            run.fail("too late")
    # Leaving the block did not send another status either.
    types = [t for (t,) in db.execute("SELECT type FROM events WHERE run_id = %s ORDER BY seq", (run.id,))]
    assert types == ["run.started", "artifact.recorded", "run.status"]
    assert letters(db, run.id) == []


async def api_events(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{settings.api_url}/api/runs/{run_id}/events") as resp:
            assert resp.status == 200
            return (await resp.json())["events"]


# ---- the rules alone --------------------------------------------------------------------

RUN = "0190f2c4-6b1e-7c3a-9d4e-5f6a7b8c9d0e"


def test_judge_applies_each_rule_in_arrival_order() -> None:
    sha_a, sha_b = "a" * 64, "b" * 64
    batch = [
        events.decoded(RUN, 0, "run.started", {"experiment": "e"}),
        events.decoded(RUN, 1, "artifact.recorded", {"path": "p", "sha256": sha_a, "size": 1}),
        events.decoded(RUN, 2, "artifact.recorded", {"path": "p", "sha256": sha_a, "size": 1}),  # same: fine
        events.decoded(RUN, 3, "artifact.recorded", {"path": "p", "sha256": sha_b, "size": 1}),
        events.decoded(RUN, 4, "run.status", {"status": "running"}),  # before the terminal one: fine
        events.decoded(RUN, 5, "run.status", {"status": "canceled"}),
        events.decoded(RUN, 6, "run.status", {"status": "completed"}),
        events.decoded(RUN, 7, "run.status", {"status": "canceled", "error": "again"}),  # the same: a no-op
        events.decoded(RUN, 8, "run.started", {"experiment": "e"}),  # even the same experiment
    ]
    refused = integrity.judge(batch, {}, set())
    assert [(r.index, r.rule, r.field) for r in refused] == [
        (3, "artifact-immutable", "payload.sha256"), (6, "status-final", "payload.status"), (8, "start-once", "type")]


@pytest.mark.parametrize("seq", [0, 1])
def test_judge_lets_re_sends_through(seq: int) -> None:
    """An archived (run, seq), or an identical copy earlier in the batch, is a duplicate."""
    start = events.decoded(RUN, seq, "run.started", {"experiment": "e"})
    facts = {RUN: integrity.RunFacts(experiment="e", terminal="completed")}
    assert integrity.judge([start, start], facts, {(RUN, seq)}) == []
    assert integrity.judge([start, start], {}, set()) == []
