"""run.log_image: an image file or a matplotlib figure, stored as an artifact, referenced by get_metrics."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from runstream import Experiment, LimitError, Workspace
from tests.support.names import unique


def png_of(figure: object) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")  # type: ignore[attr-defined]
    return buffer.getvalue()


@pytest.mark.parametrize("transport", ["kafka", "http"])
def test_images_from_a_file_a_figure_and_pyplot_round_trip(
        workspace: Workspace, http_workspace: Workspace, tmp_path: Path, transport: str) -> None:
    ws = workspace if transport == "kafka" else http_workspace
    run = Experiment(ws, unique("images")).start_logging()
    figure = plt.figure()
    plt.plot([0, 1, 4, 9])
    file = tmp_path / "roc.png"
    file.write_bytes(png_of(figure))
    run.log_image("ROC", path=file, description="from a file")
    run.log_image("figure", plot=figure)
    run.log("loss", 0.5)  # logging goes on while the images upload
    plt.figure()
    plt.plot([3, 2, 1])
    pyplot_png = png_of(plt.gcf())
    run.log_image("pyplot", plot=plt)
    run.log_image("figure", plot=plt.gcf())  # the same name again: a second file
    run.complete()

    metrics = run.get_metrics()
    assert metrics["loss"] == 0.5
    expected = {
        "ROC": ("images/ROC.png", file.read_bytes()),
        "figure": ("images/figure_1.png", pyplot_png),
        "pyplot": ("images/pyplot.png", pyplot_png),
    }
    for name, (path, data) in expected.items():
        assert metrics[name] == {"artifact": path, "sha256": hashlib.sha256(data).hexdigest()}
        assert run.download_file(path, tmp_path / "down" / path).read_bytes() == data
    first = run.download_file("images/figure.png", tmp_path / "first.png").read_bytes()
    assert first == png_of(figure) and first.startswith(b"\x89PNG")
    assert sorted(run.get_file_names()) == ["images/ROC.png", "images/figure.png", "images/figure_1.png",
                                            "images/pyplot.png"]
    plt.close("all")


def test_bad_images_are_named(workspace: Workspace, tmp_path: Path) -> None:
    run = Experiment(workspace, unique("bad-images")).start_logging()
    with pytest.raises(LimitError, match="exactly one of path= .* or plot="):
        run.log_image("none")
    with pytest.raises(LimitError, match="exactly one of"):
        run.log_image("both", path="x.png", plot=plt)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LimitError, match="is not an image file by its extension .*text/plain.*upload_file"):
        run.log_image("text", path=tmp_path / "notes.txt")
    with pytest.raises(LimitError, match="no such image file"):
        run.log_image("missing", path=tmp_path / "missing.png")
    with pytest.raises(LimitError, match="plot= must be a matplotlib Figure or matplotlib.pyplot, not int"):
        run.log_image("number", plot=42)
    with pytest.raises(LimitError, match="image name must be a str"):
        run.log_image(3, plot=plt)  # type: ignore[arg-type]
    run.complete()
    assert run.get_metrics() == {}
