"""The web UI in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright)
against the real services: Kafka, processors, PostgreSQL and the query API serving ui/dist.

Screenshots of the main pages go to test-output/ui/. The UI must be built first
(`make install`, or `npm ci && npm run build` in ui/).
"""

from __future__ import annotations

import math
import struct
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from playwright import sync_api as playwright_api

from runstream import Experiment, Workspace
from runstream.query_api import ui
from runstream.settings import Settings
from tests.support.names import REPO, unique
from tests.support.sweep import run_sweep
from tests.support.waiting import wait_for

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "test-output" / "ui"
# As on this machine kind's notes: no GPU, no sandbox as root, no background traffic to
# Google's hosts (the network is closed), a fresh profile (Playwright makes one per launch).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
XSS = "<script>alert(1)</script>"

pytestmark = pytest.mark.timeout(180)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/install-system-deps.sh` (installs Debian's chromium)")
    if not (ui.DIST / "index.html").is_file():
        pytest.fail(f"the web UI is not built ({ui.DIST}): run `make install` or `cd ui && npm ci && npm run build`")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any, services: Settings) -> Iterator[Any]:
    """A fresh page on the UI; fails the test if the page throws or logs an error."""
    context = browser.new_context(base_url=services.api_url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(20_000)
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            problems.append(f"console error: {msg.text}")

    def on_dialog(dialog: Any) -> None:  # an alert() would mean injected script ran
        problems.append(f"dialog opened: {dialog.message}")
        dialog.dismiss()

    pg.on("console", on_console)
    pg.on("dialog", on_dialog)
    yield pg
    context.close()
    assert not problems, problems


def shot(pg: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def api_get(settings: Settings, path: str) -> Any:
    with urllib.request.urlopen(f"{settings.api_url}{path}", timeout=30) as resp:
        return orjson.loads(resp.read())


def experiment_total(settings: Settings, name: str) -> int:
    """How many runs the API lists for the experiment (0 while it does not exist yet: 404)."""
    try:
        return int(api_get(settings, f"/api/experiments/{name}/runs?limit=1")["total"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return 0
        raise


def ready_chart(pg: Any, selector: str) -> Any:
    """The chart element once it has drawn."""
    el = pg.locator(f"{selector}[data-state='ready']")
    el.wait_for()
    return el


def png(width: int = 96, height: int = 64) -> bytes:
    """A small gradient PNG, made without any imaging library."""
    raw = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 160))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def log_output(run: Any, lines: list[str], stream: str = "stdout") -> None:
    """Captured output as the SDK records it for submitted scripts (a log.lines event)."""
    now = time.time()
    run._event("log.lines", {"stream": stream, "lines": lines, "times": [now] * len(lines)})


@pytest.fixture(scope="module")
def sweep(workspace: Workspace, services: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The seed's Ridge sweep (20 runs), materialized."""
    name = unique("ui-sweep")
    logged = run_sweep(workspace, name, tmp_path_factory.mktemp("models"))
    wait_for(lambda: api_get(services, f"/api/experiments/{quote(name)}/runs?status=completed")["total"] == len(logged),
             what="the sweep's runs to be materialized")
    return {"experiment": name, "logged": logged}


# ---------------------------------------------------------------- server side, no browser


async def test_pages_answer_503_with_build_hint_when_ui_is_not_built(tmp_path: Path) -> None:
    from aiohttp import web

    app = web.Application()
    ui.setup(app, dist=tmp_path / "dist")
    async with TestClient(TestServer(app)) as client:
        for path in ("/", "/experiments/x", f"/runs/{'0' * 8}", "/compare?run=a"):
            resp = await client.get(path)
            assert resp.status == 503, path
            text = await resp.text()
            assert "npm ci" in text and "npm run build" in text and "make install" in text
        assert (await client.get("/assets/main.js")).status == 404


async def test_pages_and_assets_when_built(tmp_path: Path) -> None:
    from aiohttp import web

    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>ui</title>")
    (tmp_path / "assets" / "main-ABC.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("no")
    app = web.Application()
    ui.setup(app, dist=tmp_path)
    async with TestClient(TestServer(app)) as client:
        for path in ("/", "/experiments/a/b", "/runs/0190b6a2-0000-7000-8000-000000000000", "/compare?run=a&run=b"):
            resp = await client.get(path)
            assert resp.status == 200, path
            assert resp.headers["Content-Type"].startswith("text/html")
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            assert await resp.text() == "<!doctype html><title>ui</title>"
        asset = await client.get("/assets/main-ABC.js")
        assert asset.status == 200 and "immutable" in asset.headers["Cache-Control"]
        for bad in ("/assets/../secret.txt", "/assets/%2e%2e%2fsecret.txt", "/assets/..%2Fsecret.txt"):
            assert (await client.get(bad)).status == 404, bad


# ---------------------------------------------------------------- browser


def test_sweep_runs_appear_sort_by_mse_and_best_compares_with_worst(page: Any, sweep: dict[str, Any]) -> None:
    experiment, logged = sweep["experiment"], sweep["logged"]
    page.goto("/")
    row = page.locator(f"#experiments tr[data-experiment='{experiment}']")
    assert row.locator("td[data-run-count]").inner_text() == "20"
    shot(page, "experiments")

    row.get_by_role("link", name=experiment).click()
    page.wait_for_url(f"**/experiments/{experiment}")
    rows = page.locator("#runs tbody tr")
    rows.nth(19).wait_for()
    assert rows.count() == 20
    assert page.locator("#runs").get_attribute("data-total") == "20"

    page.locator("#runs th[data-metric='mse'] button").click()
    page.locator("#runs[data-order-by='metric:mse'][data-order='asc']").wait_for()
    shown = [float(v) for v in page.locator("#runs td[data-metric='mse']").evaluate_all("tds => tds.map(t => t.dataset.value)")]
    expected = sorted(r["mse"] for r in logged)
    assert shown == pytest.approx(expected, rel=1e-12)
    shot(page, "runs-sorted-by-mse")

    page.locator("#runs th[data-metric='mse'] button").click()
    page.locator("#runs[data-order-by='metric:mse'][data-order='desc']").wait_for()
    shown = [float(v) for v in page.locator("#runs td[data-metric='mse']").evaluate_all("tds => tds.map(t => t.dataset.value)")]
    assert shown == pytest.approx(expected[::-1], rel=1e-12)

    # The worst is first now, the best last: select both and compare them.
    page.locator("#runs tbody tr").first.locator("input[type=checkbox]").check()
    page.locator("#runs tbody tr").last.locator("input[type=checkbox]").check()
    page.locator("#compare-selected").click()
    page.wait_for_url("**/compare?run=*")
    finals = page.locator("#final-values td[data-metric='mse']")
    finals.nth(1).wait_for()
    values = sorted(float(v) for v in finals.evaluate_all("tds => tds.map(t => t.dataset.value)"))
    assert values == pytest.approx([expected[0], expected[-1]], rel=1e-12)
    shot(page, "compare-best-worst")


def test_runs_table_filters_by_status_tag_and_metric_threshold(page: Any, workspace: Workspace, services: Settings) -> None:
    experiment = Experiment(workspace, unique("ui-filter"))
    runs = []
    for i in range(6):
        run = experiment.start_logging(name=f"r{i}")
        run.log("score", i / 10)
        run.tag("team", "a" if i % 2 else "b")
        runs.append(run)
    for run in runs[:4]:
        run.complete()
    runs[5].get_metrics()
    wait_for(lambda: api_get(services, f"/api/experiments/{experiment.name}/runs?status=completed")["total"] == 4,
             what="runs materialized")

    page.goto(f"/experiments/{experiment.name}")
    page.locator("#runs tbody tr").nth(5).wait_for()

    page.locator("input[data-status='completed']").check()
    page.locator("#runs[data-total='4']").wait_for()
    page.get_by_label("tag filter").fill("team:a")
    page.get_by_label("tag filter").press("Enter")
    page.locator("#runs[data-total='2']").wait_for()  # r1, r3
    page.get_by_label("metric name").fill("score")
    page.get_by_label("operator").select_option(">")
    page.get_by_label("threshold").fill("0.2")
    page.get_by_label("threshold").press("Enter")
    page.locator("#runs[data-total='1']").wait_for()
    assert page.locator("#runs tbody tr td.name").inner_text().strip() == "r3"
    assert "metric=score%3E0.2" in page.url and "tag=team%3Aa" in page.url and "status=completed" in page.url

    # The state is in the URL: a reload shows the same view.
    page.reload()
    page.locator("#runs[data-total='1']").wait_for()
    page.get_by_role("button", name="remove score>0.2").click()
    page.locator("#runs[data-total='2']").wait_for()  # r1 and r3 again
    for run in runs[4:]:
        run.complete()


def test_run_page_draws_each_vector_with_its_points(page: Any, workspace: Workspace, tmp_path: Path) -> None:
    experiment = Experiment(workspace, unique("ui-run"))
    run = experiment.start_logging(name="chart-run", lr=0.01)
    for step in range(500):
        run.log("loss", math.nan if step == 100 else 1 / (1 + step), description="training loss")
    run.log_list("big", [math.sin(i / 500) for i in range(20_000)])
    run.log("accuracy", 0.93)
    run.tag("stage", "final")
    image = tmp_path / "curve.png"
    image.write_bytes(png())
    if hasattr(run, "log_image"):
        run.log_image("curve", path=str(image))
    else:
        run.upload_file("images/curve.png", str(image))
    run.upload_file("outputs/notes.txt", b"hello\n")
    log_output(run, ["epoch 1 loss=0.5", "epoch 2 loss=0.25"])
    log_output(run, ["warning: something"], stream="stderr")
    child = run.child_run(name="fold-1")
    child.log("fold_mse", 0.5)
    child.complete()
    run.complete()
    run.get_metrics(recursive=True)

    page.goto(f"/runs/{run.id}")
    loss = ready_chart(page, "#charts .chart[data-metric='loss']")
    assert loss.get_attribute("data-points") == "500"
    assert loss.get_attribute("data-count") == "500"
    state = loss.evaluate("el => ({n: el.uplot.data[0].length, nan: el.uplot.data[1][100], x: el.uplot.data[0][499]})")
    assert state == {"n": 500, "nan": None, "x": 499}  # NaN is a gap, not a crash
    loss.get_by_label("log").check()
    page.wait_for_function("() => document.querySelector(\"#charts .chart[data-metric='loss']\").uplot.scales.y.distr === 3")
    assert loss.evaluate("el => el.uplot.data[0].length") == 500

    big = ready_chart(page, "#charts .chart[data-metric='big']")
    assert big.get_attribute("data-count") == "20000"
    assert big.get_attribute("data-downsampled") == "true"
    drawn, width = int(big.get_attribute("data-points")), int(big.get_attribute("data-max-points"))
    assert 100 < drawn <= width < 20_000
    assert big.evaluate("el => el.uplot.data[0].length") == drawn

    # Hover: step, value and time.
    over = big.locator(".u-over")
    box = over.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    tip = big.locator(".tooltip")
    tip.wait_for()
    assert "step " in tip.inner_text() and "big = " in tip.inner_text()
    shot(page, "run-page")

    # Drag-zoom asks the API again for the zoomed step range, at the chart's width.
    page.mouse.move(box["x"] + box["width"] * 0.40, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.42, box["y"] + 60, steps=5)
    page.mouse.up()
    page.locator("#charts .chart[data-metric='big'][data-zoomed='true'][data-state='ready']").wait_for()
    steps = big.evaluate("el => Array.from(el.uplot.data[0])")
    assert 5_000 < steps[0] < steps[-1] < 12_000
    assert big.get_attribute("data-downsampled") == "false"  # ~400 steps fit in the width
    assert len(steps) == steps[-1] - steps[0] + 1
    big.get_by_role("button", name="Reset zoom").click()
    page.locator("#charts .chart[data-metric='big'][data-zoomed='false'][data-state='ready']").wait_for()

    assert page.locator("#scalars tr[data-metric='accuracy'] td.num").inner_text() == "0.93"
    assert page.locator("#tags .tag[data-tag-key='stage']").inner_text() == "stage: final"
    assert page.locator("#images img").count() == 1
    page.wait_for_function("() => [...document.querySelectorAll('#images img')].every(i => i.complete && i.naturalWidth === 96)")
    assert page.locator("#output").inner_text().splitlines() == ["epoch 1 loss=0.5", "epoch 2 loss=0.25", "warning: something"]
    assert page.locator("#output .stream-stderr").inner_text().strip() == "warning: something"
    link = page.locator("#files tr[data-path='outputs/notes.txt'] a")
    with page.expect_download() as download:
        link.click()
    assert Path(download.value.path()).read_bytes() == b"hello\n"
    assert page.locator("#events tr[data-type='run.started']").count() == 1
    assert page.locator("#events-section h2").inner_text() == "History"
    assert page.locator("#events tr[data-type='run.started'] td.by").inner_text() == "—"  # unauthenticated
    page.locator(f"#children tr[data-run-id='{child.id}']").get_by_role("link", name="fold-1").click()
    page.wait_for_url(f"**/runs/{child.id}")
    assert page.locator("#scalars tr[data-metric='fold_mse'] td.num").inner_text() == "0.5"
    page.go_back()
    ready_chart(page, "#charts .chart[data-metric='loss']")


def test_row_built_table_draws_a_two_variable_chart(page: Any, workspace: Workspace) -> None:
    run = Experiment(workspace, unique("ui-table")).start_logging()
    for i in range(30):
        fpr = i / 29
        run.log_row("roc", fpr=fpr, tpr=math.sqrt(fpr), threshold=1 - fpr)
    run.log_table("pr", {"recall": [0.1, 0.5, 0.9], "precision": [0.95, 0.8, 0.4], "label": ["a", "b", "c"]})
    run.complete()
    run.get_metrics()

    page.goto(f"/runs/{run.id}")
    roc = ready_chart(page, "#tables .chart[data-table='roc']")
    assert (roc.get_attribute("data-x"), roc.get_attribute("data-y"), roc.get_attribute("data-points")) == ("fpr", "tpr", "30")
    xs, ys = roc.evaluate("el => [Array.from(el.uplot.data[0]), Array.from(el.uplot.data[1])]")
    assert xs == pytest.approx([i / 29 for i in range(30)]) and ys == pytest.approx([math.sqrt(i / 29) for i in range(30)])

    roc.get_by_label("y column").select_option("threshold")
    page.locator("#tables .chart[data-table='roc'][data-y='threshold']").wait_for()
    assert roc.evaluate("el => el.uplot.data[1][0]") == pytest.approx(1.0)
    roc.get_by_label("x column").select_option("(row)")
    page.locator("#tables .chart[data-table='roc'][data-x='(row)']").wait_for()

    pr = ready_chart(page, "#tables .chart[data-table='pr']")
    assert (pr.get_attribute("data-x"), pr.get_attribute("data-y"), pr.get_attribute("data-points")) == ("recall", "precision", "3")
    assert pr.locator("select[data-axis='y'] option").all_inner_texts() == ["recall", "precision"]  # not the text column
    roc.scroll_into_view_if_needed()
    shot(page, "run-page-tables")


def test_compare_overlays_two_runs(page: Any, workspace: Workspace) -> None:
    experiment = Experiment(workspace, unique("ui-compare"))
    a, b = experiment.start_logging(name="fast"), experiment.start_logging(name="slow")
    for step in range(50):
        a.log("loss", 1 / (1 + step))
        b.log("loss", 1 / (1 + step / 5))
    a.log("final", 1.5)
    b.log("final", 2.5)
    a.complete()
    b.complete()
    a.get_metrics()
    b.get_metrics()

    page.goto(f"/compare?run={a.id}&run={b.id}")
    chart = ready_chart(page, "#compare-charts .chart[data-metric='loss']")
    assert chart.get_attribute("data-series") == "2"
    assert chart.get_attribute("data-points") == "50,50"
    series = chart.evaluate("el => el.uplot.series.slice(1).map(s => s.label)")
    assert series == ["fast", "slow"]
    assert chart.evaluate("el => el.uplot.data.slice(1).map(d => d.filter(v => v !== null).length)") == [50, 50]
    assert page.locator(f"#final-values tr[data-run-id='{b.id}'] td[data-metric='final']").inner_text() == "2.5"
    over = chart.locator(".u-over")
    box = over.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    tip = chart.locator(".tooltip")
    tip.wait_for()
    assert "fast: " in tip.inner_text() and "slow: " in tip.inner_text()
    shot(page, "compare")


def test_value_logged_while_page_is_open_appears_without_reload(page: Any, workspace: Workspace) -> None:
    run = Experiment(workspace, unique("ui-live")).start_logging(name="live-run")
    for step in range(5):
        run.log("live_loss", 1.0 / (1 + step))
    log_output(run, ["starting"])
    run.get_metrics()

    page.goto(f"/runs/{run.id}")
    chart = ready_chart(page, "#charts .chart[data-metric='live_loss']")
    assert chart.get_attribute("data-points") == "5"
    page.locator("#live[data-state='open']").wait_for()
    page.evaluate("() => { window.__noReload = true }")  # gone if the page reloads

    started = time.monotonic()
    run.log("live_loss", 0.01)
    run.flush()
    page.locator("#charts .chart[data-metric='live_loss'][data-points='6']").wait_for()
    latency = time.monotonic() - started
    print(f"live: logged point drawn {latency * 1000:.0f} ms after run.log (flush included)")
    assert chart.evaluate("el => el.uplot.data[1][5]") == pytest.approx(0.01)

    run.log("new_metric", 1.0)
    run.log("new_metric", 2.0)
    log_output(run, ["step 6 done"])
    run.tag("phase", "eval")
    run.flush()
    ready_chart(page, "#charts .chart[data-metric='new_metric'][data-points='2']")
    page.locator("#output .line", has_text="step 6 done").wait_for()
    page.locator("#tags .tag[data-tag-key='phase']").wait_for()
    assert page.locator("#run-status [data-status]").get_attribute("data-status") == "running"
    shot(page, "run-live")

    run.complete()
    page.locator("#run-status [data-status='completed']").wait_for()
    page.locator("#live[data-state='ended']").wait_for()
    assert page.evaluate("() => window.__noReload") is True


def test_user_values_render_as_text(page: Any, workspace: Workspace, services: Settings) -> None:
    experiment = Experiment(workspace, unique("ui-xss"))
    run = experiment.start_logging(name="<img src=x onerror=alert('name')>")
    run.tag("note", XSS)
    run.tag("<b>key</b>", "<img src=x onerror=alert('tag')>")
    run.log("<i>metric</i>", 1)
    run.log("<i>metric</i>", 2)
    cells: dict[str, Any] = {"<x>": 1, "<y>": 2}
    run.log_row("<table>", **cells)
    run.upload_file("<svg onload=alert(1)>.txt", b"x")
    log_output(run, ["<script>alert('output')</script>"])
    run.complete()
    from tests.support import events  # straight onto the topic: a principal only a producer's word vouches for
    _produce(services, [(run.id, events.event(run.id, 10_000, "tag.set", {"key": "late"},
                                              principal="<img src=x onerror=alert('who')>"))])
    # the API answers once it has materialized seq 10000
    urllib.request.urlopen(f"{services.api_url}/api/runs/{run.id}?min_seq=10000&wait_ms=30000", timeout=40).close()

    page.goto(f"/runs/{run.id}")
    page.locator("#events tr[data-seq='10000']").wait_for()
    assert page.locator("#events tr[data-seq='10000'] td.by").inner_text() == "<img src=x onerror=alert('who')>"
    assert page.locator("#tags .tag[data-tag-key='note']").inner_text() == f"note: {XSS}"
    assert page.locator("h1").inner_text() == "<img src=x onerror=alert('name')>"
    assert page.locator("#tags .tag[data-tag-key='<b>key</b>']").inner_text() == "<b>key</b>: <img src=x onerror=alert('tag')>"
    ready_chart(page, "#charts .chart[data-metric='<i>metric</i>']")
    assert page.locator("#charts h3").first.inner_text() == "<i>metric</i>"
    assert page.locator("#files a").inner_text() == "<svg onload=alert(1)>.txt"
    assert page.locator("#output").inner_text().strip() == "<script>alert('output')</script>"
    counts = page.evaluate("""() => ({
        scripts: document.querySelectorAll('script').length,
        imgs: document.querySelectorAll('img').length,
        nested: document.querySelectorAll('#tags b b, i, table table, svg').length })""")
    assert counts == {"scripts": 1, "imgs": 0, "nested": 0}
    shot(page, "xss-run")

    page.goto(f"/experiments/{experiment.name}")
    tag = page.locator("#runs .tag[data-tag-key='note']")
    assert tag.inner_text() == f"note: {XSS}"
    assert page.locator("#runs td.name a").inner_text() == "<img src=x onerror=alert('name')>"


def test_ten_thousand_runs_page_and_sort_on_the_server(page: Any, workspace: Workspace, services: Settings) -> None:
    experiment = Experiment(workspace, unique("ui-10k"))
    last = None
    for i in range(10_000):
        last = experiment.start_logging()
        last.log("loss", (i * 7919) % 10_000 / 10_000)
    assert last is not None
    last.flush()  # then wait on the API's count (a loaded machine may need more than get_metrics' 10 s)
    wait_for(lambda: experiment_total(services, experiment.name) == 10_000, timeout=120,
             what="10,000 runs materialized")

    started = time.monotonic()
    page.goto(f"/experiments/{experiment.name}?order_by=metric:loss&limit=100")
    page.locator("#runs tbody tr").nth(99).wait_for()
    loaded = time.monotonic() - started
    assert page.locator("#runs").get_attribute("data-total") == "10000"
    assert page.locator("#runs tbody tr").count() == 100
    values = [float(v) for v in page.locator("#runs td[data-metric='loss']").evaluate_all("tds => tds.map(t => t.dataset.value)")]
    assert values == [i / 10_000 for i in range(100)]

    started = time.monotonic()
    page.get_by_role("button", name="Next ›").click()
    page.locator("#runs tbody tr td[data-metric='loss'][data-value='0.01']").wait_for()
    paged = time.monotonic() - started
    started = time.monotonic()
    page.locator("#runs th[data-metric='loss'] button").click()
    page.locator("#runs[data-order='desc'] tbody tr td[data-metric='loss'][data-value='0.9999']").wait_for()
    resorted = time.monotonic() - started
    print(f"10,000 runs: first page {loaded * 1000:.0f} ms, next page {paged * 1000:.0f} ms, "
          f"sort flipped {resorted * 1000:.0f} ms")
    shot(page, "runs-10k")


def _produce(settings: Settings, messages: list[tuple[str, bytes]]) -> None:
    """Produce straight to Kafka (in a thread: Playwright's sync API holds this thread's loop)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from tests.support.events import produce

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, produce(settings, messages)).result()


def test_run_page_shows_its_dead_letter_count(page: Any, services: Settings, db: Any) -> None:
    from tests.support import events
    from tests.support.rejects import reject_step

    run_id = events.new_run_id()
    with reject_step(db, run_id, 3):
        _produce(services, [(run_id, events.started(run_id, unique("ui-dead"))),
                                        (run_id, events.points(run_id, 1, "x", list(range(6)))),
                                        (run_id, events.event(run_id, 2, "run.status", {"status": "completed"}))])
        wait_for(lambda: api_get(services, f"/api/runs/{run_id}")["status"] == "completed" if _exists(services, run_id)
                 else False, what="the run to complete")
    page.goto(f"/runs/{run_id}")
    page.locator("#run-status [data-status='completed']").wait_for()
    assert page.locator("#run-dead-letters").inner_text() == "1"
    assert "runstream dead-letters list" in (page.locator("#run-dead-letters").get_attribute("title") or "")


def _exists(settings: Settings, run_id: str) -> bool:
    try:
        api_get(settings, f"/api/runs/{run_id}")
        return True
    except urllib.error.HTTPError:
        return False


def test_control_and_bidi_characters_show_as_visible_escapes_under_the_csp(page: Any, workspace: Workspace) -> None:
    experiment = Experiment(workspace, unique("ui-inert"))
    run = experiment.start_logging(name="\x1b[31mred\u202eevil\u200b")
    run.tag("k\x07", "a\u2066b\x85")
    run.complete()
    response = page.goto(f"/runs/{run.id}")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.locator("h1").inner_text() == "\\x1b[31mred\\u202eevil\\u200b"
    page.locator("#tags .tag").first.wait_for()
    assert page.locator("#tags .tag").first.inner_text() == "k\\x07: a\\u2066b\\x85"
    page.goto(f"/experiments/{experiment.name}")
    assert page.locator("#runs td.name a").inner_text() == "\\x1b[31mred\\u202eevil\\u200b"


def test_params_show_sort_and_mlflow_links_open_the_run(page: Any, workspace: Workspace, services: Settings) -> None:
    experiment = Experiment(workspace, unique("ui-params"))
    runs = []
    for alpha in ("0.5", "0.1", "0.9"):
        run = experiment.start_logging(name=f"alpha-{alpha}")
        run.log_params({"alpha": alpha, "solver": "svd"})
        run.complete()
        runs.append(run)

    page.goto(f"/experiments/{experiment.name}")
    header = page.locator("#runs th[data-col='param:alpha']")  # params are columns by default
    header.wait_for()
    header.get_by_role("button").click()
    page.locator("#runs[data-order-by='param:alpha']").wait_for()
    cells = page.locator("#runs tbody td[data-col='param:alpha']")
    assert cells.all_inner_texts() == ["0.1", "0.5", "0.9"]
    shot(page, "runs-params")

    # What an MLflow client prints for a run ("View run at <tracking uri>/#/experiments/..."):
    page.goto(f"/#/experiments/1/runs/{runs[0].id.replace('-', '')}")
    page.locator("#params .tag[data-param-key='alpha']", has_text="0.5").wait_for()
    assert page.url.endswith(f"/runs/{runs[0].id}")
    assert page.locator("#params .tag[data-param-key='solver']").inner_text() == "solver: svd"


def _in_thread(coro: Any) -> Any:
    """Run a coroutine on its own loop in a thread (Playwright's sync API holds this one)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _create_token(database_url: str, workspace: str) -> str:
    import asyncpg

    from runstream.query_api import tokens

    conn = await asyncpg.connect(database_url)
    try:
        return (await tokens.create(conn, workspace, "read", name="browser"))[0]
    finally:
        await conn.close()


def test_login_a_page_with_its_live_stream_and_logout(browser: Any, services: Settings, db: Any,
                                                      tmp_path: Path) -> None:
    """An API with authentication on: the UI shows the login form, a bad token is refused,
    a good one opens the pages (the run page's live stream included), logout ends it."""
    import os
    import subprocess
    import sys

    from runstream.devstack.stack import free_ports
    from tests.support import events

    workspace, experiment, run_id = unique("ui-ws"), unique("ui-auth"), events.new_run_id()
    _produce(services, [(run_id, events.event(run_id, 0, "run.started", {"experiment": experiment},
                                              workspace=workspace)),
                        (run_id, events.event(run_id, 1, "tag.set", {"key": "note", "value": "<b>hi</b>"},
                                              workspace=workspace))])
    wait_for(lambda: db.execute("SELECT 1 FROM runs WHERE run_id = %s AND last_seq = 1", (run_id,)).fetchone(),
             what="the run materialized")
    token = _in_thread(_create_token(services.database_url, workspace))
    (port,) = free_ports(1)
    env = {**os.environ, **services.to_env(), "RUNSTREAM_AUTH": "on", "RUNSTREAM_API_PORT": str(port)}
    with (tmp_path / "api.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "runstream.cli", "api"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/api/health", timeout=2):
                return True
        except OSError:
            return False

    context = browser.new_context(base_url=base, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(20_000)
    try:
        wait_for(up, what="the API with authentication on", timeout=60)
        pg = context.new_page()
        pg.goto("/")
        pg.locator("#login").wait_for()
        pg.fill("#login-token", "rs_000000000000_" + "x" * 43)
        pg.click("#login button[type=submit]")
        pg.locator("#login-error .error, #login-error").filter(has_text="unknown token").wait_for()
        pg.fill("#login-token", token)
        pg.click("#login button[type=submit]")
        pg.get_by_role("link", name=experiment).wait_for()
        assert workspace in pg.locator("#session").inner_text()
        cookie = next(c for c in context.cookies() if c["name"] == "runstream_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert pg.evaluate("document.cookie") == ""  # the script never sees the token
        pg.goto(f"/runs/{run_id}")
        pg.get_by_text("<b>hi</b>").first.wait_for()  # the page read the run; the tag shows as text
        # The live stream authenticates with the cookie: a value logged now appears without reload.
        _produce(services, [(run_id, events.event(run_id, 2, "tag.set", {"key": "later", "value": "streamed"},
                                                  workspace=workspace))])
        pg.get_by_text("streamed").first.wait_for()
        shot(pg, "logged-in-run")
        pg.click("#logout")
        pg.locator("#login").wait_for()
        assert not [c for c in context.cookies() if c["name"] == "runstream_token"]
        pg.goto(f"/runs/{run_id}")
        pg.locator("#login").wait_for()
    finally:
        context.close()
        process.terminate()
        process.wait(30)
