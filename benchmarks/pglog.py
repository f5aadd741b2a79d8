"""Slow statements and checkpoints from the benchmark's PostgreSQL log, per row.

The devstack's PostgreSQL logs every statement slower than
``runstream.devstack.postgres.SLOW_STATEMENT_MS`` (without its parameters) and every
checkpoint. :func:`mark` before a row and :func:`since` after it give what PostgreSQL
itself spent long on during the row: the stage behind a latency tail that the probe's
timeline shows as a long transaction (a COMMIT's WAL flush, a COPY, a checkpoint).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

# A statement's text may go on over the next lines (ours start with a newline), up to the
# next line with a timestamp prefix.
_SLOW = re.compile(r"duration: (\d+(?:\.\d+)?) ms\s+(?:statement|execute [^:]*|bind [^:]*|parse [^:]*): "
                   r"(.*?)(?=\n\d{4}-\d\d-\d\d |\Z)", re.DOTALL)
_CHECKPOINT = re.compile(r"LOG:\s+checkpoint complete: .*?total=(\d+(?:\.\d+)?) s")


def log_path(state_dir: Path) -> Path:
    """Where the devstack's PostgreSQL writes its log (``devstack.postgres.start``)."""
    return Path(state_dir) / "pg" / "postgres.log"


def mark(path: Path) -> int:
    """The log's current end (the start of a row's window)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def kind(statement: str) -> str:
    """A statement's first words, enough to tell which of ours it is."""
    words = [w for w in re.split(r"[\s(]+", statement.replace('"', "")) if w]
    if words[:1] in (["WITH"], ["COPY"], ["UPDATE"]):  # a CTE by its first part, a table's COPY or UPDATE
        return " ".join(words[:2])
    return " ".join(words[:3])[:40]  # INSERT INTO t, DELETE FROM t, SELECT ..., COMMIT


def since(path: Path, start: int) -> dict[str, Any]:
    """Slow statements (count, slowest, per kind) and checkpoints logged after ``start``."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return {}
    counts: Counter[str] = Counter()
    worst: dict[str, float] = {}
    total_ms = 0.0
    for m in _SLOW.finditer(text):
        ms, k = float(m.group(1)), kind(m.group(2))
        counts[k] += 1
        worst[k] = max(worst.get(k, 0.0), ms)
        total_ms += ms
    checkpoints = [float(s) for s in _CHECKPOINT.findall(text)]
    return {"count": sum(counts.values()), "total_ms": round(total_ms, 1),
            "by_kind": {k: {"count": n, "max_ms": round(worst[k], 1)} for k, n in counts.most_common()},
            "checkpoints": len(checkpoints), "checkpoint_s": round(sum(checkpoints), 2)}
