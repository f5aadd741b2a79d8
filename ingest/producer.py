"""The one Kafka producer runstream uses (SDK and gateway alike).

acks=all and idempotence, so a retry after a lost acknowledgement never writes an event
twice within a producer session; zstd compression; key = run_id so a run's events stay
in order on one partition.

Why zstd: aiokafka compresses lz4 at level 9 (about 36 MB/s of event JSON on this
machine's cores, 15% of an SDK process's CPU at full rate), zstd at its default level
about 3x faster with batches half the size (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
from typing import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.limits import MAX_EVENT_BYTES

COMPRESSION = "zstd"
"""Kafka compression codec of every event batch (decoded by any consumer via cramjam)."""


class EventProducer:
    """Produce encoded events; :meth:`send_batch` returns when Kafka acknowledged all."""

    def __init__(self, bootstrap: str, topic: str, *, linger_ms: int = 5, client_id: str = "runstream",
                 compression: str | None = COMPRESSION) -> None:
        self.topic = topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            compression_type=compression,
            linger_ms=linger_ms,
            max_batch_size=1024 * 1024,
            max_request_size=MAX_EVENT_BYTES + 64 * 1024,
            request_timeout_ms=30_000,
            retry_backoff_ms=200,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def enqueue(self, run_id: str, value: bytes) -> "asyncio.Future[object]":
        """Hand one event to the producer's batcher; the returned future resolves on ack."""
        return await self._producer.send(self.topic, value=value, key=run_id.encode())

    async def send_batch(self, events: Iterable[tuple[str, bytes]]) -> None:
        """Produce ``(run_id, encoded event)`` pairs in order and wait for every ack."""
        futures = [await self.enqueue(run_id, value) for run_id, value in events]
        if futures:
            await asyncio.gather(*futures)


def min_insync_replicas(replicas: int) -> int:
    """``min.insync.replicas`` for a replication factor: a majority from 3 up (3 -> 2), else 1.

    With 3 replicas and 2 in sync, an acks=all write survives losing any one broker and
    the topic keeps accepting writes while one is down.
    """
    return (replicas + 1) // 2 if replicas >= 3 else 1


async def ensure_topic(bootstrap: str, topic: str, partitions: int, *, replication: int | None = None) -> None:
    """Create the event topic if it does not exist.

    ``replication`` None chooses from the cluster: 3 replicas when it has at least three
    live brokers, else as many as it has (1 on a single broker), with
    :func:`min_insync_replicas` in sync. An existing topic is left as it is.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic in set(await admin.list_topics()):
            return
        if replication is None:
            replication = max(1, min(3, len((await admin.describe_cluster())["brokers"])))
        configs = {"min.insync.replicas": str(min_insync_replicas(replication))}
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=replication,
                                                topic_configs=configs)])
        except TopicAlreadyExistsError:
            pass
    finally:
        await admin.close()
