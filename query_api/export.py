"""CSV downloads, streamed: the (filtered, ordered) runs table of an experiment and one
metric's full history.

Rows come from a server-side cursor (:func:`queries.stream_rows`) a chunk at a time and
each chunk is written to a chunked :class:`aiohttp.web.StreamResponse` before the next is
fetched, so an export holds one chunk in memory however many rows it has. Errors found
before the first byte (bad parameters, unknown experiment/run/metric) are ordinary JSON
errors; a failure mid-stream ends the response early (the status is already sent).
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from runstream.query_api import queries
from runstream.query_api.errors import BadRequest
from runstream.query_api.handlers import POOL, query_list, run_filter, run_scope
from runstream.schemas.values import encode

RUN_FIELDS = ("run_id", "name", "experiment", "status", "kind", "parent_run_id", "started_at", "ended_at",
              "duration_s")
"""The first columns of the runs CSV; then ``tags.<key>``, ``params.<name>``, and per
metric ``metrics.<name>`` (last), ``metrics.<name>.min``, ``metrics.<name>.max``."""


def _cell(v: Any) -> Any:
    """A value as CSV text: floats in full precision (non-finite by name), times ISO 8601,
    lists and objects as JSON, None empty."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        e = encode(v)
        return e["f"] if isinstance(e, dict) else repr(v)
    if isinstance(v, datetime):
        return v.astimezone(UTC).isoformat()
    if isinstance(v, dict) and set(v) == {"f"}:  # a non-finite float in its JSON form
        return v["f"]
    if isinstance(v, (dict, list)):
        return orjson.dumps(v).decode()
    return v


def _csv(rows: Iterable[Iterable[Any]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([_cell(v) for v in row] for row in rows)
    return buf.getvalue().encode()


async def _open(request: web.Request, filename: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f"attachment; filename=\"{filename.encode('ascii', 'replace').decode()}\"; "
                               f"filename*=UTF-8''{quote(filename)}",
        "Cache-Control": "no-store",
    })
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100] or "export"


async def runs_csv(request: web.Request) -> web.StreamResponse:
    """``GET /api/experiments/{name}/runs.csv``: every run the runs listing would page
    through with the same parameters (``filter``, ``status``, ``tag``, ``metric``,
    ``parent``, ``order_by``/``order``; no paging), one row each. ``columns`` (repeatable)
    keeps only those metrics; tags and params are all included."""
    f = run_filter(request)
    keys, sql, args = await queries.runs_export(request.app[POOL], f)
    metrics = keys["metrics"]
    wanted = query_list(request, "columns")
    if wanted:
        metrics = [m for m in metrics if m in wanted]
    header = [*RUN_FIELDS, *(f"tags.{k}" for k in keys["tags"]), *(f"params.{k}" for k in keys["params"]),
              *(f"metrics.{m}{agg}" for m in metrics for agg in ("", ".min", ".max"))]
    response = await _open(request, f"{_safe(request.match_info['name'])}-runs.csv")
    await response.write(_csv([header]))
    async for chunk in queries.stream_rows(request.app[POOL], sql, *args):
        lines = []
        for r in chunk:
            run = queries.run_of(r)
            tags = dict(r["tags"])
            summaries = {s[0]: s for s in r["summaries"]}
            line: list[Any] = [run[field] for field in RUN_FIELDS]  # type: ignore[literal-required]
            line += [tags.get(k) for k in keys["tags"]]
            params = {**r["properties"], **dict(r["params"])}  # the projection's value wins
            line += [params.get(k) for k in keys["params"]]
            for m in metrics:
                s = summaries.get(m)
                line += [None, None, None] if s is None else [queries.value(s[3], s[1], s[2]), s[4], s[5]]
            lines.append(line)
        await response.write(_csv(lines))
    await response.write_eof()
    return response


async def metric_csv(request: web.Request) -> web.StreamResponse:
    """``GET /api/runs/{run_id}/metrics.csv?name=<metric>``: the metric's every point in
    step order as ``step,time,value`` (time ISO 8601 UTC)."""
    run_id: uuid.UUID = await run_scope(request)
    name = request.query.get("name", "")
    if not name:
        raise BadRequest("invalid name='': expected the metric's name (name=<metric>)")
    await queries.metric_history_check(request.app[POOL], run_id, name)
    response = await _open(request, f"{_safe(name)}-{run_id}.csv")
    await response.write(_csv([("step", "time", "value")]))
    async for chunk in queries.stream_rows(request.app[POOL], queries.METRIC_HISTORY, run_id, name):
        await response.write(_csv((r["step"], r["ts"], queries.value(r["kind"], r["value"], r["text"]))
                                  for r in chunk))
    await response.write_eof()
    return response
