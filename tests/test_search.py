"""The run search language (query_api/search.py): parser and compiler on their own, then
``?filter=`` on runs logged through the SDK against the session's real services.

Malformed filters are a 400 whose message names the position (0-based character
offset) and the token; user text (names and values) never reaches the SQL text, so an
injection attempt is just a value that matches nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from runstream import Experiment, Workspace
from runstream.query_api import search
from runstream.query_api.errors import BadRequest
from runstream.query_api.search import And, Comparison, Field, Or
from tests.support.names import unique

# ---------------------------------------------------------------- the parser alone


def _cmp(kind: str, name: str, op: str, value: Any, pos: int, agg: str = "last", at: int = 0) -> Comparison:
    return Comparison(Field(kind, name, agg, at), op, value, pos)  # type: ignore[arg-type]


def test_and_binds_tighter_than_or_and_parentheses_regroup() -> None:
    text = 'metrics.mse < 3300 and params.alpha >= 0.2 or tags.team = "a"'
    assert search.parse(text) == Or((
        And((_cmp("metric", "mse", "<", Decimal("3300"), 14), _cmp("param", "alpha", ">=", Decimal("0.2"), 39, at=23))),
        _cmp("tag", "team", "=", "a", 58, at=46),
    ))
    grouped = search.parse('metrics.mse < 3300 and (params.alpha >= 0.2 or tags.team = "a")')
    assert isinstance(grouped, And) and isinstance(grouped.items[1], Or)


@pytest.mark.parametrize(("text", "field"), [
    ("metrics.`val loss` < 1", Field("metric", "val loss")),
    ("metrics.`val loss`.min < 1", Field("metric", "val loss", "min")),
    ("metrics.mse.MAX < 1", Field("metric", "mse", "max")),
    ("metrics.a.b < 1", Field("metric", "a.b")),  # MLflow: everything after the prefix is the name
    ("metrics.`loss.min` < 1", Field("metric", "loss.min")),
    ("metric.train/loss < 1", Field("metric", "train/loss")),
    ('params."my param" = "x"', Field("param", "my param")),
    ("tags.`mlflow.runName` = 'x'", Field("tag", "mlflow.runName")),
    ("attributes.run_name = 'x'", Field("attribute", "name")),
    ("attr.start_time > 0", Field("attribute", "start_time")),
    ("run.created > 0", Field("attribute", "start_time")),
    ("STATUS = 'x'", Field("attribute", "status")),
    ("duration < 3", Field("attribute", "duration")),
])
def test_fields(text: str, field: Field) -> None:
    parsed = search.parse(text)
    assert isinstance(parsed, Comparison)
    assert (parsed.field.kind, parsed.field.name, parsed.field.agg) == (field.kind, field.name, field.agg)


@pytest.mark.parametrize(("text", "op", "value"), [
    ("params.a = 'it''s'", None, None),  # two strings in a row: not SQL's doubled quote
    ("params.a = 'it\\'s'", "=", "it's"),
    ('params.a == "x"', "=", "x"),
    ("params.a <> -1.5e3", "!=", Decimal("-1.5e3")),
    ("params.a LIKE '%x%'", "like", "%x%"),
    ("params.a ILike '%x%'", "ilike", "%x%"),
    ("params.a IN ('x', 'y')", "in", ("x", "y")),
    ("params.a not in (1, 2.5)", "notin", (Decimal(1), Decimal("2.5"))),
    ("params.a >= .5", ">=", Decimal(".5")),
])
def test_operators_and_values(text: str, op: str | None, value: Any) -> None:
    if op is None:
        with pytest.raises(BadRequest, match=r"unexpected \"'s'\" at position 15"):
            search.parse(text)
        return
    parsed = search.parse(text)
    assert isinstance(parsed, Comparison) and (parsed.op, parsed.value) == (op, value)


MALFORMED = [
    ("metrics.mse < and x", "filter: unexpected 'and' at position 14; expected a value (a number or a quoted string)"),
    ("metrics.mse <", "filter: unexpected end of filter at position 13; expected a value (a number or a quoted string)"),
    ("(metrics.mse < 1", "filter: unexpected end of filter at position 16; expected 'and', 'or' or ')'"),
    ("metrics.mse < 1 or", "filter: unexpected end of filter at position 18; expected a field (metrics.<name>, "
     "params.<name>, tags.<key>, attributes.<name>) or '('"),
    ("metrics.mse < 1 tags.team = 'a'", "filter: unexpected 'tags.team' at position 16; expected 'and', 'or' or "
     "end of filter"),
    ("metrics.mse ~ 3", "filter: unexpected '~' at position 12"),
    ("metrics.mse 3", "filter: unexpected '3' at position 12; expected an operator (= != < <= > >= like ilike in, "
     "not in)"),
    ("tags.team not like 'a'", "filter: unexpected 'like' at position 14; expected 'in' after 'not'"),
    ("tags.team in 'a'", "filter: unexpected \"'a'\" at position 13; expected '(' and a list of values"),
    ("tags.team in ('a' 'b')", "filter: unexpected \"'b'\" at position 18; expected ',' or ')'"),
    ("tags.team = \"a", "filter: unterminated string '\"a' at position 12; close it with the same quote"),
    ("metrics.`val loss < 1", "filter: unterminated quoted name '`val loss < 1' at position 8; close it with "
     "the same quote"),
    ("metrics. < 1", "filter: expected a name after '.' at position 8"),
    ("foo = 1", "filter: unknown field 'foo' at position 0; expected metrics.<name>, params.<name>, tags.<key>, "
     "attributes.<name> or one of duration, end_time, experiment, name, run_id, start_time, status"),
    ("and = 1", "filter: unexpected 'and' at position 0; expected a field (metrics.<name>, params.<name>, "
     "tags.<key>, attributes.<name>) or '('"),
    ("x.y = 1", "filter: unknown field 'x.y' at position 0; 'x' is not metrics, params, tags or attributes"),
    ("attributes.colour = 'red'", "filter: unknown attribute 'attributes.colour' at position 0; expected one of "
     "duration, end_time, experiment, name, run_id, start_time, status"),
    ("metrics.mse like '3%'", "filter: unexpected like on metrics.mse at position 17; like/ilike take a quoted "
     "pattern and a text field (params, tags, status, name, run_id, experiment)"),
    ("metrics.mse = 'low'", "filter: unexpected string for metrics.mse at position 14; it compares with numbers"),
    ("params.a in (1, 'b')", "filter: unexpected mix of numbers and strings at position 12; a list holds one "
     "or the other"),
    ("start_time > 'yesterday'", "filter: invalid time 'yesterday' at position 13; expected ISO 8601 "
     "(2026-01-01T12:00:00Z) or epoch milliseconds in years 1..9999"),
    ("metrics.mse < 1e400", "filter: number out of range '1e400' at position 14; a value must fit a double"),
    ("start_time > 1e20", "filter: invalid time '1E+20' at position 13; expected ISO 8601 (2026-01-01T12:00:00Z) "
     "or epoch milliseconds in years 1..9999"),
    ("name = 'a\x00b'", "filter: unexpected '\\x00' at position 9; NUL and invalid UTF-8 cannot be searched for"),
    ("", "filter: unexpected end of filter at position 0; expected a field (metrics.<name>, params.<name>, "
     "tags.<key>, attributes.<name>) or '('"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_malformed_filters_name_position_and_token(text: str, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        search.parse(text)
    assert caught.value.message == message


def test_limits_bound_length_and_nesting() -> None:
    with pytest.raises(BadRequest, match="longer than 10000 characters"):
        search.parse("name = '" + "x" * 10_000 + "'")
    with pytest.raises(BadRequest, match="more than 50 nested parentheses at position 50"):
        search.parse("(" * 60 + "name = 'x'" + ")" * 60)
    assert search.parse("(" * 50 + "name = 'x'" + ")" * 50) == _cmp("attribute", "name", "=", "x", 57, at=50)


def test_compiled_sql_holds_no_user_text_and_numbers_its_parameters_from_the_start() -> None:
    evil = "x'; DROP TABLE runs; --"
    text = (f'tags.`{evil}` = "{evil}" or metrics.`{evil}`.min < 1 or params.`{evil}` in ("{evil}") '
            f'or name like "{evil}" and status = "KILLED"')
    sql, values = search.compile_filter(search.parse(text), 13)
    assert "DROP" not in sql and evil not in sql
    assert values == [evil, evil, evil, 1.0, evil, [evil], evil, "canceled"]
    assert [f"${n}" in sql for n in range(13, 13 + len(values))] == [True] * len(values)
    assert "$12" not in sql and f"${13 + len(values)}" not in sql


# ---------------------------------------------------------------- against the services


@dataclass
class Sweep:
    experiment: str
    other: str
    ids: dict[str, str]
    """Run name -> run id."""
    started_ms: int

    def names(self, runs: list[dict[str, Any]]) -> set[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return {by_id[r["run_id"]] for r in runs}


# name, properties, tag team, metrics, final status
RUNS: list[tuple[str, dict[str, Any], str | None, dict[str, list[float]], str]] = [
    ("ridge-0.1", {"alpha": 0.1}, "a", {"mse": [4000, 3500], "acc": [0.7]}, "completed"),
    ("ridge-0.2", {"alpha": 0.2}, "a", {"mse": [3400, 3200], "acc": [0.8]}, "completed"),
    ("ridge-0.3", {"alpha": 0.3}, "b", {"mse": [3100, 3250], "acc": [0.85]}, "completed"),
    ("lasso-0.4", {"alpha": 0.4}, "b", {"mse": [5000, 3000], "acc": [0.6]}, "failed"),
    ("Lasso-0.5", {"alpha": 0.5}, "c", {"mse": [2900]}, "canceled"),
    ("probe", {"alpha": "high"}, None, {"val loss": [1.5, 0.5], "mse": [float("nan")]}, "running"),
]


@pytest.fixture(scope="module")
def sweep(workspace: Workspace) -> Iterator[Sweep]:
    """Six runs in one experiment (one still running), and one run in another."""
    started_ms = int(time.time() * 1000) - 60_000  # the client's clock stamps started_at
    experiment, other = unique("search"), unique("search-other")
    runs = []
    for name, props, team, metrics, status in RUNS:
        run = Experiment(workspace, experiment).start_logging(name=name, **props)
        if team is not None:
            run.tag("team", team)
        for metric, values in metrics.items():
            for v in values:
                run.log(metric, v)
        {"completed": run.complete, "failed": run.fail, "canceled": run.cancel}.get(status, lambda: None)()
        runs.append(run)
    elsewhere = Experiment(workspace, other).start_logging(name="other", alpha=0.2)
    elsewhere.tag("team", "a")
    elsewhere.log("mse", 100)
    elsewhere.complete()
    live = runs[-1]
    for run in [*runs, elsewhere]:
        run.flush()
        workspace._api.get(f"/runs/{run.id}", min_seq=run._seq - 1, wait_ms=20_000)
    yield Sweep(experiment, other, {r.name: r.id for r in [*runs, elsewhere]}, started_ms)
    live.complete()
    live.flush()


async def _runs(session: aiohttp.ClientSession, url: str, params: dict[str, str], status: int = 200) -> Any:
    async with session.get(url, params=params) as resp:
        body = await resp.json()
        assert resp.status == status, body
        return body


RIDGES = {"ridge-0.1", "ridge-0.2", "ridge-0.3"}
ALL = {name for name, *_ in RUNS}

QUERIES: list[tuple[str, set[str]]] = [
    ("metrics.mse < 3300", {"ridge-0.2", "ridge-0.3", "lasso-0.4", "Lasso-0.5"}),
    # and binds tighter than or; parentheses regroup
    ('metrics.mse < 3200 and params.alpha >= 0.3 or tags.team = "a"', {"ridge-0.1", "ridge-0.2", "lasso-0.4",
                                                                        "Lasso-0.5"}),
    ('metrics.mse < 3200 and (params.alpha >= 0.3 or tags.team = "a")', {"lasso-0.4", "Lasso-0.5"}),
    ('tags.team = "a" or metrics.mse < 3200 and params.alpha >= 0.45', {"ridge-0.1", "ridge-0.2", "Lasso-0.5"}),
    ('(tags.team = "a" or metrics.mse < 3200) and params.alpha >= 0.45', {"Lasso-0.5"}),
    # summaries: last by default, .min, .max; NaN never matches
    ("metrics.mse.min < 3150", {"ridge-0.3", "lasso-0.4", "Lasso-0.5"}),
    ("metrics.mse.last < 3150", {"lasso-0.4", "Lasso-0.5"}),
    ("metrics.mse.max >= 4000", {"ridge-0.1", "lasso-0.4"}),
    ("metrics.mse > 0", ALL - {"probe"}),
    ("metrics.acc in (0.7, 0.8)", {"ridge-0.1", "ridge-0.2"}),
    ("metrics.acc not in (0.7, 0.8)", {"ridge-0.3", "lasso-0.4"}),  # runs without acc never match
    ("metrics.`val loss` < 1", {"probe"}),
    ("metrics.`val loss`.max = 1.5", {"probe"}),
    # like / ilike
    ('name like "ridge-%"', RIDGES),
    ('name ilike "LASSO%"', {"lasso-0.4", "Lasso-0.5"}),
    ('name like "lasso%"', {"lasso-0.4"}),
    ("tags.team like '_'", ALL - {"probe"}),
    # tags and params (properties): text and numbers, in / not in / != skip runs without the field
    ('tags.team in ("b", "c")', {"ridge-0.3", "lasso-0.4", "Lasso-0.5"}),
    ('tags.team != "a"', {"ridge-0.3", "lasso-0.4", "Lasso-0.5"}),
    ('tags.team not in ("a")', {"ridge-0.3", "lasso-0.4", "Lasso-0.5"}),
    ("params.alpha = 0.2", {"ridge-0.2"}),
    ("params.alpha = '0.2'", {"ridge-0.2"}),
    ("params.alpha > 0.25", {"ridge-0.3", "lasso-0.4", "Lasso-0.5"}),  # "high" is no number
    ("params.alpha in (0.1, 0.3)", {"ridge-0.1", "ridge-0.3"}),
    ("params.alpha = 'high'", {"probe"}),
    ("params.missing = 1 or params.missing != 1", set()),
    # attributes, bare and MLflow's names
    ("attributes.status = 'FINISHED'", RIDGES),
    ('status = "failed"', {"lasso-0.4"}),
    ("attributes.status IN ('KILLED', 'RUNNING')", {"Lasso-0.5", "probe"}),
    ('status != "completed"', {"lasso-0.4", "Lasso-0.5", "probe"}),
    ("attributes.run_name = 'probe'", {"probe"}),
    ("metrics.mse > 3300 AND params.alpha = '0.1'", {"ridge-0.1"}),
    ("duration >= 0", ALL - {"probe"}),
    ("attributes.end_time > 0", ALL - {"probe"}),
    ("start_time > {started_ms}", ALL),
    ("start_time < '2000-01-01T00:00:00Z'", set()),
    ("attributes.run_id = '{ridge-0.3}'", {"ridge-0.3"}),
]


@pytest.mark.parametrize(("text", "expected"), QUERIES, ids=[q for q, _ in QUERIES])
async def test_queries_select_the_expected_runs(
    sweep: Sweep, session: aiohttp.ClientSession, workspace: Workspace, text: str, expected: set[str]
) -> None:
    text = text.replace("{started_ms}", str(sweep.started_ms)).replace("{ridge-0.3}", sweep.ids["ridge-0.3"])
    url = f"{workspace.settings.api_url}/api/experiments/{sweep.experiment}/runs"
    page = await _runs(session, url, {"filter": text})
    assert sweep.names(page["runs"]) == expected
    assert page["total"] == len(expected)


async def test_filter_combines_with_the_other_parameters_ordering_and_paging(
    sweep: Sweep, session: aiohttp.ClientSession, workspace: Workspace
) -> None:
    url = f"{workspace.settings.api_url}/api/experiments/{sweep.experiment}/runs"
    base = {"filter": "metrics.mse < 3300", "order_by": "metric:mse", "order": "asc"}
    page = await _runs(session, url, {**base, "limit": "2"})
    assert [r["name"] for r in page["runs"]] == ["Lasso-0.5", "lasso-0.4"] and page["total"] == 4
    past_the_end = await _runs(session, url, {**base, "offset": "10"})  # the total from the count statement
    assert past_the_end == {"runs": [], "total": 4}
    with_status = await _runs(session, url, {**base, "status": "completed", "tag": "team:b"})
    assert [r["name"] for r in with_status["runs"]] == ["ridge-0.3"]


async def test_search_across_experiments(sweep: Sweep, session: aiohttp.ClientSession, workspace: Workspace) -> None:
    url = f"{workspace.settings.api_url}/api/runs"
    both = f"{sweep.experiment},{sweep.other}"
    page = await _runs(session, url, {"experiments": both, "filter": 'tags.team = "a"', "order_by": "name"})
    assert [r["name"] for r in page["runs"]] == ["other", "ridge-0.1", "ridge-0.2"]
    assert {r["experiment"] for r in page["runs"]} == {sweep.experiment, sweep.other}
    everywhere = await _runs(session, url, {"filter": f'experiment in ("{sweep.experiment}", "{sweep.other}") '
                                                      'and params.alpha = 0.2'})
    assert sweep.names(everywhere["runs"]) == {"ridge-0.2", "other"}
    one = await _runs(session, url, {"experiments": sweep.other})
    assert sweep.names(one["runs"]) == {"other"}
    missing = unique("nowhere")
    answer = await _runs(session, url, {"experiments": f"{sweep.other},{missing}"}, status=404)
    assert answer["error"]["message"] == f"experiment {missing!r} not found"


def test_the_sdk_passes_a_filter_through(sweep: Sweep, workspace: Workspace) -> None:
    runs = Experiment(workspace, sweep.experiment).get_runs(filter="metrics.mse < 3200")
    assert {r.name for r in runs} == {"Lasso-0.5", "lasso-0.4"}


# Over HTTP a NUL never reaches the parser: the hardening middleware refuses it in any
# query parameter first (query_api/hardening.py), naming the parameter.
OVER_HTTP = {"name = 'a\x00b'": "query parameter 'filter' contains a NUL character, which no name or value can contain"}


@pytest.mark.parametrize(("text", "message"), MALFORMED[:6] + MALFORMED[-4:-1])
async def test_malformed_filters_are_400_with_the_message(
    sweep: Sweep, session: aiohttp.ClientSession, workspace: Workspace, text: str, message: str
) -> None:
    for url in [f"{workspace.settings.api_url}/api/experiments/{sweep.experiment}/runs",
                f"{workspace.settings.api_url}/api/runs"]:
        answer = await _runs(session, url, {"filter": text}, status=400)
        assert answer["error"] == {"status": 400, "message": OVER_HTTP.get(text, message)}


INJECTIONS = [
    "tags.team = \"a'; DROP TABLE runs; --\"",
    "metrics.`x\"; drop table runs; --` = 1",
    "params.`alpha') OR 1=1 --` = 0.2",
    "name = \"probe\\\" or \\\"1\\\"=\\\"1\"",
    "tags.`team' OR '1'='1` like '%'",
    "run_id = '00000000-0000-0000-0000-000000000000'' OR ''1''=''1'",
    "params.alpha < -1e300 or duration > 1e300 or metrics.mse.min < -1e307 or tags.team = 1e-300",
    "name = 'caf\u00e9 \U0001f600' or tags.`\u00fc` in ('\u00fc')",
]


@pytest.mark.parametrize("text", INJECTIONS)
async def test_injection_attempts_match_nothing_and_leave_the_tables(
    sweep: Sweep, session: aiohttp.ClientSession, workspace: Workspace, db: Any, text: str
) -> None:
    url = f"{workspace.settings.api_url}/api/experiments/{sweep.experiment}/runs"
    async with session.get(url, params={"filter": text}) as resp:
        body = await resp.json()
        assert resp.status in (200, 400), body  # never a 5xx
    if resp.status == 200:
        assert body == {"runs": [], "total": 0}
    else:  # the last one is two strings in a row: a parse error, not SQL
        assert body["error"]["message"].startswith("filter: unexpected")
    assert db.execute("SELECT count(*) FROM runs WHERE experiment = %s", (sweep.experiment,)).fetchone()[0] == 6
    assert db.execute("SELECT to_regclass('tags') IS NOT NULL AND to_regclass('metric_summaries') IS NOT NULL"
                      ).fetchone()[0]
    listed = await _runs(session, url, {})
    assert listed["total"] == 6
