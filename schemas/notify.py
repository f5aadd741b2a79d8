"""The processors' commit notification: one PostgreSQL ``NOTIFY`` channel, two payloads.

After each committed batch the processors send ``"<run_id> <last_seq>"`` per run the
batch touched (:func:`run_payload`) on :data:`CHANNEL`; a change to every projection at
once (a replay swapping tables in) is :data:`ANY`. The query API's listener (response
cache, live streams) and the benchmarks parse them with :func:`parse`.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

__all__ = ["ANY", "CHANNEL", "TOKENS_CHANNEL", "RunCommitted", "parse", "run_payload"]

CHANNEL = "runstream_runs"
"""The channel the processors notify on at commit."""
ANY = "*"
"""The payload meaning "any run may have changed": whoever caches must re-read everything."""

TOKENS_CHANNEL = "runstream_tokens"
"""The channel a revoked token's id is notified on (``runstream token revoke``): every
process caching verified tokens (query API, gateway) drops it."""


class RunCommitted(NamedTuple):
    """A run's events up to ``last_seq`` are committed to the projections."""

    run_id: uuid.UUID
    last_seq: int


def run_payload(run_id: str | uuid.UUID, last_seq: int) -> str:
    """The payload telling that ``run_id`` is committed up to ``last_seq``."""
    return f"{run_id} {last_seq}"


def parse(payload: str) -> RunCommitted | None:
    """A payload read from :data:`CHANNEL`: the run it names, or ``None`` for :data:`ANY`;
    anything else is a ``ValueError`` quoting it."""
    if payload == ANY:
        return None
    run_text, sep, seq_text = payload.partition(" ")
    try:
        if not sep:
            raise ValueError(payload)
        return RunCommitted(uuid.UUID(run_text), int(seq_text))
    except ValueError:
        raise ValueError(f"not a {CHANNEL} notification ('<run_id> <seq>' or {ANY!r}): {payload[:200]!r}") from None
