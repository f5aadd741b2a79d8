"""HTTP ingest for clients that cannot reach Kafka.

``POST /api/v1/events`` takes a JSON array of events. The whole batch is validated
first (schemas.events.decode); if any event is invalid the answer is 422 listing each
bad event by index and nothing is produced, so a batch is never half-written. Valid
batches are produced with the same producer the SDK uses and answered 202 after Kafka
acknowledged them. A batch with an event that contradicts what its run recorded (an
artifact's content, a terminal status, its start: processors.integrity) is a 409 naming
each, and nothing is produced. Each event's envelope ``principal`` is stamped with the
request's token id, whatever the body said (the audit trail). ``PUT
/api/v1/blobs/{sha256}`` stores an artifact's bytes.

Hardened (docs/SECURITY.md): the shared middlewares of :mod:`query_api.hardening`
(Host check, CORS, NUL, body size, security headers); events only as
``Content-Type: application/json`` (a cross-origin form or ``text/plain`` POST is a 415),
a body nested deeper than the decoder recurses is a 400 (invalid UTF-8 is the 422 of its
event, naming the field, or a 400 outside any string); a per-principal rate
limit (429 + ``Retry-After``) and, before it, query_api.auth's limit of failed
authentications per client address and token id; uploads capped per request (413) and per workspace (507,
:mod:`ingest.quota`). ``GET /api/v1/openapi.json`` describes it (:mod:`ingest.openapi`).

Every route but health needs a token (query_api.auth; writes need the ``write`` scope). The
gateway stamps each event's ``workspace`` with the principal's (whatever the body said)
and refuses, naming it, any event of a run that belongs to another workspace (404, as
the query API answers for it; nothing of the batch is produced).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import orjson
from aiohttp import web
from aiokafka.errors import KafkaError

from runstream.blobstore import BlobError, LocalBlobStore
from runstream.ingest import integrity_check, openapi
from runstream.ingest.quota import BlobQuota, receive, too_large
from runstream.ingest.topic import ensure_topic
from runstream.producer import EventProducer
from runstream.query_api import auth, hardening, queries
from runstream.query_api.errors import (
    BadRequest,
    Handler,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    error_middleware,
    json_response,
)
from runstream.schemas import events
from runstream.schemas.blobs import is_sha256
from runstream.schemas.limits import MAX_EVENT_BYTES, MAX_EVENTS_PER_REQUEST, MAX_REQUEST_BYTES
from runstream.settings import ServiceSettings

PRODUCER = web.AppKey("producer", EventProducer)
BLOBS = web.AppKey("blobs", LocalBlobStore)
QUOTA = web.AppKey("quota", BlobQuota)
LIMITER = web.AppKey("limiter", hardening.RateLimiter)
GATEWAY_SETTINGS = web.AppKey("gateway_settings", ServiceSettings)
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])

_TOO_DEEP = "request body is nested too deeply (arrays/objects inside each other); no event needs that"



def validate_batch(body: bytes) -> list[tuple[events.Event, bytes]]:
    """Split a JSON array into ``(event, raw event)`` pairs; any invalid event rejects all."""
    try:
        raws = _raw_list.decode(body)
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None
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
        except RecursionError:
            errors.append({"index": index, "message": _TOO_DEEP.replace("request body", "event")})
    if errors:
        raise Unprocessable(f"{len(errors)} of {len(raws)} events are invalid; none were accepted", events=errors)
    return accepted


def _reject_lone_surrogate(body: bytes) -> None:
    """A ``\\ud800`` escape without its pair stops msgspec at the array already; name the
    event and field as for any other invalid value (422), not as malformed JSON."""
    try:
        found = events.find_lone_surrogate(body)
    except RecursionError:  # nested too deep for the scan: the caller answers 400 as malformed
        return
    index = re.search(r"\$\[(\d+)\]", found[0]) if found else None
    if found is None or index is None:
        return
    where, char = found
    where = where[:index.start()] + "$" + where[index.end():]  # the path inside the event
    message = f"{where} holds a lone surrogate {char!r}, which UTF-8 and PostgreSQL cannot store"
    raise Unprocessable("1 event is invalid; none were accepted", events=[{"index": int(index[1]), "message": message}])


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
    if request.content_type != "application/json":
        # Browsers send text/plain and form types cross-origin without a preflight: refusing
        # them is what keeps a web page from posting events (CSRF).
        raise UnsupportedMediaType(f"events must be sent as Content-Type: application/json, not "
                                   f"{request.headers.get('Content-Type', '(none)')!r}")
    decoded = validate_batch(await request.read())
    principal = auth.principal_of(request)
    await check_runs(request, {e.run_id for e, _ in decoded}, principal.workspace)
    await integrity_check.refuse_conflicts(request.app, [e for e, _ in decoded])
    accepted = [(e.run_id, stamp(e, raw, principal.workspace, principal.token_id)) for e, raw in decoded]
    try:
        await request.app[PRODUCER].send_batch(accepted)
    except KafkaError as exc:
        raise Unavailable(f"Kafka did not acknowledge the batch ({exc.__class__.__name__}); retry it") from exc
    return json_response({"accepted": len(accepted)}, status=202)


def stamp(event: events.Event, raw: bytes, workspace: str, principal: str | None) -> bytes:
    """``raw`` with the envelope's ``workspace`` and ``principal`` (the token id, the audit
    trail) set to the authenticated request's: whatever the body said is overwritten, and
    dropped when the request has none (the default workspace is written as absent). The
    bytes are re-encoded only when they differ (never on a local stack's plain batch)."""
    wanted = None if workspace == events.DEFAULT_WORKSPACE else workspace
    if event.workspace == wanted and event.principal == principal:
        return raw
    doc = orjson.loads(raw)
    for key, value in (("workspace", wanted), ("principal", principal)):
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return orjson.dumps(doc)


def _blob_address(request: web.Request) -> str:
    """The path's sha256, or 400 (no other text becomes a path in the store)."""
    sha = request.match_info["sha256"]
    if not is_sha256(sha):
        raise BadRequest(f"blob address {sha!r} is not a lowercase hex sha256")
    return sha


@auth.requires("write")
async def put_blob(request: web.Request) -> web.Response:
    sha = _blob_address(request)
    settings, store, quota = request.app[GATEWAY_SETTINGS], request.app[BLOBS], request.app[QUOTA]
    workspace = auth.principal_of(request).workspace
    declared = request.content_length
    if declared is not None and declared > settings.max_upload_bytes:
        raise too_large(declared, settings.max_upload_bytes)
    if store.exists(sha):
        if not quota.charged(workspace, sha):
            size = store.path_for(sha).stat().st_size
            quota.check(workspace, size)
            quota.charge(workspace, sha, size)
        return json_response({"sha256": sha, "stored": False})
    try:
        _, size = await receive(request.content, declared, store, quota, workspace, settings.max_upload_bytes, sha)
    except BlobError as exc:
        raise BadRequest(str(exc)) from None
    return json_response({"sha256": sha, "size": size, "stored": True}, status=201)


@auth.requires("read")
async def head_blob(request: web.Request) -> web.Response:
    return web.Response(status=200 if request.app[BLOBS].exists(_blob_address(request)) else 404)


@auth.public
async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@auth.public
async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of the gateway."""
    return json_response(openapi.document())


_UNLIMITED = frozenset({"health", "openapi"})


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route but health and the document spends one of the principal's tokens."""
    if request.match_info.route.name not in _UNLIMITED:
        request.app[LIMITER].check(request)
    return await handler(request)


def create_app(settings: ServiceSettings) -> web.Application:
    """The gateway app: a started producer and the blob store live for the app's life."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[error_middleware])
    hardening.install(app, allowed_hosts=settings.allowed_hosts, cors_origins=settings.cors_origins,
                      max_body_bytes=MAX_REQUEST_BYTES, body_limit_exempt={"blob_put"})
    # Bearer or Basic only: a browser's login cookie never writes (no CSRF through it).
    auth.setup(app, settings.database_url, enabled=auth.enabled(settings.auth), cookies=False,
               failures=hardening.FailedAuthLimiter(settings.auth_failure_rate_per_s, settings.auth_failure_burst))
    app.middlewares.append(rate_limit)  # after auth's middleware: the principal is known
    app[GATEWAY_SETTINGS] = settings
    app[BLOBS] = LocalBlobStore(settings.blob_dir)
    app[QUOTA] = BlobQuota(settings.blob_dir, settings.blob_quota_bytes)
    app[LIMITER] = hardening.RateLimiter(settings.gateway_rate_per_s, settings.gateway_rate_burst)

    async def producer_ctx(app: web.Application) -> AsyncIterator[None]:
        security = settings.kafka_security()
        await ensure_topic(settings.kafka_bootstrap, settings.topic, settings.partitions, security=security)
        producer = EventProducer(settings.kafka_bootstrap, settings.topic, client_id="runstream-gateway",
                                 security=security)
        await producer.start()
        app[PRODUCER] = producer
        yield
        await producer.stop()

    app.cleanup_ctx.append(producer_ctx)
    app.cleanup_ctx.append(integrity_check.pool_ctx(settings))
    app.router.add_post("/api/v1/events", post_events, name="events")
    app.router.add_put("/api/v1/blobs/{sha256}", put_blob, name="blob_put")
    app.router.add_route("HEAD", "/api/v1/blobs/{sha256}", head_blob, name="blob_head")
    app.router.add_get("/api/v1/health", health, name="health")
    app.router.add_get("/api/v1/openapi.json", openapi_document, name="openapi")
    return app


def main(settings: ServiceSettings) -> None:
    auth.check_bind(auth.enabled(settings.auth), [("the gateway", settings.gateway_host)])
    web.run_app(create_app(settings), host=settings.gateway_host, port=settings.gateway_port)
