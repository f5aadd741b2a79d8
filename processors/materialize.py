"""Events → rows. Pure functions, no I/O: what one batch of new events adds to each table.

The store (processors/store.py) writes what this module returns. Events must be given in
log order (per partition, which is per run); the projections keep the last value by seq.
With ``columnar=True`` long numeric series skip the per-point Python work: their rows
come back as binary COPY data (:mod:`processors.columnar`) instead of tuples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from runstream.processors import columnar as col
from runstream.schemas import events as ev
from runstream.schemas.events import NonFinite

KIND_FLOAT, KIND_INT, KIND_BOOL, KIND_STR = 0, 1, 2, 3
_UTC = UTC
EXACT_INT = 2**53
"""The largest magnitude below which float64 holds every int exactly."""
COLUMNAR_MIN_POINTS = 64
"""Shorter series take the per-point path: numpy's fixed cost per call outweighs it."""


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, _UTC)


def split_value(value: Any) -> tuple[float | None, str | None, int]:
    """A decoded event value as the (value, text, kind) columns of metric_points."""
    cls = value.__class__
    if cls is float:
        return value, None, KIND_FLOAT
    if cls is int:
        # float64 holds every int up to 2**53; beyond, text keeps the exact decimal (the
        # double stays for charts, ordering and min/max) and reads prefer it.
        return float(value), (None if -EXACT_INT <= value <= EXACT_INT else str(value)), KIND_INT
    if cls is bool:
        return (1.0 if value else 0.0), None, KIND_BOOL
    if cls is str:
        return None, value, KIND_STR
    if cls is NonFinite:
        return value.value, None, KIND_FLOAT
    raise TypeError(f"unexpected value {value!r}")


def cell_json(value: Any) -> Any:
    """A table cell or property in its stored JSON form (schemas.values encoding)."""
    cls = value.__class__
    if cls is float and not -1e16 < value < 1e16 and value - value == 0:
        # orjson writes 1e16 as "1e+16", which jsonb (numeric) reads back as the integer
        # 10000000000000000; its exact decimal with ".0" keeps it a float through jsonb.
        return orjson.Fragment(f"{int(value)}.0")
    if cls is NonFinite:
        return {"f": value.f}
    return value


@dataclass
class Summary:
    """Running per-(run, name) summary for one batch."""

    kind: str
    description: str | None = None
    count: int = 0
    last_seq: int = -1
    last_step: int | None = None
    last_value: float | None = None
    last_text: str | None = None
    last_kind: int | None = None
    min_value: float | None = None
    max_value: float | None = None

    def add_many(self, seq: int, c: col.Columnar, kind: int) -> None:
        """Fold in a whole numeric series (finite values, so min/max need no NaN test)."""
        self.count += c.count
        self.last_seq, self.last_step = seq, c.last_step
        self.last_value, self.last_text, self.last_kind = c.last_value, None, kind
        if self.min_value is None or c.min_value < self.min_value:
            self.min_value = c.min_value
        if self.max_value is None or c.max_value > self.max_value:
            self.max_value = c.max_value

    def add(self, seq: int, step: int | None, value: float | None, text: str | None, kind: int) -> None:
        self.count += 1
        self.last_seq, self.last_step = seq, step
        self.last_value, self.last_text, self.last_kind = value, text, kind
        if value is not None and kind != KIND_BOOL and not math.isnan(value):
            if self.min_value is None or value < self.min_value:
                self.min_value = value
            if self.max_value is None or value > self.max_value:
                self.max_value = value


@dataclass
class RunChange:
    """What a batch changes on one run's projection row."""

    last_seq: int = -1
    updated_ts: float = 0.0
    updated_at: datetime | None = None
    started: tuple[Any, ...] | None = None  # full runs row for run.started
    status: str | None = None
    error: str | None = None
    ended_at: datetime | None = None
    server_seq: int = -1
    """Highest seq of the batch at or above ``SERVER_SEQ_BASE`` (events the query API wrote
    for a run it does not number); ``last_seq`` stays the run's own numbering."""
    name: str | None = None
    renamed: bool = False
    deleted: bool | None = None
    """True: run.deleted is the batch's last lifecycle event; False: run.restored; None: neither."""
    deleted_at: datetime | None = None


