"""Request handlers: parse parameters, call one query function, answer with orjson.

Bad parameters raise :class:`BadRequest` naming the parameter and its value. Every
run-scoped handler validates ``run_id`` and honours ``min_seq``/``wait_ms``
(read-your-writes for the SDK): through :func:`run_scope`, or, for the reads kept in
the response cache (:mod:`query_api.cache`: a run's detail, metrics, vectors and
tables), through :func:`cached`, which answers from the cache when it can
(``X-Cache: hit``) and otherwise reads the database (``X-Cache: miss``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import typing
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple
from urllib.parse import quote

import asyncpg
from aiohttp import web

from runstream.processors.materialize import to_datetime
from runstream.query_api import asof, auth, openapi, queries, search
from runstream.query_api.cache import CACHE
from runstream.query_api.downsample import MIN_MAX_POINTS
from runstream.query_api.errors import BadRequest, NotFound, NotReady, json_response
from runstream.schemas.blobs import blob_path, is_sha256
from runstream.schemas.events import EVENT_TYPES, STATUSES
from runstream.settings import ServiceSettings

POOL = web.AppKey("pool", asyncpg.Pool)
"""The application's asyncpg pool (opened and closed by ``app.pg_pool``)."""
SETTINGS = web.AppKey("settings", ServiceSettings)
"""The settings the application was created with."""


def reader_url(settings: ServiceSettings) -> str:
    """The API's database URL: its read-only role's (``api_database_url``), else ``database_url``."""
    return settings.api_database_url or settings.database_url

MAX_LIMIT = 1000
MAX_POINTS_CAP = 100_000
MAX_WAIT_MS = 30_000
DEFAULT_WAIT_MS = 10_000
MAX_COMPARE_RUNS = 100
READY_TIMEOUT_S = 5.0
_METRIC_FILTER = re.compile(r"^(?P<name>.+?)(?P<op><=|>=|!=|==|<|>|=)(?P<value>[^<>=!]+)$", re.S)


# ---------------------------------------------------------------- parameters


def _bad(name: str, raw: str, expected: str) -> BadRequest:
    return BadRequest(f"invalid {name}={raw!r}: expected {expected}")


def parse_uuid(raw: str, name: str) -> uuid.UUID:
    """``raw`` as a UUID, or 400 naming the parameter."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise _bad(name, raw, "a UUID") from None


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    """Integer query parameter in ``[lo, hi]``, or 400."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        number = int(raw)
    except ValueError:
        number = lo - 1
    if not lo <= number <= hi:
        raise _bad(name, raw, f"an integer between {lo} and {hi}")
    return number


def query_optional_int(request: web.Request, name: str, lo: int, hi: int) -> int | None:
    """Like :func:`query_int`, ``None`` when absent."""
    return None if request.query.get(name, "") == "" else query_int(request, name, 0, lo, hi)


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    """``true``/``false`` (also 1/0, yes/no), or 400."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise _bad(name, raw, "true or false")


def query_list(request: web.Request, name: str, split_commas: bool = False) -> list[str]:
    """Every value of a repeatable parameter (optionally also comma-separated)."""
    values = request.query.getall(name, [])
    if split_commas:
        values = [v.strip() for raw in values for v in raw.split(",")]
    return [v for v in values if v != ""]


def _max_points(request: web.Request, default: int) -> int:
    points = query_int(request, "max_points", default, 0, MAX_POINTS_CAP)
    if 0 < points < MIN_MAX_POINTS:
        raise _bad("max_points", request.query["max_points"], f"0 (all) or {MIN_MAX_POINTS}..{MAX_POINTS_CAP}")
    return points


_EPOCH = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
# A "+" left unencoded in a query string arrives as a space: "...T12:00:00 02:00".
_SPACE_ZONE = re.compile(r"^(.*\d:\d\d(?::\d\d(?:[.,]\d+)?)?) (\d\d(?::?\d\d)?)$")
_AS_OF_TIME = "ISO 8601 with a zone (2026-01-01T12:00:00Z, ...+02:00) or seconds since the epoch"


def parse_time(raw: str, name: str) -> datetime:
    """An instant given as ISO 8601 with a zone or as epoch seconds, or 400 naming ``name``."""
    try:
        if _EPOCH.match(raw):
            seconds = float(raw)
            if not math.isfinite(seconds):
                raise ValueError(raw)
            return to_datetime(seconds)
        when = datetime.fromisoformat(_SPACE_ZONE.sub(r"\1+\2", raw))
    except (ValueError, OverflowError, OSError):
        raise _bad(name, raw, _AS_OF_TIME) from None
    if when.tzinfo is None:
        raise _bad(name, raw, f"{_AS_OF_TIME}; this one has no zone")
    return when


def as_of_point(request: web.Request) -> asof.AsOf | None:
    """The ``as_of_seq`` or ``as_of`` parameter (not both), or None for the live state."""
    seq = query_optional_int(request, "as_of_seq", 0, 2**63 - 1)
    raw = request.query.get("as_of", "")
    if seq is not None and raw:
        raise BadRequest(f"as_of_seq={request.query['as_of_seq']!r} and as_of={raw!r} exclude each other: give one")
    if seq is not None:
        return asof.AsOf(seq, None, f"as_of_seq={seq}")
    if raw:
        return asof.AsOf(None, parse_time(raw, "as_of"), f"as_of={raw!r}")
    return None


class Scope(NamedTuple):
    """A run-scoped request's run id and read-your-writes parameters."""

    run_id: uuid.UUID
    min_seq: int | None
    wait_ms: int


