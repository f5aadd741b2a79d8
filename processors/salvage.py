"""What of a rejected event can still be stored: the processor's per-event fallback.

When a batch's transaction fails for any reason other than the connection
(processors.dbfaults), the processor writes its events one at a time, each in a
savepoint (:func:`write_one`). An event that fails alone is archived and bisected
(:mod:`processors.items`): halves are written in nested savepoints down to the single
points/rows that fail; only those are dead-lettered, with their index, and every other
item is stored. An event none of whose items can be stored (or whose archive row itself
is rejected: a seq beyond bigint) is dead-lettered whole and not archived, so a re-drive
(``runstream dead-letters retry``) archives it then.
"""

from __future__ import annotations

import logging

import asyncpg

from runstream.processors import items, store
from runstream.processors.dbfaults import is_transient
from runstream.processors.store import DeadLetter, Received

log = logging.getLogger("runstream.processor")


class _AllRejected(Exception):
    """Every item of an event was rejected: roll its archive row back too."""


def reason(exc: BaseException) -> str:
    """A dead letter's reason: who rejected it and the exception (no traceback)."""
    who = "the database" if isinstance(exc, asyncpg.PostgresError) else "materializing"
    return f"rejected by {who}: {type(exc).__name__}: {exc}"


async def write_one(conn: asyncpg.Connection, r: Received, results: list[store.WriteResult],
                    dead: list[DeadLetter]) -> None:
    """Write one event in a savepoint; if rejected, store what of it can be stored.

    Appends to ``results`` what was stored and to ``dead`` what was not. Connection
    failures propagate (the caller retries the whole transaction)."""
    try:
        async with conn.transaction():
            results.append(await store.write_events(conn, [r]))
        return
    except Exception as exc:
        if is_transient(exc):
            raise
        whole = exc
    n = items.item_count(r.event)
    rejected: list[DeadLetter] = []
    try:
        async with conn.transaction():  # the archive row and the stored items, or nothing
            new, refused = await store.archive(conn, [r])
            if refused:  # a conflict, or an event that breaks an integrity rule
                dead.append(DeadLetter.of(r, refused[0].reason))
                return
            if not new:
                results.append(store.WriteResult(new=0, duplicates=1, points=0))
                return
            points = await bisect(conn, r, 0, n, rejected)
            if rejected and len(rejected) == n:
                raise _AllRejected()  # nothing of it stored: one dead letter for the whole event
            results.append(store.WriteResult(new=1, duplicates=0, points=points))
    except Exception as exc:
        if is_transient(exc):
            raise
        dead.append(DeadLetter.of(r, reason(whole)))
        return
    log.warning("event %s/%s: %d of %d items rejected and dead-lettered", r.event.run_id, r.event.seq,
                len(rejected), n)
    dead.extend(rejected)


async def bisect(conn: asyncpg.Connection, r: Received, lo: int, hi: int, rejected: list[DeadLetter]) -> int:
    """Write items ``lo``..``hi`` of ``r`` in a savepoint, halving on failure down to the
    single items that fail (dead-lettered into ``rejected``); returns the points stored."""
    try:
        async with conn.transaction():
            m = items.materialize_items(r.event, lo, hi)
            await store.write_projections(conn, m)
            return m.point_count
    except Exception as exc:
        if is_transient(exc):
            raise
        if hi - lo <= 1:
            rejected.append(DeadLetter.of(r, reason(exc), item=lo))
            return 0
    mid = (lo + hi) // 2
    return await bisect(conn, r, lo, mid, rejected) + await bisect(conn, r, mid, hi, rejected)
