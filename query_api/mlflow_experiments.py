"""MLflow's experiments API over runstream's experiments.

An experiment's **key** is the name its runs refer to (``runs.experiment``: the name it was
created with, by the SDK's first run or MLflow's create). Its MLflow id is derived from
the key (:func:`mlflow_shapes.experiment_id`; ``"0"`` is the experiment ``Default``), so
it needs no lookup table and survives a replay. Renames, deletes, restores and tags are
events of the experiment's own stream (``schemas.events.experiment_stream_id``) kept in
``experiment_meta``; a rename changes the name MLflow shows and finds, never the key.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from runstream.query_api import auth, queries, search
from runstream.query_api.errors import BadRequest, json_response
from runstream.query_api.handlers import POOL, workspace
from runstream.query_api.mlflow_shapes import (
    DEFAULT_EXPERIMENT,
    body,
    exists,
    experiment_id,
    experiment_json,
    integer,
    invalid,
    missing,
    page_offset,
    page_token,
    text,
)
from runstream.query_api.writes import WRITER, Draft
from runstream.schemas.events import experiment_stream_id

MAX_EXPERIMENTS_PER_PAGE = 50_000
VIEW_TYPES = {"ACTIVE_ONLY": "active", "DELETED_ONLY": "deleted", "ALL": "all"}


@dataclass(frozen=True)
class Experiment:
    key: str
    created_at: datetime | None
    display_name: str | None
    deleted_at: datetime | None
    tags: Mapping[str, str]
    updated_at: datetime | None

    @property
    def id(self) -> str:
        return experiment_id(self.key)

    @property
    def name(self) -> str:
        return self.display_name or self.key

    def json(self) -> dict[str, Any]:
        return experiment_json(self.key, self.created_at, self.display_name, self.deleted_at, self.tags,
                               self.updated_at)


async def all_experiments(request: web.Request) -> list[Experiment]:
    """Every experiment, ``Default`` included even before it has a run."""
    found = [Experiment(r["name"], r["created_at"], r["display_name"], r["deleted_at"], r["tags"], r["updated_at"])
             for r in await queries.mlflow_experiments(request.app[POOL], workspace(request))]
    if not any(e.key == DEFAULT_EXPERIMENT for e in found):
        found.insert(0, Experiment(DEFAULT_EXPERIMENT, None, None, None, {}, None))
    return found


async def by_id(request: web.Request, exp_id: str | None) -> Experiment:
    """The experiment with MLflow id ``exp_id``, or 404."""
    if exp_id is None:
        raise invalid("Missing value for required parameter 'experiment_id'.")
    for e in await all_experiments(request):
        if e.id == exp_id:
            return e
    raise missing(f"No Experiment with id={exp_id} exists")


def _named(experiments: list[Experiment], name: str) -> Experiment | None:
    """The experiment MLflow knows by ``name``; a key renamed away still blocks its name."""
    return next((e for e in experiments if e.name == name), None) or next(
        (e for e in experiments if e.key == name), None)


async def _write(request: web.Request, key: str, drafts: list[Draft]) -> None:
    stream = uuid.UUID(experiment_stream_id(key, workspace(request)))
    await request.app[WRITER].write(auth.principal_of(request), stream, drafts, experiment=key)


async def create(request: web.Request) -> web.Response:
    data = await body(request)
    name = text(data, "name")
    assert name is not None
    if len(name) > 255:
        raise invalid(f"Experiment name exceeds the maximum length of 255 characters: {len(name)}")
    if _named(await all_experiments(request), name) is not None:
        raise exists(f"Experiment '{name}' already exists.")
    tags = {t.get("key"): t.get("value", "") for t in data.get("tags") or [] if isinstance(t, dict)}
    await _write(request, name, [Draft("experiment.created", {"experiment": name, "tags": tags})])
    return json_response({"experiment_id": experiment_id(name)})


async def get(request: web.Request) -> web.Response:
    e = await by_id(request, text(await body(request), "experiment_id"))
    return json_response({"experiment": e.json()})


async def get_by_name(request: web.Request) -> web.Response:
    name = text(await body(request), "experiment_name")
    assert name is not None
    e = _named(await all_experiments(request), name)
    if e is None or (e.display_name and e.display_name != name):
        raise missing(f"Could not find experiment with name '{name}'")
    return json_response({"experiment": e.json()})


@auth.requires("read")  # a POST in MLflow's API, but it only reads
async def search_experiments(request: web.Request) -> web.Response:
    data = await body(request)
    view = VIEW_TYPES.get(text(data, "view_type", required=False) or "ACTIVE_ONLY")
    if view is None:
        raise invalid(f"Invalid view_type {data.get('view_type')!r}: expected ACTIVE_ONLY, DELETED_ONLY or ALL")
    limit = integer(data, "max_results", 1000, 1, MAX_EXPERIMENTS_PER_PAGE)
    assert limit is not None
    offset = page_offset(text(data, "page_token", required=False))
    found = [e for e in await all_experiments(request)
             if view == "all" or (view == "deleted") == (e.deleted_at is not None)]
    raw_filter = text(data, "filter", required=False)
    if raw_filter:
        try:
            expr = search.parse(raw_filter)
        except BadRequest as exc:
            raise invalid(exc.message) from None
        found = [e for e in found if _matches(expr, e)]
    orders = data.get("order_by") or []
    for clause in reversed(orders if isinstance(orders, list) else [orders]):
        key, descending = _order(clause)
        found.sort(key=key, reverse=descending)
    page = found[offset:offset + limit]
    out: dict[str, Any] = {"experiments": [e.json() for e in page]}
    if offset + limit < len(found):
        out["next_page_token"] = page_token(offset + limit)
    return json_response(out)


_ORDER_KEYS = {
    "name": lambda e: e.name, "experiment_id": lambda e: e.id,
    "creation_time": lambda e: e.created_at.timestamp() if e.created_at else 0.0,
    "last_update_time": lambda e: (e.updated_at or e.created_at).timestamp() if e.created_at else 0.0,
}


def _order(clause: Any) -> tuple[Any, bool]:
    parts = str(clause).split()
    field = parts[0].removeprefix("attributes.").removeprefix("attribute.") if parts else ""
    direction = parts[1].upper() if len(parts) > 1 else "ASC"
    if field not in _ORDER_KEYS or direction not in ("ASC", "DESC") or len(parts) > 2:
        raise invalid(f"Invalid order_by clause {clause!r}: expected one of {', '.join(_ORDER_KEYS)} [ASC|DESC]")
    return _ORDER_KEYS[field], direction == "DESC"


def _like(pattern: str, value: str, ignore_case: bool) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.S | (re.I if ignore_case else 0)) is not None


def _matches(expr: search.Expr, e: Experiment) -> bool:
    """Experiments filter: the run search language's grammar over ``name`` and ``tags.``."""
    if isinstance(expr, search.And):
        return all(_matches(i, e) for i in expr.items)
    if isinstance(expr, search.Or):
        return any(_matches(i, e) for i in expr.items)
    f = expr.field
    if f.kind == "attribute" and f.name == "name":
        actual: str | None = e.name
    elif f.kind == "tag":
        actual = e.tags.get(f.name)
    else:
        raise invalid(f"Invalid filter: experiments can be searched by name and tags, not {f.kind} {f.name!r}")
    if actual is None:
        return False
    values = [str(v) for v in (expr.value if isinstance(expr.value, tuple) else (expr.value,))]
    op = expr.op
    if op == "=":
        return actual == values[0]
    if op == "!=":
        return actual != values[0]
    if op in ("like", "ilike"):
        return _like(values[0], actual, op == "ilike")
    if op == "in":
        return actual in values
    if op == "notin":
        return actual not in values
    raise invalid(f"Invalid filter: operator {op!r} does not apply to strings")