@dataclass
class ExperimentChange:
    """What a batch's experiment events change on one experiment (``experiment_meta``)."""

    last_seq: int = -1
    updated_at: datetime | None = None
    display_name: str | None = None
    deleted: bool | None = None
    tags: dict[str, str] = field(default_factory=dict)


Rollup = list[Any]
"""[n, n_text, lo_value, lo_step, hi_value, hi_step] of one (run, name, shift, block)."""


def _value_key(value: float) -> tuple[int, float]:
    """PostgreSQL's float order: NaN above +Infinity (as query_api.downsample.value_key)."""
    return (1, 0.0) if value != value else (0, value)


@dataclass
class Materialized:
    points: list[tuple[Any, ...]] = field(default_factory=list)
    point_copy: list[bytes] = field(default_factory=list)
    """Binary COPY rows of metric_points from the columnar path (see processors.columnar)."""
    point_count: int = 0
    """Points in ``points`` and ``point_copy`` together."""
    rollups: dict[tuple[str, str, int, int], Rollup] = field(default_factory=dict)
    """Rollup blocks of the per-point path, merged point by point."""
    rollup_blocks: list[tuple[str, str, col.Blocks]] = field(default_factory=list)
    """Rollup blocks of the columnar path, as arrays (see :meth:`rollup_rows`)."""
    pending: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    """Points gathered per (run, name) while a batch is read: [steps, values, times, last seq]."""

    def pending_points(self, run_id: str, name: str) -> list[Any]:
        p = self.pending.get((run_id, name))
        if p is None:
            p = self.pending[(run_id, name)] = [[], [], [], -1]
        return p
    table_rows: list[tuple[Any, ...]] = field(default_factory=list)
    log_lines: list[tuple[Any, ...]] = field(default_factory=list)
    experiments: dict[tuple[str, str], datetime] = field(default_factory=dict)
    """(workspace, experiment name) -> the earliest run start seen."""
    runs: dict[str, RunChange] = field(default_factory=dict)
    tags: dict[tuple[str, str], tuple[str | None, datetime, bool]] = field(default_factory=dict)
    artifacts: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    summaries: dict[tuple[str, str], Summary] = field(default_factory=dict)
    params: dict[tuple[str, str], tuple[str, datetime]] = field(default_factory=dict)
    """(run, key) -> (value, time) of the first value logged in the batch (params are immutable)."""
    experiment_meta: dict[tuple[str, str], ExperimentChange] = field(default_factory=dict)

    def summary(self, run_id: str, name: str, kind: str, description: str | None) -> Summary:
        s = self.summaries.get((run_id, name))
        if s is None:
            s = self.summaries[(run_id, name)] = Summary(kind)
        if kind == "list" or s.kind != "list":
            s.kind = kind
        if description:
            s.description = description
        return s

    def roll(self, run_id: str, name: str, step: int, value: float | None) -> None:
        """Count one point into its rollup block at every level (value None: a string)."""
        rollups = self.rollups
        for shift in col.ROLLUP_SHIFTS:
            key = (run_id, name, shift, step >> shift)
            r = rollups.get(key)
            if r is None:
                rollups[key] = [1, 0, value, step, value, step] if value is not None else [1, 1, None, None, None, None]
                continue
            r[0] += 1
            if value is None:
                r[1] += 1
            elif r[2] is None:
                r[2:] = [value, step, value, step]
            else:
                k = _value_key(value)
                if (k, step) < (_value_key(r[2]), r[3]):
                    r[2], r[3] = value, step
                if (k, step) >= (_value_key(r[4]), r[5]):
                    r[4], r[5] = value, step

    def roll_blocks(self, run_id: str, name: str, blocks: list[col.Blocks]) -> None:
        """Keep a columnar series' rollup blocks as arrays: a (run, name) is rolled up once
        per batch (materialize gathers its points first), so its blocks are unique here."""
        self.rollup_blocks.extend((run_id, name, b) for b in blocks)

    def rollup_rows(self) -> list[list[Any]]:
        """Every rollup row as the ten columns (run_id, name, shift, block, n, n_text,
        lo_value, lo_step, hi_value, hi_step), each a list."""
        cols: list[list[Any]] = [[] for _ in range(10)]
        for key, r in self.rollups.items():
            for c, value in zip(cols, (*key, *r)):
                c.append(value)
        for run_id, name, b in self.rollup_blocks:
            n = len(b.block)
            cols[0].extend([run_id] * n)
            cols[1].extend([name] * n)
            cols[2].extend([b.shift] * n)
            cols[3].extend(b.block.tolist())
            cols[4].extend(b.n.tolist())
            cols[5].extend([0] * n)
            cols[6].extend(b.lo_value.tolist())
            cols[7].extend(b.lo_step.tolist())
            cols[8].extend(b.hi_value.tolist())
            cols[9].extend(b.hi_step.tolist())
        return cols

    def add_points(self, run_id: str, seq: int, name: str, summary: Summary, steps: Any, values: list[Any],
                   times: list[float] | float, columnar: bool) -> None:
        """One series of points: the columnar path if it applies, else point by point."""
        if columnar and len(values) >= COLUMNAR_MIN_POINTS and (num := col.numeric(values)) is not None:
            array, kind = num
            c = col.series(run_id, name, steps, times, array, kind)
            if c is not None:
                self.point_copy.append(c.copy_rows)
                self.point_count += c.count
                summary.add_many(seq, c, kind)
                if c.blocks is not None:
                    self.roll_blocks(run_id, name, c.blocks)
                else:
                    for step, value in zip(steps, array.tolist()):
                        self.roll(run_id, name, step, value)
                return
        points, roll = self.points, self.roll
        when = to_datetime(times) if isinstance(times, float) else None
        for i, (step, value) in enumerate(zip(steps, values)):
            v, text, kind = split_value(value)
            points.append((run_id, name, step, when or to_datetime(times[i]), v, text, kind))  # type: ignore[index]
            summary.add(seq, step, v, text, kind)
            roll(run_id, name, step, v)
        self.point_count += len(values)


