"""Authentication and authorization of the query API and the ingest gateway.

One aiohttp middleware (:func:`setup`) authenticates every request and stores its
:class:`Principal` at ``request[PRINCIPAL]``; handlers get it only through
:func:`principal_of`. The token comes from ``Authorization: Bearer <token>``, from HTTP
Basic with the token as the password (what MLflow clients send), or, on the query API
only, from the web UI's ``runstream_token`` cookie (HttpOnly, SameSite=Strict; the
gateway ignores cookies so a web page can never write with a browser's login). A route
is open to anyone only if its handler is marked :func:`public`; every other route needs
at least a read token, and the scope its handler declares with :func:`requires` (routes
of other methods than GET/HEAD need ``write`` unless they say otherwise). No, bad,
revoked or expired token: 401 with ``WWW-Authenticate: Bearer``; too small a scope: 403.

With authentication off (``RUNSTREAM_AUTH=off``, refused unless every listener is on
loopback: :func:`check_bind`) every request is ``Principal(None, "default", "admin")``.

Verified tokens are cached per process (the KDF is deliberately slow) for at most
:data:`CACHE_TTL_S` and never past their expiry; the cache is used only while this
process ``LISTEN``s on :data:`~runstream.schemas.notify.TOKENS_CHANNEL`, and a
revocation's notification drops the token at once (within milliseconds of the commit).

Failed authentications (no token, a malformed header, an unknown, revoked, expired or
wrong token, a failed login) spend the client address's budget of the
:class:`~query_api.hardening.FailedAuthLimiter` given to :func:`setup`; once it is empty,
failing credentials and logins are a 429 before any KDF runs. A cached token never meets
the limiter, and a token this process verified before is never refused by it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
from aiohttp import web

from runstream.query_api import tokens
from runstream.query_api.errors import BadRequest, Forbidden, Unauthorized, Unavailable, json_response
from runstream.schemas.events import DEFAULT_WORKSPACE
from runstream.schemas.notify import TOKENS_CHANNEL

if TYPE_CHECKING:  # hardening imports this module; the limiter is handed in by create_app
    from runstream.query_api.hardening import FailedAuthLimiter

__all__ = [
    "COOKIE",
    "Authenticator",
    "Principal",
    "check_bind",
    "enabled",
    "principal_of",
    "public",
    "requires",
    "setup",
]

log = logging.getLogger("runstream.auth")

COOKIE = "runstream_token"
"""The web UI's login cookie (set by ``POST /api/login``)."""
CACHE_TTL_S = 60.0
"""Longest time a verified token is trusted without reading its row again (revocation
does not wait for it: it is notified)."""
CACHE_MAX = 10_000
RECONNECT_S = 1.0

H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the token's id (None with authentication off), its
    workspace and scope (read < write < admin)."""

    token_id: str | None
    workspace: str
    scope: tokens.Scope

    def allows(self, needed: tokens.Scope) -> bool:
        """Whether this principal's scope covers ``needed``."""
        return tokens.SCOPES.index(self.scope) >= tokens.SCOPES.index(needed)


ANONYMOUS_ADMIN = Principal(None, DEFAULT_WORKSPACE, "admin")

PRINCIPAL = web.RequestKey("principal", Principal)
"""Where the middleware stores a request's principal (read it with :func:`principal_of`)."""
"""Every request's principal when authentication is off."""


def principal_of(request: web.Request) -> Principal:
    """The authenticated principal of ``request`` (set by the middleware)."""
    principal = request.get(PRINCIPAL)
    if not isinstance(principal, Principal):  # a route the middleware did not see: never serve it
        raise Unauthorized("this request was not authenticated")
    return principal


def public(handler: H) -> H:
    """Mark a handler as open to anyone (health, readiness, the OpenAPI document, the UI's
    static pages, login): the middleware still attaches a principal when a token is given."""
    handler.runstream_public = True  # type: ignore[attr-defined]
    return handler


def requires(scope: tokens.Scope) -> Callable[[H], H]:
    """Declare the scope a handler needs (default: ``read`` for GET/HEAD, else ``write``)."""
    if scope not in tokens.SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def mark(handler: H) -> H:
        handler.runstream_scope = scope  # type: ignore[attr-defined]
        return handler

    return mark


def needed_scope(method: str, handler: Any) -> tokens.Scope | None:
    """The scope a route needs (None: public)."""
    if getattr(handler, "runstream_public", False):
        return None
    declared = getattr(handler, "runstream_scope", None)
    if declared is not None:
        return declared  # type: ignore[no-any-return]
    return "read" if method in ("GET", "HEAD", "OPTIONS") else "write"


# ---------------------------------------------------------------- where tokens are checked


