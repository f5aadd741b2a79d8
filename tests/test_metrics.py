"""The processors' Prometheus /metrics: counters, histograms and consumer lag, end to end.

`runstream processor` and `runstream serve` run as child processes against the session's
Kafka and PostgreSQL, each on its own topic, consumer group and metrics port; the
exposition is parsed with prometheus_client's own parser. Lag going from positive to 0 is
checked in process, where the test decides how far the consumer has fetched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import test_utils
from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from runstream.devstack.stack import free_ports
from runstream.processors.metrics import BATCH_SIZE_BUCKETS, Buckets, create_app, start_server
from runstream.processors.runner import Processor
from runstream.settings import Settings
from tests.support import events
from tests.support.names import unique
from tests.support.services import start_serve, stop
from tests.support.waiting import wait_for

PREFIX = "runstream_processor_"
RUNS, EVENTS_PER_RUN, POINTS_PER_EVENT = 8, 5, 3
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


# --- helpers -------------------------------------------------------------------------


def start_processor(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """`runstream processor` (the compose service's command) with ``settings`` in its environment."""
    env = {**os.environ, **settings.to_env()}
    with log.open("ab") as out:  # the child has its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "runstream.cli", "processor"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def fetch(port: int, accept: str | None = None) -> tuple[str, str] | None:
    """(content type, body) of /metrics, or None while nothing listens yet."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.headers["Content-Type"], resp.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None


def scrape(port: int) -> dict[str, Metric]:
    got = fetch(port)
    assert got is not None, "/metrics stopped answering"
    return {family.name: family for family in text_string_to_metric_families(got[1])}


def value(families: dict[str, Metric], sample: str, **labels: str) -> float:
    """The one sample called ``sample`` whose labels include ``labels``."""
    family = families[sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
                      .removesuffix("_bucket")]
    (found,) = [s.value for s in family.samples
                if s.name == sample and labels.items() <= s.labels.items()]
    return found


def lag(families: dict[str, Metric], topic: str) -> dict[int, float]:
    return {int(s.labels["partition"]): s.value for s in families[PREFIX + "consumer_lag"].samples
            if s.labels["topic"] == topic}


def some_runs(experiment: str) -> list[tuple[str, bytes]]:
    """RUNS runs of one run.started and EVENTS_PER_RUN metric.points events each."""
    out = []
    for _ in range(RUNS):
        run_id = events.new_run_id()
        out.append((run_id, events.started(run_id, experiment)))
        for seq in range(1, EVENTS_PER_RUN + 1):
            first = (seq - 1) * POINTS_PER_EVENT
            out.append((run_id, events.points(run_id, seq, "x", list(range(first, first + POINTS_PER_EVENT)))))
    return out


# --- end to end: `runstream processor` -------------------------------------------------


async def test_processor_metrics_count_what_it_wrote(settings: Settings, tmp_path: Path) -> None:
    name = unique("metrics")
    (port,) = free_ports(1)
    isolated = replace(settings, topic=name, processor_group=name, partitions=4, metrics_port=port)
    messages = some_runs(name)
    total, points = len(messages), RUNS * EVENTS_PER_RUN * POINTS_PER_EVENT
    await events.produce(isolated, messages)

    process = start_processor(isolated, tmp_path / "processor.log")
    try:
        content_type, _ = wait_for(lambda: fetch(port), timeout=60, what="/metrics to answer")
        assert content_type == TEXT_FORMAT
        wait_for(lambda: value(scrape(port), PREFIX + "new_events_total", processor="0") == total,
                 timeout=60, what="every event counted as new")

        # The same bytes again (re-sent: duplicates) and one message that is not an event.
        await events.produce(isolated, messages)
        producer = AIOKafkaProducer(bootstrap_servers=isolated.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(name, b"\x00 not an event", key=b"garbage")
        finally:
            await producer.stop()
        m = wait_for(lambda: (f := scrape(port)) and value(f, PREFIX + "messages_total") == 2 * total + 1 and f,
                     timeout=60, what="the duplicates and the dead letter")

        assert value(m, PREFIX + "new_events_total") == total
        assert value(m, PREFIX + "duplicates_total") == total
        assert value(m, PREFIX + "dead_letters_total") == 1
        assert value(m, PREFIX + "points_total") == points
        batches = value(m, PREFIX + "batches_total")
        assert batches >= 2  # the first drain, then the re-sent copy
        for histogram in ("batch_size", "write_duration_seconds"):
            family = m[PREFIX + histogram]
            assert family.type == "histogram"
            assert value(m, f"{PREFIX}{histogram}_count") == batches, "one observation per transaction"
            cumulative = [s.value for s in family.samples if s.name.endswith("_bucket")]
            assert cumulative == sorted(cumulative) and cumulative[-1] == batches
        assert value(m, PREFIX + "batch_size_sum") == 2 * total + 1, "every message in one batch's size"
        assert value(m, PREFIX + "write_duration_seconds_sum") > 0

        # Lag: one series per assigned partition, and 0 once everything is consumed.
        settled = wait_for(lambda: (f := lag(scrape(port), name)) and set(f) == {0, 1, 2, 3}
                           and not any(f.values()) and f, timeout=60, what="lag 0 on every partition")
        assert settled == {0: 0, 1: 0, 2: 0, 3: 0}

        # OpenMetrics when asked for it (what Prometheus prefers), with the same numbers.
        content_type, body = fetch(port, accept="application/openmetrics-text; version=1.0.0") or ("", "")
        assert content_type.startswith("application/openmetrics-text")
        om = {family.name: family for family in openmetrics_families(body)}
        assert [s.value for s in om[PREFIX + "dead_letters"].samples if s.name.endswith("_total")] == [1]
    finally:
        stop(process)
    assert process.returncode == 0


# --- `runstream serve`: everything in one process serves it too -----------------------


async def test_serve_in_one_process_serves_metrics_too(settings: Settings, tmp_path: Path) -> None:
    name = unique("metrics-serve")
    api, gateway, port = free_ports(3)
    isolated = replace(settings, topic=name, processor_group=name, partitions=2, metrics_port=port,
                       api_port=api, gateway_port=gateway, api_url=f"http://127.0.0.1:{api}",
                       ingest_url=f"http://127.0.0.1:{gateway}")
    run_id = events.new_run_id()
    await events.produce(isolated, [(run_id, events.started(run_id, name))])
    process = start_serve(isolated, "--processors", "2", log=tmp_path / "serve.log")
    try:
        wait_for(lambda: fetch(port), timeout=60, what="/metrics to answer")
        m = wait_for(lambda: (f := scrape(port)) and sum(
            s.value for s in f[PREFIX + "new_events"].samples if s.name.endswith("_total")) == 1 and f,
            timeout=60, what="the event counted")
        # Two processors in this process: one series each, told apart by their index.
        assert {s.labels["processor"] for s in m[PREFIX + "messages"].samples} == {"0", "1"}
        async with aiohttp.ClientSession() as session:  # the API of the same process answers too
            async with session.get(f"http://127.0.0.1:{api}/api/health") as resp:
                assert resp.status == 200
    finally:
        stop(process)


# --- lag, in process: the test decides how far the consumer has fetched -----------------


async def test_lag_is_highwater_minus_position_per_partition(settings: Settings) -> None:
    name = unique("metrics-lag")
    isolated = replace(settings, topic=name, processor_group=name, partitions=1)
    run_id = events.new_run_id()
    await events.produce(isolated, [(run_id, events.started(run_id, name))] +
                  [(run_id, events.points(run_id, seq, "x", [seq])) for seq in range(1, 10)])
    processor = Processor(isolated, pool=None)  # type: ignore[arg-type]  # nothing is written here
    tp = TopicPartition(name, 0)
    client = test_utils.TestClient(test_utils.TestServer(create_app([processor])))
    await client.start_server()
    try:
        async def lag_now() -> dict[int, float]:
            resp = await client.get("/metrics")
            assert resp.status == 200 and resp.headers["Content-Type"] == TEXT_FORMAT
            return lag({f.name: f for f in text_string_to_metric_families(await resp.text())}, name)

        assert await lag_now() == {}, "nothing assigned yet"
        processor.consumer.assign([tp])
        await processor.consumer.start()
        await processor.consumer.seek_to_beginning(tp)
        assert len((await processor.consumer.getmany(tp, timeout_ms=30_000, max_records=1))[tp]) == 1
        assert await lag_now() == {0: 9}  # ten on the broker, one taken
        taken = 1
        while taken < 10:
            taken += sum(len(v) for v in (await processor.consumer.getmany(tp, timeout_ms=30_000)).values())
        assert await lag_now() == {0: 0}
        assert processor.stats.lag == {0: 0}
    finally:
        await client.close()
        await processor.consumer.stop()


# --- the pieces without services ------------------------------------------------------


def test_buckets_are_cumulative_with_prometheus_le_semantics() -> None:
    b = Buckets((1, 10, 100))
    for v in (0.5, 1, 2, 10, 11, 1000):
        b.observe(v)
    assert b.cumulative() == [("1.0", 2), ("10.0", 4), ("100.0", 5), ("+Inf", 6)]
    assert b.count == 6 and b.sum == 1024.5
    assert BATCH_SIZE_BUCKETS == tuple(sorted(BATCH_SIZE_BUCKETS))


async def test_metrics_server_disabled_by_port_0_and_skipped_when_the_port_is_taken(
        caplog: pytest.LogCaptureFixture) -> None:
    assert await start_server([], "127.0.0.1", 0) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="runstream.metrics"):
            assert await start_server([], "127.0.0.1", port) is None
    assert f"metrics port 127.0.0.1:{port} is in use" in caplog.text
    (free,) = free_ports(1)
    runner = await start_server([], "127.0.0.1", free)
    assert runner is not None
    try:
        got = await asyncio.to_thread(fetch, free)
        assert got is not None and got[0] == TEXT_FORMAT
        names = {f.name for f in text_string_to_metric_families(got[1])}
        assert {PREFIX + "messages", PREFIX + "batch_size", PREFIX + "consumer_lag"} <= names
    finally:
        await runner.cleanup()
