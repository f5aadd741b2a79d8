"""Hand-built events for tests that write to Kafka below the SDK."""

from __future__ import annotations

import time
from typing import Any

import orjson
from uuid6 import uuid7


def event(run_id: str, seq: int, type_: str, payload: dict[str, Any], **over: Any) -> bytes:
    body = {"type": type_, "v": 1, "event_id": str(uuid7()), "run_id": run_id, "seq": seq,
            "ts": time.time(), "payload": payload, **over}
    return orjson.dumps(body)


def started(run_id: str, experiment: str, seq: int = 0) -> bytes:
    return event(run_id, seq, "run.started", {"experiment": experiment})


def points(run_id: str, seq: int, name: str, steps: list[int]) -> bytes:
    now = time.time()
    return event(run_id, seq, "metric.points", {"series": [
        {"name": name, "steps": steps, "values": [float(s) for s in steps], "times": [now] * len(steps)}]})


def new_run_id() -> str:
    return str(uuid7())
