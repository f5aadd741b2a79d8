"""Every SDK call, logged through Kafka (and through the gateway), read back through the API."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from runstream import Experiment, Run, Workspace
from tests.support.names import unique


def test_every_sdk_call_round_trips_through_the_api(workspace: Workspace, tmp_path: Path) -> None:
    exp = Experiment(workspace, unique("roundtrip"))
    run = exp.start_logging(name="main", lr=0.01)
    run.log("alpha", 0.5)
    for i in range(5):
        run.log("loss", 1 / (i + 1), description="training loss")
    run.log("nan", math.nan)
    run.log("pinf", math.inf)
    run.log("ninf", -math.inf)
    run.log("label", "cat")
    run.log("flag", True)
    run.log("epochs", 3)
    run.log("stepped", 1.0, step=10)
    run.log("stepped", 2.0, step=20)
    run.log_list("Fibonacci", [0, 1, 1, 2, 3, 5, 8, 13])
    sines: dict[str, list[float]] = {"angle": [], "sine": []}
    for i in range(10):
        angle = i / 2.0
        run.log_row("Cosine Wave", angle=angle, cos=math.cos(angle))
        sines["angle"].append(angle)
        sines["sine"].append(math.sin(angle))
    run.log_table("Sine Wave", sines)
    run.log_row("odd", a=1, b=math.nan)
    run.tag("selected", "yes")
    run.tag("flag-only")
    run.set_tags({"a": "1", "b": "2"})
    run.remove_tag("b")
    model = tmp_path / "model.pkl"
    model.write_bytes(bytes(range(256)) * 100)
    run.upload_file("outputs/model.pkl", str(model))
    run.upload_file("notes.txt", b"plain bytes")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x.txt").write_text("x")
    run.upload_folder("logs", folder)
    child = run.child_run("child-1")
    child.log("acc", 0.9)
    grandchild = child.child_run("grandchild")
    grandchild.log("acc", 0.95)
    grandchild.complete()
    child.complete()

    m = run.get_metrics()
    assert m["alpha"] == 0.5 and m["label"] == "cat" and m["flag"] is True and m["epochs"] == 3
    assert isinstance(m["epochs"], int)
    assert m["loss"] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert math.isnan(m["nan"]) and m["pinf"] == math.inf and m["ninf"] == -math.inf
    assert m["stepped"] == [1.0, 2.0]
    assert m["Fibonacci"] == [0, 1, 1, 2, 3, 5, 8, 13]
    assert m["Cosine Wave"] == {"angle": [i / 2.0 for i in range(10)], "cos": [math.cos(i / 2.0) for i in range(10)]}
    assert m["Sine Wave"] == sines
    assert m["odd"]["a"] == [1] and math.isnan(m["odd"]["b"][0])
    assert run.get_metrics(name="alpha") == {"alpha": 0.5}

    assert run.get_tags() == {"selected": "yes", "flag-only": "", "a": "1"}
    assert sorted(run.get_file_names()) == ["logs/sub/x.txt", "notes.txt", "outputs/model.pkl"]
    target = run.download_file("outputs/model.pkl", tmp_path / "downloaded.pkl")
    assert target.read_bytes() == model.read_bytes()

    recursive = run.get_metrics(recursive=True)
    assert recursive[run.id]["alpha"] == 0.5
    assert recursive[child.id] == {"acc": 0.9} and recursive[grandchild.id] == {"acc": 0.95}
    assert [c.id for c in run.get_children()] == [child.id]
    assert child.parent is run

    assert run.get_status() == "running"
    run.complete()
    assert run.get_status() == "completed"
    details = run.get_details()
    assert details["name"] == "main" and details["experiment"] == exp.name

    reopened = Run(exp, run.id)
    assert reopened.get_metrics()["Fibonacci"] == [0, 1, 1, 2, 3, 5, 8, 13]
    assert reopened.parent is None
    assert Run(exp, child.id).parent.id == run.id  # type: ignore[union-attr]
    assert [r.id for r in exp.get_runs()] == [run.id]


def test_with_block_completes_or_fails_the_run(workspace: Workspace) -> None:
    exp = Experiment(workspace, unique("with"))
    with exp.start_logging() as ok:
        ok.log("x", 1)
    assert ok.get_status() == "completed"
    with pytest.raises(ZeroDivisionError):
        with exp.start_logging() as bad:
            bad.log("x", 1 / 0)
    details = bad.get_details()
    assert details["status"] == "failed" and "ZeroDivisionError" in details["error"]


def test_log_row_in_a_loop_builds_one_table_in_order(workspace: Workspace) -> None:
    run = Experiment(workspace, unique("rows")).start_logging()
    for i in range(2_500):
        run.log_row("Y over X", x=i, y=i * 0.5)
    assert run.get_metrics("Y over X")["Y over X"] == {"x": list(range(2_500)), "y": [i * 0.5 for i in range(2_500)]}
    run.complete()


def test_http_transport_delivers_the_same_as_kafka(http_workspace: Workspace, tmp_path: Path) -> None:
    exp = Experiment(http_workspace, unique("http"))
    run = exp.start_logging()
    for i in range(100):
        run.log("loss", float(i))
    run.log("nan", math.nan)
    run.log_table("t", {"a": [1, 2]})
    run.tag("via", "gateway")
    run.upload_file("outputs/blob.bin", b"\x00\x01" * 1000)
    run.complete()
    m = run.get_metrics()
    assert m["loss"] == [float(i) for i in range(100)] and math.isnan(m["nan"]) and m["t"] == {"a": [1, 2]}
    assert run.get_tags() == {"via": "gateway"}
    assert run.download_file("outputs/blob.bin", tmp_path / "b.bin").read_bytes() == b"\x00\x01" * 1000
