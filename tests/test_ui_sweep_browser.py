"""Sweep analysis in the web UI (issue 13), in headless Chromium against the real services:
the seed's sweep as a scatter of alpha vs mse with the best run marked, the search box
(`metrics.mse < 3300`, errors at their position), brushing parallel coordinates filters
the table, CSV download equals the API, curves with smoothing / x axis / log / grouped
bands, and a submitted run's CPU and memory charts.

Screenshots are saved under each test's tmp dir and checked for what they must show (the
best run's marker colour, the charts' line colour); a copy goes to test-output/ui/ to
look at.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import textwrap
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from matplotlib import image as mpimg

from runstream import Experiment, ScriptRunConfig, Workspace
from runstream.settings import Settings
from tests.support.names import REPO, unique
from tests.support.sweep import run_sweep

pytestmark = pytest.mark.timeout(240)

SHOTS = REPO / "test-output" / "ui"
BEST = (0xF5, 0x9E, 0x0B)  # the scatter's best-run marker (ui/src/sweep.ts)
LINE = (0x25, 0x63, 0xEB)  # the first series' colour (ui/src/charts.ts PALETTE[0])


def shot(el: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    el.screenshot(path=str(path))
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / f"sweep-{name}.png")
    return path


def pixels_of(path: Path, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    """How many pixels of the PNG are within ``tolerance`` of ``rgb`` on every channel."""
    img = (mpimg.imread(str(path))[..., :3] * 255).astype(int)
    return int((np.abs(img - np.array(rgb)) <= tolerance).all(axis=-1).sum())


def api_get(settings: Settings, path: str, **params: Any) -> Any:
    query = urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(f"{settings.api_url}{path}?{query}", timeout=30) as resp:
        return orjson.loads(resp.read())


@pytest.fixture(scope="module")
def seed(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The seed's sweep (option 1): 20 runs, alpha and mse logged per run."""
    name = unique("ui-sweep")
    logged = run_sweep(workspace, name, tmp_path_factory.mktemp("models"))
    return {"experiment": name, "logged": logged}


def test_scatter_of_alpha_vs_mse_marks_the_best_run(ui_page: Any, seed: dict[str, Any], tmp_path: Path) -> None:
    page, logged = ui_page, seed["logged"]
    page.goto(f"/experiments/{seed['experiment']}")
    scatter = page.locator("#scatter[data-state='ready'][data-points='20']")
    scatter.wait_for()
    best = min(logged, key=lambda r: r["mse"])
    assert scatter.get_attribute("data-x") == "alpha" and scatter.get_attribute("data-y") == "mse"
    assert scatter.get_attribute("data-best-run-id") == best["run_id"]
    assert float(scatter.get_attribute("data-best-y")) == best["mse"]
    assert float(scatter.get_attribute("data-best-x")) == best["alpha"]
    assert "★ best" in scatter.locator(".chart-meta").inner_text()
    drawn = page.evaluate("() => { const u = document.querySelector('#scatter').uplot;"
                          " return [u.data[0], u.data[1], u.data[2].filter(v => v !== null)]; }")
    assert sorted(zip(drawn[0], drawn[1], strict=True)) == sorted((r["alpha"], r["mse"]) for r in logged)
    assert drawn[2] == [best["mse"]]
    path = shot(scatter, tmp_path, "scatter-alpha-mse")
    assert pixels_of(path, BEST, 30) > 50, "the best run's marker is not in the screenshot"
    assert pixels_of(path, LINE, 30) > 19 * 20, "the other runs' points are not in the screenshot"

    # "best" can be the highest y instead
    page.select_option("#scatter select[aria-label='best is']", "max")
    worst = max(logged, key=lambda r: r["mse"])
    page.locator(f"#scatter[data-best-run-id='{worst['run_id']}']").wait_for()


