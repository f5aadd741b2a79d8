"""The HTTP services' hardened surface, shared by the query API and the ingest gateway.

:func:`install` adds, to an app built with :func:`query_api.errors.error_middleware` first:

* **security headers** on every response (``on_response_prepare``, so JSON, errors, file
  downloads, the SSE stream and the UI's pages alike): ``X-Content-Type-Options: nosniff``,
  ``X-Frame-Options: DENY``, ``Referrer-Policy``, and a ``Content-Security-Policy`` of
  ``default-src 'none'; frame-ancestors 'none'; sandbox`` unless the handler set its own
  (the UI's pages set theirs in :mod:`query_api.ui`);
* a **Host check** (DNS rebinding): the ``Host`` header must name a loopback address or one
  of ``allowed_hosts``;
* deliberate **CORS**: a preflight (``OPTIONS`` with ``Origin``) from an origin listed in
  ``cors_origins`` is answered with that exact origin, any other is a 403; never ``*``;
* **NUL refused** in the path and every query parameter (400 naming the parameter), before
  any handler can send it to PostgreSQL, which cannot store it;
* a **request body size** limit from ``Content-Length`` (413 before the body is read).

:class:`RateLimiter` (the gateway's per-principal token bucket) and :class:`StreamSlots`
(the live stream's caps) are used by the handlers that need them. The key of a principal
is its token id, else the client address (:func:`principal_key`).
:class:`FailedAuthLimiter` (token buckets of failed authentications per client address
and per token id) is used by :mod:`query_api.auth` on both services, before the KDF runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from ipaddress import IPv6Address, IPv6Network, ip_address
from typing import NoReturn

from aiohttp import web

from runstream.query_api import auth, tokens
from runstream.query_api.errors import BadRequest, Forbidden, Handler, PayloadTooLarge, TooManyRequests

__all__ = [
    "DEFAULT_CSP",
    "FailedAuthLimiter",
    "RateLimiter",
    "StreamSlots",
    "install",
    "principal_key",
]

DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
"""The policy of every response that is not a UI page: nothing loads, nothing frames it,
and a document opened from it (a downloaded file shown by a careless browser) is sandboxed."""

_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
"""Host names always allowed besides loopback addresses (``127.0.0.0/8``, ``::1``)."""

CORS_METHODS = "GET, HEAD, POST, PUT"
CORS_HEADERS = "Authorization, Content-Type, Last-Event-ID, Cache-Control"


def principal_key(request: web.Request) -> str:
    """Whose budget a request spends: ``token:<id>`` when the principal has a token, else
    ``addr:<client address>`` (authentication off: loopback clients)."""
    p = request.get(auth.PRINCIPAL)
    token_id = p.token_id if p is not None else None
    return f"token:{token_id}" if token_id else f"addr:{request.remote or '?'}"


# ---------------------------------------------------------------- headers


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Content-Security-Policy", DEFAULT_CSP)


# ---------------------------------------------------------------- Host and CORS


def _split_names(raw: str) -> list[str]:
    return [n.strip() for n in raw.split(",") if n.strip()]


def _host_name(host: str) -> str:
    """``Host`` without its port (``[::1]:8080`` -> ``::1``), lower-case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ip_address(name).is_loopback
    except ValueError:
        return False


def host_middleware(allowed: Iterable[str]) -> Handler | None:
    """A middleware that answers 400 to a ``Host`` that is neither loopback nor ``allowed``
    (None when ``allowed`` holds ``*``: the check is off)."""
    names = {n.lower() for n in allowed}
    if "*" in names:
        return None

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = request.headers.get("Host", "")
        name = _host_name(raw)
        if not (_is_loopback(name) or name in names):
            raise BadRequest(f"Host {raw!r} is not a name this service answers to; list it in "
                             "RUNSTREAM_ALLOWED_HOSTS (comma-separated) to allow it")
        return await handler(request)

    return check_host


def cors_middleware(origins: Iterable[str]) -> Handler:
    """Answer preflights for the listed origins only; other cross-origin preflights are 403."""
    allowed = {o.rstrip("/") for o in origins}

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and origin is not None:
            if origin not in allowed:
                raise Forbidden(f"cross-origin requests from {origin!r} are not allowed; list the origin in "
                                "RUNSTREAM_CORS_ORIGINS to allow it")
            return web.Response(status=204, headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": CORS_METHODS,
                "Access-Control-Allow-Headers": CORS_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            })
        response = await handler(request)
        if origin is not None and origin in allowed and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    return cors


