"""``runstream chaos [--quick] [--only A,B] [--state-dir DIR]``: each fault against a real stack, in figures.

Starts its own stack (Kafka, PostgreSQL, one processor, one gateway; a 3-broker cluster
for ``cluster-kill``), runs the chaos workload (``benchmarks.chaos_worker``: a script
logging a known series through the SDK, timing every call), injects one fault per
scenario for real and counts in the database what arrived: per (run, name, step) and the
value sum. Prints a table and (unless ``--no-write``) puts it into docs/RELIABILITY.md
between the ``chaos:begin``/``chaos:end`` markers. Exit code 1 when any row lost or
duplicated a point, or its script failed or hung.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.faults import FaultStack, Workload, count, expected_sum, start_stack, wait_stored, wait_until
from runstream import devstack
from runstream.devstack.stack import free_ports

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "RELIABILITY.md"
BEGIN, END = "<!-- chaos:begin -->", "<!-- chaos:end -->"
SCENARIOS = ("kafka-unreachable", "broker-kill", "broker-stop", "cluster-kill", "pg-immediate", "pg-fast",
             "processor-kill", "gateway-kill", "outage-memory")


@dataclass
class Sizes:
    points: int
    rate: float
    outage_s: float
    stop_s: float
    memory_outage_s: float
    memory_points: int
    settle_s: float
    script_timeout_s: float
    stall_s: float
    """Give up on a row when the database count has not moved for this long."""


QUICK = Sizes(points=20_000, rate=10_000, outage_s=4, stop_s=8, memory_outage_s=10, memory_points=300_000,
              settle_s=90, script_timeout_s=240, stall_s=20)
FULL = Sizes(points=100_000, rate=10_000, outage_s=15, stop_s=45, memory_outage_s=60, memory_points=3_000_000,
             settle_s=300, script_timeout_s=600, stall_s=60)


@dataclass
class Result:
    """One row of the table."""

    scenario: str
    sent: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    max_log_s: float | None = None
    max_complete_s: float | None = None
    recover_s: float | None = None
    script: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.script == "exit 0"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="runstream chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small workload, short outages: a smoke run")
    p.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(SCENARIOS)}")
    p.add_argument("--state-dir", type=Path, default=Path("/tmp/runstream-chaos"),
                   help="where the chaos stack lives (wiped at start; the cluster uses DIR-cluster)")
    p.add_argument("--stop-seconds", type=float, default=None, help="broker SIGSTOP length (default 45; quick 8)")
    p.add_argument("--memory-budget-mib", type=float, default=64.0,
                   help="the SDK's in-memory budget the outage-memory row is compared with")
    p.add_argument("--no-write", action="store_true", help=f"print only; do not update {DOC.relative_to(REPO)}")
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - {""} - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = QUICK if args.quick else FULL
    if args.stop_seconds is not None:
        sizes.stop_s = args.stop_seconds
    chosen = [s for s in SCENARIOS if not args.only or s in args.only.split(",")]
    results: list[Result] = []
    single = [s for s in chosen if s != "cluster-kill"]
    if single:
        print(f"starting a one-broker stack in {args.state_dir} ...", flush=True)
        stack = start_stack(args.state_dir)
        try:
            for name in single:
                results.append(run_scenario(stack, name, sizes, args))
        finally:
            stack.close()
    if "cluster-kill" in chosen:
        cluster_dir = args.state_dir.with_name(args.state_dir.name + "-cluster")
        print(f"starting a 3-broker cluster in {cluster_dir} ...", flush=True)
        stack = start_stack(cluster_dir, brokers=3, gateway=False)
        try:
            results.append(run_scenario(stack, "cluster-kill", sizes, args))
        finally:
            stack.close()
    text = render(results, sizes, args)
    print()
    print(text)
    if not args.no_write:
        write_doc(text)
        print(f"wrote {DOC}")
    return 0 if all(r.ok for r in results) else 1


def run_scenario(stack: FaultStack, name: str, sizes: Sizes, args: argparse.Namespace) -> Result:
    print(f"  {name} ...", end="", flush=True)
    t = time.monotonic()
    result = Result(name)
    try:
        heal(stack)
        SCENARIO_FUNCS[name](stack, sizes, result, args)
    except Exception as exc:
        result.script = result.script or "harness error"
        result.notes.append(f"harness: {exc.__class__.__name__}: {exc}")
        traceback.print_exc()
    print(f" {time.monotonic() - t:.0f} s", flush=True)
    return result


def heal(stack: FaultStack) -> None:
    """Bring every service back before a scenario (an earlier one may have left one down)."""
    for b in devstack.broker_status(stack.state_dir):
        if b["pid"] is None and stack.brokers == 1:
            stack.restart_broker(b["node_id"])
    try:
        count(stack.settings.database_url, "-")
    except Exception:
        stack.start_postgres()
    if stack.processes["processor"].poll() is not None:
        stack.start_processor()
    if "gateway" in stack.processes and stack.processes["gateway"].poll() is not None:
        stack.start_gateway()


def finish(stack: FaultStack, workload: Workload, result: Result, sizes: Sizes, recovered_at: float | None,
           report: dict[str, Any] | None = None) -> None:
    """Collect the script's report (waiting for it unless given) and the database's counts
    into ``result``; time to recover counts from ``recovered_at`` (default: now)."""
    report = report if report is not None else workload.result(sizes.script_timeout_s)
    deliver_leftovers(stack, workload, result)
    result.sent = workload.planned
    result.max_log_s = report.get("max_log_s")
    result.max_complete_s = report.get("max_complete_s") or None  # None: the script never got to complete()
    result.script = "hung (killed)" if report.get("hung") else f"exit {report.get('returncode')}"
    if report.get("error"):
        result.notes.append(f"script: {report['error']}"[:300])
    if report.get("peak_rss_bytes") and result.scenario == "outage-memory":
        before = report.get("rss_before_bytes") or 0
        result.notes.append(f"script peak RSS {report['peak_rss_bytes'] / 2**20:.0f} MiB"
                            + (f" ({(report['peak_rss_bytes'] - before) / 2**20:+.0f} MiB over its RSS once the "
                               f"runs had started)" if before else ""))
    settle_from = time.monotonic()
    counts, complete_at = wait_stored(stack, workload, sizes.settle_s, stall_s=sizes.stall_s)
    if complete_at is not None:  # anything still in flight lands before copies are counted
        wait_until(lambda: stack.processes["processor"].poll() is not None or settled(stack, workload), 30,
                   "the counts to settle")
        counts = count(stack.settings.database_url, workload.experiment)
    result.stored = counts.distinct
    result.lost = counts.lost(workload.planned)
    result.duplicated = counts.duplicated
    if complete_at is not None:
        result.recover_s = complete_at - (recovered_at if recovered_at is not None else settle_from)
        if counts.value_sum != expected_sum(workload):
            result.notes.append(f"value sum {counts.value_sum} != {expected_sum(workload)}")
    if (rc := stack.processes["processor"].poll()) is not None:
        result.notes.append(f"the processor exited ({rc}) and stayed down")


def deliver_leftovers(stack: FaultStack, workload: Workload, result: Result) -> None:
    """What the script left in its outbox when its complete() gave up waiting (as it tells
    its user to) is delivered with ``runstream sync``, as the user would: part of the row."""
    spool = Path(stack.settings.spool_dir)
    if not any(spool.glob("*/events.jsonl")):
        return
    sync = subprocess.run([sys.executable, "-m", "runstream.cli", "sync", str(spool)],
                          env={**stack.env(), "RUNSTREAM_TRANSPORT": workload.transport}, cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    result.notes.append("left on disk by complete(), then " + (sync.stdout.strip() or sync.stderr.strip()[-200:]))


def settled(stack: FaultStack, workload: Workload) -> bool:
    """Two counts in a row agree (nothing more is arriving)."""
    first = count(stack.settings.database_url, workload.experiment)
    time.sleep(1.0)  # the interval over which "no change" is judged
    return first == count(stack.settings.database_url, workload.experiment)


def _start(stack: FaultStack, name: str, sizes: Sizes, **kw: object) -> Workload:
    experiment = f"chaos-{name}-{int(time.time())}"
    points = int(kw.pop("points", sizes.points))  # type: ignore[call-overload]
    rate = float(kw.pop("rate", sizes.rate))  # type: ignore[arg-type]
    return Workload(stack, experiment, points=points, rate=rate, **kw)  # type: ignore[arg-type]


def hold(seconds: float) -> None:
    """Keep a fault in place for ``seconds`` (the outage's length, not a synchronisation)."""
    time.sleep(seconds)


# ---------------------------------------------------------------- the scenarios

def kafka_unreachable(stack: FaultStack, sizes: Sizes, result: Result, args: argparse.Namespace) -> None:
    """The script starts with Kafka's address pointing at a closed port; then ``runstream sync``."""
    (closed,) = free_ports(1)
    workload = _start(stack, "unreachable", sizes, kafka_bootstrap=f"127.0.0.1:{closed}")
    report = workload.result(sizes.script_timeout_s)
    recovered_at = time.monotonic()
    for attempt in (1, 2):  # twice: the second must send nothing new
        sync = subprocess.run([sys.executable, "-m", "runstream.cli", "sync"], env=stack.env(), cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        result.notes.append(f"sync {attempt}: " + (sync.stdout.strip() or sync.stderr.strip()[-200:]))
    finish(stack, workload, result, sizes, recovered_at, report)


def broker_kill(stack: FaultStack, sizes: Sizes, result: Result, args: argparse.Namespace) -> None:
    workload = _start(stack, "broker-kill", sizes)
    workload.wait_logged(workload.planned // 4)
    stack.kill_broker()
    hold(sizes.outage_s)
    stack.restart_broker()
    result.notes.append(f"broker down {sizes.outage_s:.0f} s + restart")
    finish(stack, workload, result, sizes, time.monotonic())


def broker_stop(stack: FaultStack, sizes: Sizes, result: Result, args: argparse.Namespace) -> None:
    workload = _start(stack, "broker-stop", sizes)
    workload.wait_logged(workload.planned // 4)
    pid = stack.broker_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        hold(sizes.stop_s)
    finally:
        os.kill(pid, signal.SIGCONT)
    result.notes.append(f"SIGSTOP {sizes.stop_s:.0f} s")
    finish(stack, workload, result, sizes, time.monotonic())


def cluster_kill(stack: FaultStack, sizes: Sizes, result: Result, args: argparse.Namespace) -> None:
    workload = _start(stack, "cluster-kill", sizes)
    workload.wait_logged(workload.planned // 4)
    stack.kill_broker(1)
    result.notes.append("broker 1 of 3 SIGKILLed, not restarted")
    finish(stack, workload, result, sizes, time.monotonic())


def _pg(mode: str) -> Callable[[FaultStack, Sizes, Result, argparse.Namespace], None]:
    def scenario(stack: FaultStack, sizes: Sizes, result: Result, args: argparse.Namespace) -> None:
        workload = _start(stack, f"pg-{mode}", sizes)
        workload.wait_logged(workload.planned // 4)
        stack.stop_postgres(mode)
        hold(sizes.outage_s)
        stack.start_postgres()
        result.notes.append(f"pg_ctl stop -m {mode}, down {sizes.outage_s:.0f} s")
        finish(stack, workload, result, sizes, time.monotonic())
    return scenario


def processor_kill(stack: FaultStack, sizes: Sizes, result: Result, args: argparse.Namespace) -> None:
    workload = _start(stack, "processor-kill", sizes)
    workload.wait_logged(workload.planned // 4)
    stack.kill("processor")
    hold(sizes.outage_s)
    stack.start_processor()
    result.notes.append(f"processor down {sizes.outage_s:.0f} s")
    finish(stack, workload, result, sizes, time.monotonic())


def gateway_kill(stack: FaultStack, sizes: Sizes, result: Result, args: argparse.Namespace) -> None:
    workload = _start(stack, "gateway-kill", sizes, transport="http")
    workload.wait_logged(workload.planned // 4)
    stack.kill("gateway")
    hold(sizes.outage_s)
    stack.start_gateway()
    result.notes.append(f"HTTP transport; gateway down {sizes.outage_s:.0f} s")
    finish(stack, workload, result, sizes, time.monotonic())


def outage_memory(stack: FaultStack, sizes: Sizes, result: Result, args: argparse.Namespace) -> None:
    """The broker is killed as the script starts logging flat out; it is back after the outage."""
    workload = _start(stack, "outage-memory", sizes, points=sizes.memory_points, rate=0.0, runs=1, names=4)
    workload.wait_logged(1)
    stack.kill_broker()
    hold(sizes.memory_outage_s)
    stack.restart_broker()
    result.notes.append(f"broker down {sizes.memory_outage_s:.0f} s while logging flat out; "
                        f"budget {args.memory_budget_mib:.0f} MiB")
    finish(stack, workload, result, sizes, time.monotonic())


SCENARIO_FUNCS: dict[str, Callable[[FaultStack, Sizes, Result, argparse.Namespace], None]] = {
    "kafka-unreachable": kafka_unreachable, "broker-kill": broker_kill, "broker-stop": broker_stop,
    "cluster-kill": cluster_kill, "pg-immediate": _pg("immediate"), "pg-fast": _pg("fast"),
    "processor-kill": processor_kill, "gateway-kill": gateway_kill, "outage-memory": outage_memory,
}


# ---------------------------------------------------------------- output

def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s" if v < 10 else f"{v:.0f} s"


def table(results: list[Result]) -> str:
    head = "| scenario | points sent | stored | lost | duplicated | longest `log()` | longest `complete()` " \
           "| time to recover | script |"
    lines = [head, "|" + "---|" * 9]
    for r in results:
        lines.append(f"| {r.scenario} | {r.sent:,} | {r.stored:,} | {r.lost:,} | {r.duplicated:,} | "
                     f"{_s(r.max_log_s)} | {_s(r.max_complete_s)} | "
                     f"{_s(r.recover_s) if r.recover_s is not None else 'not recovered'} | {r.script} |")
    notes = [f"- **{r.scenario}**: " + "; ".join(r.notes) for r in results if r.notes]
    return "\n".join(lines + ([""] + notes if notes else []))


def render(results: list[Result], sizes: Sizes, args: argparse.Namespace) -> str:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick" if args.quick else "full"
    return (f"Measured {when} at commit `{commit}` (`runstream chaos{' --quick' if args.quick else ''}"
            f"{' --only ' + args.only if args.only else ''}`, {mode}: {sizes.points:,} points per script at "
            f"{sizes.rate:,.0f}/s, outages {sizes.outage_s:.0f} s, SIGSTOP {sizes.stop_s:.0f} s).\n\n"
            + table(results))


def write_doc(text: str) -> None:
    """Replace the table between the markers of docs/RELIABILITY.md (the file's prose stays)."""
    doc = DOC.read_text() if DOC.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN not in doc or END not in doc:
        doc = doc.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    raise SystemExit(main())
