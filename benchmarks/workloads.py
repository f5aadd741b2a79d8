"""The rows of SPEC §9, each measured against the running services.

Every row owns its data (a fresh experiment or run ids), so rows can run in any order
on one database. Completion is observed in the database (``metric_summaries`` counts,
``runs`` rows, or the processors' ``NOTIFY`` at commit), never by sleeping.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import shutil
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
from uuid6 import uuid7

from benchmarks import cpu
from benchmarks.results import Row
from benchmarks.services import REPO, TRACE_FILE, Services
from runstream.ingest.topic import ensure_topic
from runstream.processors import trace
from runstream.producer import EventProducer
from runstream.schemas import notify

POLL_S = 0.02


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; :data:`FULL` for a real run, :data:`QUICK` for a smoke run."""

    batched_procs: int
    batched_runs: int
    batched_points_per_run: int
    single_events: int
    latency_seconds: float
    vector_points: int
    vector_requests: int
    concurrent_procs: int
    concurrent_runs: int
    concurrent_points_per_run: int
    read_seconds: float
    read_requests: int
    mlflow_points: int
    mlflow_history: int

    @property
    def batched_points(self) -> int:
        return self.batched_procs * self.batched_runs * self.batched_points_per_run


FULL = Sizes(batched_procs=2, batched_runs=4, batched_points_per_run=250_000, single_events=200_000,
             latency_seconds=8, vector_points=1_000_000, vector_requests=200, concurrent_procs=4,
             concurrent_runs=1_000, concurrent_points_per_run=200, read_seconds=8, read_requests=100_000,
             mlflow_points=30_000, mlflow_history=100_000)
QUICK = Sizes(batched_procs=1, batched_runs=2, batched_points_per_run=25_000, single_events=5_000,
              latency_seconds=2, vector_points=100_000, vector_requests=20, concurrent_procs=2,
              concurrent_runs=20, concurrent_points_per_run=20, read_seconds=1, read_requests=500,
              mlflow_points=3_000, mlflow_history=5_000)


class Bench:
    """What every row needs: the services, a pool on their database, the sizes."""

    def __init__(self, services: Services, pool: asyncpg.Pool, sizes: Sizes, profile_dir: Any = None) -> None:
        self.services, self.pool, self.sizes = services, pool, sizes
        self.settings = services.settings
        self.profile_dir = profile_dir
        self.rows: dict[str, Row] = {}
        self.stack_pids = cpu.stack_pids(services.state_dir)

    def cpu_sample(self) -> dict[str, float]:
        """Cumulative CPU seconds per part of the stack (see :mod:`benchmarks.cpu`)."""
        return cpu.sample(self.stack_pids, {n: p.pid for n, p in self.services.processes.items() if p.poll() is None})

    # ---- helpers ------------------------------------------------------------------
    async def experiment_points(self, experiment: str) -> int:
        return int(await self.pool.fetchval(
            "SELECT coalesce(sum(s.count), 0)::bigint FROM runs r JOIN metric_summaries s USING (run_id) "
            "WHERE r.experiment = $1", experiment))

    async def wait_points(self, experiment: str, expected: int, timeout_s: float) -> float:
        """Wall-clock time at which the experiment's runs hold ``expected`` points."""
        deadline = time.monotonic() + timeout_s
        while True:
            for name, process in self.services.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode} (see {name}.log)")
            n = await self.experiment_points(experiment)
            if n >= expected:
                return time.time()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{experiment}: {n} of {expected} points after {timeout_s} s")
            await asyncio.sleep(POLL_S)

    async def workers(self, experiment: str, procs: int, runs: int, points_per_run: int, *,
                      names: int = 2, rate: float = 0.0, cpus: str = "") -> list[asyncio.subprocess.Process]:
        """SDK worker processes (``cpus``: a ``taskset -c`` list to pin them to)."""
        args = [experiment, str(runs), str(points_per_run), "--names", str(names)]
        if rate:
            args += ["--rate", str(rate / procs)]
        pin = ["taskset", "-c", cpus] if cpus else []
        return [await asyncio.create_subprocess_exec(
            *pin, sys.executable, "-m", "benchmarks.sdk_worker", *args, cwd=REPO, env=self.services.env(),
            stdout=asyncio.subprocess.PIPE) for _ in range(procs)]

    @staticmethod
    async def results(workers: list[asyncio.subprocess.Process]) -> list[dict[str, Any]]:
        out = []
        for w in workers:
            stdout, _ = await w.communicate()
            if w.returncode != 0:
                raise RuntimeError(f"sdk worker exited with {w.returncode}")
            result = orjson.loads(stdout)
            if result.get("close_error"):
                print(f"\n    (an SDK worker's close failed after every event was acknowledged: "
                      f"{result['close_error']})", end="", flush=True)
            out.append(result)
        return out

    async def produce(self, events: list[tuple[str, bytes]]) -> float:
        """Produce pre-encoded events through runstream.producer; returns when all are acked."""
        await ensure_topic(self.settings.kafka_bootstrap, self.settings.topic, self.settings.partitions)
        producer = EventProducer(self.settings.kafka_bootstrap, self.settings.topic)
        await producer.start()
        try:
            await producer.send_batch(events)
        finally:
            await producer.stop()
        return time.time()

    def profile(self, name: str, pid: int, seconds: float) -> None:
        if self.profile_dir is not None:
            self.services.profile(name, pid, self.profile_dir, seconds)

    def processor_pid(self) -> int:
        return self.services.processes["processor-0"].pid


