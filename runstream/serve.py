"""Run the services in one process: processors, ingest gateway and query API.

``runstream serve`` is what a single machine needs; in compose each part runs alone
(``runstream processor``, ``runstream gateway``, ``runstream api``) and processors scale
as separate containers of one consumer group. Wherever processors run, their Prometheus
``/metrics`` is served on ``metrics_host:metrics_port`` (``processors.metrics``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

import asyncpg
import psycopg
from aiohttp import web

from runstream.processors.dbfaults import backoff
from runstream.processors.metrics import start_server as start_metrics
from runstream.processors.runner import Processor
from runstream.processors.runner import pool as processor_pool
from runstream.schemas.migrate import migrate
from runstream.settings import ServiceSettings

log = logging.getLogger("runstream.serve")

GC_THRESHOLDS = (50_000, 20, 100)
"""The services' garbage-collector thresholds (CPython's defaults: 700, 10, 10).

A processor creates several objects per Kafka message (aiokafka's record, the decoded
event's lists); with the defaults a young collection runs every few hundred messages and
an old one every few thousand, each walking every live object of the batches in flight:
half of decoding's time in a profile of one-point messages. Nothing in these services
relies on prompt collection of cycles; memory stays bounded by the batch sizes."""


def tune_gc() -> None:
    """Apply :data:`GC_THRESHOLDS` to this (service) process."""
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(settings: ServiceSettings, *, processors: int = 1, api: bool = True, gateway: bool = True,
                stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``). Applies pending migrations first (waiting,
    with backoff, while the database does not accept connections). Refuses to start with
    authentication off on anything but loopback (``query_api.auth.check_bind``)."""
    from runstream.query_api.auth import check_bind, enabled

    check_bind(enabled(settings.auth), [("the query API", settings.api_host)] * api
               + [("the gateway", settings.gateway_host)] * gateway)
    await _migrate_when_up(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runners: list[web.AppRunner] = []
    if api:
        from runstream.query_api.app import create_app as create_api

        runners.append(await _start(create_api(settings), settings.api_host, settings.api_port))
    if gateway:
        from runstream.ingest.gateway import create_app as create_gateway

        runners.append(await _start(create_gateway(settings), settings.gateway_host, settings.gateway_port))
    try:
        if processors:
            async with processor_pool(settings, processors + 1) as pool:
                members = [Processor(settings, pool) for _ in range(processors)]
                metrics = await start_metrics(members, settings.metrics_host, settings.metrics_port)
                if metrics is not None:
                    runners.append(metrics)
                workers = [asyncio.create_task(_supervise(members, i, settings, pool, stop)) for i in range(processors)]
                log.info("serving: %d processor(s), api=%s, gateway=%s", processors, api, gateway)
                await asyncio.gather(*workers)
        else:
            await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


MIGRATE_ATTEMPTS = 30
"""Start-up waits about two minutes for the database, then fails (a wrong URL says so)."""


async def _migrate_when_up(settings: ServiceSettings) -> None:
    attempt = 0
    while True:
        try:
            await asyncio.to_thread(migrate, settings.database_url)
            return
        except psycopg.OperationalError as exc:  # cannot connect (down, starting, shutting down)
            if attempt + 1 >= MIGRATE_ATTEMPTS:
                raise
            log.warning("database unavailable for migrations (%s); retrying", str(exc).strip().splitlines()[0])
            await asyncio.sleep(backoff(attempt))
            attempt += 1


async def _supervise(members: list[Processor], i: int, settings: ServiceSettings, pool: asyncpg.Pool,
                     stop: asyncio.Event) -> None:
    """Run processor ``i`` until ``stop``; if it fails, replace it (after a backoff) rather
    than let ``serve`` exit: the new member resumes from the offsets stored with the data,
    so nothing is lost or written twice. (Bad events do not get here: they are
    dead-lettered; this is the last line for whatever else goes wrong.)"""
    attempt = 0
    while True:
        try:
            await members[i].run(stop)
            return
        except Exception:
            log.exception("processor %d failed; restarting it", i)
        await asyncio.sleep(backoff(attempt))
        attempt += 1
        if stop.is_set():
            return
        members[i] = Processor(settings, pool)  # the metrics endpoint reads the list: it sees the new one


async def _start(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
