"""How the sender ships encoded events: straight to Kafka, or through the HTTP gateway."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

import aiohttp
import orjson

from runstream.errors import DeliveryError
from runstream.schemas.limits import MAX_EVENTS_PER_REQUEST, MAX_REQUEST_BYTES
from runstream.settings import ClientSettings

if TYPE_CHECKING:
    from runstream.producer import EventProducer


POST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
"""A gateway that stopped answering fails a POST (which is then retried) instead of hanging it."""


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the service is unreachable (retry later), not that it refused the events."""
    if isinstance(exc, (ConnectionError, TimeoutError, aiohttp.ClientError)):
        return True
    return type(exc).__module__.startswith("aiokafka")  # KafkaError and its kin, without importing aiokafka


class Transport(Protocol):
    async def start(self) -> None: ...
    async def send(self, events: list[tuple[str, bytes]]) -> asyncio.Future[None]:
        """Start sending; the returned future resolves when every event is acknowledged."""
    async def close(self) -> None: ...


class KafkaTransport:
    """Produces straight to Kafka. :meth:`start` does not create the topic (the services
    and ``runstream migrate`` do): the SDK never waits on an admin request, and a broker
    that is down only makes :meth:`start` fail. aiokafka is imported here, at start, so a
    process that sends over HTTP never loads it."""

    def __init__(self, settings: ClientSettings) -> None:
        self._settings = settings
        self._producer: EventProducer | None = None
        self._stamp = b""

    async def start(self) -> None:
        from runstream.producer import EventProducer

        workspace = self._settings.workspace or await self._token_workspace()
        # Events name their workspace (processors check it against the run's run.started);
        # "default" is what an event without one means.
        self._stamp = b'{"workspace":' + orjson.dumps(workspace) + b"," if workspace not in ("", "default") else b""
        # No producer linger: the sender already lingers (LINGER_S) and hands each fold over
        # in one go, so the batches are as large as they get; a second linger only adds latency.
        producer = EventProducer(self._settings.kafka_bootstrap, self._settings.topic, client_id="runstream-sdk",
                                 linger_ms=0, security=self._settings.kafka_security())
        try:
            await producer.start()
        except BaseException:
            await producer.stop()  # a failed start leaves connections and tasks behind otherwise
            raise
        self._producer = producer

    async def _token_workspace(self) -> str:
        """The workspace of the settings' token (none: ``""``), asked of the query API once,
        when the transport starts. Failing, the transport does not start (the sender retries
        and keeps events in the outbox meanwhile); the message says to set RUNSTREAM_WORKSPACE."""
        if not self._settings.token:
            return ""
        url = self._settings.api_url.rstrip("/") + "/api/whoami"
        async with aiohttp.ClientSession(headers=self._settings.auth_headers()) as session:
            async with session.get(url, timeout=POST_TIMEOUT) as resp:
                if resp.status == 200:
                    return str((await resp.json())["workspace"])
                raise ConnectionError(f"{url} answered {resp.status} ({(await resp.text())[:200]}): cannot learn the "
                                      "token's workspace for the Kafka transport; set RUNSTREAM_WORKSPACE")

    async def send(self, events: list[tuple[str, bytes]]) -> asyncio.Future[None]:
        if self._producer is None:
            raise ConnectionError("the Kafka producer is not started")
        stamp = self._stamp  # the SDK's own encoding starts with '{' and has no workspace yet
        futures = [await self._producer.enqueue(run_id, stamp + value[1:] if stamp else value)
                   for run_id, value in events]
        return asyncio.ensure_future(_all(futures))

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


async def _all(futures: list[asyncio.Future[object]]) -> None:
    await asyncio.gather(*futures)


class HttpTransport:
    """POSTs batches to the ingest gateway, which validates them and produces to Kafka."""

    def __init__(self, settings: ClientSettings, session: aiohttp.ClientSession) -> None:
        self._url = settings.ingest_url.rstrip("/") + "/api/v1/events"
        self._session = session

    async def start(self) -> None:
        pass

    async def send(self, events: list[tuple[str, bytes]]) -> asyncio.Future[None]:
        return asyncio.ensure_future(self._post_all(events))

    async def _post_all(self, events: list[tuple[str, bytes]]) -> None:
        chunk: list[bytes] = []
        size = 2
        for _, value in events:
            if chunk and (len(chunk) >= MAX_EVENTS_PER_REQUEST or size + len(value) + 1 > MAX_REQUEST_BYTES):
                await self._post(chunk)
                chunk, size = [], 2
            chunk.append(value)
            size += len(value) + 1
        if chunk:
            await self._post(chunk)

    async def _post(self, values: list[bytes]) -> None:
        body = b"[" + b",".join(values) + b"]"
        async with self._session.post(self._url, data=body, headers={"Content-Type": "application/json"},
                                      timeout=POST_TIMEOUT) as resp:
            if resp.status == 202:
                return
            text = await resp.text()
            if resp.status >= 500 or resp.status == 429:  # 429: over the gateway's rate limit, retried later
                raise ConnectionError(f"gateway answered {resp.status}: {text}")
            raise DeliveryError(f"gateway rejected the batch ({resp.status}): {text}")

    async def close(self) -> None:
        pass
