"""HTTP ingest for clients that cannot reach Kafka.

``POST /api/v1/events`` takes a JSON array of events. The whole batch is validated
first (schemas.events.decode); if any event is invalid the answer is 422 listing each
bad event by index and nothing is produced, so a batch is never half-written. Valid
batches are produced with the same producer the SDK uses and answered 202 after Kafka
acknowledged them. ``PUT /api/v1/blobs/{sha256}`` stores an artifact's bytes.

Every route but health needs a token (query_api.auth; writes need the ``write`` scope). The
gateway stamps each event's ``workspace`` with the principal's (whatever the body said)
and refuses, naming it, any event of a run that belongs to another workspace (404, as
the query API answers for it; nothing of the batch is produced).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
from aiohttp import web
from aiokafka.errors import KafkaError

from runstream.blobstore import BlobError, LocalBlobStore
from runstream.ingest.topic import ensure_topic
from runstream.producer import EventProducer
from runstream.query_api import auth, queries
from runstream.query_api.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    Unprocessable,
    error_middleware,
    json_response,
)
from runstream.schemas import events
from runstream.schemas.blobs import is_sha256
from runstream.schemas.limits import MAX_EVENT_BYTES, MAX_EVENTS_PER_REQUEST, MAX_REQUEST_BYTES
from runstream.settings import ServiceSettings

PRODUCER = web.AppKey("producer", EventProducer)
BLOBS = web.AppKey("blobs", LocalBlobStore)
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


def validate_batch(body: bytes) -> list[tuple[events.Event, bytes]]:
    """Split a JSON array into ``(decoded event, raw event)`` pairs; any invalid event rejects all."""
    try:
        raws = _raw_list.decode(body)
    except msgspec.DecodeError as exc:
        _reject_lone_surrogate(body)
        raise BadRequest(f"request body must be a JSON array of events: {exc}") from None
    if len(raws) > MAX_EVENTS_PER_REQUEST:
        raise PayloadTooLarge(f"{len(raws)} events in one request; MAX_EVENTS_PER_REQUEST={MAX_EVENTS_PER_REQUEST}")
    accepted: list[tuple[events.Event, bytes]] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(raws):
        data = bytes(raw)
        if len(data) > MAX_EVENT_BYTES:
            errors.append({"index": index, "message": f"event is {len(data)} bytes; MAX_EVENT_BYTES={MAX_EVENT_BYTES}"})
            continue
        try:
            accepted.append((events.decode(data), data))
        except events.EventError as exc:
            errors.append({"index": index, "message": str(exc)})
    if errors:
        raise Unprocessable(f"{len(errors)} of {len(raws)} events are invalid; none were accepted", events=errors)
    return accepted


def _reject_lone_surrogate(body: bytes) -> None:
    """A ``\\ud800`` escape without its pair stops msgspec at the array already; name the
    event and field as for any other invalid value (422), not as malformed JSON."""
    found = events.find_lone_surrogate(body)
    index = re.search(r"\$\[(\d+)\]", found[0]) if found else None
    if found is None or index is None:
        return
    where, char = found
    where = where[:index.start()] + "$" + where[index.end():]  # the path inside the event
    message = f"{where} holds a lone surrogate {char!r}, which UTF-8 and PostgreSQL cannot store"
    raise Unprocessable("1 event is invalid; none were accepted", events=[{"index": int(index[1]), "message": message}])


def stamp(event: events.Event, raw: bytes, workspace: str) -> bytes:
    """``raw`` (``event`` encoded) with the envelope's ``workspace`` set to the principal's:
    the body's value is never trusted. Unchanged bytes when it already says so (``default``:
    absent)."""
    wanted = None if workspace == events.DEFAULT_WORKSPACE else workspace
    if event.workspace == wanted:
        return raw
    return msgspec.json.encode(msgspec.structs.replace(event, workspace=wanted))


async def check_runs(request: web.Request, run_ids: set[str], workspace: str) -> None:
    """404 naming the first run of the batch that belongs to another workspace (a run not
    stored yet is the caller's to start: processors check it again against its start)."""
    authenticator = request.app.get(auth.AUTHENTICATOR)
    if authenticator is None or authenticator.pool is None or not run_ids:
        return  # authentication off: every run is the default workspace's
    try:
        rows = await authenticator.pool.fetch(queries.RUN_WORKSPACES, sorted(run_ids))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unavailable(f"database unavailable ({type(exc).__name__}); retry the batch") from None
    for run_id, owner in sorted(rows):
        if owner != workspace:
            raise NotFound(f"run {run_id} not found in workspace {workspace!r}; none of the batch was accepted")


@auth.requires("write")
async def post_events(request: web.Request) -> web.Response:
    workspace = auth.principal_of(request).workspace
    accepted = [(event.run_id, stamp(event, raw, workspace)) for event, raw in validate_batch(await request.read())]
    await check_runs(request, {run_id for run_id, _ in accepted}, workspace)
    try:
        await request.app[PRODUCER].send_batch(accepted)
    except KafkaError as exc:
        raise Unavailable(f"Kafka did not acknowledge the batch ({exc.__class__.__name__}); retry it") from exc
    return json_response({"accepted": len(accepted)}, status=202)


def _blob_address(request: web.Request) -> str:
    """The path's sha256, or 400 (no other text becomes a path in the store)."""
    sha = request.match_info["sha256"]
    if not is_sha256(sha):
        raise BadRequest(f"blob address {sha!r} is not a lowercase hex sha256")
    return sha


@auth.requires("write")
async def put_blob(request: web.Request) -> web.Response:
    sha = _blob_address(request)
    store = request.app[BLOBS]
    if store.exists(sha):
        return json_response({"sha256": sha, "stored": False})
    writer = await asyncio.to_thread(store.writer)
    try:
        async for chunk in request.content.iter_chunked(1024 * 1024):
            await asyncio.to_thread(writer.write, chunk)
        _, size = await asyncio.to_thread(writer.commit, sha)
    except BlobError as exc:
        raise BadRequest(str(exc)) from None
    finally:
        writer.__exit__()
    return json_response({"sha256": sha, "size": size, "stored": True}, status=201)


@auth.requires("read")
async def head_blob(request: web.Request) -> web.Response:
    return web.Response(status=200 if request.app[BLOBS].exists(_blob_address(request)) else 404)


@auth.public
async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def create_app(settings: ServiceSettings) -> web.Application:
    """The gateway app: a started producer and the blob store live for the app's life."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[error_middleware])
    app[BLOBS] = LocalBlobStore(settings.blob_dir)
    # Bearer or Basic only: a browser's login cookie never writes (no CSRF through it).
    auth.setup(app, settings.database_url, enabled=auth.enabled(settings.auth), cookies=False)

    async def producer_ctx(app: web.Application) -> AsyncIterator[None]:
        await ensure_topic(settings.kafka_bootstrap, settings.topic, settings.partitions)
        producer = EventProducer(settings.kafka_bootstrap, settings.topic, client_id="runstream-gateway")
        await producer.start()
        app[PRODUCER] = producer
        yield
        await producer.stop()

    app.cleanup_ctx.append(producer_ctx)
    app.router.add_post("/api/v1/events", post_events)
    app.router.add_put("/api/v1/blobs/{sha256}", put_blob)
    app.router.add_route("HEAD", "/api/v1/blobs/{sha256}", head_blob)
    app.router.add_get("/api/v1/health", health)
    return app


def main(settings: ServiceSettings) -> None:
    auth.check_bind(auth.enabled(settings.auth), [("the gateway", settings.gateway_host)])
    web.run_app(create_app(settings), host=settings.gateway_host, port=settings.gateway_port)
