"""Notebook widget: ``RunDetails(run).show()`` shows a run and updates it live.

Needs the ``notebook`` extra (``pip install 'runstream[notebook]'``: ipywidgets);
``import runstream`` does not. The widget follows the query API's live stream
(:func:`runstream.live.follow`) in a background thread, so it keeps updating while other
cells run. The azureml widget polls every 10-15 s; this one is pushed each event.

What it shows: the run's name, experiment and status (with the error of a failed run),
a table of metrics (last value, count, min/max and a small trend line of recent numeric
values), tags, files and the last lines of output. :class:`RunState` holds that state and
:meth:`RunState.apply` folds one event into it (pure, no widgets); :meth:`RunDetails.apply`
does the same and marks the widgets for an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from runstream.errors import RunstreamError
from runstream.live import follow
from runstream.schemas.events import TERMINAL_STATUSES
from runstream.schemas.values import decode

try:
    import ipywidgets as widgets
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("runstream.widgets needs ipywidgets: pip install 'runstream[notebook]'") from exc

if TYPE_CHECKING:
    from runstream.run import Run

__all__ = ["RunDetails", "RunState", "MetricState"]

MAX_LINES = 200
"""Output lines kept (and shown)."""
TREND_POINTS = 100
"""Recent numeric values kept per metric for its trend line."""
RENDER_INTERVAL_S = 0.2
"""Widgets are redrawn at most this often (a catch-up of thousands of events draws a few times)."""


@dataclass
class MetricState:
    """What the widget knows of one metric."""

    kind: str = "scalar"
    """scalar, list, table or image (as in the API's summaries)."""
    count: int = 0
    last: Any = None
    last_step: int | None = None
    min: float | None = None
    max: float | None = None
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=TREND_POINTS))

    def add(self, step: int | None, value: Any) -> None:
        value = decode(value)
        self.count += 1
        self.last, self.last_step = value, step
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
            if math.isfinite(number):
                self.recent.append(number)
            if not math.isnan(number):
                self.min = number if self.min is None else min(self.min, number)
                self.max = number if self.max is None else max(self.max, number)