class Authenticator:
    """Verifies tokens against the ``tokens`` table, with the per-process cache kept
    coherent by ``LISTEN runstream_tokens``; what is not in the cache is verified under
    ``failures``, the failed-authentication limiter."""

    def __init__(self, database_url: str, failures: FailedAuthLimiter) -> None:
        self.database_url = database_url
        self.failures = failures
        self.pool: asyncpg.Pool | None = None
        self.listening = asyncio.Event()
        self._cache: dict[bytes, tuple[Principal, float]] = {}
        self._by_id: dict[str, set[bytes]] = {}
        self._generation: dict[str, int] = {}
        self._on_revoke: dict[str, set[Callable[[], None]]] = {}
        self._epoch = 0  # LISTEN connections made so far: a reconnection may have missed a revocation

    async def principal(self, token: str, remote: str | None) -> Principal:
        """The principal of ``token`` sent from the client address ``remote``, or
        :class:`Unauthorized` saying why not (:class:`TooManyRequests`, before the KDF, when
        ``remote`` or the token's id is over its failed-authentication budget)."""
        key = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(key) if self.listening.is_set() else None
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        token_id = token[3:15]
        generation = self._generation.get(token_id, 0)
        epoch = self._epoch if self.listening.is_set() else -1
        if self.pool is None:
            raise Unavailable("authentication is not ready yet; retry")
        try:
            with self.failures.attempt(remote, token):
                row = await tokens.verify(self.pool, token)
        except tokens.TokenError as exc:
            raise Unauthorized(str(exc)) from None
        principal = Principal(row.token_id, row.workspace, row.scope)
        # Cache only if no revocation of it was notified meanwhile and the same LISTEN held throughout.
        if epoch == self._epoch and self.listening.is_set() and self._generation.get(token_id, 0) == generation:
            ttl = CACHE_TTL_S
            if row.expires_at is not None:
                ttl = min(ttl, (row.expires_at - datetime.now(UTC)).total_seconds())
            if len(self._cache) >= CACHE_MAX:
                self._drop_all()
            self._cache[key] = (principal, time.monotonic() + ttl)
            self._by_id.setdefault(row.token_id, set()).add(key)
        return principal

    def revoked(self, token_id: str) -> None:
        """A revocation was notified: forget the token (and any verification in flight)."""
        self._generation[token_id] = self._generation.get(token_id, 0) + 1
        for key in self._by_id.pop(token_id, ()):
            self._cache.pop(key, None)
        for close in list(self._on_revoke.get(token_id, ())):
            close()

    @contextlib.contextmanager
    def revoking(self, token_id: str | None, close: Callable[[], None]) -> Iterator[None]:
        """While inside, a revocation of ``token_id`` calls ``close`` (an open live stream
        ends, and its client's reconnection is refused)."""
        if token_id is None:
            yield
            return
        callbacks = self._on_revoke.setdefault(token_id, set())
        callbacks.add(close)
        try:
            yield
        finally:
            callbacks.discard(close)
            if not callbacks:
                self._on_revoke.pop(token_id, None)

    def _drop_all(self) -> None:
        self._cache.clear()
        self._by_id.clear()

    def _on_notification(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.revoked(payload)

    async def run(self) -> None:
        """Hold ``LISTEN runstream_tokens`` until cancelled, reconnecting; the cache is
        not used (and is emptied) whenever the connection is down."""
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.database_url, server_settings={"application_name": "runstream-auth"})
                lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                conn.add_termination_listener(lambda _c: lost.done() or lost.set_result(None))
                await conn.add_listener(TOKENS_CHANNEL, self._on_notification)
                self._epoch += 1
                self.listening.set()
                await lost
                log.warning("auth: LISTEN %s connection lost; reconnecting", TOKENS_CHANNEL)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("auth: cannot LISTEN %s (%s); retrying", TOKENS_CHANNEL, type(exc).__name__)
            finally:
                self.listening.clear()
                self._drop_all()
                if conn is not None and not conn.is_closed():
                    await conn.close()
            await asyncio.sleep(RECONNECT_S)


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)


def closed_on_revoke(request: web.Request, close: Callable[[], None]) -> contextlib.AbstractContextManager[None]:
    """Call ``close`` if the request's token is revoked while the context lasts (long-lived
    responses: the live stream). Nothing to do with authentication off."""
    authenticator = request.app.get(AUTHENTICATOR)
    if authenticator is None:
        return contextlib.nullcontext()
    return authenticator.revoking(principal_of(request).token_id, close)


def _credential(request: web.Request, cookies: bool) -> str | None:
    """The token a request carries, or None; a malformed Authorization header is a 401."""
    header = request.headers.get("Authorization")
    if header is not None:
        kind, _, value = header.strip().partition(" ")
        value = value.strip()
        if kind.lower() == "bearer" and value:
            return value
        if kind.lower() == "basic" and value:
            try:
                _, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                password = ""
            if password:
                return password
        raise Unauthorized("Authorization must be 'Bearer <token>' (or HTTP Basic with the token as password)")
    if cookies:
        return request.cookies.get(COOKIE) or None
    return None