def materialize(batch: list[ev.Event], *, columnar: bool = False) -> Materialized:
    """Rows and projection changes for ``batch`` (new events only, in log order).

    The points of one (run, metric) are gathered over the whole batch first (in log
    order) and turned into rows at the end, so that many small events make one long
    series. ``columnar``: long numeric series go to ``point_copy`` (binary COPY rows)
    instead of ``points`` (tuples); the summaries and rollups are the same either way."""
    out = Materialized()
    runs = out.runs
    for event in batch:
        run_id, cls = event.run_id, event.__class__
        change = runs.get(run_id)
        if change is None:
            change = runs[run_id] = RunChange()
        if event.seq >= ev.SERVER_SEQ_BASE:
            if event.seq > change.server_seq:
                change.server_seq = event.seq
        elif event.seq > change.last_seq:
            change.last_seq = event.seq
        change.updated_ts = event.ts
        if cls is ev.MetricPoints:
            _metric_points(out, event)  # type: ignore[arg-type]
        elif cls is ev.MetricList:
            _metric_list(out, event)  # type: ignore[arg-type]
        else:
            _APPLY[cls](out, event, to_datetime(event.ts), change)
    for change in runs.values():
        change.updated_at = to_datetime(change.updated_ts)
    for (run_id, name), (steps, values, times, seq) in out.pending.items():
        out.add_points(run_id, seq, name, out.summaries[(run_id, name)], steps, values, times, columnar)
    out.pending.clear()
    return out


