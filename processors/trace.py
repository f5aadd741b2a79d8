"""The processors' per-batch timeline, off unless ``ServiceSettings.processor_trace`` names a file.

One JSON line per committed batch: when its records came back from ``getmany``
(``fetched``), when its transaction started (``write``) and when it committed
(``committed``), wall-clock seconds, and per topic partition the offsets it carried
(``ranges``: ``{"topic/partition": [first, last]}``). The benchmark joins these to the SDK's hand-over
and acknowledgement times through the archive's (partition, offset) of each event, which
gives the latency probe's per-stage timeline (docs/PERFORMANCE.md). The cost when on is one
line-buffered write per batch; when off, nothing but an ``is None`` check.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import orjson


class BatchTrace:
    """Appends one record per batch to ``path`` (``close`` when the processor stops)."""

    def __init__(self, path: str | Path) -> None:
        self._file: IO[bytes] = Path(path).open("ab", buffering=0)

    def write(self, fetched: float, write: float, committed: float,
              ranges: dict[tuple[str, int], tuple[int, int]]) -> None:
        record = {"fetched": fetched, "write": write, "committed": committed,
                  "ranges": {f"{topic}/{part}": list(r) for (topic, part), r in ranges.items()}}
        self._file.write(orjson.dumps(record) + b"\n")

    def close(self) -> None:
        self._file.close()


def read(path: str | Path, start: int = 0) -> list[dict[str, Any]]:
    """The records of a trace file from byte ``start`` on (none if it does not exist)."""
    try:
        with Path(path).open("rb") as f:
            f.seek(start)
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    return [orjson.loads(line) for line in lines if line.strip()]
