"""The sender's trace hook (off by default): what the benchmark's latency timeline reads."""

from __future__ import annotations

import orjson

from runstream import Experiment, Workspace
from tests.support.names import unique


def test_the_hook_sees_each_event_handed_over_then_acknowledged(workspace: Workspace) -> None:
    run = Experiment(workspace, unique("trace")).start_logging(name="traced")
    run.flush()
    sender = workspace._sender
    assert sender.trace is None
    seen: list[tuple[str, list[int]]] = []
    sender.trace = lambda stage, events: seen.append(
        (stage, [orjson.loads(data)["seq"] for run_id, data in events if run_id == run.id]))
    try:
        run.log("x", 1.0)
        run.log("x", 2.0)
        run.flush()
    finally:
        sender.trace = None
    handed = [seq for stage, seqs in seen if stage == "handed" for seq in seqs]
    acked = [seq for stage, seqs in seen if stage == "acked" for seq in seqs]
    assert handed == acked != []
    assert sorted(set(handed)) == handed and handed[0] == 1  # seq 0 is run.started, flushed before
    assert [stage for stage, seqs in seen if seqs][0] == "handed"