def _run_started(out: Materialized, e: ev.RunStarted, when: datetime, change: RunChange) -> None:
    p = e.payload
    workspace = e.workspace or ev.DEFAULT_WORKSPACE
    first = out.experiments.get((workspace, p.experiment))
    if first is None or when < first:  # the earliest run start, whatever the partition order
        out.experiments[(workspace, p.experiment)] = when
    if change.started is not None:  # start-once (processors.integrity): the first start is the run's
        return
    props = orjson.dumps({k: cell_json(v) for k, v in p.properties.items()}).decode()
    change.started = (e.run_id, p.experiment, p.name, p.parent_run_id, p.kind, "running", props, when, workspace)


def _run_status(out: Materialized, e: ev.RunStatus, when: datetime, change: RunChange) -> None:
    if change.status in ev.TERMINAL_STATUSES:  # status-final (processors.integrity): nothing changes it
        return
    change.status = e.payload.status
    change.error = e.payload.error
    change.ended_at = None if e.payload.status == "running" else when


def _metric_points(out: Materialized, e: ev.MetricPoints) -> None:
    run_id, seq = e.run_id, e.seq
    for series in e.payload.series:
        out.summary(run_id, series.name, "scalar", series.description)
        steps, values, times, _ = out.pending_points(run_id, series.name)
        steps.extend(series.steps)
        values.extend(series.values)
        times.extend(series.times)
        out.pending[(run_id, series.name)][3] = seq


def _metric_list(out: Materialized, e: ev.MetricList) -> None:
    p = e.payload
    out.summary(e.run_id, p.name, "list", p.description)
    steps, values, times, _ = out.pending_points(e.run_id, p.name)
    steps.extend(range(p.start_step, p.start_step + len(p.values)))
    values.extend(p.values)
    times.extend([e.ts] * len(p.values))
    out.pending[(e.run_id, p.name)][3] = e.seq


def _add_rows(out: Materialized, e: ev.Event, name: str, rows: list[dict[str, Any]], description: str | None, when: datetime) -> None:
    summary = out.summary(e.run_id, name, "table", description)
    for idx, row in enumerate(rows):
        cells = orjson.dumps({k: cell_json(v) for k, v in row.items()}).decode()
        out.table_rows.append((e.run_id, name, e.seq, idx, when, cells))
        summary.add(e.seq, None, None, None, KIND_STR)


def _metric_rows(out: Materialized, e: ev.MetricRows, when: datetime, change: RunChange) -> None:
    _add_rows(out, e, e.payload.name, e.payload.rows, e.payload.description, when)


def _metric_table(out: Materialized, e: ev.MetricTable, when: datetime, change: RunChange) -> None:
    cols = e.payload.columns
    length = len(next(iter(cols.values()), []))
    rows = [{c: values[i] for c, values in cols.items()} for i in range(length)]
    if rows:
        _add_rows(out, e, e.payload.name, rows, e.payload.description, when)


def _artifact(out: Materialized, run_id: str, a: ev.ArtifactPayload, when: datetime) -> None:
    # artifact-immutable (processors.integrity): the first record of a path is the path's.
    out.artifacts.setdefault((run_id, a.path), (run_id, a.path, a.sha256, a.size, a.content_type, when))


def _metric_image(out: Materialized, e: ev.MetricImage, when: datetime, change: RunChange) -> None:
    p = e.payload
    _artifact(out, e.run_id, p.artifact, when)
    out.summary(e.run_id, p.name, "image", p.description).add(e.seq, None, None, p.artifact.path, KIND_STR)


def _artifact_recorded(out: Materialized, e: ev.ArtifactRecorded, when: datetime, change: RunChange) -> None:
    _artifact(out, e.run_id, e.payload, when)


def _tag_set(out: Materialized, e: ev.TagSet, when: datetime, change: RunChange) -> None:
    out.tags[(e.run_id, e.payload.key)] = (e.payload.value, when, False)