def scope_of(request: web.Request) -> Scope:
    """The path's run id and ``min_seq``/``wait_ms``, validated (no database access)."""
    return Scope(
        parse_uuid(request.match_info["run_id"], "run_id"),
        query_optional_int(request, "min_seq", 0, 2**63 - 1),
        query_int(request, "wait_ms", DEFAULT_WAIT_MS, 0, MAX_WAIT_MS),
    )


async def reached(request: web.Request, scope: Scope) -> int:
    """Once the run exists and has reached ``min_seq`` (if given): its ``last_seq`` then
    (told to the response cache: answers of the run from before it are stale)."""
    last_seq = await queries.wait_for_run(request.app[POOL], scope.run_id, scope.min_seq, scope.wait_ms,
                                          workspace(request))
    request.app[CACHE].observe(scope.run_id, last_seq)
    return last_seq


def workspace(request: web.Request) -> str:
    """The principal's workspace: the one string every query of the request is scoped by."""
    return auth.principal_of(request).workspace


async def run_scope(request: web.Request) -> uuid.UUID:
    """The path's run id, once the run exists and has reached ``min_seq`` (if given)."""
    scope = scope_of(request)
    await reached(request, scope)
    return scope.run_id


class Answer(NamedTuple):
    """What a cacheable read found: the JSON data, the run's ``last_seq`` it reflects at
    least, other runs whose events change it (with the ``last_seq`` it reflects of each,
    None if not known) and whether a new run can change it."""

    data: Any
    last_seq: int
    deps: Mapping[uuid.UUID, int | None] | None = None
    structural: bool = False


_NOT_IN_KEY = frozenset({"min_seq", "wait_ms"})


async def cached(request: web.Request, read: Callable[[Scope], Awaitable[Answer]]) -> web.Response:
    """Answer a run-scoped read from the response cache, or with ``read`` (then cache it).

    The key is the path and the query string without ``min_seq``/``wait_ms`` (in the
    order given): only answers that succeeded are cached, so a hit's other parameters
    were valid. ``read`` does everything else: waiting for the run, validating its own
    parameters, the queries. A request with ``Cache-Control: no-cache`` is read from the
    database (and its answer cached).
    """
    scope = scope_of(request)
    cache = request.app[CACHE]
    # The workspace is part of the key: an answer is only ever served to the workspace that read it.
    key = (workspace(request), request.path,
           tuple(item for item in request.query.items() if item[0] not in _NOT_IN_KEY))
    no_cache = "no-cache" in request.headers.get("Cache-Control", "").lower()
    entry = None if no_cache else cache.get(key, scope.min_seq)
    if entry is not None:
        return web.Response(body=entry.body, content_type="application/json", headers=_HIT)
    token = cache.token()  # before the first query: a commit after it refuses the answer
    answer = await read(scope)
    response = json_response(answer.data)
    body = typing.cast(bytes, response.body)  # json_response's body is the orjson bytes
    cache.put(token, key, body, scope.run_id, answer.last_seq, answer.deps, answer.structural)
    response.headers["X-Cache"] = "miss"
    return response


_HIT = {"X-Cache": "hit"}


