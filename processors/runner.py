"""The processor: a Kafka consumer-group member that materializes events effectively once.

Auto-commit is off; the offsets live in ``consumer_offsets`` and are written in the same
transaction as the rows they produced (aiokafka's local-state-consumer pattern with the
database as the state). On assignment the consumer seeks past the stored offsets. A
message that does not validate becomes a dead letter in that same transaction, so the
partition keeps flowing. If the database (or materializing) rejects a batch's data, the
batch is retried one event at a time (in savepoints), and a rejected event is bisected
(processors.items) so that only its offending point/row is dead-lettered: its neighbours
are stored. No exception raised by one event stops the partition; only a failure of the
database connection (processors.dbfaults) is retried, whole, with capped backoff.

Fetching and writing overlap: while one batch's transaction is in PostgreSQL, the next
batch is fetched, decoded and materialized (a queue of one between the two tasks), so
the consumer is not blocked by its own writes. A rebalance discards prepared batches
that were not written; the new assignment seeks to the stored offsets again.
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
    """One fetched batch, decoded and materialized, waiting for its transaction."""

    received: list[Received]
    dead: list[DeadLetter]
    positions: dict[tuple[str, int], int]
    materialized: Materialized | None
    """Rows of every event of ``received``, assuming all are new (None: do it at write time)."""

    generation: int
    """The assignment it was fetched under; a rebalance makes it stale."""

    fetched: float = 0.0
    """Wall-clock time its records came back from the consumer (for ``processors.trace``)."""
    firsts: dict[int, int] = field(default_factory=dict)
    """Partition -> first offset in the batch (with ``positions``, the batch's offset ranges)."""


class _SeekOnAssign(ConsumerRebalanceListener):
    def __init__(self, processor: Processor) -> None:
        self._p = processor

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._p.generation += 1  # batches fetched before this are not written
        while not self._p.queue.empty():
            self._p.queue.get_nowait()
            self._p.queue.task_done()
        async with self._p.lock:  # let the in-flight batch commit before giving partitions up
            pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Batches fetched so far will be fetched again from the positions chosen below: drop
        # them now, before seeking (dropping after the seek could drop records fetched from
        # the new positions, which nothing would fetch again). A batch fetched before the
        # seek but prepared after this point is written and deduplicated by the archive.
        self._p.generation += 1
        while not self._p.queue.empty():
            self._p.queue.get_nowait()
            self._p.queue.task_done()
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
        self.queue: asyncio.Queue[Prepared] = asyncio.Queue(maxsize=1)
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
                    fetched = time.time()
                    prepared = self.prepare(batch)
                    prepared.fetched = fetched
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
        """Queue a batch for the writer (None: wait until everything queued is written)."""
        step = asyncio.ensure_future(self.queue.put(prepared) if prepared else self.queue.join())
        await asyncio.wait({step, writer}, return_when=asyncio.FIRST_COMPLETED)
        if writer.done():
            step.cancel()
            writer.result()  # the writer's exception, if it failed
            raise RuntimeError("the processor's writer stopped")

    async def _write_loop(self) -> None:
        while True:
            prepared = await self.queue.get()
            try:
                async with self.lock:
                    if prepared.generation == self.generation:
                        await self._handle(prepared)
            finally:
                self.queue.task_done()

    def prepare(self, batch: dict[TopicPartition, list]) -> Prepared:  # type: ignore[type-arg]
        """Decode (dead-lettering what does not validate) and materialize a fetched batch."""
        received: list[Received] = []
        dead: list[DeadLetter] = []
        positions: dict[tuple[str, int], int] = {}
        firsts: dict[int, int] = {}
        for tp, messages in batch.items():
            firsts[tp.partition] = messages[0].offset
            for msg in messages:
                raw = msg.value if msg.value is not None else b""
                try:
                    received.append(Received(events.decode(raw), raw, tp.topic, tp.partition, msg.offset))
                except Exception as exc:  # any failure to decode (invalid UTF-8, too deep, ...) is this message's
                    reason = str(exc) if isinstance(exc, events.EventError) else f"{type(exc).__name__}: {exc}"
                    dead.append(DeadLetter(tp.topic, tp.partition, msg.offset, msg.key, raw, reason,
                                           run_id=_key_run_id(msg.key)))
            positions[(tp.topic, tp.partition)] = messages[-1].offset
        try:
            prepared = materialize([r.event for r in received], columnar=True)
        except Exception:  # left to the write path, which dead-letters what the database rejects
            prepared = None
        return Prepared(received, dead, positions, prepared, self.generation, firsts=firsts)

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
            self.trace.write(p.fetched, write_at, time.time(),
                             {tp: (first, last) for tp, last in positions.items()
                              if (first := p.firsts.get(tp[1])) is not None})
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
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                try:
                    async with conn.transaction():  # savepoint: fall back to one at a time
                        results.append(await store.write_events(conn, received, prepared))
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    log.warning("batch rejected (%s: %s); writing events one at a time", type(exc).__name__, exc)
                    for r in received:
                        await salvage.write_one(conn, r, results, dead)
                for result in results:
                    dead.extend(DeadLetter.of(r.received, r.reason) for r in result.refused)
                    dead.extend(result.foreign)
                await store.write_dead_letters(conn, dead)
                await store.save_offsets(conn, self.settings.processor_group, positions)
        for result in results:
            self._count(result)
        self.stats.dead_letters += len(dead)

    def _count(self, result: store.WriteResult) -> None:
        self.stats.new_events += result.new
        self.stats.duplicates += result.duplicates
        self.stats.points += result.points


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
    return asyncpg.create_pool(settings.database_url, min_size=1, max_size=size, reset=_keep_session)
