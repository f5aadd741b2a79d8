"""A run's history for people: who made each change (the audit trail, issue 11 item 7).

``GET /api/runs/{run_id}/history`` lists the run's archived events by seq, each as one
entry: seq, type, time, the ``principal`` that wrote it (the token id the gateway stamped;
None on an unauthenticated stack) and a one-line summary made here. The summary quotes
user text (names, tag values, paths) with ``repr``, so control characters, ANSI escapes
and right-to-left overrides appear escaped; clients still display it as text, never markup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from runstream.schemas.events import NOTE_TAG

SUMMARY_MAX_CHARS = 200
"""A summary longer than this is cut (with an ellipsis): it is a line in a list."""

_NAMES_SHOWN = 3


def entry(seq: int, ts: Any, event_type: str, body: bytes) -> dict[str, Any]:
    """One history entry of an archived event (``ts``: the archive's timestamp)."""
    doc = orjson.loads(body)
    return {"seq": seq, "type": event_type, "ts": ts, "principal": doc.get("principal"),
            "summary": summary(event_type, doc.get("payload") or {})}


def summary(event_type: str, payload: dict[str, Any]) -> str:
    """What the event changed, in one line."""
    text = _SUMMARIES.get(event_type, lambda p: event_type)(payload)
    return text if len(text) <= SUMMARY_MAX_CHARS else text[:SUMMARY_MAX_CHARS - 1] + "…"


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    return shown + (f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else "")


def _started(p: dict[str, Any]) -> str:
    name = f" as {p['name']!r}" if p.get("name") else ""
    parent = f", child of {p['parent_run_id']}" if p.get("parent_run_id") else ""
    return f"started in experiment {p.get('experiment')!r}{name} ({p.get('kind', 'interactive')}{parent})"


def _status(p: dict[str, Any]) -> str:
    error = (p.get("error") or "").strip()
    return f"status {p.get('status')}" + (f": {_inert(error.splitlines()[0])}" if error else "")


def _inert(text: str) -> str:
    """``text`` with control, format (e.g. right-to-left override) and other unprintable
    characters written as escapes, as ``repr`` does for the quoted names."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _points(p: dict[str, Any]) -> str:
    series = p.get("series", [])
    count = sum(len(s.get("values", [])) for s in series)
    return f"{count} point{'s' * (count != 1)} of {_names([repr(s.get('name')) for s in series])}"


def _file(p: dict[str, Any]) -> str:
    return f"file {p.get('path')!r} ({p.get('size')} bytes, sha256 {str(p.get('sha256'))[:12]}…)"


def _rows(p: dict[str, Any]) -> str:
    count = len(p.get("rows", []))
    return f"{count} row{'s' * (count != 1)} of table {p.get('name')!r}"


def _table(p: dict[str, Any]) -> str:
    columns = p.get("columns", {})
    count = len(next(iter(columns.values()), []))
    return f"table {p.get('name')!r}: {count} row{'s' * (count != 1)} of {len(columns)} columns"


def _lines(p: dict[str, Any]) -> str:
    count = len(p.get("lines", []))
    return f"{count} {p.get('stream')} line{'s' * (count != 1)}"


_SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "run.started": _started,
    "run.status": _status,
    "metric.points": _points,
    "metric.list": lambda p: f"list {p.get('name')!r} of {len(p.get('values', []))} values",
    "metric.rows": _rows,
    "metric.table": _table,
    "metric.image": lambda p: f"image {p.get('name')!r}: {_file(p.get('artifact') or {})}",
    "tag.set": lambda p: f"note set to {p.get('value')!r}" if p.get("key") == NOTE_TAG
    else f"tag {p.get('key')!r} = {p.get('value')!r}" if p.get("value") is not None
    else f"tag {p.get('key')!r}",
    "tag.removed": lambda p: "note cleared" if p.get("key") == NOTE_TAG else f"tag {p.get('key')!r} removed",
    # run management (query_api/manage.py): the note is a tag, named as a note here
    "run.renamed": lambda p: f"renamed to {p.get('name')!r}",
    "run.deleted": lambda p: "deleted (hidden from the runs lists; restorable)",
    "run.restored": lambda p: "restored",
    "params.logged": lambda p: f"params {_names([repr(k) for k in p.get('params') or {}])}",
    "artifact.recorded": _file,
    "log.lines": _lines,
}
