"""The audit trail (issue 11, item 7): every event records the principal that wrote it.

The gateway stamps the request's principal (its token id, never the secret) into each
event's envelope, overwriting whatever the body said; the archive keeps it; the API's
``/events`` and ``/history`` show it. The gateway runs here with authentication on and a
real token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestServer

from runstream.ingest import gateway
from runstream.query_api import history, tokens
from runstream.schemas import events as contract
from runstream.settings import Settings
from tests.support import events
from tests.support.names import unique
from tests.support.waiting import wait_for


@dataclass(frozen=True)
class Gateway:
    """The real gateway app in this process and the credentials its requests carry."""

    server: TestServer
    headers: dict[str, str]
    token_id: str | None


@pytest.fixture()
async def gateway_as(services: Settings) -> AsyncIterator[Callable[[str | None], Awaitable[Gateway]]]:
    """The real gateway with authentication on, every request carrying a new write token
    of the default workspace (``None``: the gateway with authentication off, on loopback)."""
    servers: list[TestServer] = []
    conn = await asyncpg.connect(services.database_url)

    async def start(name: str | None) -> Gateway:
        headers: dict[str, str] = {"Content-Type": "application/json"}
        token_id = None
        if name is not None:
            token, row = await tokens.create(conn, "default", "write", name=name)
            headers["Authorization"] = f"Bearer {token}"
            token_id = row["token_id"]
        server = TestServer(gateway.create_app(replace(services, auth="on" if name else "off")))
        await server.start_server()
        servers.append(server)
        return Gateway(server, headers, token_id)

    yield start
    for server in servers:
        await server.close()
    await conn.close()


async def post(session: Any, gw: Gateway, *bodies: bytes) -> None:
    async with session.post(str(gw.server.make_url("/api/v1/events")), data=b"[" + b",".join(bodies) + b"]",
                            headers=gw.headers) as resp:
        assert resp.status == 202, await resp.text()


async def test_the_gateway_stamps_the_principal_over_a_forged_one(services: Settings, db: Any, session: Any,
                                                                  gateway_as: Any) -> None:
    gw = await gateway_as("alice")
    alice = gw.token_id
    run_id = events.new_run_id()
    await post(session, gw,
               events.event(run_id, 0, "run.started", {"experiment": unique("audit")}, principal="tok_mallory"),
               events.event(run_id, 1, "tag.set", {"key": "owner", "value": "<b>alice</b>"}),
               events.event(run_id, 2, "run.status", {"status": "completed"}, principal=None))
    wait_for(lambda: db.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,)).fetchone() == ("completed",),
             what="the run")
    # The archive keeps the stamped bytes.
    stamped = [orjson.loads(bytes(b))["principal"] for (b,) in db.execute(
        "SELECT body FROM events WHERE run_id = %s ORDER BY seq", (run_id,))]
    assert stamped == [alice] * 3
    async with session.get(f"{services.api_url}/api/runs/{run_id}/events") as resp:
        assert [e["principal"] for e in (await resp.json())["events"]] == [alice] * 3
    async with session.get(f"{services.api_url}/api/runs/{run_id}/history") as resp:
        entries = (await resp.json())["entries"]
    assert [(e["seq"], e["type"], e["principal"]) for e in entries] == [
        (0, "run.started", alice), (1, "tag.set", alice), (2, "run.status", alice)]
    assert entries[1]["summary"] == "tag 'owner' = '<b>alice</b>'" and entries[2]["summary"] == "status completed"
    async with session.get(f"{services.api_url}/api/runs/{run_id}/history?type=run.status,tag.set&limit=1") as resp:
        page = await resp.json()
    assert [e["seq"] for e in page["entries"]] == [1] and page["next_after_seq"] == 1
    async with session.get(f"{services.api_url}/api/runs/{run_id}/history?type=run.bogus") as resp:
        assert resp.status == 400 and "run.bogus" in (await resp.json())["error"]["message"]


async def test_an_unauthenticated_request_cannot_claim_a_principal(services: Settings, db: Any, session: Any,
                                                                   gateway_as: Any) -> None:
    gw = await gateway_as(None)
    run_id = events.new_run_id()
    await post(session, gw, events.event(run_id, 0, "run.started", {"experiment": unique("audit")}, principal="tok_admin"))
    wait_for(lambda: db.execute("SELECT 1 FROM runs WHERE run_id = %s", (run_id,)).fetchone(), what="the run")
    async with session.get(f"{services.api_url}/api/runs/{run_id}/history") as resp:
        assert [e["principal"] for e in (await resp.json())["entries"]] == [None]
    (body,) = db.execute("SELECT body FROM events WHERE run_id = %s", (run_id,)).fetchone()
    assert "principal" not in orjson.loads(bytes(body))


@pytest.mark.parametrize("claimed,principal", [(None, None), (None, "tok_a"), ("tok_x", "tok_a"), ("tok_a", "tok_a"),
                                               ("tok_x", None)])
def test_stamp_sets_exactly_the_request_principal(claimed: str | None, principal: str | None) -> None:
    raw = events.event(events.new_run_id(), 3, "tag.set", {"key": "k", "value": "principal"},
                       **({"principal": claimed} if claimed else {}))
    out = gateway.stamp(contract.decode(raw), raw, "default", principal)
    assert contract.decode(out).principal == principal
    assert {k: v for k, v in orjson.loads(out).items() if k != "principal"} == \
        {k: v for k, v in orjson.loads(raw).items() if k != "principal"}
    if claimed == principal:
        assert out is raw  # nothing to change: the bytes go through as they came


def test_history_summaries_escape_what_a_terminal_or_page_would_interpret() -> None:
    assert history.summary("tag.set", {"key": "k\x1b[31m", "value": "x\u202ey"}) == "tag 'k\\x1b[31m' = 'x\\u202ey'"
    assert history.summary("run.status", {"status": "failed", "error": "\n boom\x07\nmore"}) == \
        "status failed: boom\\x07"
    assert len(history.summary("tag.set", {"key": "k", "value": "v" * 5000})) == history.SUMMARY_MAX_CHARS
    assert history.summary("metric.points", {"series": [{"name": n, "values": [1, 2]} for n in "abcd"]}) == \
        "8 points of 'a', 'b', 'c' and 1 more"