def group_by_of(request: web.Request) -> tuple[str, str] | None:
    """``group_by=tag:<key>`` or ``param:<name>`` (absent: one group), or 400."""
    raw = request.query.get("group_by", "")
    if not raw:
        return None
    kind, colon, name = raw.partition(":")
    if not colon or not name or kind not in ("tag", "param"):
        raise _bad("group_by", raw, "tag:<key> or param:<name>")
    return kind, name


def run_filter(request: web.Request, experiments: list[str] | None = None,
               max_limit: int = MAX_LIMIT) -> queries.RunFilter:
    """Parse the filters, ordering and page of the runs listing: of the path's experiment,
    or of ``experiments`` (all when empty) for the search across experiments."""
    statuses = query_list(request, "status", split_commas=True)
    for s in statuses:
        if s not in STATUSES:
            raise _bad("status", s, f"one of {', '.join(sorted(STATUSES))}")
    tags = []
    for raw in query_list(request, "tag"):
        key, sep, val = raw.partition(":")
        if not key:
            raise _bad("tag", raw, "key or key:value")
        tags.append((key, val if sep else None))
    metrics = []
    for raw in query_list(request, "metric"):
        m = _METRIC_FILTER.match(raw)
        try:
            threshold = float(m["value"]) if m else None
        except ValueError:
            threshold = None
        if m is None or threshold is None:
            raise _bad("metric", raw, "<name><op><number> with op one of < <= > >= = !=")
        metrics.append((m["name"], "=" if m["op"] == "==" else m["op"], threshold))
    order_by, order_metric = request.query.get("order_by", "started_at"), None
    prefix, colon, key = order_by.partition(":")
    if colon and key and prefix in queries.ORDER_PREFIXES:
        order_by, order_metric = queries.ORDER_PREFIXES[prefix], key
    elif order_by not in queries.ORDER_FIELDS:
        raise _bad("order_by", order_by, "started_at, name, status, duration, metric:<name>, metric.min:<name>, "
                                         "metric.max:<name>, param:<name> or tag:<key>")
    order = request.query.get("order", "desc" if order_by == "started_at" else "asc")
    if order not in ("asc", "desc"):
        raise _bad("order", order, "asc or desc")
    parent_raw = request.query.get("parent")
    parent: str | uuid.UUID | None = None
    if parent_raw:
        parent = "none" if parent_raw == "none" else parse_uuid(parent_raw, "parent")
    return queries.RunFilter(
        experiments=[request.match_info["name"]] if experiments is None else experiments,
        statuses=statuses,
        parent=parent,
        tags=tags,
        metrics=metrics,
        order_by=order_by,
        order_metric=order_metric,
        order=order,
        limit=query_int(request, "limit", min(100, max_limit), 1, max_limit),
        offset=query_int(request, "offset", 0, 0, 2**62),
        columns=query_list(request, "columns"),
        search=search.parse(request.query["filter"]) if request.query.get("filter", "").strip() else None,
        workspace=workspace(request),
        lifecycle=_lifecycle(request),
    )


def _lifecycle(request: web.Request) -> str:
    """``deleted``: false (default: deleted runs left out), true (included) or only."""
    raw = request.query.get("deleted", "")
    if raw.lower() == "only":
        return "deleted"
    return "all" if query_bool(request, "deleted") else "active"


# ---------------------------------------------------------------- handlers


@auth.public
async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


@auth.public
async def ready(request: web.Request) -> web.Response:
    """Readiness: the database answers and is migrated."""
    try:
        ok = await asyncio.wait_for(queries.ready(request.app[POOL]), READY_TIMEOUT_S)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise NotReady(f"database unavailable ({type(exc).__name__})") from None
    if not ok:
        raise NotReady("database schema is not migrated (schema_migrations lacks version 1)")
    return json_response({"status": "ready"})


async def experiments(request: web.Request) -> web.Response:
    """All experiments with run count and last activity."""
    return json_response({"experiments": await queries.experiments(request.app[POOL], workspace(request))})


async def experiment_runs(request: web.Request) -> web.Response:
    """Runs of one experiment, filtered, ordered and paged."""
    return json_response(await queries.runs_page(request.app[POOL], run_filter(request)))


async def search_runs(request: web.Request) -> web.Response:
    """Runs of the ``experiments`` named (comma-separated or repeated; all if none),
    filtered (``filter``: :mod:`query_api.search`), ordered and paged."""
    experiments = query_list(request, "experiments", split_commas=True)
    return json_response(await queries.runs_page(request.app[POOL], run_filter(request, experiments)))


