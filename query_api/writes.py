"""Events the query API originates: MLflow's writes and run management (rename, tags, note,
delete, restore).

The API process produces them itself, with the project's one producer
(:class:`runstream.producer.EventProducer`), started on the first write (a read-only API
never connects to Kafka) and stopped with the app. Kafka is the only way in: a write is
an event like any SDK call, materialized by the processors, so replay, as-of and live
work for it. Reads right after a write see it (MLflow's clients read right after writing,
e.g. ``runs/get`` at ``end_run``), from any API process, in one of two ways:

* ``wait=True`` (creations, renames, deletes, params, status): the write answers once the
  processors have materialized it (the ``min_seq`` wait of the SDK's read-your-writes);
* ``wait=False`` (MLflow's metrics, tags, artifacts: the hot path): the write answers at
  Kafka's acknowledgement and records the acknowledged seq (``seq_allocations.acked_seq``);
  MLflow's reads of the run first wait until that seq is materialized
  (:func:`queries.settle`). A write whose produce failed was never acknowledged, so no read
  waits for it.

Seqs (docs/ARCHITECTURE.md, "Seq ownership"): a stream the API creates (a run created
through MLflow's API, an experiment's stream) is numbered by the API from 0; events for a
run numbered elsewhere (an SDK process) take seqs from ``SERVER_SEQ_BASE`` up. Either way
the seqs come from one ``seq_allocations`` row per stream, advanced atomically in
PostgreSQL, so two API processes never hand out the same seq.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError
from uuid6 import uuid7

from runstream.ingest.topic import ensure_topic
from runstream.producer import EventProducer
from runstream.query_api import queries
from runstream.query_api.auth import Principal
from runstream.query_api.cache import CACHE
from runstream.query_api.errors import BadRequest, Unavailable
from runstream.query_api.handlers import POOL, SETTINGS
from runstream.schemas import events as ev
from runstream.schemas.limits import MAX_EVENT_BYTES

__all__ = ["WRITER", "Draft", "Writer", "setup"]

WRITE_WAIT_MS = 10_000
"""How long a write waits for the processors to materialize it before answering 504."""


class Draft:
    """An event to write: its type and payload (the envelope is filled in at write time)."""

    __slots__ = ("payload", "ts", "type")

    def __init__(self, type_: str, payload: dict[str, Any], ts: float | None = None) -> None:
        self.type, self.payload, self.ts = type_, payload, ts


class Writer:
    """Numbers, validates, produces and waits for the API's own events."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._producer: EventProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> EventProducer:
        async with self._lock:
            if self._producer is None:
                settings = self._app[SETTINGS]
                try:
                    security = settings.kafka_security()
                    await ensure_topic(settings.kafka_bootstrap, settings.topic, settings.partitions, security=security)
                    producer = EventProducer(settings.kafka_bootstrap, settings.topic, client_id="runstream-query-api",
                                             security=security)
                    await producer.start()
                except (KafkaError, OSError) as exc:
                    raise Unavailable(f"Kafka is unreachable ({exc.__class__.__name__}); retry the write") from None
                self._producer = producer
            return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def write(self, principal: Principal, stream_id: uuid.UUID, drafts: Sequence[Draft], *,
                    owner: bool = False, experiment: str | None = None, wait: bool = True) -> int:
        """Write ``drafts`` as consecutive events of ``stream_id`` (a run, or an experiment's
        stream when ``experiment`` names it) and wait until they are materialized; return
        the last seq. ``owner``: the API numbers this stream from 0 (a stream it creates);
        else a run's events take seqs from ``SERVER_SEQ_BASE``. ``wait=False`` (a run's
        stream only): answer at Kafka's acknowledgement, recorded for :func:`queries.settle`.
        A draft that fails the event schema is a 400 naming why, and nothing is written.
        Each event's envelope carries ``principal``'s workspace and token id, as the gateway
        stamps them (the processors check the workspace against the run's start)."""
        if not drafts:
            return -1
        pool = self._app[POOL]
        base = 0 if owner or experiment is not None else ev.SERVER_SEQ_BASE
        now = time.time()
        bodies = []
        stamps: dict[str, str] = {}
        if principal.workspace != ev.DEFAULT_WORKSPACE:
            stamps["workspace"] = principal.workspace
        if principal.token_id is not None:
            stamps["principal"] = principal.token_id
        first = await queries.allocate_seqs(pool, stream_id, base, len(drafts))
        for i, d in enumerate(drafts):
            doc = {"type": d.type, "v": ev.SCHEMA_VERSION, "event_id": str(uuid7()), "run_id": str(stream_id),
                   "seq": first + i, "ts": now if d.ts is None else d.ts, "payload": d.payload, **stamps}
            body = orjson.dumps(doc)
            if len(body) > MAX_EVENT_BYTES:
                raise BadRequest(f"{d.type}: {len(body)} bytes encoded; an event holds at most {MAX_EVENT_BYTES}")
            try:
                ev.decode(body)
            except ev.EventError as exc:
                raise BadRequest(str(exc)) from None
            bodies.append((str(stream_id), body))
        producer = await self._started()
        try:
            await producer.send_batch(bodies)
        except KafkaError as exc:
            raise Unavailable(f"Kafka did not acknowledge the write ({exc.__class__.__name__}); retry it") from exc
        last = first + len(drafts) - 1
        if not wait and experiment is None:
            await queries.ack_seqs(pool, stream_id, last)
            return last
        if experiment is not None:
            await queries.wait_for_experiment(pool, principal.workspace, experiment, last, WRITE_WAIT_MS)
        else:
            await queries.wait_for_run(pool, stream_id, last, WRITE_WAIT_MS, principal.workspace)
            # The processors' NOTIFY reaches the response cache a moment after the row is
            # readable: drop the run's cached answers now so a read after this one is fresh.
            self._app[CACHE].notified(stream_id)
        return last


WRITER = web.AppKey("writer", Writer)


def setup(app: web.Application) -> None:
    """Give ``app`` a :class:`Writer` (its producer stopped at cleanup)."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        app[WRITER] = Writer(app)
        yield
        await app[WRITER].stop()

    app.cleanup_ctx.append(lifecycle)
