"""The HTTP services' errors (query API and ingest gateway) and the one middleware that
turns them into JSON.

Every error response has the same body: ``{"error": {"status": 404, "message": "..."}}``.
Domain code raises an :class:`HttpError` subclass; aiohttp's own HTTP errors (unknown
route, wrong method) are reshaped the same way; a database that is unavailable (down,
restarting, shutting down: processors.dbfaults) is a 503 with ``Retry-After``; anything
unexpected is logged with its traceback and answered with a bare 500 that leaks nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from runstream.processors.dbfaults import is_transient

__all__ = [
    "HttpError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "InsufficientStorage",
    "Unauthorized",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "TooManyRequests",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "WaitTimeout",
    "error_middleware",
    "json_response",
]

log = logging.getLogger("runstream.query_api")

UNSTORABLE_SQLSTATES = frozenset({"22021", "22P05"})
"""character_not_in_repertoire, untranslatable_character: bad input, never a 500."""

RETRY_AFTER_S = 5
"""``Retry-After`` of a 503: about how long a PostgreSQL restart takes."""


class HttpError(Exception):
    """Root of the HTTP services' errors; ``status`` is the HTTP status it answers with and
    ``details`` (optional) extra fields of the error body."""

    status: int = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(HttpError):
    """A query or path parameter is malformed; the message names it and its value."""

    status = 400


class Unauthorized(HttpError):
    """No token, or one that is malformed, unknown, revoked or expired (query_api.auth)."""

    status = 401
    headers = {"WWW-Authenticate": 'Bearer realm="runstream"'}


class Forbidden(HttpError):
    """Refused whoever asks this way: a token's scope that does not allow it (a read token
    writing), a cross-origin preflight from an origin not allowed."""

    status = 403


class NotFound(HttpError):
    """The run, metric, table or file does not exist."""

    status = 404


class Conflict(HttpError):
    """The request contradicts what is recorded (e.g. events breaking processors.integrity)."""

    status = 409


class PayloadTooLarge(HttpError):
    """The request carries more than a limit allows."""

    status = 413


class UnsupportedMediaType(HttpError):
    """The body's ``Content-Type`` is not the one the route takes."""

    status = 415


class TooManyRequests(HttpError):
    """Over a rate or concurrency limit; ``retry_after`` (seconds) becomes ``Retry-After``."""

    status = 429


class InsufficientStorage(HttpError):
    """Storing the request's bytes would exceed a quota or the disk."""

    status = 507


class Unprocessable(HttpError):
    """Well-formed JSON whose content is invalid (e.g. events failing their schema)."""

    status = 422


class Unavailable(HttpError):
    """A dependency (Kafka, the database) did not answer; the client may retry."""

    status = 503


class NotReady(HttpError):
    """The database does not answer or is not migrated (readiness probe)."""

    status = 503


class WaitTimeout(HttpError):
    """``min_seq`` was not reached before ``wait_ms`` ran out."""

    status = 504


def _default(obj: Any) -> Any:
    # asyncpg returns its own UUID subclass, which orjson does not serialise natively.
    if isinstance(obj, uuid.UUID):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def json_response(data: Any, status: int = 200) -> web.Response:
    """Serialise ``data`` with orjson into a JSON response (UUIDs and datetimes as strings)."""
    return web.Response(
        body=orjson.dumps(data, default=_default),
        status=status,
        content_type="application/json",
    )


def _error(status: int, message: str, **details: Any) -> web.Response:
    return json_response({"error": {"status": status, "message": message, **details}}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure with the JSON error body and the right status."""
    try:
        return await handler(request)
    except HttpError as exc:
        response = _error(exc.status, exc.message, **exc.details)
        response.headers.update(getattr(exc, "headers", {}))
        if exc.status in (429, 503):
            response.headers["Retry-After"] = str(exc.details.get("retry_after", RETRY_AFTER_S))
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.reason if exc.text is None else _text(exc))
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
        if is_transient(exc):
            # Named by class only: the message may quote SQL or the server's address.
            log.warning("database unavailable in %s %s: %s", request.method, request.path, type(exc).__name__)
            response = _error(503, f"database unavailable ({type(exc).__name__}); retry later",
                              retry_after=RETRY_AFTER_S)
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        if getattr(exc, "sqlstate", None) in UNSTORABLE_SQLSTATES:
            # A value PostgreSQL cannot hold (NUL, bytes its encoding lacks) reached a query;
            # the middleware of query_api.hardening stops NUL first: this is the backstop.
            return _error(400, "a parameter holds a character the database cannot store (e.g. NUL)")
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal server error")


def _text(exc: web.HTTPException) -> str:
    """aiohttp's default body is ``"404: Not Found"``; keep only the human part."""
    text = exc.text or exc.reason
    prefix = f"{exc.status}: "
    return text[len(prefix):] if text.startswith(prefix) else text