# ---------------------------------------------------------------- events by hand

def _event(run_id: str, seq: int, type_: str, payload: dict[str, Any], ts: float) -> bytes:
    return orjson.dumps({"type": type_, "v": 1, "event_id": str(uuid7()), "run_id": run_id, "seq": seq,
                         "ts": ts, "payload": payload})


def started_event(run_id: str, experiment: str, ts: float) -> bytes:
    return _event(run_id, 0, "run.started", {"experiment": experiment, "name": "bench"}, ts)


def points_event(run_id: str, seq: int, name: str, steps: list[int], values: list[float], ts: float) -> bytes:
    return _event(run_id, seq, "metric.points",
                  {"series": [{"name": name, "steps": steps, "values": values, "times": [ts] * len(steps)}]}, ts)


def unique(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# ---------------------------------------------------------------- rows

async def batched_ingest(b: Bench) -> Row:
    """SDK run.log calls in several processes → Kafka → processor → summaries count them."""
    s = b.sizes
    experiment, total = unique("batched"), s.batched_points
    workers = await b.workers(experiment, s.batched_procs, s.batched_runs, s.batched_points_per_run)
    b.profile("processor-batched", b.processor_pid(), 8)
    done = await b.wait_points(experiment, total, timeout_s=300)
    outs = await b.results(workers)
    t0 = min(o["t_start"] for o in outs)
    logged = max(o["t_logged"] for o in outs) - t0
    rate = total / (done - t0)
    return Row("ingest_batched", "ingest, batched (SDK → Kafka → processor → queryable)", rate, "points/s",
               target=250_000, detail={"points": total, "seconds": done - t0, "sdk_processes": s.batched_procs,
                                       "sdk_log_seconds": logged, "sdk_log_rate": total / logged,
                                       "sdk_cpu_us_per_point": sdk_cpu_per_point(outs)})


def sdk_cpu_per_point(outs: list[dict[str, Any]]) -> float:
    """CPU microseconds per point of the SDK worker processes (all their threads, from their
    first log call to the end of their flush)."""
    return round(sum(o["cpu_s"] for o in outs) / max(1, sum(o["points"] for o in outs)) * 1e6, 3)


def single_point_events(experiment: str, n: int, runs: int = 100) -> tuple[list[tuple[str, bytes]], int]:
    """``n`` one-point metric.points events over ``runs`` runs (plus their run.started)."""
    run_ids = [str(uuid7()) for _ in range(runs)]
    now = time.time()
    events = [(r, started_event(r, experiment, now)) for r in run_ids]
    per_run = n // runs
    for i in range(1, per_run + 1):
        events += [(r, points_event(r, i, "x", [i], [i * 0.5], now)) for r in run_ids]
    return events, per_run * runs


async def single_point_ingest(b: Bench) -> Row:
    """One point per Kafka message, produced with runstream.producer from this process while
    the processor consumes: bounded by whichever of the two is slower."""
    experiment = unique("single")
    events, expected = single_point_events(experiment, b.sizes.single_events)
    t0 = time.time()
    producing = asyncio.create_task(b.produce(events))
    b.profile("processor-single", b.processor_pid(), 6)
    done = await b.wait_points(experiment, expected, timeout_s=300)
    produced = await producing
    return Row("ingest_single", "ingest, one point per Kafka message (producing meanwhile)", expected / (done - t0),
               "events/s", target=50_000, detail={"events": len(events), "seconds": done - t0,
                                                  "producer_seconds": produced - t0,
                                                  "producer_rate": len(events) / (produced - t0)})


async def single_point_drain(b: Bench) -> Row:
    """The same kind of messages produced first into a topic of their own, then consumed by
    a processor started for it: the processor's own rate on one-point messages."""
    experiment = unique("drain")
    topic = experiment
    events, expected = single_point_events(experiment, b.sizes.single_events)
    t0 = time.time()
    await ensure_topic(b.settings.kafka_bootstrap, topic, b.settings.partitions)
    producer = EventProducer(b.settings.kafka_bootstrap, topic)
    await producer.start()
    try:
        await producer.send_batch(events)
    finally:
        await producer.stop()
    produced = time.time() - t0
    spawned = time.time()
    process = b.services.spawn("processor-drain", ["-m", "runstream.cli", "processor"],
                               topic=topic, processor_group=topic)
    try:
        while (first := await b.experiment_points(experiment)) == 0:
            if process.poll() is not None:
                raise RuntimeError(f"the drain processor exited with {process.returncode}")
            await asyncio.sleep(POLL_S)
        t_first, cpu_first = time.time(), b.cpu_sample()
        b.profile("processor-drain", process.pid, 5)
        done = await b.wait_points(experiment, expected, timeout_s=300)
        cpu_s = cpu.spent(cpu_first, b.cpu_sample())  # before the drain processor is stopped
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)
        del b.services.processes["processor-drain"]
    if first < expected:  # counted from the first commit: the processor's start-up left out
        rate, note = (expected - first) / (done - t_first), ""
    else:  # everything came in the first transaction (small sizes)
        rate, note = expected / (done - spawned), "one transaction: includes the processor's start-up"
    return Row("ingest_single_drain", "one point per message: processor drain rate", rate, "events/s",
               target=50_000, note=note,
               detail={"events": len(events), "counted_from": first, "seconds": done - t_first,
                       "producer_rate": len(events) / produced, "cpu_s": cpu_s})


