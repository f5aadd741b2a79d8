"""Session-wide real services: one Kafka broker, one PostgreSQL, one `runstream serve`.

They start once per session and stop at its end, also when tests fail
(`runstream services down --state-dir .state/test-stack` cleans up after a killed
session). Every test owns its data through fresh run ids, experiment names or topics,
so tests share the database without truncating it. Loaded as a plugin by tests/conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from runstream import Workspace, devstack
from runstream.devstack.demo import wait_ready
from runstream.devstack.stack import free_ports
from runstream.schemas.migrate import migrate
from runstream.settings import Settings
from tests.support.names import REPO


@pytest.fixture(scope="session")
def stack() -> Iterator[devstack.StackInfo]:
    # Set RUNSTREAM_TEST_STATE_DIR to run two test sessions side by side.
    state_dir = Path(os.environ.get("RUNSTREAM_TEST_STATE_DIR", REPO / ".state" / "test-stack"))
    info = devstack.up(state_dir, fresh=True)
    try:
        yield info
    finally:
        devstack.down(state_dir)


@pytest.fixture(scope="session")
def settings(stack: devstack.StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings pointing at the session's services, with a private blob store and spool."""
    api_port, gateway_port = free_ports(2)
    s = Settings.from_env(
        {},
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=stack.database_url,
        api_database_url=stack.api_database_url,
        blob_dir=str(tmp_path_factory.mktemp("blobs")),
        spool_dir=str(tmp_path_factory.mktemp("spool")),
        partitions=4,
        api_port=api_port,
        gateway_port=gateway_port,
        api_url=f"http://127.0.0.1:{api_port}",
        ingest_url=f"http://127.0.0.1:{gateway_port}",
        auth="off",  # the session's stack is on loopback; tests/test_auth.py runs services with it on
    )
    migrate(s.database_url)
    return s


def start_serve(settings: Settings, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """`runstream serve` as a child process with ``settings`` in its environment."""
    env = {**os.environ, **settings.to_env()}
    with log.open("ab") as out:  # the child has its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "runstream.cli", "serve", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process`` (kill it if it does not exit within 30 s) and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="session")
def services(settings: Settings, stack: devstack.StackInfo) -> Iterator[Settings]:
    """Processors, gateway and query API running against the session's Kafka and DB."""
    log = stack.state_dir / "serve.log"  # kept after the session for post-mortems
    log.unlink(missing_ok=True)
    process = start_serve(settings, log=log)
    try:
        wait_ready(settings, process)
        yield settings
    finally:
        stop(process)


@pytest.fixture(scope="session")
def workspace(services: Settings) -> Iterator[Workspace]:
    ws = Workspace(settings=services)
    yield ws
    ws.close()


@pytest.fixture()
def http_workspace(services: Settings) -> Iterator[Workspace]:
    """A workspace whose SDK sends through the ingest gateway instead of Kafka."""
    ws = Workspace(settings=replace(services, transport="http"))
    yield ws
    ws.close()


@pytest.fixture()
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session for the test."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture()
async def local_api(services: Settings) -> AsyncIterator[TestServer]:
    """A second query API in this process, so a test can reach its listener and cache."""
    from runstream.query_api.app import create_app

    server = TestServer(create_app(services))
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture()
def db(settings: Settings) -> Iterator[Any]:
    """The one database connection fixture: psycopg, autocommit, on the session's
    PostgreSQL, for asserting on rows directly."""
    import psycopg

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        yield conn
