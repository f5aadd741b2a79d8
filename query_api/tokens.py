"""API tokens: their format, how their secret is hashed, and creating, listing, revoking
and verifying them (``runstream token create|list|revoke``; docs/SECURITY.md).

A token reads ``rs_<id>_<secret>``: ``id`` (12 hex digits) is the row's key and is not
secret (it names the principal in logs and in the audit trail); ``secret`` is 32 random
bytes, url-safe base64. Only ``scrypt(secret, salt)`` with a per-token random salt is
stored, compared with :func:`hmac.compare_digest`. The secret has 256 bits of entropy, so
the KDF is not what keeps it from being guessed; it keeps a copied ``tokens`` table from
being usable as is. Revoking sends ``NOTIFY runstream_tokens, '<id>'`` in the same
transaction (:data:`runstream.schemas.notify.TOKENS_CHANNEL`): every process that caches
verified tokens drops it at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import asyncpg

from runstream.query_api import queries
from runstream.schemas.events import WORKSPACE_PATTERN
from runstream.schemas.notify import TOKENS_CHANNEL

__all__ = ["SCOPES", "Scope", "TokenError", "TokenRow", "WrongSecret", "create", "list_tokens", "parse", "revoke",
           "verify"]

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
"""In increasing order: a scope allows everything the ones before it allow."""

PREFIX = "rs_"
_TOKEN = re.compile(r"^rs_(?P<id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")
_WORKSPACE = re.compile(WORKSPACE_PATTERN)

# scrypt's cost (RFC 7914's interactive figures: 16 MiB, tens of ms). Stored with each
# row, so raising it later leaves older tokens verifiable.
KDF = "scrypt:n=16384,r=8,p=1"
_KDF_PARAMS = re.compile(r"^scrypt:n=(\d+),r=(\d+),p=(\d+)$")
MAX_EXPIRES_DAYS = 3650


class TokenError(ValueError):
    """A token that is malformed, unknown, revoked or expired (the message says which), or
    an invalid argument to :func:`create`."""


class WrongSecret(TokenError):
    """A known, live token id with another secret: the one refusal that cost a KDF run (the
    failed-authentication limiter counts these per token id as well)."""


@dataclass(frozen=True)
class TokenRow:
    """A verified token's principal: what the middleware needs."""

    token_id: str
    workspace: str
    scope: Scope
    expires_at: datetime | None


def _hash(kdf: str, secret: str, salt: bytes) -> bytes:
    m = _KDF_PARAMS.match(kdf)
    if m is None:
        raise TokenError(f"unknown key derivation {kdf!r}")
    n, r, p = (int(x) for x in m.groups())
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=32)


def parse(token: str) -> tuple[str, str]:
    """``(id, secret)`` of a token, or :class:`TokenError`."""
    m = _TOKEN.match(token)
    if m is None:
        raise TokenError("malformed token: expected rs_<id>_<secret> as printed by `runstream token create`")
    return m["id"], m["secret"]


async def create(conn: asyncpg.Connection, workspace: str, scope: str, name: str | None = None,
                 expires_days: float | None = None) -> tuple[str, dict[str, Any]]:
    """A new token for ``workspace`` with ``scope``: ``(token, its row)``. The token is not
    stored anywhere: this is the only time it is known."""
    if not _WORKSPACE.match(workspace):
        raise TokenError(f"invalid workspace {workspace!r}: letters, digits and _.- (1 to 64, starting with a "
                         "letter or digit)")
    if scope not in SCOPES:
        raise TokenError(f"invalid scope {scope!r}: one of {', '.join(SCOPES)}")
    if name is not None and (not name or len(name) > 200 or not name.isprintable()):
        raise TokenError(f"invalid name {name!r}: 1 to 200 printable characters")
    expires_at = None
    if expires_days is not None:
        if not 0 < expires_days <= MAX_EXPIRES_DAYS:
            raise TokenError(f"invalid expiry {expires_days!r} days: more than 0, at most {MAX_EXPIRES_DAYS}")
        expires_at = datetime.now(UTC) + timedelta(days=expires_days)
    token_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_bytes(16)
    digest = await asyncio.to_thread(_hash, KDF, secret, salt)
    row = await conn.fetchrow(queries.TOKEN_INSERT, token_id, workspace, scope, name, KDF, salt, digest, expires_at)
    return f"{PREFIX}{token_id}_{secret}", dict(row)


async def list_tokens(conn: asyncpg.Connection, workspace: str | None = None) -> list[dict[str, Any]]:
    """Every token (of ``workspace`` if given), without anything secret."""
    return [dict(r) for r in await conn.fetch(queries.TOKENS_LIST, workspace)]


async def revoke(conn: asyncpg.Connection, token_id: str) -> bool:
    """Revoke a token by id (or by the whole token); False if there was none to revoke.
    Every process caching it is notified in the same transaction."""
    if token_id.startswith(PREFIX):
        token_id = parse(token_id)[0]
    return await conn.fetchval(queries.TOKEN_REVOKE, token_id, TOKENS_CHANNEL) is not None


async def verify(db: queries.Db, token: str) -> TokenRow:
    """The principal of ``token``, or :class:`TokenError` saying why it is refused.

    The row is found by the id; the KDF runs (in a thread) only for a known, live token,
    so malformed or unknown tokens cost one indexed lookup."""
    token_id, secret = parse(token)
    r = await db.fetchrow(queries.TOKEN_BY_ID, token_id)
    if r is None:
        raise TokenError(f"unknown token rs_{token_id}_...")
    if r["revoked_at"] is not None:
        raise TokenError(f"token rs_{token_id}_... was revoked at {r['revoked_at'].isoformat()}")
    if r["expires_at"] is not None and r["expires_at"] <= datetime.now(UTC):
        raise TokenError(f"token rs_{token_id}_... expired at {r['expires_at'].isoformat()}")
    digest = await asyncio.to_thread(_hash, r["kdf"], secret, bytes(r["salt"]))
    if not hmac.compare_digest(digest, bytes(r["hash"])):
        raise WrongSecret(f"wrong secret for token rs_{token_id}_...")
    return TokenRow(token_id, r["workspace"], cast(Scope, r["scope"]), r["expires_at"])
