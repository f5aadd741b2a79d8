"""One measured row, the printed table and the JSON file."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Row:
    """One line of the table. ``higher_is_better`` says how ``target`` is compared."""

    key: str
    title: str
    value: float | None
    unit: str
    target: float | None = None
    higher_is_better: bool = True
    baseline: str = ""
    """What ``ratio`` compares against (e.g. "raw COPY", "MLflow")."""
    ratio: float | None = None
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(rows: list[Row]) -> str:
    head = ("row", "value", "unit", "target", "vs baseline", "met")
    lines = []
    for r in rows:
        target = "-" if r.target is None else ("≥ " if r.higher_is_better else "≤ ") + _num(r.target)
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}× {r.baseline}"
        met = {None: "-", True: "yes", False: "NO"}[r.met]
        lines.append((r.title, _num(r.value), r.unit, target, ratio, met))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:{'<' if i in (0, 2, 4) else '>'}{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    notes = [f"  {r.title}: {r.note}" for r in rows if r.note]
    return "\n".join(out + (["", "notes:"] + notes if notes else []))


CPU_PARTS = ("processor", "postgres", "kafka", "api", "harness", "other", "machine")


def cpu_table(rows: list[Row]) -> str:
    """Per row, the CPU seconds of each part of the stack (``detail["cpu_s"]``)."""
    head = ("row", *CPU_PARTS)
    lines = [(r.title[:50], *(_num(r.detail["cpu_s"].get(k)) for k in CPU_PARTS))
             for r in rows if r.detail.get("cpu_s")]
    return _grid(head, lines)


def slow_table(rows: list[Row]) -> str:
    """Per row, PostgreSQL's slow statements and checkpoints (``detail["slow_sql"]``,
    :mod:`benchmarks.pglog`): how many, their total, and the slowest kinds."""
    head = ("row", "slow statements", "total ms", "slowest (count, max ms)", "checkpoints (s)")
    lines = []
    for r in rows:
        slow = r.detail.get("slow_sql")
        if not slow:
            continue
        kinds = "; ".join(f"{k} ({v['count']}, {_num(v['max_ms'])})" for k, v in list(slow["by_kind"].items())[:3])
        lines.append((r.title[:50], str(slow["count"]), _num(slow["total_ms"]), kinds or "-",
                      f"{slow['checkpoints']} ({_num(slow['checkpoint_s'])})"))
    return _grid(head, lines) if lines else ""


def stage_table(rows: list[Row]) -> str:
    """The latency rows' per-stage timeline (``detail["stages"]``): p50 / p99 in ms per stage,
    and the stage's median over the slowest 1% of probe points."""
    rows = [r for r in rows if r.detail.get("stages", {}).get("points")]
    if not rows:
        return ""
    names = [k for k, v in rows[0].detail["stages"].items() if isinstance(v, dict)]
    head = ("stage", *(r.key for r in rows))
    lines = []
    for name in names:
        cells = []
        for r in rows:
            st = r.detail["stages"].get(name)
            cells.append("-" if st is None else f"{_num(st['p50'])} / {_num(st['p99'])} ({_num(st['slowest_1pct_median'])})")
        lines.append((name, *cells))
    return _grid(head, lines)


def _grid(head: tuple[str, ...], lines: list[tuple[str, ...]]) -> str:
    """A text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*x) for x in lines])


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_at_end": [round(x, 2) for x in load], "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_json(path: Path, rows: list[Row], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "rows": [{**asdict(r), "met": r.met} for r in rows]}
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
