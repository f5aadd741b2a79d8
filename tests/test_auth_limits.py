"""The failed-authentication limit (docs/SECURITY.md "Limits"): a client that keeps
failing to authenticate is answered 429 with ``Retry-After`` before any KDF runs, on the
query API, its MLflow routes, the UI's login and the gateway, while valid tokens this
process verified before keep working from the same address; wrong secrets for one token
id are throttled from any address. The bucket arithmetic is checked with the limiter's
own clock; the rest against the real services (authentication on, small budgets)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from runstream.ingest.gateway import create_app as create_gateway
from runstream.query_api import tokens
from runstream.query_api.app import create_app as create_api
from runstream.query_api.errors import TooManyRequests
from runstream.query_api.hardening import FailedAuthLimiter, address_key
from runstream.settings import Settings
from tests.support.names import unique
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(120)


def unknown_token() -> str:
    """A well-formed token whose id no row has: refused after one indexed lookup."""
    return f"rs_{secrets.token_hex(6)}_{'x' * 43}"


def wrong_secret(token: str) -> str:
    """``token``'s id with another secret: the guess that costs a KDF run."""
    return token[:16] + ("y" * 43 if token[16:] != "y" * 43 else "z" * 43)


# ---------------------------------------------------------------- the arithmetic, on the limiter's clock


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(action: Callable[[], Any]) -> TooManyRequests:
    with pytest.raises(TooManyRequests) as caught:
        action()
    return caught.value


def test_a_client_address_gets_burst_failures_then_one_per_refill() -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(rate=0.5, burst=3, clock=clock)
    for _ in range(3):
        limiter.charge("10.0.0.1", refuse=True)
    error = refused(lambda: limiter.charge("10.0.0.1", refuse=True))
    assert error.status == 429 and error.details == {"retry_after": 2, "limit": "failed_authentications"}
    assert "from 10.0.0.1" in error.message and "RUNSTREAM_AUTH_FAILURE_BURST" in error.message
    limiter.charge("10.0.0.1", refuse=False)  # counted without a refusal (no credentials: always a 401)
    limiter.charge("10.0.0.2", refuse=True)  # another address has its own budget
    clock.now += 1.5
    assert refused(lambda: limiter.charge("10.0.0.1", refuse=True)).details["retry_after"] == 1  # 0.5 s, rounded up
    clock.now += 0.5
    limiter.charge("10.0.0.1", refuse=True)  # one refilled after 2 s...
    refused(lambda: limiter.charge("10.0.0.1", refuse=True))  # ...and only one
    clock.now += 6
    for _ in range(3):
        limiter.charge("10.0.0.1", refuse=True)  # the bucket refills up to the burst, not beyond
    refused(lambda: limiter.charge("10.0.0.1", refuse=True))


def test_addresses_are_keyed_per_host_and_ipv6_per_64() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2::a") == address_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::a") != address_key("2001:db8:1:2::a")
    assert address_key(None) == "?"


def test_a_zero_rate_is_no_limit() -> None:
    limiter = FailedAuthLimiter(rate=0, burst=1, clock=Clock())
    for _ in range(100):
        limiter.charge("10.0.0.1", refuse=True)


def fail(limiter: FailedAuthLimiter, remote: str, token: str, error: tokens.TokenError) -> None:
    with pytest.raises(type(error)), limiter.attempt(remote, token):
        raise error


def test_attempts_reserve_before_and_only_failures_spend() -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(rate=0.5, burst=2, clock=clock)
    good, other = "rs_aaaaaaaaaaaa_" + "g" * 43, "rs_bbbbbbbbbbbb_" + "o" * 43
    # Concurrent attempts each hold a reservation: a third cannot start while two are in flight.
    with limiter.attempt("10.0.0.1", good), limiter.attempt("10.0.0.1", other):
        refused(lambda: limiter.attempt("10.0.0.1", unknown_token()).__enter__())
    # Both succeeded: their reservations are given back, and a success is remembered.
    for _ in range(2):
        fail(limiter, "10.0.0.1", unknown_token(), tokens.TokenError("unknown token"))
    error = refused(lambda: limiter.attempt("10.0.0.1", unknown_token()).__enter__())
    assert error.details["retry_after"] == 2
    refused(lambda: limiter.attempt("10.0.0.1", wrong_secret(good)).__enter__())  # over budget: no verification
    with limiter.attempt("10.0.0.1", good):  # verified here before: never refused by the limiter
        pass
    refused(lambda: limiter.attempt("10.0.0.1", "rs_cccccccccccc_" + "n" * 43).__enter__())  # valid, but unseen


