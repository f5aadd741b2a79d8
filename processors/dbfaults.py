"""Which database failures are the connection's, not the data's: retry those with backoff.

PostgreSQL can go away in many ways (``pg_ctl stop -m immediate|fast|smart``, a restart,
a closed port, a network reset) and each surfaces as a different exception: a socket
error, asyncpg's "connection was closed in the middle of operation", or a server error of
class 57 ("database is shutting down", "the database system is starting up", ...) or 08
(connection exception). Every one of them means "the same statement may work later";
none says anything about the data. Everything else (a value PostgreSQL rejects, a bug) is
not retried: the caller dead-letters or reports it.
"""

from __future__ import annotations

import asyncio
import errno
import random

import asyncpg

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0

# 08: connection exception; 57: operator intervention (admin/crash shutdown, cannot connect
# now); 53300: too many connections; 40001/40P01 are not here (data-level retries).
_TRANSIENT_CLASSES = ("08", "57")
_TRANSIENT_STATES = frozenset({"53300", "53400"})


_FILE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT,
                          errno.EISDIR, errno.ENOTDIR, errno.EMFILE, errno.ENFILE, errno.EFBIG})

_CLIENT_MISTAKES = (asyncpg.exceptions._base.ClientConfigurationError,
                    asyncpg.exceptions._base.UnsupportedClientFeatureError,
                    asyncpg.exceptions._base.InternalClientError)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means the database (connection) is unavailable, not that the data is bad."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, OSError):
        # A socket's failure (refused, reset, unreachable; asyncio's "Multiple exceptions:
        # Connect call failed" has no errno), not the local disk's: a full disk or a denied
        # file under a blob write must not pass for "database unavailable, retry later".
        return exc.errno not in _FILE_ERRNOS and exc.filename is None
    if isinstance(exc, asyncpg.PostgresConnectionError):
        return True  # ConnectionDoesNotExistError, ConnectionFailureError, ...
    if isinstance(exc, asyncpg.InterfaceError):
        # "connection is closed", "pool is closing": the connection's. Not the client-side
        # encoding errors (asyncpg's DataError is a ValueError: "invalid input for query
        # argument", an int beyond 64 bits) nor configuration mistakes.
        return not isinstance(exc, (ValueError, TypeError, _CLIENT_MISTAKES))
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES
    return False


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): capped exponential, jittered."""
    delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * (2 ** min(attempt, 16)))
    return delay * (0.5 + random.random() / 2)
