"""processors.trace: the per-batch records the benchmark's latency timeline joins on."""

from __future__ import annotations

from pathlib import Path

from runstream.processors import trace


def test_records_round_trip_and_read_from_an_offset(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    first = trace.BatchTrace(path)
    first.write(1.0, 1.5, 2.0, {("events", 3): (10, 12)})
    first.close()
    size = path.stat().st_size
    second = trace.BatchTrace(path)  # appends: members and processes may share the file
    second.write(3.0, 3.25, 3.5, {("events", 0): (0, 0), ("other", 3): (7, 9)})
    second.close()
    assert trace.read(path) == [
        {"fetched": 1.0, "write": 1.5, "committed": 2.0, "ranges": {"events/3": [10, 12]}},
        {"fetched": 3.0, "write": 3.25, "committed": 3.5, "ranges": {"events/0": [0, 0], "other/3": [7, 9]}},
    ]
    assert [r["fetched"] for r in trace.read(path, size)] == [3.0]


def test_a_missing_file_reads_as_no_records(tmp_path: Path) -> None:
    assert trace.read(tmp_path / "absent.jsonl") == []
