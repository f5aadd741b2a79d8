"""``Run``: the Azure ML-style logging surface. Every call becomes one or more events."""

from __future__ import annotations

import io
import logging
import math
import mimetypes
import os
import threading
import time
import traceback
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

import orjson
from uuid6 import uuid7

from runstream import checks, images
from runstream.api import decode_metric
from runstream.errors import ApiError, LimitError, RunstreamError
from runstream.schemas import limits
from runstream.schemas.events import NOTE_TAG, TERMINAL_STATUSES
from runstream.sender import EVENT, POINT, ROW
from runstream.sinks import Sink, WorkspaceSink

_MAX_VALUES = limits.MAX_VALUES_PER_METRIC  # read once: checked on every logged point

if TYPE_CHECKING:
    from runstream.experiment import Experiment
    from runstream.sysmetrics import SystemMetrics
    from runstream.workspace import Workspace

log = logging.getLogger("runstream.run")

"""The tag holding a run's note (MLflow's own, so both APIs and UIs show the same note)."""


class Run:
    """A run of an experiment. Create one with ``experiment.start_logging()``,
    ``experiment.submit(config)``, ``run.child_run()`` or ``Run.get_context()``;
    ``Run(experiment, run_id)`` opens an existing run for reading."""

    def __init__(self, experiment: Experiment, run_id: str, *, _writable: bool = False,
                 _parent: Run | None = None, _name: str | None = None, _sink: Sink | None = None) -> None:
        self.experiment = experiment
        self.id = str(run_id)
        self.name = _name
        self._parent = _parent
        self._writable = _writable
        self._ws = experiment.workspace
        self._sink: Sink = _sink if _sink is not None else WorkspaceSink(self._ws)
        self._seq = 0
        self._readable_seq = -1  # the last seq the query API confirmed materialized (Run._await_readable)
        self._steps: dict[str, int] = {}
        self._params: dict[str, str] = {}  # logged by this process (params are immutable)
        self._lock = threading.Lock()
        self._children: list[Run] = []
        self._pending: list[Future[None]] = []  # background image uploads
        self._ended = False
        self._system_metrics: SystemMetrics | None = None  # runstream.sysmetrics, stopped at the end
        self._final: str | None = None  # the terminal status sent; the server refuses any other after it
        self._files: dict[str, str] = {}  # path -> sha256 uploaded by this object (artifacts are immutable)

    # ---- lifecycle ---------------------------------------------------------------
    @classmethod
    def _start(cls, experiment: Experiment, *, name: str | None, parent: Run | None,
               kind: str, properties: dict[str, Any], sink: Sink | None = None,
               run_id: str | None = None) -> Run:
        if len(properties) > limits.MAX_PROPERTIES:
            raise LimitError(f"{len(properties)} properties; MAX_PROPERTIES={limits.MAX_PROPERTIES}")
        if name is not None:
            checks.name(name, "run name")
        props = {checks.name(k, "property name"): checks.scalar(v, f"property {k!r}") for k, v in properties.items()}
        run = cls(experiment, run_id or str(uuid7()), _writable=True, _parent=parent, _name=name, _sink=sink)
        payload: dict[str, Any] = {"experiment": experiment.name, "name": name, "kind": kind, "properties": props}
        if parent is not None:
            payload["parent_run_id"] = parent.id
        run._event("run.started", payload)
        return run

    @classmethod
    def get_context(cls, allow_offline: bool = True) -> Run:
        """Inside a script started by ``experiment.submit``: that submitted run. Anywhere
        else: this process's offline run, which writes its events to the local spool
        (``settings.spool_dir``) for ``runstream sync`` to upload later; with
        ``allow_offline=False`` that raises instead."""
        from runstream import context

        return context.get_context(allow_offline)

    def complete(self) -> None:
        """Mark the run completed and :meth:`flush`: when this returns, any process that
        opens the run (``Run.get``, ``Workspace.get_run``, ``Run(experiment, id)``) sees
        it completed with everything logged before."""
        self._status("completed")

    def fail(self, error_details: Any = None) -> None:
        """Mark the run failed (with the error's text) and :meth:`flush`."""
        self._status("failed", None if error_details is None else checks.storable(str(error_details)[-65_536:]))

    def cancel(self) -> None:
        """Mark the run canceled (a submitted run's ``cancel`` also stops its script) and :meth:`flush`."""
        self._status("canceled")

    @staticmethod
    def get(workspace: Workspace, run_id: str) -> Run:
        """Azure ML's ``Run.get``: open ``run_id`` for reading, whatever its experiment
        (asked of the query API); :class:`RunstreamError` if the API does not know it."""
        from runstream.experiment import Experiment

        try:
            detail = workspace._api.get(f"/runs/{run_id}")
        except ApiError as exc:
            raise RunstreamError(f"run {run_id!r}: {exc.message}") from exc
        return Run(Experiment(workspace, detail["experiment"]), detail["run_id"], _name=detail.get("name"))

    def _status(self, status: str, error: str | None = None) -> None:
        self._check_writable()
        if self._final is not None:  # a terminal status is final (processors.integrity, "status-final")
            if status != self._final:
                raise RunstreamError(f"run {self.id} is already {self._final}; a terminal status is final "
                                     f"and cannot become {status!r}")
            self.flush()  # the same status again changes nothing: nothing is sent
            return
        if self._system_metrics is not None and status in TERMINAL_STATUSES:
            self._system_metrics.stop()  # its last sample goes before the status
            self._system_metrics = None
        self._wait_pending()
        payload: dict[str, Any] = {"status": status}
        if error is not None:
            payload["error"] = error
        self._sink.status(self, payload)
        self._ended = status in TERMINAL_STATUSES
        self._final = status if self._ended else None
        self.flush()

    def flush(self, timeout: float | None = None) -> None:
        """Return when every event logged so far (by any run of this workspace) is acknowledged
        (for an offline run: written to the spool), and then, read-your-writes across
        processes, when the query API has materialized this run and its child runs up to
        their last event: any process that opens them sees everything logged before.

        That second wait is bounded by ``settings.materialize_timeout`` (10 s by default;
        0 skips it); if the API cannot be reached or is not there in time, this returns
        anyway with a warning. It is skipped when the events were not all delivered (an
        offline run; a sink whose ``flush`` returns False)."""
        if self._flush(timeout):
            self._await_readable()

    def _flush(self, timeout: float | None = None) -> bool:
        """Flush the sink (and a submitted script's own child runs'); False if a sink
        reports that some events were left undelivered (its ``flush`` returned False)."""
        self._wait_pending(timeout)
        delivered = self._sink.flush(timeout) is not False
        children = self._sink.child_sink()
        if children is not self._sink and self._children:  # a submitted script's own child runs
            delivered = children.flush(timeout) is not False and delivered
        return delivered

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._final is not None:  # ended inside the block (complete/fail/cancel): that is its status
            return
        if exc is None:
            self.complete()
        else:
            self.fail("".join(traceback.format_exception(exc_type, exc, tb)))

    # ---- logging -----------------------------------------------------------------
    def log(self, name: str, value: Any, description: str = "", step: int | None = None) -> None:
        """Log a number or string; logged again under the same name it becomes a vector."""
        self._check_writable()
        try:
            value = checks.scalar(value)
        except LimitError as exc:  # name the metric too (no cost on the path that passes)
            raise LimitError(f"run.log({name!r:.60}): {exc}") from None
        if description:
            description = checks.description(description) or ""
        with self._lock:
            s = self._next_step(checks.name(name), step, 1)
        self._sink.put(self, (POINT, name, s, value, time.time(), description or None))

    def log_list(self, name: str, value: Iterable[Any], description: str = "") -> None:
        """Log a whole vector at once (steps continue after what the name already has)."""
        self._check_writable()
        encoded = [checks.scalar(v, f"{name}[{i}]") for i, v in enumerate(value)]
        description = checks.description(description) or ""
        with self._lock:
            start = self._next_step(checks.name(name), None, len(encoded))
        now = time.time()
        for i in range(0, len(encoded), limits.MAX_POINTS_PER_EVENT):
            chunk = encoded[i:i + limits.MAX_POINTS_PER_EVENT]
            payload = {"name": name, "start_step": start + i, "values": chunk}
            if description:
                payload["description"] = description
            self._event("metric.list", payload, now, size=len(orjson.dumps(chunk)))

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        """Log one row of a multi-column metric; repeated calls build a table."""
        self._check_writable()
        row = checks.row(kwargs, f"row {name!r}")
        description = checks.description(description)
        with self._lock:
            self._next_step(checks.name(name), None, 1)
        size = len(orjson.dumps(row))
        self._check_size(size, f"row {name!r}")
        self._sink.put(self, (ROW, name, row, size, time.time(), description))

    def log_table(self, name: str, value: dict[str, Iterable[Any]], description: str = "") -> None:
        """Log a table given as ``{column: [values]}``."""
        self._check_writable()
        checks.name(name)
        if not isinstance(value, dict) or not value:
            raise LimitError(f"table {name!r} must be a non-empty dict of column lists")
        columns = {k: list(v) for k, v in value.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise LimitError(f"table {name!r}: columns have different lengths {sorted(lengths)}")
        (length,) = lengths
        checks.row({k: 0 for k in columns}, f"table {name!r}")
        encoded = {k: [checks.scalar(x, f"table {name!r} column {k!r}") for x in v] for k, v in columns.items()}
        description = checks.description(description) or ""
        with self._lock:
            self._next_step(name, None, max(length, 1))
        now = time.time()
        size = len(orjson.dumps(encoded))
        chunk_rows = max(1, min(limits.MAX_ROWS_PER_EVENT, (length * (limits.MAX_EVENT_BYTES // 2)) // max(size, 1)))
        for i in range(0, max(length, 1), chunk_rows):
            payload = {"name": name, "columns": {k: v[i:i + chunk_rows] for k, v in encoded.items()}}
            if description:
                payload["description"] = description
            self._event("metric.table", payload, now)

    def tag(self, key: str, value: Any = None) -> None:
        """Tag the run with a string key and an optional string value (tags are mutable)."""
        self._check_writable()
        text = "" if value is None else str(value)
        if len(text) > limits.MAX_STRING_VALUE_LENGTH:
            raise LimitError(f"tag {key!r} value is {len(text)} characters; MAX_STRING_VALUE_LENGTH={limits.MAX_STRING_VALUE_LENGTH}")
        key = checks.tag_key(key)
        self._event("tag.set", {"key": key, "value": checks.text(text, f"tag {key!r} value")})

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.tag(key, value)

    def remove_tag(self, key: str) -> None:
        self._check_writable()
        self._event("tag.removed", {"key": checks.tag_key(key)})

    def get_tags(self) -> dict[str, str]:
        return dict(self._read(f"/runs/{self.id}")["tags"])

    # ---- parameters and management -----------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        """Record the run's parameters (``str(value)`` each; MLflow's params, shown and
        searchable as ``params.<key>``). Parameters are immutable: a key logged again with
        another value raises ``ValueError`` (the same value is a no-op); across processes the
        first value logged is the one kept."""
        self._check_writable()
        if not params:
            return
        clean: dict[str, str] = {}
        for key, value in params.items():
            text = str(value)
            if not isinstance(key, str) or not 0 < len(key) <= limits.MAX_PARAM_KEY_LENGTH:
                raise LimitError(f"param key {key!r}: a string of 1..{limits.MAX_PARAM_KEY_LENGTH} characters")
            if len(text) > limits.MAX_PARAM_VALUE_LENGTH:
                raise LimitError(f"param {key!r} value is {len(text)} characters; "
                                 f"MAX_PARAM_VALUE_LENGTH={limits.MAX_PARAM_VALUE_LENGTH}")
            clean[checks.text(key, "param key")] = checks.text(text, f"param {key!r} value")
        with self._lock:
            for key, value in clean.items():
                if self._params.get(key, value) != value:
                    raise ValueError(f"param {key!r} was logged with value {self._params[key]!r}; params are "
                                     f"immutable, {value!r} is refused")
            clean = {k: v for k, v in clean.items() if k not in self._params}
            self._params.update(clean)
        items = list(clean.items())
        for i in range(0, len(items), limits.MAX_PARAMS_PER_EVENT):
            self._event("params.logged", {"params": dict(items[i:i + limits.MAX_PARAMS_PER_EVENT])})

    def get_params(self) -> dict[str, str]:
        return dict(self._read(f"/runs/{self.id}")["params"])

    @property
    def display_name(self) -> str | None:
        """The run's name (Azure ML's ``display_name``); setting it renames the run."""
        return self.name if self._writable else self.get_details()["name"]

    @display_name.setter
    def display_name(self, name: str) -> None:
        self.set_name(name)

    def set_name(self, name: str) -> None:
        """Rename the run (an event: its history and as-of show the old name before)."""
        self.name = self._manage("PATCH", "", {"name": checks.text(str(name), "run name")})["name"]

    @property
    def description(self) -> str | None:
        """The run's free-text note (the tag ``mlflow.note.content``); setting it replaces it."""
        return self.get_details()["tags"].get(NOTE_TAG)

    @description.setter
    def description(self, note: str | None) -> None:
        self._manage("PATCH", "", {"note": None if note is None else checks.text(str(note), "note")})

    def delete(self) -> None:
        """Hide the run from experiment listings and search (``restore()`` shows it again)."""
        self._manage("POST", "/delete")

    def restore(self) -> None:
        """Show a deleted run again."""
        self._manage("POST", "/restore")

    def _manage(self, method: str, suffix: str, body: Any = None) -> dict[str, Any]:
        """A run-management call of the query API (``PATCH /api/runs/{id}``, ``POST .../delete``
        ...): the server writes the event, so it works on any run, running or not; the
        answer is the run's detail once it is materialized."""
        self._wait_materialized()  # the run must exist on the server first
        try:
            return self._ws._api.send(method, f"/runs/{self.id}{suffix}", body)  # type: ignore[no-any-return]
        except ApiError as exc:
            raise RunstreamError(f"run {self.id}: {exc.message}") from exc

    # ---- files -------------------------------------------------------------------
    def upload_file(self, name: str, path_or_stream: str | os.PathLike[str] | BinaryIO | bytes) -> None:
        """Store a file (path, binary stream or bytes) under ``name`` in the run's artifacts.

        A run's files are immutable (as in Azure ML): the same name again with the same
        content is a no-op, with other content a :class:`RunstreamError` (the server refuses
        it too, whoever sends it)."""
        self._check_writable()
        path = checks.artifact_path(name)
        if isinstance(path_or_stream, (bytes, bytearray)):
            path_or_stream = io.BytesIO(path_or_stream)
        if isinstance(path_or_stream, (str, os.PathLike)):
            with open(path_or_stream, "rb") as f:
                sha, size = self._sink.store_blob(self, f)
        else:
            sha, size = self._sink.store_blob(self, path_or_stream)
        recorded = self._files.get(path)
        if recorded == sha:  # the same content again: nothing to record
            return
        if recorded is not None:
            raise RunstreamError(f"run {self.id} already has a file {path!r} (sha256 {recorded[:12]}…); a run's "
                                 "files are immutable: upload the new content under another name")
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        self._event("artifact.recorded", {"path": path, "sha256": sha, "size": size, "content_type": content_type})
        self._files[path] = sha

    def upload_folder(self, name: str, path: str | os.PathLike[str]) -> list[str]:
        """Upload every file below ``path`` as ``name/<relative path>``; return the names."""
        root = Path(path)
        if not root.is_dir():
            raise RunstreamError(f"upload_folder: {root} is not a directory")
        names = []
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            target = f"{name.rstrip('/')}/{file.relative_to(root).as_posix()}"
            self.upload_file(target, file)
            names.append(target)
        return names

    def log_image(self, name: str, path: str | os.PathLike[str] | None = None, plot: Any = None,
                  description: str = "") -> None:
        """Log an image: a file (``path``) or a matplotlib Figure or the ``pyplot`` module
        (``plot``, rendered to PNG here). It is stored as an artifact under ``images/`` and
        ``get_metrics()[name]`` is its reference ``{"artifact": path, "sha256": ...}``.
        The upload runs in the background; ``flush``/``complete`` wait for it."""
        self._check_writable()
        checks.name(name, "image name")
        description = checks.description(description) or ""
        data, content_type, suffix = images.image_bytes(name, path, plot)
        checks.artifact_path(images.artifact_name(name, 0, suffix))  # before the step is taken
        with self._lock:
            step = self._next_step(name, None, 1)
        target = checks.artifact_path(images.artifact_name(name, step, suffix))
        payload: dict[str, Any] = {"name": name}
        if description:
            payload["description"] = description
        called_at = time.time()

        def store() -> None:
            sha, size = self._sink.store_blob(self, io.BytesIO(data))
            artifact = {"path": target, "sha256": sha, "size": size, "content_type": content_type}
            self._event("metric.image", {**payload, "artifact": artifact}, called_at)

        self._pending.append(images.uploader().submit(store))

    def get_file_names(self) -> list[str]:
        return [f["path"] for f in self._read(f"/runs/{self.id}/files")["files"]]

    def download_file(self, name: str, output_file_path: str | os.PathLike[str] | None = None) -> Path:
        """Download an artifact; returns where it was written (default: its basename here)."""
        self._wait_materialized()
        target = Path(output_file_path) if output_file_path is not None else Path(Path(name).name)
        if target.is_dir():
            target = target / Path(name).name
        # Each segment percent-encoded: a name may hold ?, # or % (they would end the path).
        segments = "/".join(quote(part, safe="") for part in checks.artifact_path(name).split("/"))
        self._ws._api.download(f"/runs/{self.id}/files/{segments}", target)
        return target

    # ---- reading -----------------------------------------------------------------
    def get_metrics(self, name: str | None = None, recursive: bool = False) -> dict[str, Any]:
        """Metrics in the seed's shapes: a scalar if logged once, a list if repeated or
        ``log_list``, ``{column: [values]}`` for rows and tables, a reference for images.
        With ``recursive=True``: ``{run_id: {name: value}}`` for this run and its children."""
        self._wait_materialized(recursive=recursive)
        data = self._ws._api.get(f"/runs/{self.id}/metrics", name=name, recursive=recursive, **self._seen())
        if recursive:
            return {rid: {k: decode_metric(v) for k, v in m.items()} for rid, m in data.items()}
        return {k: decode_metric(v) for k, v in data.items()}

    def get_details(self) -> dict[str, Any]:
        return self._read(f"/runs/{self.id}")  # type: ignore[no-any-return]

    def get_status(self) -> str:
        return str(self.get_details()["status"])

    def get_portal_url(self) -> str:
        """The run's page in the web UI (``settings.portal_url``, else the API's URL)."""
        base = self._ws.settings.portal_url or self._ws.settings.api_url
        return f"{base.rstrip('/')}/runs/{self.id}"

    def wait_for_completion(self, show_output: bool = False, wait_post_processing: bool = False,
                            raise_on_error: bool = True) -> dict[str, Any]:
        """Wait until the run ends (following its events live) and return ``get_details()``.
        ``show_output`` prints the script's output as it arrives; ``raise_on_error`` raises
        :class:`~runstream.progress.RunFailedError` if the run failed.
        (``wait_post_processing`` exists for Azure ML compatibility: there is none here.)"""
        from runstream import progress

        return progress.wait_for_completion(self, show_output=show_output, raise_on_error=raise_on_error)

    # ---- nesting -----------------------------------------------------------------
    def child_run(self, name: str | None = None, **properties: Any) -> Run:
        """Start a run nested under this one (same experiment); keyword arguments become properties."""
        self._check_writable()
        child = Run._start(self.experiment, name=name, parent=self, kind="child", properties=properties,
                           sink=self._sink.child_sink())
        self._children.append(child)
        return child

    def get_children(self) -> list[Run]:
        self._wait_materialized()
        runs = self._ws._api.get(f"/experiments/{quote(self.experiment.name, safe='')}/runs", parent=self.id, limit=1000)["runs"]
        local = {c.id: c for c in self._children}
        return [local.get(r["run_id"]) or Run(self.experiment, r["run_id"], _parent=self, _name=r.get("name"))
                for r in runs]

    @property
    def parent(self) -> Run | None:
        if self._parent is None and not self._writable:
            parent_id = self.get_details().get("parent_run_id")
            if parent_id:
                self._parent = Run(self.experiment, parent_id)
        return self._parent

    # ---- internals ---------------------------------------------------------------
    def _event(self, type_: str, payload: dict[str, Any], t: float | None = None, size: int = 0) -> None:
        if size:
            self._check_size(size, type_)
        self._sink.put(self, (EVENT, type_, payload, time.time() if t is None else t))

    def _next_seq(self) -> int:  # called by the sender thread only
        seq = self._seq
        self._seq += 1
        return seq

    def _next_step(self, name: str, step: Any, count: int) -> int:
        current = self._steps.get(name)
        if step is None and current is not None and current + count <= _MAX_VALUES:
            self._steps[name] = current + count  # the common call: no step given, a known name
            return current
        if current is None and len(self._steps) >= limits.MAX_METRIC_NAMES_PER_RUN:
            raise LimitError(f"run already has {len(self._steps)} metric names; MAX_METRIC_NAMES_PER_RUN="
                             f"{limits.MAX_METRIC_NAMES_PER_RUN}")
        first = (current or 0) if step is None else checks.step(step)
        if first + count > limits.MAX_VALUES_PER_METRIC:
            raise LimitError(f"metric {name!r} would hold more than MAX_VALUES_PER_METRIC="
                             f"{limits.MAX_VALUES_PER_METRIC} values")
        self._steps[name] = max(current or 0, first + count)
        return first

    @staticmethod
    def _check_size(size: int, what: str) -> None:
        if size > limits.MAX_EVENT_BYTES // 2:
            raise LimitError(f"{what} encodes to {size} bytes; one call may carry at most "
                             f"{limits.MAX_EVENT_BYTES // 2} (MAX_EVENT_BYTES={limits.MAX_EVENT_BYTES})")

    def _check_writable(self) -> None:
        if not self._writable:
            raise RunstreamError(f"run {self.id} was opened by id for reading; log from the process that started it")

    def _wait_pending(self, timeout: float | None = None) -> None:
        """Wait for this run's background uploads; raise the first one that failed."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result(timeout)

    def _wait_materialized(self, recursive: bool = False) -> None:
        """Flush, then wait until the API has materialized this run's events (read-your-writes)."""
        if not self._writable:
            return
        if not self._sink.online:
            raise RunstreamError(f"run {self.id} is offline: its events are in the local spool; upload them with "
                                 f"`runstream sync`, then read it as Run(experiment, {self.id!r})")
        self._flush()
        runs = [self] + (self._all_local_children() if recursive else [])
        for run in runs:
            if run._seq:
                run._read_raw(f"/runs/{run.id}", min_seq=run._seq - 1)

    def _await_readable(self) -> None:
        """After a flush: wait until the query API has materialized this run and its local
        child runs up to their last seq, within ``settings.materialize_timeout`` in all.
        Never raises: a wait that fails or runs out is reported by one warning."""
        bound = self._ws.settings.materialize_timeout
        if not self._sink.online or not bound > 0:
            return
        deadline = time.monotonic() + bound
        for run in (self, *self._all_local_children()):
            last = run._seq - 1  # everything the sender stamped is acknowledged by now
            if last <= run._readable_seq:  # nothing logged since its own complete()/flush() (or ever)
                continue
            try:
                self._ws._api.wait_for_seq(run.id, last, max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # unreachable, too slow, an error answer: never fail the caller
                _warn_not_readable(run, last, bound, exc)
                return
            run._readable_seq = last

    def _all_local_children(self) -> list[Run]:
        out = []
        for child in self._children:
            out.append(child)
            out.extend(child._all_local_children())
        return out

    def _read(self, path: str) -> Any:
        self._wait_materialized()
        return self._ws._api.get(path, **self._seen())

    def _seen(self) -> dict[str, int]:
        """``min_seq`` for a read after :meth:`_wait_materialized`: with several API workers
        (each with its own response cache) the next read may reach another one."""
        return {"min_seq": self._seq - 1} if self._writable and self._seq else {}

    def _read_raw(self, path: str, **params: Any) -> Any:
        try:
            return self._ws._api.get(path, **params)
        except ApiError as exc:
            raise RunstreamError(f"reading run {self.id}: {exc.message}") from exc

    def __repr__(self) -> str:
        return f"Run(experiment={self.experiment.name!r}, id={self.id!r}, name={self.name!r})"


WARN_EVERY_S = 60.0
"""Least time between two read-your-writes warnings of a process (a training loop that
flushes every epoch while the API is down is told once a minute, not every epoch)."""
_last_warning = -math.inf


def _warn_not_readable(run: Run, last_seq: int, bound: float, exc: Exception) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning < WARN_EVERY_S:
        return
    _last_warning = now
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    log.warning("runstream: run %s is delivered but the query API (%s) did not confirm it readable up to seq %d "
                "within materialize_timeout=%g s (%s); other processes may not see its last events yet",
                run.id, run._ws.settings.api_url, last_seq, bound, reason)
