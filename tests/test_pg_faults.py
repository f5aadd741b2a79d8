"""PostgreSQL going away, however it goes, heals by itself (issue 9, item 4).

These tests stop a PostgreSQL of their own (not the session's): a cluster started here
with the devstack's helpers, and a `runstream serve` of their own against it and the
session's Kafka (own topic and consumer group). Faults are real: `pg_ctl stop -m
immediate|fast` and SIGKILL of the serve process.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from runstream.devstack import postgres
from runstream.devstack.demo import wait_ready
from runstream.devstack.stack import free_ports
from runstream.schemas.migrate import migrate
from runstream.settings import Settings
from tests.support import events
from tests.support.names import unique
from tests.support.services import start_serve, stop
from tests.support.waiting import wait_for

RUNS, EVENTS_PER_RUN, POINTS_PER_EVENT = 2, 50, 500  # 50,000 points
TOTAL = RUNS * EVENTS_PER_RUN * POINTS_PER_EVENT


@dataclass
class OwnPostgres:
    """A PostgreSQL cluster of this module: stopped and started by the tests."""

    bin_dir: Path
    root: Path
    port: int

    @property
    def url(self) -> str:
        return postgres.database_url(self.port, password=postgres.passwords(self.root)[postgres.DB_ROLE])

    @property
    def reader_url(self) -> str:
        return postgres.database_url(self.port, user=postgres.READER_ROLE,
                                     password=postgres.passwords(self.root)[postgres.READER_ROLE])

    def stop(self, mode: str) -> None:
        cmd = [str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.root / "data"), "-m", mode, "-w", "-t", "60"]
        subprocess.run(postgres.as_pg_user(cmd), cwd="/", check=True, capture_output=True)

    def start(self) -> None:
        postgres.start(self.bin_dir, self.root, self.port, 60)
        wait_for(lambda: postgres.probe(self.url), what="PostgreSQL to accept connections")


@pytest.fixture(scope="module")
def own_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnPostgres]:
    state = tmp_path_factory.mktemp("own-pg")
    bin_dir = postgres.find_bin_dir()
    root = postgres.prepare_root(state)
    pw = postgres.passwords(root)
    postgres.initdb(bin_dir, root / "data", pw[postgres.PG_USER])
    (port,) = free_ports(1)
    pg = OwnPostgres(bin_dir, root, port)
    postgres.start(bin_dir, root, port, 60)
    try:
        postgres.ensure_database(port, pw)
        migrate(pg.url)
        yield pg
    finally:
        try:
            pg.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already down


@pytest.fixture()
def own_settings(settings: Settings, own_pg: OwnPostgres) -> Settings:
    api_port, gateway_port, metrics_port = free_ports(3)
    return replace(settings, database_url=own_pg.url, api_database_url=own_pg.reader_url,
                   topic=unique("pgfault"), processor_group=unique("pgfault-group"),
                   api_port=api_port, gateway_port=gateway_port, metrics_port=metrics_port,
                   api_url=f"http://127.0.0.1:{api_port}", ingest_url=f"http://127.0.0.1:{gateway_port}")


def stored(url: str, run_ids: list[str]) -> int:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            return conn.execute("SELECT count(*) FROM metric_points WHERE run_id = ANY(%s::uuid[])",
                                (run_ids,)).fetchone()[0]
    except psycopg.OperationalError:
        return -1


def statuses(url: str, run_ids: list[str]) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT status FROM runs WHERE run_id = ANY(%s::uuid[])", (run_ids,))]


async def produce_load(s: Settings, run_ids: list[str], seqs: range = range(EVENTS_PER_RUN + 2)) -> None:
    """seq 0 run.started, seq 1..N points (steps continue, value = step), N+1 completed
    (those of ``seqs``); produced in chunks so that the processors write while it goes on."""
    if 0 in seqs:
        await events.produce(s, [(r, events.started(r, unique("pgfault"))) for r in run_ids])
    for seq in range(max(seqs.start, 1), min(seqs.stop, EVENTS_PER_RUN + 1)):
        first = (seq - 1) * POINTS_PER_EVENT
        await events.produce(s, [(r, events.points(r, seq, "x", list(range(first, first + POINTS_PER_EVENT))))
                                 for r in run_ids])
    if EVENTS_PER_RUN + 1 in seqs:
        await events.produce(s, [(r, events.event(r, EVENTS_PER_RUN + 1, "run.status", {"status": "completed"}))
                                 for r in run_ids])


def assert_each_point_once(url: str, run_ids: list[str]) -> None:
    per_run = EVENTS_PER_RUN * POINTS_PER_EVENT
    with psycopg.connect(url) as conn:
        count, distinct, total = conn.execute(
            "SELECT count(*), count(DISTINCT (run_id, step)), sum(value) FROM metric_points "
            "WHERE run_id = ANY(%s::uuid[]) AND name = 'x'", (run_ids,)).fetchone()
        assert (count, distinct) == (TOTAL, TOTAL)
        assert total == RUNS * per_run * (per_run - 1) / 2
        summaries = conn.execute("SELECT count FROM metric_summaries WHERE run_id = ANY(%s::uuid[]) AND name = 'x'",
                                 (run_ids,)).fetchall()
        assert summaries == [(per_run,)] * RUNS
        runs = conn.execute("SELECT status, last_seq FROM runs WHERE run_id = ANY(%s::uuid[])", (run_ids,)).fetchall()
        assert runs == [("completed", EVENTS_PER_RUN + 1)] * RUNS
        assert conn.execute("SELECT count(*) FROM dead_letters WHERE run_id = ANY(%s::uuid[])",
                            (run_ids,)).fetchone() == (0,)


async def test_immediate_stop_with_the_processor_killed_at_the_same_time_stores_every_point_once(
        own_pg: OwnPostgres, own_settings: Settings, tmp_path: Path) -> None:
    s, log = own_settings, tmp_path / "serve.log"
    run_ids = [events.new_run_id() for _ in range(RUNS)]
    serve = start_serve(s, "--no-api", "--no-gateway", log=log)
    try:
        half = EVENTS_PER_RUN // 2
        load = asyncio.create_task(produce_load(s, run_ids, range(0, half)))
        await asyncio.to_thread(wait_for, lambda: stored(s.database_url, run_ids) > 0, timeout=60,
                                what="the first points stored")
        serve.send_signal(signal.SIGKILL)
        own_pg.stop("immediate")
        serve.wait(30)
        await load
        # The rest reaches Kafka while the processor and the database are down.
        await produce_load(s, run_ids, range(half, EVENTS_PER_RUN + 2))
        own_pg.start()
        assert 0 < stored(s.database_url, run_ids) < TOTAL, "the faults hit the load midway"
        serve = start_serve(s, "--no-api", "--no-gateway", log=log)
        await asyncio.to_thread(wait_for, lambda: stored(s.database_url, run_ids) >= TOTAL, timeout=120,
                                what="every point after the restart")
        await asyncio.to_thread(wait_for, lambda: statuses(s.database_url, run_ids) == ["completed"] * RUNS,
                                what="the runs completed")
        assert_each_point_once(s.database_url, run_ids)
    finally:
        stop(serve)


async def api_get(s: Settings, path: str) -> tuple[int, dict[str, str], Any, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(s.api_url + path) as resp:
            text = await resp.text()
            body = await resp.json(content_type=None) if resp.content_type == "application/json" else None
            return resp.status, dict(resp.headers), body, text


async def test_fast_stop_during_writes_is_survived_and_the_api_answers_503_meanwhile(
        own_pg: OwnPostgres, own_settings: Settings, tmp_path: Path) -> None:
    s, log = own_settings, tmp_path / "serve.log"
    run_ids = [events.new_run_id() for _ in range(RUNS)]
    serve = start_serve(s, log=log)
    try:
        wait_ready(s, serve)
        load = asyncio.create_task(produce_load(s, run_ids))
        await asyncio.to_thread(wait_for, lambda: stored(s.database_url, run_ids) > 0, timeout=60,
                                what="the first points stored")
        own_pg.stop("fast")  # what `runstream services down` does
        # While it is down: every data endpoint is a 503 with Retry-After and a JSON error.
        for path in ["/api/experiments", f"/api/runs/{run_ids[0]}", f"/api/runs/{run_ids[0]}/metrics",
                     f"/api/runs/{run_ids[0]}/metrics/x", f"/api/compare?run={run_ids[0]}&run={run_ids[1]}"]:
            status, headers, body, text = await api_get(s, path)
            assert status == 503, (path, status, text)
            assert int(headers["Retry-After"]) > 0
            assert body["error"]["status"] == 503 and "database unavailable" in body["error"]["message"]
            assert "Traceback" not in text and "SELECT" not in text and "FROM" not in text
        assert (await api_get(s, "/api/ready"))[0] == 503
        await load
        await asyncio.to_thread(wait_for, lambda: "database unavailable" in log.read_text(), what="the retry logged")
        assert serve.poll() is None, "runstream serve exited while the database was down"
        own_pg.start()
        await asyncio.to_thread(wait_for, lambda: stored(s.database_url, run_ids) >= TOTAL, timeout=120,
                                what="every point after the database came back")
        await asyncio.to_thread(wait_for, lambda: statuses(s.database_url, run_ids) == ["completed"] * RUNS,
                                what="the runs completed")
        assert serve.poll() is None
        assert_each_point_once(s.database_url, run_ids)
        status, _, body, _ = await api_get(s, f"/api/runs/{run_ids[0]}")
        assert status == 200 and body["status"] == "completed" and body["dead_letters"] == 0
    finally:
        stop(serve)