def test_wrong_secrets_for_one_id_are_throttled_from_any_address() -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(rate=0.5, burst=3, clock=clock)
    victim = "rs_0123456789ab_" + "v" * 43
    with limiter.attempt("10.0.0.9", victim):  # the owner, once
        pass
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        fail(limiter, address, wrong_secret(victim), tokens.WrongSecret("wrong secret"))
    error = refused(lambda: limiter.attempt("10.0.0.4", wrong_secret(victim)).__enter__())
    assert "rs_0123456789ab_" in error.message and "any address" in error.message
    limiter.charge("10.0.0.4", refuse=True)  # that address itself is not throttled (nothing was spent)
    with limiter.attempt("10.0.0.4", victim):  # the owner's token still passes
        pass
    # Unknown, revoked or expired tokens of an id cost no KDF and do not spend its budget.
    limiter = FailedAuthLimiter(rate=0.5, burst=1, clock=clock)
    fail(limiter, "10.0.0.1", victim, tokens.TokenError("revoked"))
    fail(limiter, "10.0.0.2", victim, tokens.TokenError("revoked"))


def test_a_failure_outside_verification_gives_the_reservation_back() -> None:
    limiter = FailedAuthLimiter(rate=0.5, burst=1, clock=Clock())
    with pytest.raises(OSError), limiter.attempt("10.0.0.1", unknown_token()):
        raise OSError("database down")  # not the client's failure
    fail(limiter, "10.0.0.1", unknown_token(), tokens.TokenError("unknown"))
    refused(lambda: limiter.attempt("10.0.0.1", unknown_token()).__enter__())


# ---------------------------------------------------------------- end to end


@dataclass
class Target:
    """One way of authenticating against a running service: ``send(token)`` answers
    ``(status, headers, json body)``; ``ok`` is the status of a valid token."""

    name: str
    url: str
    send: Callable[[str], Awaitable[tuple[int, Any, Any]]]
    ok: int


@pytest.fixture()
async def conn(services: Settings) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(services.database_url)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture()
def kdf_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every scrypt run of token verification in this process, by secret's hash (counted, then run)."""
    runs: list[str] = []
    real = tokens._hash

    def counted(kdf: str, secret: str, salt: bytes) -> bytes:
        runs.append(hashlib.sha256(secret.encode()).hexdigest())
        return real(kdf, secret, salt)

    monkeypatch.setattr(tokens, "_hash", counted)
    return runs


