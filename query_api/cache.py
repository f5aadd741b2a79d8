"""The query API's response cache for run-scoped reads, kept fresh by ``LISTEN``.

A cached answer is the exact JSON body the handler produced for one request (path and
query string, minus ``min_seq``/``wait_ms``), together with the runs it depends on and
the run's ``last_seq`` it reflects (at least). It is dropped when the processors commit
anything for one of those runs: the processors send ``"<run_id> <last_seq>"`` on
:data:`schemas.notify.CHANNEL` at commit, and the live endpoint's one
``LISTEN`` connection (:class:`query_api.live.Listener`) hands each notification to
:meth:`ResponseCache.notified`.

Rules that keep a cached answer from being stale:

* **Only while LISTEN is in force.** The listener calls :meth:`ResponseCache.listening`
  once ``LISTEN`` holds and :meth:`ResponseCache.unlistening` when its connection is
  lost; in between nothing is served or stored (notifications may be lost then), and
  everything cached before is dropped.
* **Dependencies.** An entry lists the runs whose events can change it: the run itself;
  for a run's detail also its children (it lists them); for ``recursive`` metrics every
  run of the tree. A notification for any of them drops the entry.
* **New runs.** A run that appears can be a new child of a cached run (a run's
  ``parent_run_id`` is set by its ``run.started`` and never changes). Entries that list
  children or descendants are *structural*; the first notification of a run id this
  cache has not seen drops them all. Later notifications of that run cannot add it to a
  parent again: its row existed (with its parent) at the earlier commit.
* **No stale store after a concurrent commit.** A reader takes a :meth:`token` before
  its first query and :meth:`put` refuses the answer if one of its runs was notified
  (or the cache was flushed) after that: the reader may have read the rows from before
  that commit.
* **Read-your-writes.** An entry answers ``min_seq`` only if its ``last_seq`` reaches
  it; otherwise the handler reads (and waits on) the database as without a cache. And
  a database read that sees a run at a newer ``last_seq`` than a cached entry of that
  run (e.g. the SDK's ``min_seq`` read of the run detail, before it reads the run's
  metrics without ``min_seq``) drops that entry and refuses older answers still in
  flight, without waiting for the notification: a client that saw seq N through one
  endpoint is never answered from before N by another.

What remains is the delay every LISTEN-based scheme has: between a commit and the
notification's arrival (normally well under a millisecond on one host) a reader can be
answered from before that commit, exactly as if it had read a moment earlier.
Projections changed without a notification (``processors.replay`` swaps rebuilt tables
in with ``notify=False``; hand-written SQL) are not seen: a notification on the channel
whose payload is not ``"<run_id> <seq>"`` (e.g. ``NOTIFY runstream_runs, '*'``) flushes
the whole cache.

Bounded by entry count and by bytes (least recently used first out); an answer larger
than :data:`MAX_ENTRY_BYTES` is not kept. All methods are synchronous and run on the
event loop's thread, so no locking is needed.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Hashable, Mapping

from aiohttp import web

__all__ = ["CACHE", "Entry", "ResponseCache"]

MAX_ENTRIES = 10_000
MAX_BYTES = 64 << 20
"""Total bytes of cached bodies."""
MAX_ENTRY_BYTES = 4 << 20
"""A larger body (a long vector read whole) is not cached."""
MAX_TRACKED_RUNS = 100_000
"""Bound of the per-run bookkeeping (runs seen, runs recently notified); past it the
bookkeeping is reset, which costs a conservative flush, never a stale answer."""


class Entry:
    """One cached answer: its JSON body, its run's ``last_seq`` it reflects (at least),
    every run it depends on with the ``last_seq`` it reflects of that run (None: not
    known), and whether a new run can change it (it lists children)."""

    __slots__ = ("body", "last_seq", "seqs", "structural")

    def __init__(self, body: bytes, last_seq: int, seqs: dict[uuid.UUID, int | None], structural: bool) -> None:
        self.body = body
        self.last_seq = last_seq
        self.seqs = seqs
        self.structural = structural


class ResponseCache:
    """LRU of run-scoped JSON answers, invalidated by the processors' notifications."""

    def __init__(
        self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES, max_entry_bytes: int = MAX_ENTRY_BYTES,
        max_tracked_runs: int = MAX_TRACKED_RUNS,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.max_tracked_runs = max_tracked_runs
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self._by_run: dict[uuid.UUID, set[Hashable]] = {}
        """Run id → keys of the entries that depend on it."""
        self._structural: set[Hashable] = set()
        self._bytes = 0
        self._serving = False
        self._clock = 0
        """Counts notifications and flushes; a token is its value when a read began."""
        self._floor = 0
        """Tokens below this are refused (a flush happened after they were taken)."""
        self._structural_floor = 0
        """The same for structural entries (a new run appeared after they were taken)."""
        self._touched: dict[uuid.UUID, int] = {}
        """Run id → clock of its latest notification."""
        self._seen: set[uuid.UUID] = set()
        """Runs notified at least once while listening."""
        self._known: dict[uuid.UUID, int] = {}
        """Run id → the newest ``last_seq`` a database read has seen."""

    # ------------------------------------------------------------ readers

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, min_seq: int | None = None) -> Entry | None:
        """The cached answer for ``key`` if there is one that reaches ``min_seq``."""
        if self._serving:
            entry = self._entries.get(key)
            if entry is not None and (min_seq is None or entry.last_seq >= min_seq):
                self._entries.move_to_end(key)
                return entry
        return None

    def token(self) -> int | None:
        """Take before reading the database for an answer to :meth:`put`; None: do not store."""
        return self._clock if self._serving else None

    def put(
        self, token: int | None, key: Hashable, body: bytes, run_id: uuid.UUID, last_seq: int,
        deps: Mapping[uuid.UUID, int | None] | None = None, structural: bool = False,
    ) -> bool:
        """Keep ``body`` as the answer for ``key`` (a read of ``run_id``, which was at
        ``last_seq`` at least) unless something it depends on changed since ``token`` was
        taken. ``deps``: other runs whose events change it, each with the ``last_seq`` the
        answer reflects (None: unknown); ``structural``: a new run can change it."""
        seqs: dict[uuid.UUID, int | None] = {**(deps or {}), run_id: last_seq}
        for dep, seq in seqs.items():
            if seq is not None:
                self.observe(dep, seq)
        if (
            token is None
            or not self._serving
            or token < self._floor
            or (structural and token < self._structural_floor)
            or any(self._touched.get(dep, -1) > token or (seq is not None and seq < self._known.get(dep, -1))
                   for dep, seq in seqs.items())
        ):
            return False
        if len(body) > self.max_entry_bytes:
            return False
        self._drop(key)
        self._entries[key] = Entry(body, last_seq, seqs, structural)
        self._bytes += len(body)
        for dep in seqs:
            self._by_run.setdefault(dep, set()).add(key)
        if structural:
            self._structural.add(key)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        return True

    def observe(self, run_id: uuid.UUID, seq: int) -> None:
        """A database read saw ``run_id`` at ``seq``: older answers of it are stale."""
        if not self._serving or seq <= self._known.get(run_id, -1):
            return
        if len(self._known) >= self.max_tracked_runs:
            self._known.clear()
            self._floor = self._clock + 1  # answers in flight may be older than what was known
            self._clock += 1
        self._known[run_id] = seq
        for key in list(self._by_run.get(run_id, ())):
            old = self._entries[key].seqs.get(run_id)
            if old is not None and old < seq:
                self._drop(key)

    # ------------------------------------------------------------ the listener's side

    def listening(self) -> None:
        """LISTEN is in force (again): start serving, from an empty cache."""
        self.flush()
        self._serving = True

    def unlistening(self) -> None:
        """The LISTEN connection is gone: notifications may be lost, so serve nothing."""
        self._serving = False
        self.flush()

    def notified(self, run_id: uuid.UUID) -> None:
        """The processors committed events of ``run_id``."""
        self._clock += 1
        if len(self._touched) >= self.max_tracked_runs:
            self._touched.clear()
            self._floor = self._clock
        self._touched[run_id] = self._clock
        for key in self._by_run.pop(run_id, ()):
            self._drop(key)
        if run_id not in self._seen:
            if len(self._seen) >= self.max_tracked_runs:
                self._seen.clear()
            self._seen.add(run_id)
            self._structural_floor = self._clock
            for key in list(self._structural):
                self._drop(key)

    def flush(self) -> None:
        """Drop everything, and refuse answers whose reads began before now."""
        self._clock += 1
        self._floor = self._clock
        self._touched.clear()
        self._known.clear()
        self._entries.clear()
        self._by_run.clear()
        self._structural.clear()
        self._bytes = 0

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= len(entry.body)
        for run_id in entry.seqs:
            keys = self._by_run.get(run_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_run[run_id]
        if entry.structural:
            self._structural.discard(key)


CACHE = web.AppKey("response_cache", ResponseCache)
"""The application's :class:`ResponseCache` (fed by the live listener)."""