def test_search_box_filters_with_mse_below_3300_and_names_error_positions(
    ui_page: Any, seed: dict[str, Any], services: Settings, tmp_path: Path
) -> None:
    page, logged = ui_page, seed["logged"]
    below = [r for r in logged if r["mse"] < 3300]
    assert 0 < len(below) < 20
    page.goto(f"/experiments/{seed['experiment']}")
    page.locator("#runs[data-total='20']").wait_for()
    page.fill("#search", "metrics.mse < 3300")
    page.press("#search", "Enter")
    page.locator(f"#runs[data-total='{len(below)}']").wait_for()
    assert "filter=metrics.mse+%3C+3300" in page.url or "filter=metrics.mse%20%3C%203300" in page.url
    shown = page.locator("#runs td[data-metric='mse']").evaluate_all("tds => tds.map(t => Number(t.dataset.value))")
    assert sorted(shown) == sorted(r["mse"] for r in below)
    # the charts follow the search
    page.locator(f"#scatter[data-state='ready'][data-points='{len(below)}']").wait_for()
    shot(page.locator("main"), tmp_path, "search-mse-below-3300")

    # reloading keeps it (it lives in the URL)
    page.reload()
    page.locator(f"#runs[data-total='{len(below)}']").wait_for()
    assert page.input_value("#search") == "metrics.mse < 3300"

    # a malformed search: the API's message with its position, and a caret under it
    page.fill("#search", "metrics.mse < 3300 and (params.alpha >")
    page.press("#search", "Enter")
    error = page.locator("#search-error:not([hidden])")
    error.wait_for()
    message = page.inner_text("#search-error-message")
    assert re.search(r"at position 38", message), message
    assert error.get_attribute("data-position") == "38"
    caret = page.inner_text("#search-error pre.caret").split("\n")
    assert caret[1] == " " * 38 + "^"
    path = shot(page.locator("#search-form").locator(".."), tmp_path, "search-error")
    assert pixels_of(path, (0x99, 0x1B, 0x1B), 40) > 20  # the error text is drawn


def test_csv_download_of_the_filtered_table_matches_the_api(
    ui_page: Any, seed: dict[str, Any], services: Settings, tmp_path: Path
) -> None:
    page = ui_page
    query = "metrics.mse < 3300"
    page.goto(f"/experiments/{seed['experiment']}?filter={urllib.parse.quote(query)}&order_by=metric:mse")
    page.locator("#runs[data-order-by='metric:mse']").wait_for()
    with page.expect_download() as info:
        page.click("#download-csv")
    target = tmp_path / "runs.csv"
    info.value.save_as(str(target))
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    listed = api_get(services, f"/api/experiments/{seed['experiment']}/runs", filter=query,
                     order_by="metric:mse", order="asc")["runs"]
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in listed]
    assert [float(r["metrics.mse"]) for r in rows] == [r["metrics"]["mse"]["last"] for r in listed]
    assert [float(r["metrics.alpha"]) for r in rows] == [r["metrics"]["alpha"]["last"] for r in listed]
    assert info.value.suggested_filename == f"{seed['experiment']}-runs.csv"


def test_brushing_parallel_coordinates_filters_the_table(ui_page: Any, seed: dict[str, Any], tmp_path: Path) -> None:
    page, logged = ui_page, seed["logged"]
    page.goto(f"/experiments/{seed['experiment']}")
    parallel = page.locator("#parallel[data-state='ready'][data-axes='2']")
    parallel.wait_for()
    page.locator("#runs[data-total='20']").wait_for()
    page.locator("#parallel").scroll_into_view_if_needed()
    box = page.locator("#parallel .chart-body").bounding_box()
    # The axes (alpha, mse) sit at the grid's left and right edges (ui/src/sweep.ts: left 40,
    # right 80, top 40, bottom 24). Drag down the lower half of the mse axis: low mse.
    x = box["x"] + box["width"] - 80
    top, bottom = box["y"] + 40, box["y"] + 300 - 24
    page.mouse.move(x, top + (bottom - top) * 0.45)
    page.mouse.down()
    page.mouse.move(x, bottom + 5, steps=8)
    page.mouse.up()
    page.locator("#parallel[data-brushed*='mse']").wait_for()
    brushed = parallel.get_attribute("data-brushed")
    lo, hi = (float(v) for v in re.findall(r"[<>]= ([-0-9.e+]+)", brushed))
    inside = [r for r in logged if lo <= r["mse"] <= hi]
    assert 0 < len(inside) < 20, (brushed, lo, hi)
    page.locator(f"#runs[data-total='{len(inside)}']").wait_for()
    shown = page.locator("#runs td[data-metric='mse']").evaluate_all("tds => tds.map(t => Number(t.dataset.value))")
    assert sorted(shown) == sorted(r["mse"] for r in inside)
    assert page.locator("#brush-chip").is_visible()
    shot(page.locator("#sweep-charts"), tmp_path, "parallel-brushed")
    page.click("#clear-brush")
    page.locator("#runs[data-total='20']").wait_for()


@pytest.fixture(scope="module")
def curves_experiment(workspace: Workspace) -> dict[str, Any]:
    """Six runs of a noisy loss curve, two groups of three (tag ``group``)."""
    name = unique("ui-curves")
    exp = Experiment(workspace, name)
    rng = np.random.default_rng(0)
    runs = []
    for i in range(6):
        run = exp.start_logging(name=f"seed{i}", lr=0.1 if i < 3 else 0.01)
        run.tag("group", "fast" if i < 3 else "slow")
        for step in range(100):
            run.log("loss", float(10 / (1 + step * (0.2 if i < 3 else 0.05)) + rng.normal(0, 0.3) + 1))
        run.complete()
        runs.append(run.id)
    return {"experiment": name, "runs": runs}