def middleware(auth: Authenticator | None, cookies: bool) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The authentication middleware (``auth`` None: authentication off)."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
        if auth is None:
            request[PRINCIPAL] = ANONYMOUS_ADMIN
            return await handler(request)
        needed = needed_scope(request.method, request.match_info.handler)
        try:
            token = _credential(request, cookies) if needed is not None or "Authorization" in request.headers else None
        except Unauthorized:
            auth.failures.charge(request.remote, refuse=True)
            raise
        if token is not None:
            request[PRINCIPAL] = await auth.principal(token, request.remote)
        elif needed is not None:
            # Counted, but always a 401 (no KDF is at stake, and the UI's login form follows a 401).
            auth.failures.charge(request.remote, refuse=False)
            raise Unauthorized("authentication required: send Authorization: Bearer <token> "
                               "(create one with `runstream token create`)")
        if needed is not None and not principal_of(request).allows(needed):
            p = principal_of(request)
            raise Forbidden(f"token rs_{p.token_id}_... has scope {p.scope!r}; {request.method} {request.path} "
                            f"needs {needed!r}")
        return await handler(request)

    return authenticate


def setup(app: web.Application, database_url: str, enabled: bool, cookies: bool,
          failures: FailedAuthLimiter) -> None:
    """Put the authentication middleware on ``app`` (before the app is frozen); with
    ``enabled`` its token store's pool and LISTEN live for the app's lifetime, and failed
    authentications are limited by ``failures``."""
    if not enabled:
        app.middlewares.append(middleware(None, cookies))
        return
    auth = Authenticator(database_url, failures)
    app[AUTHENTICATOR] = auth

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        auth.pool = await asyncpg.create_pool(database_url, min_size=0, max_size=4,
                                              server_settings={"application_name": "runstream-auth"})
        listener = asyncio.create_task(auth.run())
        try:
            yield
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await auth.pool.close()

    app.cleanup_ctx.append(lifetime)
    app.middlewares.append(middleware(auth, cookies))


# ---------------------------------------------------------------- the UI's login


@public
async def login(request: web.Request) -> web.Response:
    """``POST /api/login`` ``{"token": "rs_..."}``: set the UI's cookie (401 for a bad token;
    429 while the client is over its failed-authentication budget, unless the token was
    verified by this process before)."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    token = body.get("token") if isinstance(body, dict) else None
    auth = request.app.get(AUTHENTICATOR)
    if not isinstance(token, str) or not token:
        if auth is not None:
            auth.failures.charge(request.remote, refuse=True)
        raise BadRequest('the body must be a JSON object {"token": "rs_..."}')
    principal = ANONYMOUS_ADMIN if auth is None else await auth.principal(token, request.remote)
    response = json_response({"workspace": principal.workspace, "scope": principal.scope,
                              "token_id": principal.token_id})
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/", secure=request.secure)
    return response


@public
async def logout(request: web.Request) -> web.Response:
    """``POST /api/logout``: clear the UI's cookie."""
    response = json_response({"logged_out": True})
    response.del_cookie(COOKIE, path="/", samesite="Strict", secure=request.secure, httponly=True)
    return response


@requires("read")
async def whoami(request: web.Request) -> web.Response:
    """``GET /api/whoami``: the caller's workspace and scope (the UI shows them)."""
    p = principal_of(request)
    return json_response({"workspace": p.workspace, "scope": p.scope, "token_id": p.token_id})


# ---------------------------------------------------------------- safe defaults


def enabled(setting: str) -> bool:
    """``RUNSTREAM_AUTH``: ``on`` or ``off`` (any case); anything else is refused, naming it,
    rather than guessed."""
    value = setting.strip().lower()
    if value not in ("on", "off"):
        raise SystemExit(f"runstream: RUNSTREAM_AUTH={setting!r} is neither 'on' nor 'off'")
    return value == "on"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as given to bind) is a loopback address or ``localhost``."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(enabled: bool, hosts: Iterable[tuple[str, str]]) -> None:
    """Refuse to serve without authentication on anything but loopback: ``SystemExit``
    with a message naming the listener (as Jupyter refuses a public bind without a token)."""
    if enabled:
        return
    exposed = [f"{what} on {host!r}" for what, host in hosts if not is_loopback(host)]
    if exposed:
        raise SystemExit(
            f"runstream: refusing to serve with authentication off (RUNSTREAM_AUTH=off) on a non-loopback "
            f"address: {', '.join(exposed)}. Anyone who can reach it could read and write every run. Turn "
            f"authentication on (unset RUNSTREAM_AUTH, create tokens with `runstream token create`) or bind "
            f"127.0.0.1."
        )