async def raw_copy(b: Bench) -> Row:
    """The batched workload COPYed straight into metric_points: the database's own ceiling."""
    total = b.sizes.batched_points
    chunk = 50_000
    run_ids = [uuid.uuid4() for _ in range(b.sizes.batched_procs * b.sizes.batched_runs)]
    ts = datetime.now(UTC)
    per_run = total // len(run_ids)
    columns = ("run_id", "name", "step", "ts", "value", "text", "kind")
    records = [(r, f"m{i % 2}", i // 2, ts, i * 0.001, None, 0) for r in run_ids for i in range(per_run)]
    started = time.perf_counter()
    async with b.pool.acquire() as conn:
        for i in range(0, len(records), chunk):
            async with conn.transaction():
                await conn.copy_records_to_table("metric_points", records=records[i:i + chunk], columns=columns)
    seconds = time.perf_counter() - started
    return Row("raw_copy", "raw COPY of the batched workload (baseline)", len(records) / seconds, "points/s",
               detail={"points": len(records), "seconds": seconds, "rows_per_transaction": chunk})


STAGES = ("enqueue→handed", "handed→acked", "acked→fetched", "fetched→write", "write→committed",
          "committed→notify", "notify→visible")
"""The latency probe's timeline: SDK enqueue (just before ``run.log``), handed to the
producer (the sender's trace hook), Kafka's ack (the same hook), the batch's records back
from the processor's ``getmany``, its transaction started and committed (the processors'
``processor_trace``), the NOTIFY received by a listener, and the point read back through
the API (``GET /api/runs/{id}?min_seq=``, one read at a time, so a sample)."""


async def latency(b: Bench, peak_rate: float, load_fraction: float = 0.5, cpus: str = "") -> Row:
    """A probe run logs every 10 ms while SDK workers log at ``load_fraction`` of the
    measured peak (none: the probe alone; ``cpus``: pinned with taskset); the probe's points
    are queryable when the processor's NOTIFY for its run arrives. The detail holds each
    stage's p50/p99 (:data:`STAGES`) and the SDK workers' CPU per point."""
    from runstream import Experiment, Workspace

    rate, seconds = peak_rate * load_fraction, b.sizes.latency_seconds
    experiment = unique("latency")
    load = await b.workers(experiment, 2, 4, int(rate * seconds / 8), rate=rate, cpus=cpus) if rate else []
    ws = Workspace(settings=b.settings)
    probe = Experiment(ws, experiment + "-probe").start_logging(name="probe")
    probe.flush()
    probe_id = uuid.UUID(probe.id)
    logged: list[float] = []
    committed: dict[int, float] = {}  # probe run's seq -> when its commit was announced
    visible: dict[int, float] = {}  # probe run's seq -> when the API answered with it
    sent: list[tuple[str, float, list[tuple[str, bytes]]]] = []  # the sender's hook: decoded afterwards
    trace_path = b.services.state_dir / TRACE_FILE
    trace_start = trace_path.stat().st_size if trace_path.exists() else 0
    loop = asyncio.get_running_loop()
    reading: list[asyncio.Task[None]] = []
    api = aiohttp.ClientSession(headers={"Cache-Control": "no-cache"})

    async def read_back(seq: int) -> None:
        async with api.get(f"{b.settings.api_url}/api/runs/{probe_id}?min_seq={seq}") as resp:
            await resp.read()
            if resp.status == 200:
                visible[seq] = time.time()

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        run = notify.parse(payload)
        if run is not None and run.run_id == probe_id:
            committed.setdefault(run.last_seq, time.time())
            if not reading or reading[-1].done():  # one read at a time: a sample, not more load
                reading.append(loop.create_task(read_back(run.last_seq)))

    def log_probes(stop: threading.Event) -> None:
        step = 0
        while not stop.is_set():
            logged.append(time.time())
            probe.log("probe", float(step))
            step += 1
            stop.wait(0.01)  # the probe's cadence: one point per 10 ms

    listen = await asyncpg.connect(b.settings.database_url)
    await listen.add_listener(notify.CHANNEL, on_notify)
    ws._sender.trace = lambda stage, events: sent.append((stage, time.time(), events))
    stop = threading.Event()
    thread = threading.Thread(target=log_probes, args=(stop,), daemon=True)
    try:
        thread.start()
        await asyncio.sleep(seconds)  # the measurement window
        stop.set()
        await asyncio.to_thread(thread.join, 5)
        await asyncio.to_thread(probe.flush, 30)
        while await b.pool.fetchval("SELECT last_step FROM metric_summaries WHERE run_id = $1 AND name = 'probe'",
                                    probe_id) != len(logged) - 1:
            await asyncio.sleep(POLL_S)
    finally:
        stop.set()
        ws._sender.trace = None
        await listen.close()
        await asyncio.gather(*reading, return_exceptions=True)
        await api.close()
        ws.close()
        loaded = await b.results(load)
    # The next row must not inherit a backlog: wait until the load is materialized too. How
    # long that took after the window says whether the load was sustainable at all.
    window_end = time.time()
    if loaded:
        await b.wait_points(experiment, sum(r["points"] for r in loaded), timeout_s=300)
    backlog_s = time.time() - window_end
    # Which event (seq) carried each probe point: the archive says. A NOTIFY names the run's
    # last seq of a commit, so a seq without its own notification was committed with a later one.
    seen: dict[int, float] = {}
    carried: dict[int, int] = {}  # step -> seq of the event that carried it
    where: dict[int, tuple[str, int]] = {}  # seq -> (topic/partition, offset) in the archive
    announced = sorted(committed)
    for seq, body, topic, part, offset in await b.pool.fetch(
            'SELECT seq, body, topic, partition, "offset" FROM events WHERE run_id = $1 ORDER BY seq', probe_id):
        where[seq] = (f"{topic}/{part}", offset)
        at = next((committed[s] for s in announced if s >= seq), None)
        for series in orjson.loads(body)["payload"].get("series", []):
            for step in series["steps"]:
                carried[step] = seq
                if at is not None:
                    seen[step] = at
    lat = [(seen[k] - logged[k]) * 1000 for k in sorted(seen) if k < len(logged)]
    p50, p99 = statistics.median(lat), percentile(lat, 99)
    stages = timeline(logged, seen, carried, where, sent, trace.read(trace_path, trace_start), visible, committed)
    detail = {"probes": len(lat), "load_rate": rate, "load_fraction": load_fraction, "max_ms": max(lat),
              "load_backlog_s": backlog_s, "stages": stages, "pinned_load_cpus": cpus,
              "sdk_cpu_us_per_point": sdk_cpu_per_point(loaded) if loaded else None}
    backlog = (f"not sustained: the load's last points were queryable {backlog_s:.1f} s after its window"
               if backlog_s > 1 else "")
    if load_fraction == 0.5 and not cpus:  # SPEC §9's row
        b.rows["latency_p50"] = Row("latency_p50", "log → queryable latency p50 at half load", p50, "ms",
                                    target=25, higher_is_better=False, detail=detail)
        return Row("latency_p99", "log → queryable latency p99 at half load", p99, "ms", target=100,
                   higher_is_better=False, note=backlog, detail=detail)
    at = f"at {load_fraction:.0%} load ({rate:,.0f} points/s)" if rate else "with the probe alone"
    key = f"latency_{load_fraction:g}"
    if cpus:
        at, key = f"{at}, load generators on CPU {cpus}", f"latency_pinned_{load_fraction:g}"
    return Row(key, f"log → queryable latency {at}, p50 / p99 in detail", p50, "ms",
               higher_is_better=False, note="; ".join(filter(None, [f"p99 {p99:.0f} ms", backlog])),
               detail={**detail, "p99_ms": p99})


def timeline(logged: list[float], seen: dict[int, float], carried: dict[int, int],
             where: dict[int, tuple[str, int]], sent: list[tuple[str, float, list[tuple[str, bytes]]]],
             batches: list[dict[str, Any]], visible: dict[int, float],
             committed: dict[int, float]) -> dict[str, Any]:
    """Per stage (:data:`STAGES`), the p50 and p99 in ms over the probe's points, and the
    median of each stage over the slowest 1% of points (which stage holds the tail)."""
    at: dict[str, dict[int, float]] = {"handed": {}, "acked": {}}  # seq -> time
    for stage, t, events in sent:
        for _, data in events:
            at[stage].setdefault(orjson.loads(data)["seq"], t)
    ranges: dict[str, list[tuple[int, int, dict[str, Any]]]] = {}
    for record in batches:
        for key, (first, last) in record["ranges"].items():
            ranges.setdefault(key, []).append((first, last, record))
    for spans in ranges.values():
        spans.sort(key=lambda span: span[0])

    def batch_of(seq: int) -> dict[str, Any] | None:
        if seq not in where:
            return None
        key, offset = where[seq]
        spans = ranges.get(key, [])
        i = bisect.bisect_right(spans, offset, key=lambda span: span[0]) - 1
        return spans[i][2] if i >= 0 and spans[i][1] >= offset else None

    announced = sorted(committed)
    readable = sorted(visible)
    per_point: list[dict[str, float]] = []
    for step in sorted(seen):
        seq = carried.get(step)
        batch = batch_of(seq) if seq is not None else None
        if step >= len(logged) or seq is None or batch is None or seq not in at["handed"] or seq not in at["acked"]:
            continue
        marks = [logged[step], at["handed"][seq], at["acked"][seq], batch["fetched"], batch["write"],
                 batch["committed"], seen[step]]
        # The first API read after this seq's NOTIFY (reads are one at a time, so a sample).
        later = [s for s in readable if s >= seq and visible[s] >= seen[step]]
        row = {name: (b - a) * 1000 for name, a, b in zip(STAGES, marks, marks[1:], strict=False)}
        if later:
            row["notify→visible"] = (visible[later[0]] - seen[step]) * 1000
        row["total"] = (seen[step] - logged[step]) * 1000
        per_point.append(row)
    if not per_point:
        return {"points": 0}
    out: dict[str, Any] = {"points": len(per_point), "notifies": len(announced)}
    slowest = sorted(per_point, key=lambda r: r["total"])[-max(1, len(per_point) // 100):]
    for name in (*STAGES, "total"):
        values = [r[name] for r in per_point if name in r]
        if values:
            tail = [r[name] for r in slowest if name in r]
            out[name] = {"p50": round(statistics.median(values), 2), "p99": round(percentile(values, 99), 2),
                         "n": len(values), "slowest_1pct_median": round(statistics.median(tail), 2) if tail else None}
    return out


def vector_values(n: int) -> list[float]:
    rng = random.Random(42)
    values = [math.sin(i / 20_000) + rng.random() * 0.01 for i in range(n)]
    values[n // 8], values[n // 2] = 1e6, -1e6  # one-point spikes a chart must keep
    return values


async def million_point_vector(b: Bench) -> tuple[Row, str]:
    """A 1M-point metric ingested through Kafka, read through the API at max_points=1000."""
    n, experiment = b.sizes.vector_points, unique("vector")
    run_id, now = str(uuid7()), time.time()
    values = vector_values(n)
    events = [(run_id, started_event(run_id, experiment, now))]
    for seq, i in enumerate(range(0, n, 10_000), start=1):
        steps = list(range(i, min(n, i + 10_000)))
        events.append((run_id, points_event(run_id, seq, "loss", steps, values[i:i + len(steps)], now)))
    t0 = time.time()
    await b.produce(events)
    done = await b.wait_points(experiment, n, timeout_s=300)
    url = f"{b.settings.api_url}/api/runs/{run_id}/metrics/loss?max_points=1000"
    timings = []
    # The SQL path every time: the API's response cache would otherwise answer all but the first.
    async with aiohttp.ClientSession(headers={"Cache-Control": "no-cache"}) as session:
        for _ in range(3):  # warm the connection and the caches
            async with session.get(url) as resp:
                body = orjson.loads(await resp.read())
        assert body["count"] == n and body["downsampled"] and len(body["steps"]) <= 1000, body.get("count")
        assert 1e6 in body["values"] and -1e6 in body["values"], "the spikes must survive downsampling"
        if "api" in b.services.processes:
            b.profile("api-vector", b.services.processes["api"].pid, 4)
        for _ in range(b.sizes.vector_requests):
            started = time.perf_counter()
            async with session.get(url) as resp:
                await resp.read()
            timings.append((time.perf_counter() - started) * 1000)
    detail = {"points": n, "returned": len(body["steps"]), "requests": len(timings),
              "p90_ms": percentile(timings, 90), "max_ms": max(timings), "slowest_at": timings.index(max(timings)),
              "ingest_seconds": done - t0, "ingest_rate": n / (done - t0)}
    b.rows["vector_p50"] = Row("vector_p50", f"{n:,}-point metric → 1,000 points, p50", statistics.median(timings),
                               "ms", detail=detail)
    return Row("vector_p99", f"{n:,}-point metric → 1,000 points, p99", percentile(timings, 99), "ms",
               target=50, higher_is_better=False, detail=detail), run_id


async def concurrent_runs(b: Bench) -> tuple[Row, list[str]]:
    """Many runs in several SDK processes at once; then every point is counted once."""
    s = b.sizes
    experiment = unique("concurrent")
    per_proc = s.concurrent_runs // s.concurrent_procs
    runs = per_proc * s.concurrent_procs
    total = runs * s.concurrent_points_per_run
    workers = await b.workers(experiment, s.concurrent_procs, per_proc, s.concurrent_points_per_run)
    done = await b.wait_points(experiment, total, timeout_s=300)
    outs = await b.results(workers)
    t0 = min(o["t_start"] for o in outs)
    run_ids = [r for o in outs for r in o["run_ids"]]
    while await b.pool.fetchval("SELECT count(*) FROM runs WHERE experiment = $1 AND status = 'completed'",
                                experiment) < runs:
        await asyncio.sleep(POLL_S)
    rows, distinct = await b.pool.fetchrow(
        "SELECT count(*), count(DISTINCT (p.run_id, p.name, p.step)) FROM metric_points p "
        "WHERE p.run_id = ANY($1::uuid[])", run_ids)
    gaps = await b.pool.fetchval(
        "SELECT count(*) FROM (SELECT run_id FROM events WHERE run_id = ANY($1::uuid[]) "
        "GROUP BY run_id HAVING count(*) <> max(seq) + 1) g", run_ids)
    ok = rows == distinct == total and gaps == 0 and len(set(run_ids)) == runs
    row = Row("concurrent", f"{runs:,} concurrent runs in {s.concurrent_procs} processes", total / (done - t0),
              "points/s", note="" if ok else f"COUNT CHECK FAILED: {rows} rows, {distinct} distinct, "
                                              f"expected {total}; {gaps} runs with seq gaps",
              detail={"runs": runs, "points": total, "rows": rows, "distinct": distinct, "seq_gaps": gaps,
                      "count_check": "ok" if ok else "failed", "seconds": done - t0})
    return row, run_ids


async def rebuild(b: Bench, *, whole: bool) -> Row:
    """processors.replay: rebuild every projection from the events archive, then swap.

    Run twice: early, on an archive of (almost only) the one-point events of the rows
    before it, where the rate in events/s is what SPEC §9 targets; and last, on the whole
    archive, where most of the work is millions of points in batched events and the rate
    that says something is points/s."""
    before = await b.pool.fetchval("SELECT count(*) FROM metric_points")
    copied = await b.pool.fetchval("SELECT count(*) FROM metric_points p WHERE NOT EXISTS "
                                   "(SELECT 1 FROM events e WHERE e.run_id = p.run_id)")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runstream.processors.replay", "--json", cwd=REPO, env=b.services.env(),
        stdout=asyncio.subprocess.PIPE)
    b.profile("replay-whole" if whole else "replay", proc.pid, 6)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"processors.replay exited with {proc.returncode}")
    report = orjson.loads(out)
    after = await b.pool.fetchval("SELECT count(*) FROM metric_points")
    # The raw-COPY row's points have no events: a rebuild from the log rightly drops them.
    ok = after == before - copied
    detail = {**report, "events_per_s": report["events"] / report["seconds"],
              "points_per_s": report["points"] / report["seconds"], "points_check": "ok" if ok else "failed"}
    note = "" if ok else f"points before {before - copied}, after {after}"
    if whole:
        return Row("rebuild_archive", f"projection rebuild, whole archive ({report['events']:,} events, "
                   f"{report['points']:,} points)", detail["points_per_s"], "points/s", note=note, detail=detail)
    return Row("rebuild", f"projection rebuild from the events archive ({report['events']:,} events)",
               detail["events_per_s"], "events/s", target=200_000, note=note, detail=detail)


async def api_reads(b: Bench, run_id: str) -> Row:
    """Repeated reads of one run's detail (rows hot in PostgreSQL's cache), one API worker."""
    url = f"{b.settings.api_url}/api/runs/{run_id}"
    seconds, wrk = b.sizes.read_seconds, shutil.which("wrk")
    b.profile("api-reads", b.services.processes["api"].pid, seconds)
    if wrk:
        proc = await asyncio.create_subprocess_exec(
            wrk, "-t1", "-c32", f"-d{max(1, int(seconds))}s", "--latency", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out = (await proc.communicate())[0].decode()
        rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
        errors = "Non-2xx" in out or "Socket errors" in out
        detail: dict[str, Any] = {"tool": "wrk -t1 -c32", "seconds": seconds, "errors": errors,
                                  "wrk": out.strip().splitlines()[-12:]}
    else:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.loadgen", url, "--seconds", str(seconds),
            "--requests", str(b.sizes.read_requests), cwd=REPO, stdout=asyncio.subprocess.PIPE)
        detail = orjson.loads((await proc.communicate())[0])
        rps = detail["requests"] / detail["seconds"]
    return Row("api_reads", "API reads of a run (warm), one worker", rps, "req/s", target=3_000, detail=detail)
