"""Run management (rename, tags, note, delete, restore) from the SDK and the API, params
from the SDK, and the seqs of events the query API writes for runs an SDK numbers.

Real services; two query API processes (the stack's and one in this process) write for
the same still-running SDK run at once to show that their seqs never collide with each
other nor with the SDK's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from runstream import Experiment, Workspace
from runstream.errors import RunstreamError
from runstream.processors.replay import rebuild
from runstream.schemas.events import SERVER_SEQ_BASE
from runstream.settings import Settings
from tests.support.names import unique


async def get(session: aiohttp.ClientSession, url: str, **params: Any) -> Any:
    async with session.get(url, params={k: str(v) for k, v in params.items()}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def events_of(session: aiohttp.ClientSession, base: str, run_id: str) -> list[dict[str, Any]]:
    out, after = [], -1
    while True:
        page = await get(session, f"{base}/api/runs/{run_id}/events", after_seq=after, limit=1000)
        out += page["events"]
        if page["next_after_seq"] is None:
            return out
        after = page["next_after_seq"]


async def test_sdk_rename_note_tags_params_delete_restore(workspace: Workspace, services: Settings,
                                                          session: aiohttp.ClientSession) -> None:
    name = unique("manage")
    run = Experiment(workspace, name).start_logging(name="before")
    run.log("loss", 1.0)
    run.log_params({"alpha": 0.5, "solver": "svd"})
    run.log_params({"alpha": "0.5"})  # the same value again: nothing to log
    with pytest.raises(ValueError, match="params are immutable"):
        run.log_params({"alpha": 0.6})
    run.display_name = "after"
    run.description = "a note on this run"
    run.log("loss", 0.5)  # the SDK keeps numbering after the server's events
    run.complete()
    detail = run.get_details()
    assert detail["name"] == "after" and run.display_name == "after"
    assert run.description == "a note on this run" and detail["tags"]["mlflow.note.content"] == "a note on this run"
    assert run.get_params() == {"alpha": "0.5", "solver": "svd"}
    assert detail["dead_letters"] == 0
    base = services.api_url
    listing = await get(session, f"{base}/api/experiments/{name}/runs")
    assert [r["run_id"] for r in listing["runs"]] == [run.id] and listing["runs"][0]["params"]["alpha"] == "0.5"
    other = Experiment(workspace, name).start_logging(name="other")
    other.log_params({"alpha": 0.25})
    other.complete()
    for order, expected in (("asc", [other.id, run.id]), ("desc", [run.id, other.id])):
        page = await get(session, f"{base}/api/experiments/{name}/runs", order_by="param:alpha", order=order)
        assert [r["run_id"] for r in page["runs"]] == expected
    other.delete()

    run.delete()
    assert run.get_details()["deleted"] is True
    assert (await get(session, f"{base}/api/experiments/{name}/runs"))["runs"] == []
    assert (await get(session, f"{base}/api/runs", experiments=name, filter="params.alpha = '0.5'"))["runs"] == []
    shown = await get(session, f"{base}/api/experiments/{name}/runs", deleted="true")
    assert [r["deleted"] for r in shown["runs"]] == [True, True]
    assert len((await get(session, f"{base}/api/experiments/{name}/runs", deleted="only"))["runs"]) == 2
    run.restore()
    assert [r["run_id"] for r in (await get(session, f"{base}/api/experiments/{name}/runs"))["runs"]] == [run.id]

    # Every change is an event: the SDK's numbering stays gap-free, the server's is apart.
    events = await events_of(session, base, run.id)
    own = [e["seq"] for e in events if e["seq"] < SERVER_SEQ_BASE]
    server = [(e["seq"], e["type"]) for e in events if e["seq"] >= SERVER_SEQ_BASE]
    assert own == list(range(len(own)))
    assert [t for _, t in server] == ["run.renamed", "tag.set", "run.deleted", "run.restored"]
    assert [s for s, _ in server] == list(range(SERVER_SEQ_BASE, SERVER_SEQ_BASE + 4))

    # As of the first loss point the run had its old name; as of the rename, the new one.
    first_loss = next(e["seq"] for e in events if e["type"] == "metric.points")
    old = await get(session, f"{base}/api/runs/{run.id}", as_of_seq=first_loss)
    assert old["name"] == "before" and "mlflow.note.content" not in old["tags"]
    renamed = await get(session, f"{base}/api/runs/{run.id}", as_of_seq=server[0][0])
    assert renamed["name"] == "after"
    deleted = await get(session, f"{base}/api/runs/{run.id}", as_of_seq=server[2][0])
    assert deleted["deleted"] is True and deleted["tags"]["mlflow.note.content"] == "a note on this run"

    # A replay rebuilds the same state from the archive.
    await rebuild(services.database_url)
    again = await get(session, f"{base}/api/runs/{run.id}")
    assert (again["name"], again["deleted"], again["params"], again["last_seq"]) == (
        "after", False, {"alpha": "0.5", "solver": "svd"}, detail["last_seq"])
    assert again["tags"]["mlflow.note.content"] == "a note on this run"


async def test_two_api_processes_write_for_a_running_sdk_run(workspace: Workspace, services: Settings,
                                                             local_api: TestServer,
                                                             session: aiohttp.ClientSession) -> None:
    """The collision case: the SDK logs while two query API processes write tags for the same
    run at once; every event is archived under its own seq, none is a conflict."""
    run = Experiment(workspace, unique("manage-collide")).start_logging(name="busy")
    run.log("x", 0)
    run.flush()
    bases = [services.api_url, str(local_api.make_url("")).rstrip("/")]

    async def patch(i: int) -> int:
        url = f"{bases[i % 2]}/api/runs/{run.id}"
        async with session.patch(url, json={"tags": {f"k{i}": str(i)}}) as resp:
            return resp.status

    writes = asyncio.gather(*(patch(i) for i in range(16)))
    for step in range(1, 200):
        run.log("x", step)
    assert await writes == [200] * 16
    run.complete()
    detail = await get(session, f"{services.api_url}/api/runs/{run.id}")
    assert {f"k{i}": str(i) for i in range(16)}.items() <= detail["tags"].items()
    assert detail["dead_letters"] == 0 and detail["metrics"]["x"]["count"] == 200
    events = await events_of(session, services.api_url, run.id)
    seqs = [e["seq"] for e in events]
    own = [s for s in seqs if s < SERVER_SEQ_BASE]
    assert own == list(range(len(own))) and own[-1] == detail["last_seq"]
    assert sorted(s for s in seqs if s >= SERVER_SEQ_BASE) == list(range(SERVER_SEQ_BASE, SERVER_SEQ_BASE + 16))


async def test_management_bad_input(workspace: Workspace, services: Settings, session: aiohttp.ClientSession) -> None:
    run = Experiment(workspace, unique("manage-bad")).start_logging()
    run.complete()
    base = f"{services.api_url}/api/runs/{run.id}"
    cases = [
        (b"not json", 400, "body is not JSON"),
        (b"{}", 400, 'any of "name", "tags", "note"'),
        (b'{"colour": "red"}', 400, "unknown field(s) colour"),
        (b'{"name": 3}', 400, "invalid name=3"),
        (b'{"tags": {"k": 1}}', 400, "invalid value of tag 'k'"),
        (b'{"tags": ["k"]}', 400, "invalid tags="),
        (b'{"name": "' + b"n" * 300 + b'"}', 400, "run.renamed"),
    ]
    for body, status, message in cases:
        async with session.patch(base, data=body) as resp:
            assert resp.status == status, body
            assert message in (await resp.json())["error"]["message"]
    async with session.post(f"{services.api_url}/api/runs/00000000-0000-0000-0000-000000000000/delete") as resp:
        assert resp.status == 404
    async with session.post(f"{services.api_url}/api/runs/not-a-uuid/restore") as resp:
        assert resp.status == 400
    with pytest.raises(RunstreamError, match="run.renamed"):
        run.set_name("n" * 300)