async def update(request: web.Request) -> web.Response:
    data = await body(request)
    e = await by_id(request, text(data, "experiment_id"))
    new_name = text(data, "new_name")
    assert new_name is not None
    other = _named(await all_experiments(request), new_name)
    if other is not None and other.key != e.key:
        raise exists(f"Experiment '{new_name}' already exists.")
    await _write(request, e.key, [Draft("experiment.renamed", {"experiment": e.key, "name": new_name})])
    return json_response({})


async def _lifecycle(request: web.Request, deleted: bool) -> web.Response:
    e = await by_id(request, text(await body(request), "experiment_id"))
    if deleted and e.key == DEFAULT_EXPERIMENT:
        raise invalid("Cannot delete the default experiment '0'. This is an internally reserved experiment.")
    kind = "experiment.deleted" if deleted else "experiment.restored"
    await _write(request, e.key, [Draft(kind, {"experiment": e.key})])
    return json_response({})


async def delete(request: web.Request) -> web.Response:
    return await _lifecycle(request, True)


async def restore(request: web.Request) -> web.Response:
    return await _lifecycle(request, False)


async def set_tag(request: web.Request) -> web.Response:
    data = await body(request)
    e = await by_id(request, text(data, "experiment_id"))
    key = text(data, "key")
    value = text(data, "value", required=False, default="")
    await _write(request, e.key, [Draft("experiment.tag.set", {"experiment": e.key, "key": key, "value": value})])
    return json_response({})


ROUTES = [
    ("POST", "experiments/create", create),
    ("GET", "experiments/get", get),
    ("GET", "experiments/get-by-name", get_by_name),
    ("POST", "experiments/search", search_experiments),
    ("GET", "experiments/search", search_experiments),
    ("POST", "experiments/update", update),
    ("POST", "experiments/delete", delete),
    ("POST", "experiments/restore", restore),
    ("POST", "experiments/set-experiment-tag", set_tag),
]
"""(method, path under ``/api/2.0/mlflow/``, handler)."""