@pytest.fixture()
async def serve(services: Settings) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Start the query API (``"api"``) or the gateway with authentication on and the given
    settings in this process; answers its base URL."""
    servers: list[TestServer] = []

    async def start(service: str, **changes: Any) -> str:
        settings = replace(services, auth="on", **changes)
        server = TestServer(create_api(settings) if service == "api" else create_gateway(settings))
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


async def _answer(resp: aiohttp.ClientResponse) -> tuple[int, Any, Any]:
    body = await resp.json() if resp.content_type == "application/json" else None
    return resp.status, resp.headers, body


def target(name: str, base: str, session: aiohttp.ClientSession) -> Target:
    async def bearer_get(url: str, token: str) -> tuple[int, Any, Any]:
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            return await _answer(resp)

    if name == "api":
        return Target(name, base, lambda t: bearer_get(f"{base}/api/whoami", t), 200)
    if name == "mlflow":  # what MLflow clients send: HTTP Basic with the token as password
        async def basic(token: str) -> tuple[int, Any, Any]:
            auth = "Basic " + base64.b64encode(f"mlflow:{token}".encode()).decode()
            async with session.get(f"{base}/api/2.0/mlflow/experiments/search", params={"max_results": "1"},
                                   headers={"Authorization": auth}) as resp:
                return await _answer(resp)
        return Target(name, base, basic, 200)
    if name == "login":
        async def login(token: str) -> tuple[int, Any, Any]:
            async with session.post(f"{base}/api/login", json={"token": token}) as resp:
                return await _answer(resp)
        return Target(name, base, login, 200)

    async def events(token: str) -> tuple[int, Any, Any]:
        async with session.post(f"{base}/api/v1/events", data=b"[]", headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {token}"}) as resp:
            return await _answer(resp)
    return Target(name, base, events, 202)


async def throttle(t: Target, burst: int) -> tuple[Any, Any]:
    """Send unknown tokens until the answer is 429; it must come within ``burst + 1``."""
    for attempt in range(burst + 1):
        status, headers, body = await t.send(unknown_token())
        if status == 429:
            assert attempt == burst, f"{t.name}: 429 after {attempt} failures, before the burst of {burst}"
            return headers, body
        assert status == 401, (t.name, status, body)
    raise AssertionError(f"{t.name}: no 429 within {burst + 1} failed attempts")


@pytest.mark.parametrize("name", ["api", "mlflow", "login", "gateway"])
async def test_failed_authentications_are_throttled_before_the_kdf_and_valid_tokens_pass(
        name: str, serve: Any, conn: asyncpg.Connection, session: aiohttp.ClientSession,
        kdf_runs: list[str]) -> None:
    burst = 3
    base = await serve("api" if name != "gateway" else "gateway", auth_failure_burst=burst,
                       auth_failure_rate_per_s=0.2)
    t = target(name, base, session)
    workspace = unique("limits")
    team, _ = await tokens.create(conn, workspace, "write", name="teammate")
    newcomer, _ = await tokens.create(conn, workspace, "write", name="newcomer")
    status, _, body = await t.send(team)
    assert status == t.ok, body  # verified once by this process (and cached)

    headers, body = await throttle(t, burst)
    assert int(headers["Retry-After"]) >= 1
    assert body["error"]["limit"] == "failed_authentications"
    assert "too many failed authentications" in body["error"]["message"]
    before = len(kdf_runs)
    status, _, body = await t.send(wrong_secret(team))  # a guess at a known id: refused, no scrypt run
    assert status == 429, body
    assert len(kdf_runs) == before
    # A teammate behind the same address keeps working...
    for _ in range(3):
        status, _, body = await t.send(team)
        assert status == t.ok, body
    # ...but a valid token this process never verified cannot be told from a guess without
    # the KDF: it waits like the guesses (the documented choice).
    status, headers, body = await t.send(newcomer)
    assert status == 429 and int(headers["Retry-After"]) >= 1, body
    assert len(kdf_runs) == before


async def test_after_the_refill_time_attempts_are_allowed_again(serve: Any, session: aiohttp.ClientSession) -> None:
    t = target("api", await serve("api", auth_failure_burst=2, auth_failure_rate_per_s=2.0), session)
    for _ in range(50):  # until throttled (with 2 refills a second, a slow loop may earn one more)
        status, _, body = await t.send(unknown_token())
        if status == 429:
            break
        assert status == 401, body
    else:
        raise AssertionError("never throttled")

    async def allowed() -> bool:
        status, _, _ = await t.send(unknown_token())
        assert status in (401, 429)
        return status == 401

    await eventually(allowed, "a failed attempt answered 401 again once a token refilled", timeout=10)


async def test_a_missing_or_malformed_credential_spends_the_budget(serve: Any,
                                                                   session: aiohttp.ClientSession) -> None:
    """No token spends one but stays a 401 (the UI's login form follows it); a malformed
    header and a login without a token spend one and are refused once over budget."""
    base = await serve("api", auth_failure_burst=2, auth_failure_rate_per_s=0.2)
    for _ in range(2):
        async with session.get(f"{base}/api/whoami") as resp:
            assert resp.status == 401
    async with session.get(f"{base}/api/whoami") as resp:
        assert resp.status == 401  # still a 401, never a 429, without credentials
    async with session.get(f"{base}/api/whoami", headers={"Authorization": "Token abc"}) as resp:
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    async with session.post(f"{base}/api/login", json={"not": "a token"}) as resp:
        assert resp.status == 429


async def test_wrong_secrets_for_one_token_id_are_throttled_from_many_addresses(
        serve: Any, conn: asyncpg.Connection, kdf_runs: list[str]) -> None:
    """Guesses at one id spread over several client addresses (127.0.0.x, all loopback):
    the id's budget runs out although no address's does; its owner keeps working."""
    base = await serve("api", auth_failure_burst=3, auth_failure_rate_per_s=0.2)
    victim, row = await tokens.create(conn, unique("limits"), "read", name="victim")

    async def whoami(source: str, token: str) -> tuple[int, Any]:
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        async with aiohttp.ClientSession(connector=connector) as s, \
                s.get(f"{base}/api/whoami", headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json()

    assert (await whoami("127.0.0.9", victim))[0] == 200
    statuses = [(await whoami(source, wrong_secret(victim)))[0]
                for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3")]
    assert statuses == [401, 401, 401]
    before = len(kdf_runs)
    status, body = await whoami("127.0.0.4", wrong_secret(victim))
    assert status == 429 and f"rs_{row['token_id']}_" in body["error"]["message"], body
    assert len(kdf_runs) == before  # refused before the KDF
    assert (await whoami("127.0.0.4", unknown_token()))[0] == 401  # that address is not throttled
    assert (await whoami("127.0.0.4", victim))[0] == 200  # the owner's token passes
