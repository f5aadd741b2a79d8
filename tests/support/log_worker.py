"""A training-script stand-in for concurrency tests: logs runs and prints their ids as JSON.

Usage: python -m tests.support.log_worker EXPERIMENT RUNS POINTS  (settings from RUNSTREAM_*)
"""

from __future__ import annotations

import sys

import orjson

from runstream import Experiment, Workspace


def main() -> None:
    experiment, runs, points = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    exp = Experiment(Workspace(), experiment)
    started = [exp.start_logging(name=f"r{i}") for i in range(runs)]
    for step in range(points):  # interleave the runs, as parallel training loops would
        for run in started:
            run.log("loss", 1.0 / (step + 1))
            run.log("step_echo", step)
    for run in started:
        run.complete()
    sys.stdout.write(orjson.dumps([r.id for r in started]).decode())


if __name__ == "__main__":
    main()
