"""Operator tools for dead letters: list them, and re-drive them after a fix.

A re-drive decodes the stored bytes again and stores what it can, each dead letter in its
own transaction that also marks it retried (``retried_at``), so running it twice, or
beside the processors, stores nothing twice:

* a whole event (item -1) goes through the archive like a fresh message (a copy already
  archived is a duplicate, a (run, seq) archived with other content is a conflict again),
  and if still rejected is bisected as the processor does: the items that still fail get
  their own dead letters;
* one point/row (item >= 0) of an archived event is materialized alone and written.

One that still fails stays pending with its new reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from runstream.processors import items, salvage, store
from runstream.processors.dbfaults import is_transient
from runstream.processors.store import DeadLetter, Received
from runstream.schemas import events

LIST = """
SELECT id, run_id::text, seq, item, topic, partition, "offset", reason, received_at, retried_at
FROM dead_letters
WHERE ($1::uuid IS NULL OR run_id = $1) AND (retried_at IS NULL OR $2)
ORDER BY id LIMIT $3
"""

PENDING = """
SELECT id FROM dead_letters
WHERE retried_at IS NULL AND ($1::uuid IS NULL OR run_id = $1) AND (cardinality($2::bigint[]) = 0 OR id = ANY($2))
ORDER BY topic, partition, "offset", item
"""

LOCK = """
SELECT id, topic, partition, "offset", key, raw, item FROM dead_letters
WHERE id = $1 AND retried_at IS NULL FOR UPDATE SKIP LOCKED
"""

MARK_RETRIED = "UPDATE dead_letters SET retried_at = now() WHERE id = $1"
SET_REASON = "UPDATE dead_letters SET reason = $2 WHERE id = $1"


@dataclass(frozen=True)
class Letter:
    """One dead letter as ``runstream dead-letters list`` shows it."""

    id: int
    run_id: str | None
    seq: int | None
    item: int
    topic: str
    partition: int
    offset: int
    reason: str
    received_at: datetime
    retried_at: datetime | None


@dataclass(frozen=True)
class Outcome:
    """What re-driving one dead letter did: ``stored`` or not, and why not."""

    id: int
    stored: bool
    reason: str | None = None
    new_letters: int = 0
    """Dead letters created for items of it that still fail (a whole event partly stored)."""


async def list_letters(conn: asyncpg.Connection, run_id: str | None = None, limit: int = 100,
                       include_retried: bool = False) -> list[Letter]:
    """Dead letters, oldest first (pending only unless ``include_retried``)."""
    return [Letter(*row) for row in await conn.fetch(LIST, run_id, include_retried, limit)]


async def retry(conn: asyncpg.Connection, run_id: str | None = None, ids: Sequence[int] = ()) -> list[Outcome]:
    """Re-drive the pending dead letters of ``run_id`` / with these ``ids`` (all if neither)."""
    pending = [r[0] for r in await conn.fetch(PENDING, run_id, list(ids))]
    outcomes = []
    for letter_id in pending:
        async with conn.transaction():
            row = await conn.fetchrow(LOCK, letter_id)
            if row is not None:  # another re-drive holds it, or did it meanwhile
                outcomes.append(await _redrive(conn, row))
    return outcomes


async def _redrive(conn: asyncpg.Connection, row: Any) -> Outcome:
    letter_id, topic, partition, offset, key, raw, item = row
    try:
        event = events.decode(raw)
    except Exception as exc:
        return await _still_failed(conn, letter_id, f"{type(exc).__name__}: {exc}")
    r = Received(event, raw, topic, partition, offset)
    if item < 0:
        results: list[store.WriteResult] = []
        dead: list[DeadLetter] = []
        await salvage.write_one(conn, r, results, dead)
        whole = [d for d in dead if d.item < 0]
        if whole:
            return await _still_failed(conn, letter_id, whole[0].reason)
        foreign = [d for result in results for d in result.foreign]
        if foreign:  # still another workspace's run
            return await _still_failed(conn, letter_id, foreign[0].reason)
        refused = [x for result in results for x in result.refused]
        if refused:  # the archive kept another copy of that seq, or the event still breaks a rule
            return await _still_failed(conn, letter_id, refused[0].reason)
        await store.write_dead_letters(conn, dead)
        await conn.execute(MARK_RETRIED, letter_id)
        return Outcome(letter_id, True, new_letters=len(dead))
    try:
        async with conn.transaction():
            await store.write_projections(conn, items.materialize_items(event, item, item + 1))
    except Exception as exc:
        if is_transient(exc):
            raise
        return await _still_failed(conn, letter_id, salvage.reason(exc))
    await conn.execute(MARK_RETRIED, letter_id)
    return Outcome(letter_id, True)


async def _still_failed(conn: asyncpg.Connection, letter_id: int, reason: str) -> Outcome:
    await conn.execute(SET_REASON, letter_id, store.reason_text(reason))
    return Outcome(letter_id, False, reason)
