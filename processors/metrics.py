"""``GET /metrics``: the processors of this process in the Prometheus text format.

Nothing is counted twice: the processors keep plain counters and two small histograms in
their :class:`~processors.runner.Stats` (one bisect per written batch), and a custom
collector turns them into metric families when Prometheus scrapes. Consumer lag is read
from the consumer at scrape time. The registry belongs to the metrics app (not
prometheus_client's global one), so several processors in one process, or several apps
in one test process, never share or clash; each processor of a process is labelled by
its index there (``processor="0"``; Prometheus adds the scraped ``instance``).

Metrics (``runstream_processor_`` prefix):

- counters ``messages_total`` (Kafka messages written, valid or not), ``new_events_total``
  (events new to the archive), ``duplicates_total`` (redelivered or re-sent events the
  archive already had), ``dead_letters_total``, ``points_total`` (metric points of new
  events), ``batches_total`` (write transactions). Events/s is ``rate()`` of these, e.g.
  ``sum(rate(runstream_processor_new_events_total[1m]))``.
- histograms ``batch_size`` (messages per transaction) and ``write_duration_seconds``
  (one batch's transaction, retries included).
- gauge ``consumer_lag{topic, partition}``: the broker's high water mark minus the
  consumer's position, for each assigned partition whose high water mark is known (it
  comes with the first fetch response). Records fetched but not yet committed to the
  database (at most the batch being written and one prepared) do not count as lag.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from runstream.processors.runner import Processor

log = logging.getLogger("runstream.metrics")

PREFIX = "runstream_processor_"

BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 10, 50, 100, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000)
"""Upper bounds of the batch-size histogram (messages; ``processor_max_records`` is 20,000 by default)."""

WRITE_SECONDS_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Upper bounds of the write-latency histogram (seconds)."""

LAG_TIMEOUT = 1.0
"""How long a scrape waits for a partition's position (it is unknown while a seek is pending)."""

COUNTERS: dict[str, str] = {
    "messages": "Kafka messages written by the processor (valid events and dead letters).",
    "new_events": "Events new to the archive (materialized into rows).",
    "duplicates": "Redelivered or re-sent events the archive already had (no rows).",
    "dead_letters": "Messages stored as dead letters (invalid, or rejected by the database).",
    "points": "Metric points materialized from new events.",
    "batches": "Write transactions (one per fetched batch).",
}
"""Counter name (without the prefix and ``_total``) -> help; each is a field of ``Stats``."""


class Buckets:
    """A histogram's state: a count per bucket and the sum; ``observe`` is one bisect."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value (Prometheus' le)
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, observations <= le) pairs, ending with +Inf, as exposition wants them."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*map(_le, self.bounds), "+Inf"), self.counts):
            total += n
            out.append((bound, total))
        return out


def _le(bound: float) -> str:
    return floatToGoString(bound)


class ProcessorCollector:
    """Metric families of the given processors, built from their live ``Stats`` when collected."""

    def __init__(self, processors: Sequence[Processor]) -> None:
        self.processors = list(processors)

    def collect(self) -> Iterable[Metric]:
        counters = {name: CounterMetricFamily(PREFIX + name, doc, labels=["processor"])
                    for name, doc in COUNTERS.items()}
        sizes = HistogramMetricFamily(PREFIX + "batch_size", "Messages per write transaction.",
                                      labels=["processor"])
        seconds = HistogramMetricFamily(PREFIX + "write_duration_seconds",
                                        "Seconds one batch's write transaction took (retries included).",
                                        labels=["processor"])
        lag = GaugeMetricFamily(PREFIX + "consumer_lag",
                                "Messages on the broker this consumer has not fetched yet "
                                "(high water mark minus position), per assigned partition.",
                                labels=["processor", "topic", "partition"])
        for index, processor in enumerate(self.processors):
            label, stats = str(index), processor.stats
            for name, family in counters.items():
                family.add_metric([label], getattr(stats, name))
            sizes.add_metric([label], stats.batch_sizes.cumulative(), stats.batch_sizes.sum)
            seconds.add_metric([label], stats.write_latency.cumulative(), stats.write_latency.sum)
            for partition, behind in sorted(stats.lag.items()):
                lag.add_metric([label, processor.settings.topic, str(partition)], behind)
        yield from counters.values()
        yield from (sizes, seconds, lag)


async def refresh_lag(processor: Processor, timeout: float = LAG_TIMEOUT) -> None:
    """Replace ``processor.stats.lag`` with the lag of each assigned partition where it is known."""
    consumer = processor.consumer

    async def one(tp: TopicPartition) -> tuple[int, int] | None:
        try:
            position = await asyncio.wait_for(consumer.position(tp), timeout)  # a coroutine in aiokafka
            if tp not in consumer.assignment():  # revoked meanwhile
                return None
            highwater = consumer.highwater(tp)  # None until the partition's first fetch response
        except (TimeoutError, KafkaError, AssertionError):
            return None
        return None if highwater is None else (tp.partition, max(highwater - position, 0))

    known = await asyncio.gather(*(one(tp) for tp in consumer.assignment()))
    processor.stats.lag = dict(item for item in known if item is not None)


def create_app(processors: Sequence[Processor]) -> web.Application:
    """An aiohttp app answering ``GET /metrics`` for ``processors`` (and this process' CPU and memory)."""
    registry = CollectorRegistry()
    registry.register(ProcessorCollector(processors))
    ProcessCollector(registry=registry)

    async def metrics(request: web.Request) -> web.Response:
        await asyncio.gather(*(refresh_lag(p) for p in processors))
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))  # text, or OpenMetrics if asked
        return web.Response(body=encode(registry), headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


async def start_server(processors: Sequence[Processor], host: str, port: int) -> web.AppRunner | None:
    """Serve ``/metrics`` on host:port; None if ``port`` is 0 (disabled) or already taken.

    A taken port is logged, not fatal: several processes started on one machine with the
    same settings (``runstream processor`` twice, or a test session beside a running
    ``runstream serve``) keep processing, and the log says which one has no ``/metrics``.
    """
    if not port:
        return None
    runner = web.AppRunner(create_app(processors), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno != errno.EADDRINUSE:
            raise
        log.warning("metrics port %s:%d is in use; this process serves no /metrics "
                    "(give each process its own RUNSTREAM_METRICS_PORT)", host, port)
        return None
    log.info("metrics at http://%s:%d/metrics", host, port)
    return runner
