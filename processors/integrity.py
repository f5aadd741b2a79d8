"""Rules every event of a run obeys, whatever path it took (the gateway or straight onto Kafka).

Three rules protect what a run has already recorded; an event that breaks one is refused:
the processors dead-letter it with a reason that names the rule (and it is not archived,
so the archive, and every projection rebuilt from it, never holds it); the gateway answers
409 naming the event, its run and the field, and produces nothing of the batch.

* ``artifact-immutable``: an artifact path a run recorded (``artifact.recorded`` or the
  image of ``metric.image``) keeps its sha256 forever. The same path with the same sha256
  again is an idempotent no-op; with another sha256 it is refused, so a run's
  ``download_file()`` always returns the bytes first recorded.
* ``status-final``: once a run holds a terminal ``run.status`` (completed, failed,
  canceled) its status never changes: a later ``run.status`` with another status
  (``running`` included, whatever its seq) is refused; the same terminal status again is
  an idempotent no-op (archived, it changes nothing: the first one's error and end time
  stay). Before that, ``running`` changes nothing and the first terminal status accepted
  is the run's. "Later" is in arrival order; a status that arrives before its run's
  ``run.started`` still counts (and the start keeps it).
* ``start-once``: a run is started once. Another ``run.started`` for it (another event,
  whatever its experiment, name or properties) is refused: it can neither move the run to
  another experiment nor reset it.

An exact re-send of an archived event (same run, seq and ts) is never refused: the archive
deduplicates it as before. The facts are read with a transaction-scoped advisory lock per
run, so two processors fed the same run through different partitions (a producer that
chose another key) cannot both accept a conflicting event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import asyncpg

from runstream.processors.materialize import to_datetime
from runstream.schemas import events as ev

_GUARDED = (ev.RunStarted, ev.RunStatus, ev.ArtifactRecorded, ev.MetricImage)
"""The event types a rule applies to; a batch without any costs no query."""

LOCK_RUNS = "SELECT pg_advisory_xact_lock(hashtextextended(r, 7)) FROM unnest($1::text[]) AS r ORDER BY r"

ARCHIVED = """
SELECT e.run_id::text, e.seq FROM events AS e
JOIN unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) AS c(run_id, seq, ts) USING (run_id, seq, ts)
"""

RUN_FACTS = "SELECT run_id::text, experiment, status FROM runs WHERE run_id = ANY($1::uuid[])"

# Statuses archived before their run's start (no runs row yet): the first terminal one.
EARLY_TERMINAL = """
SELECT DISTINCT ON (run_id) run_id::text, status, seq FROM (
    SELECT run_id, seq, convert_from(body, 'UTF8')::json->'payload'->>'status' AS status
    FROM events WHERE run_id = ANY($1::uuid[]) AND type = 'run.status'
) AS s WHERE status <> 'running' ORDER BY run_id, seq
"""

ARTIFACT_FACTS = """
SELECT a.run_id::text, a.path, a.sha256 FROM artifacts AS a
JOIN unnest($1::uuid[], $2::text[]) AS c(run_id, path) ON a.run_id = c.run_id AND a.path = c.path
"""


class Refusal(NamedTuple):
    """Why one event of a batch is refused."""

    index: int
    """Its position in the batch given to :func:`judge`."""
    rule: str
    field: str
    """The event field that conflicts (``payload.sha256``, ``payload.status``, ``type``)."""
    reason: str


@dataclass
class RunFacts:
    """What a run has recorded that the rules protect."""

    experiment: str | None = None
    """The experiment of its accepted ``run.started`` (None: not started)."""
    terminal: str | None = None
    """Its terminal status, once it has one."""
    artifacts: dict[str, str] = field(default_factory=dict)
    """Recorded path -> sha256 (only the paths the batch at hand touches)."""


def canonical(run_id: str) -> str:
    """The text form PostgreSQL gives a uuid (events may spell it without dashes or in capitals)."""
    v = run_id.replace("-", "").lower()
    return f"{v[:8]}-{v[8:12]}-{v[12:16]}-{v[16:20]}-{v[20:]}"


def guarded(batch: list[ev.Event]) -> bool:
    """Whether any rule applies to ``batch`` at all."""
    return any(isinstance(e, _GUARDED) for e in batch)


def judge(batch: list[ev.Event], facts: dict[str, RunFacts], archived: set[tuple[str, int]]) -> list[Refusal]:
    """The events of ``batch`` (in arrival order) that break a rule, given what each run
    recorded before (``facts``, by canonical run id; updated with what is accepted) and
    the (run, seq) pairs that are exact re-sends of archived events (never refused)."""
    refused: list[Refusal] = []
    accepted: set[tuple[str, int]] = set()  # an identical copy later in the batch is a duplicate, not a second event
    for index, e in enumerate(batch):
        if not isinstance(e, _GUARDED):
            continue
        run_id = canonical(e.run_id)
        if (run_id, e.seq) in archived or (run_id, e.seq) in accepted:
            continue
        run = facts.setdefault(run_id, RunFacts())
        why = _check(e, run_id, run)
        if why is None:
            accepted.add((run_id, e.seq))
        else:
            refused.append(Refusal(index, *why))
    return refused


def _check(e: Any, run_id: str, run: RunFacts) -> tuple[str, str, str] | None:
    """(rule, field, reason) if ``e`` breaks a rule, else None after recording it in ``run``."""
    if isinstance(e, ev.RunStarted):
        if run.experiment is not None:
            return ("start-once", "type",
                    f"start-once: run {run_id} was already started (experiment {run.experiment!r}); a second "
                    f"run.started (seq {e.seq}, experiment {e.payload.experiment!r}) cannot move or reset it")
        run.experiment = e.payload.experiment
    elif isinstance(e, ev.RunStatus):
        if run.terminal is not None and e.payload.status != run.terminal:
            return ("status-final", "payload.status",
                    f"status-final: run {run_id} is already {run.terminal}; its status cannot change to "
                    f"{e.payload.status!r} (seq {e.seq})")
        if run.terminal is None and e.payload.status in ev.TERMINAL_STATUSES:
            run.terminal = e.payload.status
    else:
        a = e.payload.artifact if isinstance(e, ev.MetricImage) else e.payload
        recorded = run.artifacts.setdefault(a.path, a.sha256)
        if recorded != a.sha256:
            where = "payload.artifact.sha256" if isinstance(e, ev.MetricImage) else "payload.sha256"
            return ("artifact-immutable", where,
                    f"artifact-immutable: run {run_id} already recorded {a.path!r} with sha256 {recorded}; "
                    f"another content (sha256 {a.sha256}, seq {e.seq}) is refused")
    return None


async def load_facts(conn: asyncpg.Connection, batch: list[ev.Event], *,
                     lock: bool) -> tuple[dict[str, RunFacts], set[tuple[str, int]]]:
    """What the database says each guarded run of ``batch`` recorded, and which guarded
    events are archived already. ``lock``: take each run's advisory lock first (inside
    the caller's transaction; the processors do, the gateway's advisory check does not)."""
    mine = [e for e in batch if isinstance(e, _GUARDED)]
    runs = sorted({canonical(e.run_id) for e in mine})
    if lock:
        await conn.execute(LOCK_RUNS, runs)
    archived = {(r, s) for r, s in await conn.fetch(
        ARCHIVED, [canonical(e.run_id) for e in mine], [e.seq for e in mine], [to_datetime(e.ts) for e in mine])}
    facts = {r: RunFacts() for r in runs}
    for run_id, experiment, status in await conn.fetch(RUN_FACTS, runs):
        facts[run_id].experiment = experiment
        facts[run_id].terminal = status if status in ev.TERMINAL_STATUSES else None
    unstarted = [r for r, f in facts.items() if f.experiment is None]
    if unstarted and any(isinstance(e, ev.RunStatus) for e in mine):
        for run_id, status, _ in await conn.fetch(EARLY_TERMINAL, unstarted):
            facts[run_id].terminal = status
    paths = sorted({(canonical(e.run_id), _artifact(e).path) for e in mine if _artifact(e) is not None})
    if paths:
        for run_id, path, sha in await conn.fetch(ARTIFACT_FACTS, [r for r, _ in paths], [p for _, p in paths]):
            facts[run_id].artifacts[path] = sha
    return facts, archived


async def refusals(conn: asyncpg.Connection, batch: list[ev.Event], *, lock: bool) -> list[Refusal]:
    """:func:`judge` of ``batch`` against the database (no query when no rule applies)."""
    if not guarded(batch):
        return []
    facts, archived = await load_facts(conn, batch, lock=lock)
    return judge(batch, facts, archived)


def _artifact(e: ev.Event) -> ev.ArtifactPayload | None:
    if isinstance(e, ev.ArtifactRecorded):
        return e.payload
    if isinstance(e, ev.MetricImage):
        return e.payload.artifact
    return None

