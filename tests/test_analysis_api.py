"""Sweep analysis in the query API (issue 13): param/tag/min/max/duration columns and
sorting, grouped mean/min–max bands computed from every point, and streamed CSV exports
of the runs table and of a metric's history — on runs logged through the SDK against
the session's real services.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from runstream import Experiment, Workspace
from runstream.settings import Settings
from tests.support.names import unique

STEPS = 40
HISTORY = 6000
"""Points of the long metric exported as CSV (more than one cursor chunk)."""


@dataclass
class Sweep:
    experiment: str
    runs: list[dict[str, Any]]
    """Per run: run_id, alpha, seed, group, loss (the vector), mse."""
    long_run: str


@pytest.fixture(scope="module")
def sweep(workspace: Workspace) -> Iterator[Sweep]:
    name = unique("analysis")
    exp = Experiment(workspace, name)
    runs = []
    for i, (alpha, seed, group) in enumerate([(0.5, 10, "a"), (0.1, 2, "a"), (0.3, 1, "b"), (0.2, 2, "b"),
                                              (0.4, 1, "a")]):
        run = exp.start_logging(name=f"r{i}", alpha=alpha, seed=seed, opt="adam" if i % 2 else "sgd")
        run.tag("group", group)
        run.tag("seed", str(seed))
        loss = [alpha * 10 + i * 0.1 + step * 0.5 * (1 + alpha) for step in range(STEPS)]
        for v in loss:
            run.log("loss", v)
        run.log("mse", 3000 + 100 * i)
        run.complete()
        runs.append({"run_id": run.id, "alpha": alpha, "seed": seed, "group": group, "loss": loss,
                     "mse": 3000 + 100 * i})
    long = exp.start_logging(name="long")
    for step in range(HISTORY):
        long.log("curve", step / 7)
    long.complete()
    yield Sweep(name, runs, long.id)


async def _get(session: aiohttp.ClientSession, url: str, params: Any = (), status: int = 200) -> Any:
    async with session.get(url, params=params) as resp:
        body = await resp.json()
        assert resp.status == status, body
        return body


def _url(settings: Settings, sweep: Sweep, tail: str = "runs") -> str:
    return f"{settings.api_url}/api/experiments/{sweep.experiment}/{tail}"


def _names(page: dict[str, Any]) -> list[str]:
    return [r["name"] for r in page["runs"]]


# ---------------------------------------------------------------- columns and sorting


async def test_listing_carries_properties_and_sorts_by_any_column(
    sweep: Sweep, services: Settings, session: aiohttp.ClientSession
) -> None:
    url = _url(services, sweep)
    base = {"filter": "name like 'r%'"}
    page = await _get(session, url, {**base, "order_by": "param:alpha", "order": "asc"})
    assert _names(page) == ["r1", "r3", "r2", "r4", "r0"]
    assert page["runs"][0]["properties"] == {"alpha": 0.1, "seed": 2, "opt": "adam"}
    page = await _get(session, url, {**base, "order_by": "param:alpha", "order": "desc"})
    assert _names(page) == ["r0", "r4", "r2", "r3", "r1"]
    # tags sort numerically where they read as numbers (1, 1, 2, 2, 10, not "10" < "2")
    page = await _get(session, url, {**base, "order_by": "tag:seed"})
    assert [r["tags"]["seed"] for r in page["runs"]] == ["1", "1", "2", "2", "10"]
    # metric.min / metric.max / metric (last) of a vector
    by_min = sorted(sweep.runs, key=lambda r: min(r["loss"]))
    page = await _get(session, url, {**base, "order_by": "metric.min:loss"})
    assert [r["run_id"] for r in page["runs"]] == [r["run_id"] for r in by_min]
    assert [r["metrics"]["loss"]["min"] for r in page["runs"]] == [min(r["loss"]) for r in by_min]
    by_max = sorted(sweep.runs, key=lambda r: max(r["loss"]), reverse=True)
    page = await _get(session, url, {**base, "order_by": "metric.max:loss", "order": "desc"})
    assert [r["run_id"] for r in page["runs"]] == [r["run_id"] for r in by_max]
    page = await _get(session, url, {**base, "order_by": "duration", "order": "asc"})
    durations = [r["duration_s"] for r in page["runs"]]
    assert durations == sorted(durations)
    # a missing param sorts last either way
    page = await _get(session, url, {"order_by": "param:alpha", "order": "desc"})
    assert _names(page)[-1] == "long"


@pytest.mark.parametrize("order_by", ["param:", "params:alpha", "metric.avg:loss", "tag", "bogus"])
async def test_a_bad_ordering_is_a_400_naming_it(
    sweep: Sweep, services: Settings, session: aiohttp.ClientSession, order_by: str
) -> None:
    body = await _get(session, _url(services, sweep), {"order_by": order_by}, status=400)
    assert f"order_by={order_by!r}" in body["error"]["message"]


# ---------------------------------------------------------------- grouped bands


async def test_groups_by_tag_are_mean_and_min_max_of_every_point(
    sweep: Sweep, services: Settings, session: aiohttp.ClientSession
) -> None:
    body = await _get(session, _url(services, sweep, "groups"),
                      {"name": "loss", "group_by": "tag:group", "max_points": "0"})
    assert body["metric"] == "loss" and body["group_by"] == "tag:group" and not body["truncated"]
    bands = {b["group"]: b for b in body["groups"]}
    assert set(bands) == {"a", "b"}
    for group, band in bands.items():
        members = [r["loss"] for r in sweep.runs if r["group"] == group]
        assert band["runs"] == len(members)
        assert band["steps"] == list(range(STEPS))
        for step in range(STEPS):
            at = [m[step] for m in members]
            assert band["min"][step] == min(at) and band["max"][step] == max(at)
            assert math.isclose(band["mean"][step], sum(at) / len(at))


async def test_groups_by_param_downsampled_and_filtered(
    sweep: Sweep, services: Settings, session: aiohttp.ClientSession
) -> None:
    body = await _get(session, _url(services, sweep, "groups"), {
        "name": "loss", "group_by": "param:seed", "max_points": "10", "filter": "params.alpha >= 0.2"})
    bands = {b["group"]: b for b in body["groups"]}
    assert set(bands) == {"10", "1", "2"}  # seed 2 with alpha 0.1 is filtered out, not its group
    kept = [r for r in sweep.runs if r["alpha"] >= 0.2]
    one = bands["1"]
    members = [r["loss"] for r in kept if r["seed"] == 1]
    assert len(one["steps"]) <= 10 and one["steps"][0] == 0
    # a bucket's band covers every point in it: its min/max are those of all of them
    edges = [*one["steps"], STEPS]
    for k in range(len(one["steps"])):
        points = [m[s] for m in members for s in range(edges[k], edges[k + 1])]
        assert one["min"][k] == min(points) and one["max"][k] == max(points)
        assert math.isclose(one["mean"][k], sum(points) / len(points))
    ungrouped = await _get(session, _url(services, sweep, "groups"), {"name": "mse"})
    assert [b["group"] for b in ungrouped["groups"]] == [None]
    assert ungrouped["groups"][0]["runs"] == len(sweep.runs)


@pytest.mark.parametrize(("params", "status", "needle"), [
    ({"group_by": "tag:group"}, 400, "invalid name=''"),
    ({"name": "loss", "group_by": "color"}, 400, "invalid group_by='color'"),
    ({"name": "loss", "max_points": "2"}, 400, "invalid max_points='2'"),
    ({"name": "loss", "limit": "1001"}, 400, "invalid limit='1001'"),
    ({"name": "loss", "filter": "metrics.loss <"}, 400, "position 14"),
])
async def test_groups_bad_parameters(
    sweep: Sweep, services: Settings, session: aiohttp.ClientSession, params: dict[str, str], status: int,
    needle: str,
) -> None:
    body = await _get(session, _url(services, sweep, "groups"), params, status=status)
    assert needle in body["error"]["message"]


async def test_groups_of_an_unknown_experiment_or_metric(services: Settings, session: aiohttp.ClientSession,
                                                          sweep: Sweep) -> None:
    await _get(session, f"{services.api_url}/api/experiments/{unique('nope')}/groups", {"name": "x"}, status=404)
    body = await _get(session, _url(services, sweep, "groups"), {"name": "never-logged"})
    assert body["groups"] == [] and body["runs"] == len(sweep.runs) + 1


# ---------------------------------------------------------------- CSV


async def _csv(session: aiohttp.ClientSession, url: str, params: Any = ()) -> tuple[list[list[str]], int, Any]:
    """The CSV's rows, how many chunks of the chunked body arrived, and the headers."""
    async with session.get(url, params=params) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/csv")
        assert resp.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in resp.headers
        chunks, body = 0, b""
        async for data, end_of_chunk in resp.content.iter_chunks():
            body += data
            chunks += end_of_chunk
        return list(csv.reader(io.StringIO(body.decode()))), chunks, resp.headers


