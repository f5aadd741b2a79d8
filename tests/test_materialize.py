"""Pure event → rows logic (no services): summaries, tags, tables, non-finite values."""

from __future__ import annotations

import math
from typing import Any

import orjson

from runstream.processors.materialize import KIND_BOOL, KIND_FLOAT, KIND_INT, KIND_STR, materialize
from runstream.schemas import events
from tests.support import events as made

RUN = "01a21e1d-ef53-7c69-83bb-c2fcc112304b"


def ev(seq: int, type_: str, payload: dict[str, Any]) -> events.Event:
    return made.decoded(RUN, seq, type_, payload, event_id=RUN, ts=1000.0 + seq)


def points(seq: int, name: str, vals: list[Any], first_step: int = 0) -> events.Event:
    n = len(vals)
    return ev(seq, "metric.points", {"series": [{"name": name, "steps": list(range(first_step, first_step + n)),
                                                 "values": vals, "times": [1.0] * n}]})


def test_summary_tracks_last_min_max_count_and_ignores_nan_for_min_max() -> None:
    m = materialize([points(0, "loss", [3.0, {"f": "NaN"}, 1.0, 2.0])])
    s = m.summaries[(RUN, "loss")]
    assert (s.count, s.last_value, s.min_value, s.max_value, s.last_step) == (4, 2.0, 1.0, 3.0, 3)
    assert math.isnan(m.points[1][4])


def test_value_kinds_are_kept() -> None:
    m = materialize([points(0, "v", [1.5, 2, True, "text"])])
    assert [(p[4], p[5], p[6]) for p in m.points] == [
        (1.5, None, KIND_FLOAT), (2.0, None, KIND_INT), (1.0, None, KIND_BOOL), (None, "text", KIND_STR)]


def test_log_list_after_log_makes_the_metric_a_list() -> None:
    m = materialize([points(0, "x", [1]), ev(1, "metric.list", {"name": "x", "start_step": 1, "values": [2, 3]})])
    assert m.summaries[(RUN, "x")].kind == "list"
    assert [p[2] for p in m.points] == [0, 1, 2]


def test_tags_keep_the_last_change_in_a_batch() -> None:
    m = materialize([ev(0, "tag.set", {"key": "a", "value": "1"}), ev(1, "tag.removed", {"key": "a"}),
                     ev(2, "tag.set", {"key": "b", "value": "2"})])
    assert m.tags[(RUN, "a")][2] is True and m.tags[(RUN, "b")][0] == "2"


def test_table_and_rows_become_ordered_rows_with_encoded_cells() -> None:
    m = materialize([ev(0, "metric.rows", {"name": "t", "rows": [{"x": 1, "y": {"f": "-Infinity"}}]}),
                     ev(1, "metric.table", {"name": "t", "columns": {"x": [2, 3], "y": [0.5, 0.25]}})])
    assert [(r[2], r[3], orjson.loads(r[5])) for r in m.table_rows] == [
        (0, 0, {"x": 1, "y": {"f": "-Infinity"}}), (1, 0, {"x": 2, "y": 0.5}), (1, 1, {"x": 3, "y": 0.25})]
    assert m.summaries[(RUN, "t")].count == 3


def test_run_lifecycle_sets_status_and_last_seq() -> None:
    m = materialize([ev(0, "run.started", {"experiment": "e", "properties": {"lr": {"f": "NaN"}}}),
                     ev(1, "run.status", {"status": "failed", "error": "boom"})])
    change = m.runs[RUN]
    assert change.started is not None and orjson.loads(change.started[6]) == {"lr": {"f": "NaN"}}
    assert (change.status, change.error, change.last_seq) == ("failed", "boom", 1)
    assert m.experiments.keys() == {("default", "e")}


def test_params_keep_the_first_value_and_management_events_fold_in_log_order() -> None:
    base = events.SERVER_SEQ_BASE
    log = [
        (0, "run.started", {"experiment": "e", "name": "before"}),
        (1, "params.logged", {"params": {"alpha": "0.1"}}),
        (base, "run.renamed", {"name": "after"}),
        (2, "params.logged", {"params": {"alpha": "0.9", "solver": "svd"}}),  # alpha stays 0.1
        (base + 1, "run.deleted", {}),
        (base + 2, "run.restored", {}),
        (base + 3, "run.deleted", {}),
    ]
    m = materialize([made.decoded(RUN, seq, type_, payload, ts=1000.0 + i) for i, (seq, type_, payload) in enumerate(log)])
    assert {k: v for (_, k), (v, _) in m.params.items()} == {"alpha": "0.1", "solver": "svd"}
    change = m.runs[RUN]
    assert (change.name, change.renamed, change.deleted) == ("after", True, True)
    # The run's own numbering and the server's stay apart (docs/ARCHITECTURE.md, "Seq ownership").
    assert (change.last_seq, change.server_seq) == (2, base + 3)


def test_experiment_events_gather_name_lifecycle_and_tags() -> None:
    stream = events.experiment_stream_id("exp")
    m = materialize([made.decoded(stream, seq, type_, {"experiment": "exp", **payload}) for seq, (type_, payload) in
                     enumerate([("experiment.created", {"tags": {"a": "1"}}), ("experiment.tag.set", {"key": "b", "value": "2"}),
                                ("experiment.renamed", {"name": "shown"}), ("experiment.deleted", {}),
                                ("experiment.restored", {})])])
    x = m.experiment_meta[("default", "exp")]
    assert (x.display_name, x.deleted, x.tags, x.last_seq) == ("shown", False, {"a": "1", "b": "2"}, 4)
    assert ("default", "exp") in m.experiments  # created before any run: the experiment exists
