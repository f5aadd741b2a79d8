"""The MLflow side of the baseline, run by an interpreter that has ``mlflow`` installed.

``python -m benchmarks.mlflow_client URL --runs R --points N --history M --threads T``
logs N points over R runs (two metric names, as the SDK workers do) with
``MlflowClient.log_batch`` at MLflow's limit of 1,000 metrics per call from T threads,
then logs an M-point metric into one run and reads it back with
``get_metric_history``. Prints JSON timings. Imports only mlflow and the standard library.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

BATCH = 1000  # MLflow's MAX_METRICS_PER_BATCH


def log_points(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + BATCH], synchronous=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mlflow_client")
    p.add_argument("url")
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--points", type=int, default=100_000)
    p.add_argument("--history", type=int, default=1_000_000)
    p.add_argument("--threads", type=int, default=4)
    args = p.parse_args(argv)
    client = MlflowClient(tracking_uri=args.url)
    experiment = client.create_experiment(f"bench-{time.time_ns()}")
    now = int(time.time() * 1000)
    runs = [client.create_run(experiment).info.run_id for _ in range(args.runs)]
    per_run = args.points // len(runs)
    work = {r: [Metric(f"m{i % 2}", i * 0.001, now, i // 2) for i in range(per_run)] for r in runs}
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(lambda r: log_points(client, r, work[r]), runs))
    ingest_s = time.perf_counter() - t0

    rng = random.Random(42)
    history_run = client.create_run(experiment).info.run_id
    values = [math.sin(i / 20_000) + rng.random() * 0.01 for i in range(args.history)]
    metrics = [Metric("loss", v, now, i) for i, v in enumerate(values)]
    chunks = [metrics[i:i + BATCH] for i in range(0, len(metrics), BATCH)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(lambda c: client.log_batch(history_run, metrics=c, synchronous=True), chunks))
    history_ingest_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    history = client.get_metric_history(history_run, "loss")
    read_s = time.perf_counter() - t0
    if len(history) != args.history:
        raise SystemExit(f"MLflow returned {len(history)} of {args.history} points")
    json.dump({"version": __import__("mlflow").__version__, "points": per_run * len(runs),
               "ingest_seconds": ingest_s, "history_points": args.history,
               "history_ingest_seconds": history_ingest_s, "history_read_seconds": read_s,
               "threads": args.threads, "batch": BATCH}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