async def test_runs_csv_is_the_filtered_table(sweep: Sweep, services: Settings, session: aiohttp.ClientSession) -> None:
    params = {"filter": "metrics.mse < 3300", "order_by": "metric:mse"}
    rows, _, headers = await _csv(session, _url(services, sweep, "runs.csv"), params)
    assert f'{sweep.experiment}-runs.csv' in headers["Content-Disposition"]
    header, *lines = rows
    page = await _get(session, _url(services, sweep), params)
    assert [line[0] for line in lines] == [r["run_id"] for r in page["runs"]]
    assert len(lines) == 3  # mse 3000, 3100, 3200
    assert header[:3] == ["run_id", "name", "experiment"]
    assert {"tags.group", "tags.seed", "params.alpha", "params.opt", "params.seed", "metrics.loss", "metrics.loss.min",
            "metrics.loss.max", "metrics.mse"} <= set(header)
    col = {name: i for i, name in enumerate(header)}
    for line, run in zip(lines, page["runs"], strict=True):
        assert float(line[col["metrics.mse"]]) == run["metrics"]["mse"]["last"]
        assert float(line[col["metrics.loss.min"]]) == run["metrics"]["loss"]["min"]
        assert float(line[col["params.alpha"]]) == run["properties"]["alpha"]
        assert line[col["tags.group"]] == run["tags"]["group"]
        assert line[col["status"]] == "completed"
    only, _, _ = await _csv(session, _url(services, sweep, "runs.csv"), {**params, "columns": "mse"})
    assert [h for h in only[0] if h.startswith("metrics.")] == ["metrics.mse", "metrics.mse.min", "metrics.mse.max"]


