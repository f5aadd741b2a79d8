"""CPU seconds spent by each part of the benchmark stack while a row ran.

Everything shares the same cores, so a row's number is bounded by whichever process
ran out of CPU (or by the machine as a whole). :func:`sample` reads ``/proc`` for
Kafka's JVM, PostgreSQL (the postmaster, its live backends, and, through the
postmaster's ``cutime``/``cstime``, the backends that exited), each service process the
harness started, the harness itself with the load generators it waited for, and the
whole machine; :func:`spent` subtracts two samples. "other" is what the machine spent
outside all of these (neighbours on a shared machine, the kernel's own threads).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _own(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / _TICK


def _reaped(fields: list[str]) -> float:
    return (int(fields[13]) + int(fields[14])) / _TICK


def _children(ppid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None and int(fields[1]) == ppid:
            out.append(int(entry))
    return out


def machine_seconds() -> float:
    """CPU time (not idle, not iowait) of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _TICK


def stack_pids(state_dir: Path) -> dict[str, int]:
    """Kafka's and the postmaster's pids from the devstack record in ``state_dir``."""
    record = json.loads((Path(state_dir) / "stack.json").read_text())
    return {"kafka": int(record["kafka"]["pid"]), "postgres": int(record["postgres"]["pid"])}


def sample(stack: dict[str, int], services: dict[str, int]) -> dict[str, float]:
    """Cumulative CPU seconds per part (``services``: name → pid of each service process)."""
    out: dict[str, float] = {}
    if (kafka := _stat(stack["kafka"])) is not None:
        out["kafka"] = _own(kafka)
    if (postmaster := _stat(stack["postgres"])) is not None:
        out["postgres"] = _own(postmaster) + _reaped(postmaster) + sum(
            _own(f) for pid in _children(stack["postgres"]) if (f := _stat(pid)) is not None)
    for name, pid in services.items():
        role = name.split("-", 1)[0]  # processor-0, processor-drain -> processor
        if (fields := _stat(pid)) is not None:
            out[role] = out.get(role, 0.0) + _own(fields)
    times = os.times()
    out["harness"] = times.user + times.system + times.children_user + times.children_system + sum(
        _own(f) for pid in _children(os.getpid())
        if pid not in services.values() and pid not in stack.values() and (f := _stat(pid)) is not None)
    out["machine"] = machine_seconds()
    return out


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per part between two samples, with "other" = machine minus the parts.

    A service that started after ``before`` counts from zero; one that ended before
    ``after`` is left out (its time shows up in "other")."""
    parts = {k: after[k] - before.get(k, 0.0) for k in after if k != "machine"}
    machine = after["machine"] - before["machine"]
    parts["other"] = max(0.0, machine - sum(parts.values()))
    parts["machine"] = machine
    return {k: round(v, 2) for k, v in parts.items()}
