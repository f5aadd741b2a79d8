"""The chaos workload: a training-script stand-in that logs a known series and times every call.

``python -m benchmarks.chaos_worker EXPERIMENT --runs R --points N [--names K] [--rate P]
[--progress FILE]`` (settings from ``RUNSTREAM_*``; the transport too). Each run logs
``N // (R*K)`` steps of every name; the point at step s has the value ``s``, so the
database can be checked per (run, name, step) and by the value sum. With ``--rate`` the
loop is paced to about P points/s (so a fault lands mid-stream); ``--progress`` gets the
number of points logged so far, rewritten about every 0.1 s. Prints one JSON object:
``run_ids``, ``points``, ``steps``, ``names``, ``max_log_s`` (slowest ``log()``, also
``start_logging``), ``max_complete_s``, ``rss_before_bytes`` (once the runs started),
``peak_rss_bytes``, ``error`` (an exception the SDK raised into the script, which then
exits 1).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from runstream import Experiment, Workspace

PROGRESS_EVERY_S = 0.1


def _progress(path: Path | None, logged: int) -> None:
    if path is not None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(str(logged))
        tmp.replace(path)


def _rss() -> int:
    """This process's resident set now (bytes; 0 where /proc is missing)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos_worker", description=__doc__)
    parser.add_argument("experiment")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--points", type=int, default=100_000, help="points in all (rounded down to whole steps)")
    parser.add_argument("--names", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0.0, help="points/s (0: flat out)")
    parser.add_argument("--progress", type=Path, default=None)
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"run_ids": [], "points": 0, "max_log_s": 0.0, "max_complete_s": 0.0, "error": None}
    steps = args.points // (args.runs * args.names)
    names = [f"m{j}" for j in range(args.names)]
    max_log = max_complete = 0.0
    perf = time.perf_counter
    t = perf()
    completing = False
    try:
        ws = Workspace()
        exp = Experiment(ws, args.experiment)
        runs = []
        for i in range(args.runs):
            t = perf()
            runs.append(exp.start_logging(name=f"chaos-{i}"))
            max_log = max(max_log, perf() - t)
        out["run_ids"] = [r.id for r in runs]
        out["rss_before_bytes"] = _rss()
        _progress(args.progress, 0)
        t0 = last_progress = time.monotonic()
        logged = 0
        for step in range(steps):
            for run in runs:
                for name in names:
                    t = perf()
                    run.log(name, float(step), step=step)
                    dt = perf() - t
                    if dt > max_log:
                        max_log = dt
            logged += len(runs) * len(names)
            now = time.monotonic()
            if now - last_progress >= PROGRESS_EVERY_S:
                _progress(args.progress, logged)
                last_progress = now
            if args.rate and (ahead := logged / args.rate - (now - t0)) > 0:
                time.sleep(ahead)  # pacing the workload (a training step's compute), not synchronisation
        _progress(args.progress, logged)
        out["points"] = logged
        completing = True
        for run in runs:
            t = perf()
            run.complete()
            max_complete = max(max_complete, perf() - t)
    except Exception as exc:  # what a training script would die of
        out["error"] = f"{exc.__class__.__name__}: {exc}"
        if completing:  # the failing call counts too
            max_complete = max(max_complete, perf() - t)
        else:
            max_log = max(max_log, perf() - t)
    out.update(steps=steps, names=args.names, max_log_s=max_log, max_complete_s=max_complete,
               peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    sys.stdout.flush()
    if out["error"]:
        os._exit(1)  # the sender thread may be wedged; the script's own failure is the finding
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
