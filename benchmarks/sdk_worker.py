"""A training-script stand-in for the benchmarks: logs through the SDK, prints JSON.

``python -m benchmarks.sdk_worker EXPERIMENT RUNS POINTS_PER_RUN [--names N] [--rate R]``
(settings from ``RUNSTREAM_*``). Runs are started first (so the sender is connected),
then ``t_start`` is taken and the runs log interleaved, as parallel training loops
would: ``POINTS_PER_RUN`` points per run spread over ``--names`` metric names. With
``--rate`` the logging is paced to about R points/s (in 10 ms slices). Every run is
completed (which flushes) before ``t_flushed``. Output: ``{"run_ids", "points",
"t_start", "t_logged", "t_flushed", "cpu_s"}`` with wall-clock times and the
process's CPU seconds (all threads) from ``t_start`` to ``t_flushed``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import orjson

from runstream import Experiment, Workspace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sdk_worker")
    parser.add_argument("experiment")
    parser.add_argument("runs", type=int)
    parser.add_argument("points_per_run", type=int)
    parser.add_argument("--names", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0, help="points/s for the whole process (0: as fast as possible)")
    args = parser.parse_args(argv)
    ws = Workspace()
    exp = Experiment(ws, args.experiment)
    runs = [exp.start_logging(name=f"r{i}") for i in range(args.runs)]
    runs[0].flush()
    names = [f"m{j}" for j in range(args.names)]
    steps = args.points_per_run // len(names)
    per_slice = max(1, int(args.rate / 100)) if args.rate else 0
    t_start = time.time()
    cpu_start = time.process_time()  # every thread of this process: the logging loop and the sender
    logged, slice_end = 0, per_slice
    for step in range(steps):
        for run in runs:
            for name in names:
                run.log(name, step * 0.001)
        if per_slice:
            logged += len(runs) * len(names)
            if logged >= slice_end:  # a 10 ms slice's worth logged: wait for the slice's end
                slice_end += per_slice
                ahead = logged / args.rate - (time.time() - t_start)
                if ahead > 0:
                    time.sleep(ahead)  # pacing the load generator, not synchronisation
    t_logged = time.time()
    for run in runs:
        run.complete()
    t_flushed = time.time()
    cpu_s = time.process_time() - cpu_start
    close_error = None
    try:  # every event is acknowledged by now (complete() flushed): a slow close is reported, not fatal
        ws.close(timeout=30)
    except Exception as exc:
        close_error = f"{exc.__class__.__name__}: {exc}"
    sys.stdout.write(orjson.dumps({
        "run_ids": [r.id for r in runs], "points": steps * len(names) * len(runs),
        "t_start": t_start, "t_logged": t_logged, "t_flushed": t_flushed, "close_error": close_error,
        "cpu_s": cpu_s,
    }).decode())
    sys.stdout.flush()
    if close_error:
        os._exit(0)  # the sender thread may still be stuck closing; the measurement is complete
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