def test_curves_smoothing_x_axis_log_and_grouped_band(
    ui_page: Any, curves_experiment: dict[str, Any], services: Settings, tmp_path: Path
) -> None:
    page = ui_page
    page.goto(f"/experiments/{curves_experiment['experiment']}")
    curves = page.locator("#curves[data-state='ready'][data-mode='runs'][data-series='6']")
    curves.wait_for()
    assert page.input_value("#curve-metric") == "loss"
    raw = page.evaluate("() => document.querySelector('#curves').uplot.data[1]")

    page.fill("#curve-smoothing", "0.9")
    page.locator("#curves[data-smoothing='0.9'][data-series='12']").wait_for()  # raw kept faintly + smoothed
    data = page.evaluate("() => document.querySelector('#curves').uplot.data")
    assert data[1] == raw  # the raw curve, unchanged
    smoothed = [v for v in data[2] if v is not None]
    assert np.std(np.diff(smoothed)) < np.std(np.diff([v for v in raw if v is not None])) / 2
    shot(page.locator("#curves"), tmp_path, "curves-smoothed")

    page.select_option("#curve-x", "relative")
    page.locator("#curves[data-x-axis='relative'][data-state='ready']").wait_for()
    xs = page.evaluate("() => document.querySelector('#curves').uplot.data[0]")
    assert xs[0] == 0 and all(x < 600 for x in xs)  # seconds since each run's first point
    page.select_option("#curve-x", "wall")
    page.locator("#curves[data-x-axis='wall']").wait_for()
    assert page.evaluate("() => document.querySelector('#curves').uplot.scales.x.time") is True
    page.select_option("#curve-x", "step")
    page.check("#curve-log-y")
    page.locator("#curves[data-log-y='true'][data-x-axis='step']").wait_for()
    assert page.evaluate("() => document.querySelector('#curves').uplot.scales.y.distr") == 3
    page.check("#curve-log-x")
    page.locator("#curves[data-log-x='true']").wait_for()
    assert page.evaluate("() => document.querySelector('#curves').uplot.scales.x.distr") == 3
    page.uncheck("#curve-log-x")
    page.uncheck("#curve-log-y")
    page.fill("#curve-smoothing", "0")

    page.select_option("#curve-group", "tag:group")
    grouped = page.locator("#curves[data-state='ready'][data-mode='groups'][data-bands='2']")
    grouped.wait_for()
    answer = api_get(services, f"/api/experiments/{curves_experiment['experiment']}/groups", name="loss",
                     group_by="tag:group", max_points=page.evaluate(
                         "() => Math.round(document.querySelector('#curves .chart-body').clientWidth)"), limit=1000)
    data = page.evaluate("() => document.querySelector('#curves').uplot.data")
    by_group = {b["group"]: b for b in answer["groups"]}
    assert set(by_group) == {"fast", "slow"}
    first = answer["groups"][0]
    # series per group: max, min, mean (the band is filled between max and min)
    assert [v for v in data[1] if v is not None] == first["max"]
    assert [v for v in data[2] if v is not None] == first["min"]
    assert [v for v in data[3] if v is not None] == first["mean"]
    assert page.evaluate("() => document.querySelector('#curves').uplot.bands.length") == 2
    path = shot(grouped, tmp_path, "curves-grouped-band")
    assert pixels_of(path, LINE, 30) > 200  # the first group's mean line and band


BURN = """
import time
from runstream import Run
run = Run.get_context()
end = time.monotonic() + 3
x = 0
while time.monotonic() < end:
    x += 1
run.log("spins", x)
"""


def test_a_submitted_runs_cpu_and_memory_charts(ui_page: Any, services: Settings, tmp_path: Path) -> None:
    ws = Workspace(settings=replace(services, system_metrics_interval=0.2))
    try:
        source = tmp_path / "src"
        source.mkdir()
        (source / "burn.py").write_text(textwrap.dedent(BURN))
        run = Experiment(ws, unique("ui-sysmetrics")).submit(ScriptRunConfig(str(source), "burn.py"))
        run.wait_for_completion()
    finally:
        ws.close()
    page = ui_page
    page.goto(f"/runs/{run.id}")
    shots = {}
    for metric in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
                   "system/process_cpu_percentage"):
        chart = page.locator(f"#charts .chart[data-metric='{metric}'][data-state='ready']")
        chart.wait_for()
        assert int(chart.get_attribute("data-points")) >= 5
        shots[metric] = shot(chart, tmp_path, metric.replace("/", "-"))
        assert pixels_of(shots[metric], LINE, 30) > 100, f"no line drawn for {metric}"
    href = page.locator("#charts .chart[data-metric='system/cpu_utilization_percentage'] a.csv").get_attribute("href")
    assert href == f"/api/runs/{run.id}/metrics.csv?name=system%2Fcpu_utilization_percentage"