# ---------------------------------------------------------------- NUL and size


def _describe(value: str) -> str | None:
    if "\x00" in value:
        return "a NUL character"
    return None


@web.middleware
async def reject_unstorable(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a NUL in any path parameter, the path or any query parameter, naming it:
    PostgreSQL cannot store NUL in text, so such a value can never match anything."""
    for name, value in request.match_info.items():
        if (what := _describe(value)) is not None:
            raise BadRequest(f"path parameter {name!r} contains {what}, which no name can contain")
    if (what := _describe(request.path)) is not None:
        raise BadRequest(f"the path contains {what}, which no name can contain")
    for name, value in request.query.items():
        if (what := _describe(name)) is not None:
            raise BadRequest(f"query parameter name {name!r} contains {what}")
        if (what := _describe(value)) is not None:
            raise BadRequest(f"query parameter {name!r} contains {what}, which no name or value can contain")
    return await handler(request)


def body_limit_middleware(max_bytes: int, exempt: Iterable[str] = ()) -> Handler:
    """413 for a declared ``Content-Length`` above ``max_bytes`` (routes named in ``exempt``
    check their own limit, e.g. the gateway's blob upload)."""
    skip = frozenset(exempt)

    @web.middleware
    async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        size = request.content_length
        if size is not None and size > max_bytes and request.match_info.route.name not in skip:
            raise PayloadTooLarge(f"request body of {size} bytes is over this service's limit of {max_bytes} bytes")
        return await handler(request)

    return body_limit


def install(app: web.Application, *, allowed_hosts: str, cors_origins: str, max_body_bytes: int,
            body_limit_exempt: Iterable[str] = ()) -> None:
    """Add the shared hardening to ``app`` (after its error middleware, which must be first)."""
    app.on_response_prepare.append(_security_headers)
    middlewares = [
        host_middleware(_split_names(allowed_hosts)),
        cors_middleware(_split_names(cors_origins)),
        reject_unstorable,
        body_limit_middleware(max_body_bytes, body_limit_exempt),
    ]
    app.middlewares.extend(m for m in middlewares if m is not None)


# ---------------------------------------------------------------- rate and streams


class RateLimiter:
    """A token bucket per principal key: ``rate`` requests per second on average, up to
    ``burst`` at once. The least recently seen keys are forgotten past ``max_keys`` (a
    forgotten key starts with a full bucket, which is what a new one gets anyway)."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate, self.burst, self.max_keys = rate, max(1, burst), max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """Spend one token of ``key``: 0 if there was one, else the seconds until there is."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def give_back(self, key: str, now: float | None = None) -> None:
        """Return the token a :meth:`take` of ``key`` spent (call it only after a take that
        answered 0). A bucket full again is forgotten: a new key starts full anyway."""
        entry = self._buckets.get(key)
        if self.rate <= 0 or entry is None:
            return
        now = time.monotonic() if now is None else now
        tokens, last = entry
        tokens = tokens + max(0.0, now - last) * self.rate + 1
        if tokens >= self.burst:
            del self._buckets[key]
        else:
            self._buckets[key] = (tokens, now)

    def check(self, request: web.Request) -> None:
        """429 with ``Retry-After`` (whole seconds, at least 1) when the principal is over its rate."""
        wait = self.take(principal_key(request))
        if wait > 0:
            raise TooManyRequests(
                f"rate limit: at most {self.rate:g} requests per second (bursts of {self.burst}) per "
                f"token or client; retry after {wait:.2f} s", retry_after=max(1, math.ceil(wait)))


def address_key(remote: str | None) -> str:
    """Whose failed-authentication budget a client address spends: the address itself, an
    IPv4-mapped IPv6 address as IPv4, and any other IPv6 address as its /64 (one host
    usually holds a whole /64, so rotating addresses inside it gains nothing)."""
    try:
        address = ip_address(remote or "")
    except ValueError:
        return remote or "?"
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(IPv6Network((address.packed, 64), strict=False))
    return str(address)


class FailedAuthLimiter:
    """Failed authentications, budgeted like :class:`RateLimiter` (``rate`` per second on
    average, ``burst`` at once) per client address and, for wrong secrets, per token id (the
    id is public, so guesses at one id from many addresses are throttled too).

    Every attempt that needs the KDF first reserves one from both budgets (so concurrent
    guesses cannot overtake the count) and is refused with a 429 when either is empty,
    before the KDF runs; a success gives the reservation back. The one exception keeps
    valid tokens working behind a shared address under attack: a token this process has
    verified before (its sha256 is remembered, the least recently seen of ``max_keys``
    forgotten) is never refused here: it is verified in full, as any other, revocation and
    expiry included. A valid token this process has not seen yet is refused like any other
    while its address (or id) is over budget: telling it from a guess takes the KDF.
    Per process, in memory, like the other limits.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        self.addresses = RateLimiter(rate, burst, max_keys)
        self.token_ids = RateLimiter(rate, burst, max_keys)
        self.clock, self.max_keys = clock, max_keys
        self._proven: OrderedDict[bytes, None] = OrderedDict()

    def _refuse(self, whose: str, wait: float) -> NoReturn:
        limits = self.addresses
        raise TooManyRequests(
            f"too many failed authentications {whose}: at most {limits.burst} at once, then one every "
            f"{1 / limits.rate:g} s (RUNSTREAM_AUTH_FAILURE_BURST, RUNSTREAM_AUTH_FAILURE_RATE_PER_S); "
            f"retry after {wait:.2f} s", retry_after=max(1, math.ceil(wait)), limit="failed_authentications")

    def charge(self, remote: str | None, refuse: bool) -> None:
        """Count a failed authentication of ``remote`` that needed no KDF (no token, a
        malformed header, a login without a token); with ``refuse``, answer 429 instead
        when its budget is already empty."""
        wait = self.addresses.take(address_key(remote), self.clock())
        if wait > 0 and refuse:
            self._refuse(f"from {address_key(remote)}", wait)

    @contextlib.contextmanager
    def attempt(self, remote: str | None, token: str) -> Iterator[None]:
        """Around one verification of ``token`` from ``remote``: 429 before it when the
        budget is empty (unless the token was verified here before); a
        :class:`~query_api.tokens.TokenError` inside spends the address's budget, and a
        :class:`~query_api.tokens.WrongSecret` the token id's as well."""
        digest = hashlib.sha256(token.encode()).digest()
        address = address_key(remote)
        try:
            token_id: str | None = tokens.parse(token)[0]
        except tokens.TokenError:
            token_id = None
        proven = digest in self._proven
        now = self.clock()
        # The keys whose budget this attempt holds one of (given back unless the client failed).
        held_address = address if (wait := self.addresses.take(address, now)) == 0 else None
        if held_address is None and not proven:
            self._refuse(f"from {address}", wait)
        held_id = None
        if token_id is not None:
            held_id = token_id if (wait := self.token_ids.take(token_id, now)) == 0 else None
            if held_id is None and not proven:
                self._give_back(held_address, None)
                self._refuse(f"for token rs_{token_id}_... (from any address)", wait)
        try:
            yield
        except tokens.TokenError as exc:
            self._proven.pop(digest, None)
            if not isinstance(exc, tokens.WrongSecret):
                self._give_back(None, held_id)  # per id, only guessed secrets count
            raise
        except BaseException:  # not the client's failure (the database, a cancelled request)
            self._give_back(held_address, held_id)
            raise
        self._give_back(held_address, held_id)
        self._proven[digest] = None
        self._proven.move_to_end(digest)
        while len(self._proven) > self.max_keys:
            self._proven.popitem(last=False)

    def _give_back(self, address: str | None, token_id: str | None) -> None:
        now = self.clock()
        if address is not None:
            self.addresses.give_back(address, now)
        if token_id is not None:
            self.token_ids.give_back(token_id, now)


class StreamSlots:
    """Counts open live streams, in total and per principal key; :meth:`hold` refuses past either cap."""

    def __init__(self, total: int, per_principal: int) -> None:
        self.total, self.per_principal = total, per_principal
        self._open: dict[str, int] = {}
        self._count = 0

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        if self.total > 0 and self._count >= self.total:
            raise TooManyRequests(f"{self._count} live streams are open, this server's limit "
                                  f"(RUNSTREAM_LIVE_STREAMS_MAX={self.total}); retry later", retry_after=5)
        mine = self._open.get(key, 0)
        if self.per_principal > 0 and mine >= self.per_principal:
            raise TooManyRequests(f"{mine} live streams are open for this token or client, the limit "
                                  f"(RUNSTREAM_LIVE_STREAMS_PER_PRINCIPAL={self.per_principal}); close one first",
                                  retry_after=5)
        self._open[key] = mine + 1
        self._count += 1
        try:
            yield
        finally:
            self._count -= 1
            left = self._open[key] - 1
            if left:
                self._open[key] = left
            else:
                del self._open[key]