def _tag_removed(out: Materialized, e: ev.TagRemoved, when: datetime, change: RunChange) -> None:
    out.tags[(e.run_id, e.payload.key)] = (None, when, True)


def _log_lines(out: Materialized, e: ev.LogLines, when: datetime, change: RunChange) -> None:
    p = e.payload
    for idx, (line, t) in enumerate(zip(p.lines, p.times)):
        out.log_lines.append((e.run_id, e.seq, idx, to_datetime(t), p.stream, line))


def _params_logged(out: Materialized, e: ev.ParamsLogged, when: datetime, change: RunChange) -> None:
    params = out.params
    for key, value in e.payload.params.items():
        params.setdefault((e.run_id, key), (value, when))


def _run_renamed(out: Materialized, e: ev.RunRenamed, when: datetime, change: RunChange) -> None:
    change.name, change.renamed = e.payload.name, True


def _run_deleted(out: Materialized, e: ev.RunDeleted, when: datetime, change: RunChange) -> None:
    change.deleted, change.deleted_at = True, when


def _run_restored(out: Materialized, e: ev.RunRestored, when: datetime, change: RunChange) -> None:
    change.deleted, change.deleted_at = False, None


def _experiment(out: Materialized, e: Any, when: datetime) -> ExperimentChange:
    key = (e.workspace or ev.DEFAULT_WORKSPACE, e.payload.experiment)
    x = out.experiment_meta.get(key)
    if x is None:
        x = out.experiment_meta[key] = ExperimentChange()
    x.last_seq = max(x.last_seq, e.seq)
    x.updated_at = when if x.updated_at is None else max(x.updated_at, when)
    return x


def _experiment_created(out: Materialized, e: ev.ExperimentCreated, when: datetime, change: RunChange) -> None:
    p = e.payload
    key = (e.workspace or ev.DEFAULT_WORKSPACE, p.experiment)
    first = out.experiments.get(key)
    if first is None or when < first:
        out.experiments[key] = when
    _experiment(out, e, when).tags.update(p.tags)


def _experiment_renamed(out: Materialized, e: ev.ExperimentRenamed, when: datetime, change: RunChange) -> None:
    _experiment(out, e, when).display_name = e.payload.name


def _experiment_deleted(out: Materialized, e: ev.ExperimentDeleted, when: datetime, change: RunChange) -> None:
    _experiment(out, e, when).deleted = True


def _experiment_restored(out: Materialized, e: ev.ExperimentRestored, when: datetime, change: RunChange) -> None:
    _experiment(out, e, when).deleted = False


def _experiment_tag_set(out: Materialized, e: ev.ExperimentTagSet, when: datetime, change: RunChange) -> None:
    _experiment(out, e, when).tags[e.payload.key] = e.payload.value


_APPLY: dict[type, Any] = {
    ev.RunStarted: _run_started,
    ev.RunStatus: _run_status,
    ev.MetricPoints: None,  # gathered per (run, name) in materialize()
    ev.MetricList: None,
    ev.MetricRows: _metric_rows,
    ev.MetricTable: _metric_table,
    ev.MetricImage: _metric_image,
    ev.ArtifactRecorded: _artifact_recorded,
    ev.TagSet: _tag_set,
    ev.TagRemoved: _tag_removed,
    ev.LogLines: _log_lines,
    ev.ParamsLogged: _params_logged,
    ev.RunRenamed: _run_renamed,
    ev.RunDeleted: _run_deleted,
    ev.RunRestored: _run_restored,
    ev.ExperimentCreated: _experiment_created,
    ev.ExperimentRenamed: _experiment_renamed,
    ev.ExperimentDeleted: _experiment_deleted,
    ev.ExperimentRestored: _experiment_restored,
    ev.ExperimentTagSet: _experiment_tag_set,
}
assert set(_APPLY) == set(ev.EVENT_TYPES.values()), "every event type needs a materializer"