@dataclass
class RunState:
    """A run as folded from its events, in seq order."""

    run_id: str
    name: str | None = None
    experiment: str | None = None
    status: str = "unknown"
    error: str | None = None
    last_seq: int = -1
    started_ts: float | None = None
    ended_ts: float | None = None
    metrics: dict[str, MetricState] = field(default_factory=dict)
    tags: dict[str, str | None] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    """path → size in bytes."""
    lines: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=MAX_LINES))
    """The last output lines as (stream, line)."""

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def metric(self, name: str, kind: str) -> MetricState:
        m = self.metrics.get(name)
        if m is None:
            m = self.metrics[name] = MetricState(kind=kind)
        elif kind == "list" or m.kind == "list":
            m.kind = "list"
        return m

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event (a JSON object as the live stream yields it) into the state."""
        if event["seq"] <= self.last_seq:
            return  # already applied (a replay after reconnecting)
        self.last_seq = event["seq"]
        handler = _HANDLERS.get(event["type"])
        if handler is not None:  # an event type newer than this client is skipped
            handler(self, event["payload"], event["ts"])


def _started(s: RunState, p: dict[str, Any], ts: float) -> None:
    s.name, s.experiment, s.started_ts = p.get("name"), p["experiment"], ts
    if s.status == "unknown":
        s.status = "running"


def _status(s: RunState, p: dict[str, Any], ts: float) -> None:
    s.status, s.error = p["status"], p.get("error")
    s.ended_ts = ts if s.finished else None


def _points(s: RunState, p: dict[str, Any], ts: float) -> None:
    for series in p["series"]:
        m = s.metric(series["name"], "scalar")
        for step, value in zip(series["steps"], series["values"]):
            m.add(step, value)


def _list(s: RunState, p: dict[str, Any], ts: float) -> None:
    m = s.metric(p["name"], "list")
    for i, value in enumerate(p["values"]):
        m.add(p["start_step"] + i, value)


def _rows(s: RunState, p: dict[str, Any], ts: float) -> None:
    m = s.metric(p["name"], "table")
    m.count += len(p["rows"])
    m.last = {k: decode(v) for k, v in p["rows"][-1].items()}


def _table(s: RunState, p: dict[str, Any], ts: float) -> None:
    m = s.metric(p["name"], "table")
    columns = p["columns"]
    rows = max((len(v) for v in columns.values()), default=0)
    m.count += rows
    if rows:
        m.last = {k: decode(v[-1]) for k, v in columns.items()}


def _image(s: RunState, p: dict[str, Any], ts: float) -> None:
    m = s.metric(p["name"], "image")
    m.count += 1
    m.last = p["artifact"]["path"]
    s.files[p["artifact"]["path"]] = p["artifact"]["size"]


def _tag_set(s: RunState, p: dict[str, Any], ts: float) -> None:
    s.tags[p["key"]] = p.get("value")


def _tag_removed(s: RunState, p: dict[str, Any], ts: float) -> None:
    s.tags.pop(p["key"], None)


def _artifact(s: RunState, p: dict[str, Any], ts: float) -> None:
    s.files[p["path"]] = p["size"]


def _log_lines(s: RunState, p: dict[str, Any], ts: float) -> None:
    s.lines.extend((p["stream"], line) for line in p["lines"])


_HANDLERS = {
    "run.started": _started,
    "run.status": _status,
    "metric.points": _points,
    "metric.list": _list,
    "metric.rows": _rows,
    "metric.table": _table,
    "metric.image": _image,
    "tag.set": _tag_set,
    "tag.removed": _tag_removed,
    "artifact.recorded": _artifact,
    "log.lines": _log_lines,
}


# ---------------------------------------------------------------- HTML


_STATUS_COLOURS = {"running": "#1f77b4", "completed": "#2ca02c", "failed": "#d62728", "canceled": "#7f7f7f"}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def sparkline(values: Iterable[float], width: int = 120, height: int = 24) -> str:
    """An inline SVG polyline of ``values`` (empty string for fewer than two)."""
    ys = list(values)
    if len(ys) < 2:
        return ""
    lo, hi = min(ys), max(ys)
    span = (hi - lo) or 1.0
    step = width / (len(ys) - 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (y - lo) / span * (height - 4):.1f}" for i, y in enumerate(ys))
    return (f'<svg width="{width}" height="{height}"><polyline fill="none" stroke="#1f77b4" '
            f'stroke-width="1.5" points="{points}"/></svg>')


def status_html(s: RunState) -> str:
    colour = _STATUS_COLOURS.get(s.status, "#444")
    title = html.escape(f"{s.experiment or '?'} / {s.name or s.run_id}")
    parts = [f"<b>{title}</b> <code>{html.escape(s.run_id)}</code> "
             f'<span style="color:{colour};font-weight:bold">{html.escape(s.status)}</span>']
    if s.started_ts is not None:
        end = s.ended_ts if s.ended_ts is not None else time.time()
        parts.append(f" <small>{max(0.0, end - s.started_ts):.1f} s</small>")
    if s.error:
        parts.append(f'<pre style="color:#d62728;max-height:8em;overflow:auto">{html.escape(s.error)}</pre>')
    if s.tags:
        tags = ", ".join(html.escape(k if v is None else f"{k}: {v}") for k, v in sorted(s.tags.items()))
        parts.append(f"<div><small>tags: {tags}</small></div>")
    return "".join(parts)


def metrics_html(s: RunState) -> str:
    if not s.metrics:
        return "<i>no metrics yet</i>"
    rows = []
    for name in sorted(s.metrics):
        m = s.metrics[name]
        cells = [name, m.kind, _fmt(m.last), str(m.count),
                 "" if m.min is None else _fmt(m.min), "" if m.max is None else _fmt(m.max)]
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        rows.append(f"<tr>{tds}<td>{sparkline(m.recent)}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("metric", "kind", "last", "count", "min", "max", "trend"))
    return f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def output_html(s: RunState) -> str:
    text = "\n".join(f"[{stream}] {line}" if stream == "stderr" else line for stream, line in s.lines)
    return f'<pre style="max-height:20em;overflow:auto;margin:0">{html.escape(text)}</pre>'


def files_html(s: RunState) -> str:
    return "<br>".join(f"{html.escape(p)} <small>({size} B)</small>" for p, size in sorted(s.files.items()))


# ---------------------------------------------------------------- widget


class RunDetails:
    """``RunDetails(run).show()``: a live view of ``run`` in a notebook."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.state = RunState(run_id=run.id, name=run.name, experiment=run.experiment.name)
        self.status = widgets.HTML()
        self.metrics = widgets.HTML()
        self.output = widgets.HTML()
        self.files = widgets.HTML()
        self.widget = widgets.VBox([
            self.status,
            self.metrics,
            widgets.Accordion(children=[self.output, self.files], titles=("Output", "Files")),
        ])
        self.error: BaseException | None = None
        """Why live updates stopped early, if they did."""
        self.done = threading.Event()
        """Set when the follower stops: the run ended, :meth:`stop` was called, or an error."""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self._rendered_at = 0.0
        self._render_pending = False
        self._stopping = False
        self.render()

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event into the state and redraw (at most every RENDER_INTERVAL_S)."""
        with self._lock:
            self.state.apply(event)
        now = time.monotonic()
        if now - self._rendered_at >= RENDER_INTERVAL_S:
            self.render()
        elif not self._render_pending and self._loop is not None:
            self._render_pending = True
            self._loop.call_later(RENDER_INTERVAL_S - (now - self._rendered_at), self.render)

    def render(self) -> None:
        """Write the state into the widgets."""
        with self._lock:
            self._render_pending = False
            self._rendered_at = time.monotonic()
            status = status_html(self.state)
            if self.error is not None:
                status += f'<div style="color:#d62728">live updates stopped: {html.escape(str(self.error))}</div>'
            self.status.value = status
            self.metrics.value = metrics_html(self.state)
            self.output.value = output_html(self.state)
            self.files.value = files_html(self.state) or "<i>no files</i>"

    def show(self) -> None:
        """Display the widget in the notebook and start following the run."""
        from IPython.display import display

        display(self.widget)  # type: ignore[no-untyped-call]
        self.start()

    def start(self) -> None:
        """Follow the run's live stream in a background thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name=f"runstream-widget-{self.run.id}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 10) -> None:
        """Stop following (the widget keeps what it shows)."""
        self._stopping = True
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not self.done.is_set():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to cancel
                loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the follower stops; False if ``timeout`` ran out first."""
        return self.done.wait(timeout)

    def _main(self) -> None:
        try:
            asyncio.run(self._follow())
        finally:
            self.done.set()

    async def _follow(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        if self._stopping:
            return
        ws = self.run.experiment.workspace
        headers = {"Authorization": f"Bearer {ws.token}"} if ws.token else None
        try:
            async with aiohttp.ClientSession(headers=headers) as session:
                async for event in follow(session, ws.settings.api_url, self.run.id, self.state.last_seq):
                    self.apply(event)
        except asyncio.CancelledError:
            pass
        except (RunstreamError, aiohttp.ClientError, OSError) as exc:
            self.error = exc
        finally:
            self.render()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """Showing a ``RunDetails`` as a cell's value shows its widget."""
        return self.widget._repr_mimebundle_(**kwargs)
