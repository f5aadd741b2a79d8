"""Run management in runstream's own API: rename, tags, note, delete and restore.

``PATCH /api/runs/{run_id}`` with ``{"name": ..., "tags": {key: value | null}, "note":
... | null}`` (each optional; a null tag value removes the tag; the note is the tag
``mlflow.note.content``, MLflow's own, so both APIs and UIs show one note),
``POST /api/runs/{run_id}/delete`` and ``POST /api/runs/{run_id}/restore``. Each change is
an event the query API writes (:mod:`query_api.writes`: ``run.renamed``, ``tag.set``,
``tag.removed``, ``run.deleted``, ``run.restored``), so the run's history and as-of show
it; the answer is the run's detail once the change is materialized. A deleted run is
left out of the runs listings and search unless ``deleted=true`` (or ``only``) is asked.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web

from runstream.query_api import auth, queries
from runstream.query_api.errors import BadRequest, NotFound, json_response
from runstream.query_api.handlers import POOL, parse_uuid, workspace
from runstream.query_api.writes import WRITER, Draft
from runstream.schemas.events import NOTE_TAG

_FIELDS = frozenset({"name", "tags", "note"})


async def _existing(request: web.Request) -> uuid.UUID:
    run_id = parse_uuid(request.match_info["run_id"], "run_id")
    if await queries.run_state(request.app[POOL], run_id, workspace(request)) is None:
        raise NotFound(f"run {run_id} not found")
    return run_id


async def _detail(request: web.Request, run_id: uuid.UUID) -> web.Response:
    return json_response(await queries.run_detail(request.app[POOL], run_id, workspace(request)))


def drafts_of(change: Any) -> list[Draft]:
    """The events a PATCH body asks for, or 400 naming what is wrong with it."""
    if not isinstance(change, dict) or not change:
        raise BadRequest('body must be a JSON object with any of "name", "tags", "note"')
    unknown = sorted(set(change) - _FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}: expected name, tags, note")
    drafts = []
    if "name" in change:
        if not isinstance(change["name"], str):
            raise BadRequest(f"invalid name={change['name']!r}: expected a string")
        drafts.append(Draft("run.renamed", {"name": change["name"]}))
    tags = dict(change.get("tags") or {}) if isinstance(change.get("tags", {}), dict) else None
    if tags is None:
        raise BadRequest(f"invalid tags={change['tags']!r}: expected an object of key -> string or null")
    if "note" in change:
        tags[NOTE_TAG] = change["note"]
    for key, value in tags.items():
        if value is None:
            drafts.append(Draft("tag.removed", {"key": key}))
        elif isinstance(value, str):
            drafts.append(Draft("tag.set", {"key": key, "value": value}))
        else:
            raise BadRequest(f"invalid value of tag {key!r}: {value!r}; expected a string or null")
    return drafts


async def patch_run(request: web.Request) -> web.Response:
    """Rename the run, set or remove tags, set or clear its note."""
    run_id = await _existing(request)
    try:
        change = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    await request.app[WRITER].write(auth.principal_of(request), run_id, drafts_of(change))
    return await _detail(request, run_id)


async def delete_run(request: web.Request) -> web.Response:
    """Hide the run from listings and search (restorable)."""
    run_id = await _existing(request)
    await request.app[WRITER].write(auth.principal_of(request), run_id, [Draft("run.deleted", {})])
    return await _detail(request, run_id)


async def restore_run(request: web.Request) -> web.Response:
    """Show a deleted run again."""
    run_id = await _existing(request)
    await request.app[WRITER].write(auth.principal_of(request), run_id, [Draft("run.restored", {})])
    return await _detail(request, run_id)


ROUTES = [
    ("PATCH", "/api/runs/{run_id}", patch_run, "run_patch"),
    ("POST", "/api/runs/{run_id}/delete", delete_run, "run_delete"),
    ("POST", "/api/runs/{run_id}/restore", restore_run, "run_restore"),
]
"""The write routes (method, path, handler, name); each needs the ``write`` scope."""


def setup(app: web.Application) -> None:
    for method, path, handler, name in ROUTES:
        app.router.add_route(method, path, handler, name=name)