async def metric_groups(request: web.Request) -> web.Response:
    """A metric of the experiment's filtered runs grouped by a tag or param: per group, the
    mean and min–max band over steps, from every point (``name`` of the metric, ``group_by``,
    ``max_points``, the runs listing's filters; ``limit`` runs at most, newest first)."""
    metric = request.query.get("name", "")
    if not metric:
        raise _bad("name", metric, "the metric's name")
    f = run_filter(request, max_limit=queries.MAX_GROUP_RUNS)
    if "limit" not in request.query:
        f = dataclasses.replace(f, limit=queries.MAX_GROUP_RUNS)
    f = dataclasses.replace(f, columns=[metric])
    result = await queries.metric_groups(request.app[POOL], f, metric, group_by_of(request), _max_points(request, 1000))
    return json_response(result)


async def run(request: web.Request) -> web.Response:
    """One run: status, times, tags, summaries, children (cached); with ``as_of_seq`` or
    ``as_of``, as of that event or time (:mod:`query_api.asof`)."""

    async def read(scope: Scope) -> Answer:
        point = as_of_point(request)
        if point is not None:
            # last_seq: the run's live one (what the read reflects), as the cache expects.
            last_seq = await reached(request, scope)
            f = await asof.fold(request.app[POOL], scope.run_id, last_seq, point, columnar=True)
            children = await asof.children_of(request.app[POOL], f, workspace(request))
            detail = asof.detail(f, children)
            detail["dead_letters"] = await queries.dead_letters_up_to(request.app[POOL], scope.run_id, f.seq)
            return Answer(detail, last_seq, dict.fromkeys(children), structural=True)
        detail = await queries.run_detail(request.app[POOL], scope.run_id, workspace(request), scope.min_seq,
                                          scope.wait_ms)
        # It lists the children: their events and new children change it.
        return Answer(detail, detail["last_seq"], dict.fromkeys(detail["children"]), structural=True)

    return await cached(request, read)


async def run_metrics(request: web.Request) -> web.Response:
    """``get_metrics`` shapes for the run, or per run id of its tree with ``recursive`` (cached)."""

    async def read(scope: Scope) -> Answer:
        point = as_of_point(request)
        recursive = query_bool(request, "recursive")
        if point is not None and recursive:
            raise BadRequest(f"recursive=true cannot be combined with {point.param}: ask each run as of its own point")
        last_seq = await reached(request, scope)
        pool, names, run_id = request.app[POOL], query_list(request, "name"), scope.run_id
        if point is not None:
            f = await asof.fold(pool, run_id, last_seq, point, columnar=False)
            return Answer(asof.metrics(f, names), last_seq)
        if not recursive:
            return Answer((await queries.get_metrics(pool, [run_id], names))[run_id], last_seq)
        tree = await queries.run_tree(pool, run_id, workspace(request))
        by_run = await queries.get_metrics(pool, list(tree), names)
        data = {str(rid): metrics for rid, metrics in by_run.items()}
        return Answer(data, last_seq, tree, structural=True)  # descendants, new ones too, change it

    return await cached(request, read)


async def metric_vector(request: web.Request) -> web.Response:
    """One metric's vector over a step range, optionally downsampled (cached)."""

    async def read(scope: Scope) -> Answer:
        last_seq = await reached(request, scope)
        from_step = query_optional_int(request, "from_step", 0, 2**63 - 1)
        to_step = query_optional_int(request, "to_step", 0, 2**63 - 1)
        if from_step is not None and to_step is not None and from_step > to_step:
            raise _bad("to_step", request.query["to_step"], f"a step >= from_step={from_step}")
        vector = await queries.metric_vector(
            request.app[POOL], scope.run_id, request.match_info["name"], from_step, to_step,
            _max_points(request, 0),
        )
        return Answer(vector, last_seq)

    return await cached(request, read)


async def table(request: web.Request) -> web.Response:
    """A table metric as column lists (cached)."""

    async def read(scope: Scope) -> Answer:
        last_seq = await reached(request, scope)
        return Answer(await queries.table(request.app[POOL], scope.run_id, request.match_info["name"]), last_seq)

    return await cached(request, read)


async def files(request: web.Request) -> web.Response:
    """The run's files."""
    run_id = await run_scope(request)
    return json_response({"files": await queries.artifacts(request.app[POOL], run_id)})


INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"})
"""Types served inline (the UI shows them): raster images, which run no script. Everything
else, SVG included, is an attachment."""
_ACTIVE_TYPE = re.compile(r"html|xml|svg|script|xsl|multipart", re.I)
"""Declared types a browser might render as a document or run: served as octet-stream."""


def download_headers(path: str, declared_type: str) -> dict[str, str]:
    """``Content-Type`` and ``Content-Disposition`` of an artifact download: the user's bytes
    are never served as something a browser renders as a document (HTML, SVG, XML) and are an
    attachment unless a raster image; the name per RFC 6266 (``filename*`` in UTF-8, and an
    ASCII ``filename`` fallback with anything outside printable ASCII, quotes and
    backslashes replaced)."""
    name = path.rsplit("/", 1)[-1]
    base = declared_type.split(";", 1)[0].strip().lower()
    if base in INLINE_IMAGE_TYPES:
        disposition, content_type = "inline", base
    else:
        disposition = "attachment"
        plain = base and declared_type.isascii() and declared_type.isprintable() and not _ACTIVE_TYPE.search(declared_type)
        content_type = declared_type if plain else "application/octet-stream"
    ascii_name = re.sub(r'[^\x20-\x7e]|["\\%]', "_", name) or "download"
    return {
        "Content-Type": content_type,
        "Content-Disposition": f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}",
    }


async def file_download(request: web.Request) -> web.FileResponse:
    """One file's bytes from the content-addressed blob store (:func:`download_headers`)."""
    run_id = await run_scope(request)
    record = await queries.artifact(request.app[POOL], run_id, request.match_info["path"])
    sha = record["sha256"]
    if not is_sha256(sha) or not await asyncio.to_thread(blob_path(request.app[SETTINGS].blob_dir, sha).is_file):
        raise NotFound(f"the bytes of file {record['path']!r} (sha256 {sha}) are missing from the blob store")
    return web.FileResponse(
        blob_path(request.app[SETTINGS].blob_dir, sha),
        headers=download_headers(record["path"], record["content_type"] or ""),
    )


async def events(request: web.Request) -> web.Response:
    """The run's archived events, paginated by seq."""
    run_id = await run_scope(request)
    after_seq = query_int(request, "after_seq", -1, -1, 2**63 - 1)
    limit = query_int(request, "limit", 100, 1, MAX_LIMIT)
    return json_response(await queries.events_page(request.app[POOL], run_id, after_seq, limit))


async def history(request: web.Request) -> web.Response:
    """Who made each change to the run: its events as one-line entries, paginated by seq."""
    run_id = await run_scope(request)
    after_seq = query_int(request, "after_seq", -1, -1, 2**63 - 1)
    limit = query_int(request, "limit", 100, 1, MAX_LIMIT)
    types = query_list(request, "type", split_commas=True)
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise _bad("type", ",".join(unknown), f"event types ({', '.join(sorted(EVENT_TYPES))})")
    return json_response(await queries.history_page(request.app[POOL], run_id, after_seq, limit, types))


async def logs(request: web.Request) -> web.Response:
    """Captured output lines, paginated by (seq, idx)."""
    run_id = await run_scope(request)
    after_seq = query_int(request, "after_seq", -1, -1, 2**63 - 1)
    # Without after_idx, after_seq means "after every line of that event", as for /events.
    after_idx = query_int(request, "after_idx", 2**31 - 1, -1, 2**31 - 1)
    limit = query_int(request, "limit", 1000, 1, 10_000)
    return json_response(await queries.log_lines_page(request.app[POOL], run_id, after_seq, after_idx, limit))


async def compare(request: web.Request) -> web.Response:
    """Chosen metrics of many runs side by side."""
    raw_runs = query_list(request, "run", split_commas=True)
    if not raw_runs or len(raw_runs) > MAX_COMPARE_RUNS:
        raise _bad("run", ",".join(raw_runs), f"1..{MAX_COMPARE_RUNS} run ids")
    run_ids = list(dict.fromkeys(parse_uuid(r, "run") for r in raw_runs))
    result = await queries.compare(
        request.app[POOL],
        run_ids,
        query_list(request, "metric"),
        query_bool(request, "vectors"),
        _max_points(request, 1000),
        workspace(request),
    )
    return json_response(result)


@auth.public
async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of this API."""
    return json_response(openapi.document())
