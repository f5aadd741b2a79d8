"""The processor: a Kafka consumer-group member that materializes events effectively once.

Auto-commit is off; the offsets live in ``consumer_offsets`` and are written in the same
transaction as the rows they produced (aiokafka's local-state-consumer pattern with the
database as the state). On assignment the consumer seeks past the stored offsets. A
message that does not validate becomes a dead letter in that same transaction, so the
partition keeps flowing. If the database (or materializing) rejects a batch's data, the
transaction is rolled back and the batch written again one event at a time (in
savepoints), and a rejected event is bisected
(processors.items) so that only its offending point/row is dead-lettered: its neighbours
are stored. No exception raised by one event stops the partition; only a failure of the
database connection (processors.dbfaults) is retried, whole, with capped backoff.

Fetching and writing overlap, and batches coalesce: while one transaction is in
PostgreSQL, the consumer keeps fetching and decoding, and every batch fetched meanwhile is
merged into one pending batch (up to ``processor_max_records`` messages), which the writer
takes whole as its next transaction. Under load a record therefore waits for at most the
transaction in flight plus its own, however many fetches arrived meanwhile (a queue of
separate batches made it wait for each of them), and fewer, larger transactions cost
less per event. A batch that goes alone is materialized ahead, while the previous one is
written. A rebalance discards the pending batch; the new assignment seeks to the stored
offsets again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from runstream.ingest.topic import ensure_topic
from runstream.processors import salvage, store, trace
from runstream.processors.dbfaults import backoff, is_transient
from runstream.processors.materialize import Materialized, materialize
from runstream.processors.metrics import BATCH_SIZE_BUCKETS, WRITE_SECONDS_BUCKETS, Buckets
from runstream.processors.store import DeadLetter, Received
from runstream.schemas import events
from runstream.settings import ServiceSettings

log = logging.getLogger("runstream.processor")

FETCH_MIN_BYTES = 1
FETCH_WAIT_MS = 20
"""The broker's longest wait for an empty fetch while the topic is quiet (a long poll). It
also bounds the first records after a quiet spell: the fetch sent with them leaves their
partition out (see ``Processor._adapt_fetch_wait``), so its next records wait for this one
to expire. 100 ms made that the p99 of a live chart at rest (the probe alone: 143 ms, of
which 122 ms in the fetch); 20 ms costs an idle processor 3.6% and the broker 7.3% of a
core (1.0% and 5% at 100 ms; docs/PERFORMANCE.md)."""
FETCH_BUSY_WAIT_MS = 5
"""The same while records are flowing (adaptive: see ``Processor._adapt_fetch_wait``)."""


@dataclass
class Stats:
    """Counters since start (exposed for tests, benchmarks and /metrics)."""

    batches: int = 0
    messages: int = 0
    new_events: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    points: int = 0
    write_seconds: float = 0.0
    last_batch_size: int = 0
    lag: dict[int, int] = field(default_factory=dict)
    """Partition -> messages not fetched yet; filled when /metrics is scraped (processors.metrics)."""
    batch_sizes: Buckets = field(default_factory=lambda: Buckets(BATCH_SIZE_BUCKETS))
    """Messages per write transaction."""
    write_latency: Buckets = field(default_factory=lambda: Buckets(WRITE_SECONDS_BUCKETS))
    """Seconds per write transaction (retries included)."""


@dataclass
class Prepared:
    """Fetched messages, decoded (and materialized when they came in one fetch), waiting
    for their transaction."""

    received: list[Received]
    dead: list[DeadLetter]
    positions: dict[tuple[str, int], int]
    materialized: Materialized | None
    """Rows of every event of ``received``, assuming all are new (None: do it at write time)."""

    generation: int
    """The assignment it was fetched under; a rebalance makes it stale."""

    fetches: list[tuple[float, dict[tuple[str, int], tuple[int, int]]]] = field(default_factory=list)
    """Per fetch merged in: the wall-clock time its records came back from the consumer and
    its offset range per partition (for ``processors.trace``)."""

    @property
    def size(self) -> int:
        return len(self.received) + len(self.dead)

    def absorb(self, later: Prepared) -> None:
        """Merge a batch fetched after this one (same assignment) into it, in log order;
        the merged whole is materialized when the writer takes it."""
        self.received += later.received
        self.dead += later.dead
        self.positions.update(later.positions)  # within one assignment offsets only grow
        self.fetches += later.fetches
        self.materialized = None


class _SeekOnAssign(ConsumerRebalanceListener):
    def __init__(self, processor: Processor) -> None:
        self._p = processor

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._p.generation += 1  # batches fetched before this are not written
        await self._p.discard_pending()
        async with self._p.lock:  # let the in-flight batch commit before giving partitions up
            pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Batches fetched so far will be fetched again from the positions chosen below: drop
        # them now, before seeking (dropping after the seek could drop records fetched from
        # the new positions, which nothing would fetch again). A batch fetched before the
        # seek but prepared after this point is written and deduplicated by the archive.
        self._p.generation += 1
        await self._p.discard_pending()
        # Paused until the seeks land: otherwise the fetcher starts at the earliest offset
        # meanwhile and a whole batch is read (and written) twice.
        self._p.consumer.pause(*assigned)
        try:
            await self._p.seek_to_stored(assigned)
        finally:
            self._p.consumer.resume(*assigned)


class Processor:
    """One consumer-group member. ``await run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: ServiceSettings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.lock = asyncio.Lock()
        self.stats = Stats()
        self.generation = 0
        self._stopping = asyncio.Event()  # run()'s stop, once it runs
        self.pending: Prepared | None = None
        """Fetched, not yet taken by the writer (see the module's docstring)."""
        self._writing = False
        self._changed = asyncio.Condition()  # guards pending and _writing
        self.trace: trace.BatchTrace | None = None
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.processor_group,
            client_id="runstream-processor",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            # A long poll: the broker answers as soon as anything arrives, and an idle
            # processor asks fifty times a second. (A 64 KB minimum with a 10 ms wait made an
            # idle processor and broker spend 8% and 20% of a core on 100 empty fetches a
            # second.) Under load, batches still grow by themselves: aiokafka fetches a
            # partition again only once its records were taken, i.e. after the previous
            # transaction. The wait stays short because a fetch in flight to the broker
            # holds back the partitions left out of it (those whose records were waiting
            # for the processor): their next records can wait up to FETCH_WAIT_MS.
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_WAIT_MS,
            **settings.kafka_security(),
        )

    async def seek_to_stored(self, partitions: set[TopicPartition]) -> None:
        """Position each partition just after the last offset the database holds (waiting,
        with backoff, while the database is unavailable: a guess would re-read or skip)."""
        attempt = 0
        while True:
            try:
                async with self.pool.acquire() as conn:
                    stored = await store.load_offsets(conn, self.settings.processor_group, self.settings.topic)
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("database unavailable while seeking (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
        for tp in partitions:
            if tp.partition in stored:
                self.consumer.seek(tp, stored[tp.partition] + 1)
            else:
                await self.consumer.seek_to_beginning(tp)

    async def run(self, stop: asyncio.Event) -> None:
        self._stopping = stop
        await ensure_topic(self.settings.kafka_bootstrap, self.settings.topic, self.settings.partitions,
                           security=self.settings.kafka_security())
        self.consumer.subscribe([self.settings.topic], listener=_SeekOnAssign(self))
        await self.consumer.start()
        if self.settings.processor_trace:
            self.trace = trace.BatchTrace(self.settings.processor_trace)
        writer = asyncio.create_task(self._write_loop(), name="runstream-processor-writer")
        try:
            while not stop.is_set():
                batch = await self.consumer.getmany(timeout_ms=200, max_records=self.settings.processor_max_records)
                self._adapt_fetch_wait(bool(batch))
                if batch:
                    # Materialized ahead only if it will be written alone (nothing pending).
                    prepared = self.prepare(batch, time.time(), materialize_ahead=self.pending is None)
                    await self._hand_over(prepared, writer)
            await self._hand_over(None, writer)
        finally:
            if not writer.done():
                writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await self.consumer.stop()
            if self.trace is not None:
                self.trace.close()
                self.trace = None

    def _adapt_fetch_wait(self, busy: bool) -> None:
        """Long polls while the topic is quiet, short ones while records flow.

        aiokafka keeps one fetch in flight per broker, and a partition whose records were
        just returned (not yet taken by ``getmany``) is left out of the next one. Under a
        long poll, that partition's next record then waits until the in-flight fetch of the
        others expires: up to ``FETCH_WAIT_MS`` added to a live point's latency (the p99 of
        the benchmark's probe). So the wait is short while batches come back with records,
        and back to the long poll after ``getmany`` waited its whole timeout for nothing
        (an idle processor and broker then cost no more than before)."""
        fetcher = getattr(self.consumer, "_fetcher", None)  # aiokafka's; read when each request is built
        if fetcher is not None and hasattr(fetcher, "_fetch_max_wait_ms"):
            fetcher._fetch_max_wait_ms = FETCH_BUSY_WAIT_MS if busy else FETCH_WAIT_MS

    async def _hand_over(self, prepared: Prepared | None, writer: asyncio.Task[None]) -> None:
        """Add a batch to the pending one (None: wait until everything is written)."""
        step = asyncio.ensure_future(self._put(prepared) if prepared else self._drained())
        await asyncio.wait({step, writer}, return_when=asyncio.FIRST_COMPLETED)
        if writer.done():
            step.cancel()
            writer.result()  # the writer's exception, if it failed
            raise RuntimeError("the processor's writer stopped")

    async def _put(self, prepared: Prepared) -> None:
        limit = self.settings.processor_max_records
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.pending is None or self.pending.generation != prepared.generation
                or self.pending.size + prepared.size <= limit)
            if self.pending is None or self.pending.generation != prepared.generation:
                self.pending = prepared
            else:
                self.pending.absorb(prepared)
            self._changed.notify_all()

    async def _drained(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.pending is None and not self._writing)

    async def discard_pending(self) -> None:
        """Drop what was fetched but not taken by the writer (a rebalance)."""
        async with self._changed:
            self.pending = None
            self._changed.notify_all()

    async def _write_loop(self) -> None:
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self.pending is not None)
                prepared, self.pending = self.pending, None
                self._writing = True
                self._changed.notify_all()
            assert prepared is not None
            try:
                async with self.lock:
                    if prepared.generation == self.generation:
                        if prepared.materialized is None:  # merged, or not done ahead
                            prepared.materialized = _materialize_or_none(prepared.received)
                        await self._handle(prepared)
            finally:
                async with self._changed:
                    self._writing = False
                    self._changed.notify_all()

    def prepare(self, batch: dict[TopicPartition, list], fetched: float,  # type: ignore[type-arg]
                materialize_ahead: bool = True) -> Prepared:
        """Decode (dead-lettering what does not validate) and materialize a fetched batch."""
        received: list[Received] = []
        dead: list[DeadLetter] = []
        positions: dict[tuple[str, int], int] = {}
        ranges: dict[tuple[str, int], tuple[int, int]] = {}
        for tp, messages in batch.items():
            ranges[(tp.topic, tp.partition)] = (messages[0].offset, messages[-1].offset)
            for msg in messages:
                raw = msg.value if msg.value is not None else b""
                try:
                    received.append(Received(events.decode(raw), raw, tp.topic, tp.partition, msg.offset))
                except Exception as exc:  # any failure to decode (invalid UTF-8, too deep, ...) is this message's
                    reason = str(exc) if isinstance(exc, events.EventError) else f"{type(exc).__name__}: {exc}"
                    dead.append(DeadLetter(tp.topic, tp.partition, msg.offset, msg.key, raw, reason,
                                           run_id=_key_run_id(msg.key)))
            positions[(tp.topic, tp.partition)] = messages[-1].offset
        prepared = _materialize_or_none(received) if materialize_ahead else None
        return Prepared(received, dead, positions, prepared, self.generation, fetches=[(fetched, ranges)])

    async def _handle(self, p: Prepared) -> None:
        received, dead, positions = p.received, p.dead, p.positions
        started = time.perf_counter()
        write_at = time.time() if self.trace is not None else 0.0
        attempt = 0
        while True:
            try:
                await self._write(received, dead, positions, p.materialized)
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # However PostgreSQL went away (immediate/fast/smart stop, restart, closed
                # port): the transaction did not commit, so the batch is retried whole...
                log.warning("database unavailable (%s: %s); retrying the batch", type(exc).__name__, exc)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                # ...unless its partitions were given up meanwhile (their new owner reads them
                # again from the stored offsets: the rebalance must not wait for the database)
                # or the processor is stopping (it reads them again when it starts).
                if p.generation != self.generation or self._stopping.is_set():
                    log.warning("dropping an uncommitted batch of %d message(s): %s", len(received) + len(dead),
                                "partitions revoked" if p.generation != self.generation else "stopping")
                    return
        if self.trace is not None:
            committed = time.time()
            for fetched, ranges in p.fetches:
                self.trace.write(fetched, write_at, committed, ranges)
        elapsed = time.perf_counter() - started
        self.stats.write_seconds += elapsed
        self.stats.write_latency.observe(elapsed)
        self.stats.batches += 1
        self.stats.messages += len(received) + len(dead)
        self.stats.last_batch_size = len(received) + len(dead)
        self.stats.batch_sizes.observe(self.stats.last_batch_size)

    async def _write(self, received: list[Received], invalid: list[DeadLetter], positions: dict[tuple[str, int], int],
                     prepared: Materialized | None = None) -> None:
        dead = list(invalid)  # a retried batch starts again from the validation failures
        results: list[store.WriteResult] = []  # counted once committed (a retried batch is not counted twice)
        offsets = store.Offsets(self.settings.processor_group, positions)
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    results.append(await store.write_events(conn, received, prepared, offsets))
                    await store.write_dead_letters(conn, self._set_aside(results, dead))
            except Exception as exc:
                if is_transient(exc):
                    raise
                # Rolled back whole (no savepoint in the common path: two round trips fewer);
                # written again one event at a time, each in a savepoint (processors.salvage).
                log.warning("batch rejected (%s: %s); writing events one at a time", type(exc).__name__, exc)
                dead, results = list(invalid), []
                async with conn.transaction():
                    for r in received:
                        await salvage.write_one(conn, r, results, dead)
                    await store.write_dead_letters(conn, self._set_aside(results, dead))
                    await store.save_offsets(conn, offsets)
        for result in results:
            self._count(result)
        self.stats.dead_letters += len(dead)

    @staticmethod
    def _set_aside(results: list[store.WriteResult], dead: list[DeadLetter]) -> list[DeadLetter]:
        """``dead`` with what the writes refused (conflicts, integrity, foreign workspace) added."""
        for result in results:
            dead.extend(DeadLetter.of(r.received, r.reason) for r in result.refused)
            dead.extend(result.foreign)
        return dead

    def _count(self, result: store.WriteResult) -> None:
        self.stats.new_events += result.new
        self.stats.duplicates += result.duplicates
        self.stats.points += result.points


def _materialize_or_none(received: list[Received]) -> Materialized | None:
    try:
        return materialize([r.event for r in received], columnar=True)
    except Exception:  # left to the write path, which dead-letters what the database rejects
        return None


def _key_run_id(key: bytes | None) -> str | None:
    """The run a message that did not decode belongs to: its Kafka key, when that is a run id."""
    try:
        return str(uuid.UUID(key.decode("ascii"))) if key else None
    except (UnicodeDecodeError, ValueError):
        return None


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The processors' pool ``reset``: nothing to undo when a connection goes back.

    asyncpg's default (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) is
    one more round trip per batch. Processors change session state only with ``SET LOCAL``
    and keep the archive's staging table (``store.ARCHIVE_STAGE``) on purpose; asyncpg
    still rolls back an open transaction before calling this."""


def pool(settings: ServiceSettings, size: int) -> asyncpg.Pool:
    """The connection pool processors write through (``async with`` it)."""
    return asyncpg.create_pool(settings.database_url, min_size=1, max_size=size, reset=_keep_session,
                               init=store.open_session, connection_class=store.ProcessorConnection)