async def test_metric_csv_streams_every_point(sweep: Sweep, services: Settings, session: aiohttp.ClientSession) -> None:
    url = f"{services.api_url}/api/runs/{sweep.long_run}/metrics.csv"
    rows, chunks, _ = await _csv(session, url, {"name": "curve"})
    assert rows[0] == ["step", "time", "value"]
    assert [int(r[0]) for r in rows[1:]] == list(range(HISTORY))
    assert [float(r[2]) for r in rows[1:]] == [step / 7 for step in range(HISTORY)]
    assert rows[1][1].endswith("+00:00")
    assert chunks > 2  # header, then one chunk per cursor fetch: written as read, never as a whole


@pytest.mark.parametrize(("tail", "params", "status", "needle"), [
    ("metrics.csv", {}, 400, "invalid name=''"),
    ("metrics.csv", {"name": "nope"}, 404, "has no metric 'nope'"),
])
async def test_metric_csv_errors(sweep: Sweep, services: Settings, session: aiohttp.ClientSession, tail: str,
                                 params: dict[str, str], status: int, needle: str) -> None:
    body = await _get(session, f"{services.api_url}/api/runs/{sweep.long_run}/{tail}", params, status=status)
    assert needle in body["error"]["message"]


async def test_runs_csv_errors_are_json_before_streaming(sweep: Sweep, services: Settings,
                                                         session: aiohttp.ClientSession) -> None:
    body = await _get(session, _url(services, sweep, "runs.csv"), {"filter": "metrics.mse <"}, status=400)
    assert "position" in body["error"]["message"]
    await _get(session, f"{services.api_url}/api/experiments/{unique('nope')}/runs.csv", status=404)
    # an injection attempt is a value like any other: no rows, no 5xx
    rows, _, _ = await _csv(session, _url(services, sweep, "runs.csv"),
                            {"filter": "params.opt = \"x'; DROP TABLE runs; --\""})
    assert len(rows) == 1
