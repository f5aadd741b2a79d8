"""Which failures the services retry as "the database is unavailable" (pure logic; the real
faults are in test_pg_faults.py): a socket's, never the local disk's or the data's."""

from __future__ import annotations

import errno

import asyncpg
import pytest

from runstream.processors.dbfaults import is_transient


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
    ConnectionResetError(errno.ECONNRESET, "reset"),
    OSError("Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 5432)"),
    TimeoutError(),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
])
def test_connection_failures_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device"),
    PermissionError(errno.EACCES, "Permission denied", "/var/lib/runstream/blobs/ab"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "/nowhere"),
    asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence"),
    asyncpg.exceptions.NumericValueOutOfRangeError("out of range"),
    ValueError("bad data"),
])
def test_disk_and_data_failures_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)
