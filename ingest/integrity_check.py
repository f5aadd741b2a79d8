"""The gateway's early look at the integrity rules (processors.integrity) before producing.

The processors enforce the rules for every event whatever path it took; the gateway only
answers sooner and more clearly what it can already see is wrong: a batch with an event
that breaks a rule, against the database or an earlier event of the same batch, gets 409
naming each such event (index, run, field, rule) and nothing of it is produced. It reads
the database only for batches that hold a guarded event (a start, a status, an artifact),
and if the database does not answer (down, slow beyond 2 s, not migrated) it judges
the batch only against itself and lets the rest through (the processors still refuse
what breaks a rule): ingest keeps working while PostgreSQL is away.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
from aiohttp import web

from runstream.processors import integrity
from runstream.processors.dbfaults import is_transient
from runstream.query_api.errors import Conflict
from runstream.schemas import events
from runstream.settings import ServiceSettings

log = logging.getLogger("runstream.gateway")

DB = web.AppKey("integrity_db", asyncpg.Pool)
CHECK_TIMEOUT_S = 2.0
"""How long the early check may wait for the database before letting a batch through."""


def pool_ctx(settings: ServiceSettings) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: a small pool (empty until the first guarded batch) for the check."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(settings.database_url, min_size=0, max_size=2, timeout=CHECK_TIMEOUT_S,
                                         server_settings={"application_name": "runstream-gateway"})
        app[DB] = pool
        try:
            yield
        finally:
            await pool.close()

    return ctx


async def refuse_conflicts(app: web.Application, batch: list[events.Event]) -> None:
    """Raise :class:`Conflict` if an event of ``batch`` breaks an integrity rule."""
    if not integrity.guarded(batch):
        return
    try:
        async with app[DB].acquire(timeout=CHECK_TIMEOUT_S) as conn:
            found = await integrity.refusals(conn, batch, lock=False)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # Advisory only: whatever keeps the database from answering (down, not migrated,
        # refusing the role), the batch goes on and the processors still apply the rules.
        level = logging.WARNING if is_transient(exc) or isinstance(exc, TimeoutError) else logging.ERROR
        log.log(level, "integrity check against the database skipped, it did not answer (%s: %s); the "
                "processors still apply it", type(exc).__name__, exc)
        found = integrity.judge(batch, {}, set())  # what the batch contradicts by itself
    if found:
        details: list[dict[str, Any]] = [
            {"index": r.index, "run_id": batch[r.index].run_id, "seq": batch[r.index].seq, "field": r.field,
             "rule": r.rule, "message": r.reason} for r in found]
        raise Conflict(f"{len(found)} of {len(batch)} events contradict what their run already recorded; "
                       f"none were accepted", events=details)
