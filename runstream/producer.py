"""The one Kafka producer runstream uses (the SDK's Kafka transport and the gateway alike).

acks=all and idempotence, so a retry after a lost acknowledgement never writes an event
twice within a producer session; zstd compression; key = run_id so a run's events stay
in order on one partition. Imported only by the Kafka transport (and the services), so an
SDK that sends over HTTP never imports aiokafka.

Why zstd: aiokafka compresses lz4 at level 9 (about 36 MB/s of event JSON on this
machine's cores, 15% of an SDK process's CPU at full rate), zstd at its default level
about 3x faster with batches half the size (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer

from runstream.schemas.limits import MAX_EVENT_BYTES

COMPRESSION = "zstd"
"""Kafka compression codec of every event batch (decoded by any consumer via cramjam)."""


class EventProducer:
    """Produce encoded events; :meth:`send_batch` returns when Kafka acknowledged all."""

    def __init__(self, bootstrap: str, topic: str, *, linger_ms: int = 5, client_id: str = "runstream",
                 compression: str | None = COMPRESSION, security: Mapping[str, Any] | None = None) -> None:
        """``security``: SASL arguments (``Settings.kafka_security()``), none for PLAINTEXT."""
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
            **(security or {}),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def enqueue(self, run_id: str, value: bytes) -> asyncio.Future[object]:
        """Hand one event to the producer's batcher; the returned future resolves on ack."""
        return await self._producer.send(self.topic, value=value, key=run_id.encode())

    async def send_batch(self, events: Iterable[tuple[str, bytes]]) -> None:
        """Produce ``(run_id, encoded event)`` pairs in order and wait for every ack."""
        futures = [await self.enqueue(run_id, value) for run_id, value in events]
        if futures:
            await asyncio.gather(*futures)
