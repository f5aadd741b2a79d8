"""What tests observe of a running service without seams in production code."""

from __future__ import annotations

from typing import Any

from runstream.query_api.live import listen_application_name
from tests.support.waiting import eventually


def listen_backend_pids(db: Any) -> set[int]:
    """PostgreSQL backend pids of the LISTEN connections held by query APIs in this test
    process (``db``: a psycopg connection); tests terminate them to prove the listener reconnects."""
    rows = db.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (listen_application_name(),))
    return {r[0] for r in rows}


async def the_listen_backend(db: Any) -> int:
    """The pid of this process's one LISTEN connection (waits for a closed one to go)."""
    pids = await eventually(lambda: (p := listen_backend_pids(db)) and len(p) == 1 and p, "one LISTEN connection")
    return next(iter(pids))


def listening_again(db: Any, old_pid: int) -> bool:
    """True once a LISTEN connection other than ``old_pid`` is open and ``old_pid`` is gone."""
    pids = listen_backend_pids(db)
    return bool(pids) and old_pid not in pids
