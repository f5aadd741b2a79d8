"""``python -m benchmarks [--quick] [--out PATH]``: start a stack, measure, print, stop."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from benchmarks import cpu, mlflow_baseline, pglog, workloads
from benchmarks import services as svc
from benchmarks.results import Row, cpu_table, machine, slow_table, stage_table, table, write_json
from runstream.devstack.postgres import SLOW_STATEMENT_MS

ROWS = ("batched", "single", "raw", "latency", "vector", "concurrent", "rebuild", "reads", "mlflow", "mlflow_compat")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every row")
    p.add_argument("--out", type=Path, default=None, help=f"JSON results (default {DEFAULT_OUT}; with --quick or --only: none)")
    p.add_argument("--state-dir", type=Path, default=Path("/tmp/runstream-bench"),
                   help="where the benchmark's Kafka and PostgreSQL live (wiped at start)")
    p.add_argument("--processors", type=int, default=1, help="processor processes (one consumer group)")
    p.add_argument("--no-mlflow", action="store_true", help="skip the MLflow baseline")
    p.add_argument("--mlflow-python", default=None,
                   help="interpreter that has mlflow installed (default: this one, if it has mlflow)")
    p.add_argument("--profile", type=Path, default=None, help="attach py-spy to the services; raw stacks here")
    p.add_argument("--latency-also", type=float, nargs="*", default=[0.0, 0.25], metavar="FRACTION",
                   help="latency also at these fractions of the peak (0: the probe alone); default 0 0.25")
    p.add_argument("--latency-pinned", type=float, nargs="*", default=[0.25, 0.5], metavar="FRACTION",
                   help="latency also at these fractions with the SDK load workers pinned to one core "
                        "(taskset -c --pin-cpus); default 0.25 0.5")
    p.add_argument("--peak", type=float, default=250_000.0,
                   help="points/s the latency rows take fractions of when the batched row is not run (--only)")
    p.add_argument("--pin-cpus", default="1", help="the core list the pinned latency rows run the load on")
    p.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(ROWS)}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    return asyncio.run(run(args))


async def run(args: argparse.Namespace) -> int:
    sizes = workloads.QUICK if args.quick else workloads.FULL
    out = args.out or (None if args.quick or args.only else DEFAULT_OUT)  # the recorded run is a whole one
    started = time.monotonic()
    print(f"starting Kafka, PostgreSQL, {args.processors} processor(s) and the API in {args.state_dir} ...",
          flush=True)
    services = await asyncio.to_thread(svc.start, args.state_dir, processors=args.processors)
    failures: list[str] = []
    rows: list[Row] = []
    try:
        async with asyncpg.create_pool(services.settings.database_url, min_size=1, max_size=4) as pool:
            b = workloads.Bench(services, pool, sizes, args.profile)

            only = set(args.only.split(",")) - {""}
            pg_log = pglog.log_path(services.state_dir)

            async def measure(title: str, fn: Callable[[], Awaitable[Any]], key: str = "") -> Any:
                if only and key not in only:
                    return None
                print(f"  {title} ...", end="", flush=True)
                t, cpu_before, load_before = time.monotonic(), b.cpu_sample(), os.getloadavg()[0]
                log_start = pglog.mark(pg_log)
                try:
                    result = await fn()
                    for row in result if isinstance(result, tuple) else [result]:
                        if isinstance(row, Row):  # the whole row's window, unless it chose a narrower one
                            row.detail.setdefault("cpu_s", cpu.spent(cpu_before, b.cpu_sample()))
                            row.detail.setdefault("loadavg_1m_before", round(load_before, 2))
                            row.detail.setdefault("slow_sql", pglog.since(pg_log, log_start))
                except Exception as exc:
                    failures.append(f"{title}: {exc.__class__.__name__}: {exc}")
                    traceback.print_exc()
                    print(" FAILED", flush=True)
                    return None
                print(f" {time.monotonic() - t:.1f} s", flush=True)
                return result

            # The one-point rows first: the first rebuild reads an archive of one-point events.
            single = await measure("ingest, one point per message", lambda: workloads.single_point_ingest(b), "single")
            drain = await measure("one point per message, processor drain",
                                  lambda: workloads.single_point_drain(b), "single")
            rebuilt_events = await measure("projection rebuild, one-point events",
                                           lambda: workloads.rebuild(b, whole=False), "rebuild")
            batched = await measure("ingest, batched", lambda: workloads.batched_ingest(b), "batched")
            raw = await measure("raw COPY baseline", lambda: workloads.raw_copy(b), "raw")
            if batched and raw:
                batched.ratio, batched.baseline = batched.value / raw.value, "raw COPY"
            peak = batched.value if batched else args.peak
            p99 = await measure("latency at half load", lambda: workloads.latency(b, peak), "latency")
            light = [await measure(f"latency at {f:.0%} load", functools.partial(workloads.latency, b, peak, f),
                                   "latency") for f in args.latency_also]
            light += [await measure(f"latency at {f:.0%} load, load on CPU {args.pin_cpus}",
                                    functools.partial(workloads.latency, b, peak, f, args.pin_cpus), "latency")
                      for f in args.latency_pinned]
            vector = await measure("1M-point vector", lambda: workloads.million_point_vector(b), "vector")
            concurrent = await measure("concurrent runs", lambda: workloads.concurrent_runs(b), "concurrent")
            rebuilt = await measure("projection rebuild, whole archive", lambda: workloads.rebuild(b, whole=True),
                                    "rebuild")
            read_run = concurrent[1][0] if concurrent else (vector[1] if vector else None)
            reads = await measure("API reads", lambda: workloads.api_reads(b, read_run), "reads") if read_run else None
            full_read = await measure("1M-point history, whole", lambda: history(b, vector[1]), "vector") \
                if vector else None
            same_read = await measure("history of MLflow's size", lambda: history(b, vector[1], sizes.mlflow_history),
                                      "vector") if vector and sizes.mlflow_history < sizes.vector_points else None
            ours = [batched, single, drain, raw, b.rows.get("latency_p50"), p99, *light, b.rows.get("vector_p50"),
                    vector and vector[0], full_read, same_read, concurrent and concurrent[0], rebuilt_events, rebuilt,
                    reads]
            rows = [r for r in ours if r is not None]
            for p50, p99_row in ((b.rows.get("latency_p50"), p99), (b.rows.get("vector_p50"), vector and vector[0])):
                if p50 is not None and p99_row:  # measured in the same window
                    p50.detail.setdefault("cpu_s", p99_row.detail.get("cpu_s"))
            if not args.no_mlflow:
                ml = await measure("MLflow baseline", lambda: mlflow_baseline.measure(b, args.mlflow_python), "mlflow")
                if not only or "mlflow" in only:
                    rows += mlflow_baseline.rows(ml, batched, same_read or full_read, vector and vector[0])
                # Issue 12's row: the same stock client into runstream's MLflow API, against
                # mlflow server measured above (or now, when only this row was asked for).
                compat = await measure("MLflow client into runstream",
                                       lambda: mlflow_baseline.measure_runstream(b, args.mlflow_python), "mlflow_compat")
                if compat is not None:
                    theirs = ml if ml is not None else await measure(
                        "MLflow baseline for the compat row", lambda: mlflow_baseline.measure(b, args.mlflow_python),
                        "mlflow_compat")
                    rows += mlflow_baseline.compat_rows(compat, theirs)
    finally:
        await asyncio.to_thread(svc.stop, services)
    meta = {**machine(), "quick": args.quick, "processors": args.processors, "sizes": vars(sizes),
            "wall_seconds": round(time.monotonic() - started, 1), "failures": failures}
    print()
    print(table(rows))
    print("\nCPU seconds while each row ran (both cores: 2 per second of wall clock):")
    print(cpu_table(rows))
    if slow := slow_table(rows):
        print(f"\nPostgreSQL's statements over {SLOW_STATEMENT_MS} ms and checkpoints while each row ran:")
        print(slow)
    if stages := stage_table(rows):
        print("\nThe latency probe's timeline, ms: p50 / p99 (median over the slowest 1% of points):")
        print(stages)
    print(f"\n{meta['cpus']} CPUs, load average at the end {meta['loadavg_at_end']}, "
          f"{meta['wall_seconds']} s in all")
    if failures:
        print("failed rows:\n  " + "\n  ".join(failures))
    if out is not None:
        write_json(out, rows, meta)
        print(f"wrote {out}")
    return 1 if failures else 0


async def history(b: workloads.Bench, run_id: str, points: int | None = None) -> Row:
    """The vector (or its first ``points`` points) through the API without downsampling:
    what MLflow's get_metric_history returns."""
    url = f"{b.settings.api_url}/api/runs/{run_id}/metrics/loss"
    if points is not None:
        url += f"?to_step={points - 1}"
    timings = []
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            t = time.perf_counter()
            async with session.get(url) as resp:
                body = await resp.read()
            timings.append(time.perf_counter() - t)
    n = points or b.sizes.vector_points
    return Row(f"history_{n}", f"whole {n:,}-point history through the API (best of 3)", min(timings), "s",
               higher_is_better=False, detail={"bytes": len(body), "timings": timings})


if __name__ == "__main__":
    sys.exit(main())
