"""Offline runs: events written to a local spool, uploaded later by ``runstream sync``.

Layout of a spool directory (``settings.spool_dir`` by default), one folder per run::

    <spool>/<run_id>/events.jsonl   every event of the run, encoded once, one per line, in seq order
    <spool>/<run_id>/blobs/...      the bytes of its artifacts (content-addressed, like the blob store)
    <spool>/<run_id>/synced.json    {"offset": <bytes of events.jsonl acknowledged>, "events": <count>}

An event is encoded (event_id, seq, ts and all) when it is spooled and sent later byte for
byte, so re-sending one is a duplicate the processors drop (their archive key is
(run_id, seq, ts)). ``synced.json`` is replaced atomically after each acknowledged batch,
so a second sync sends nothing, and a sync interrupted between acknowledgement and record
re-sends only identical bytes. A run folder is self-contained: it can be copied to
another machine and synced there with ``runstream sync PATH``.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import aiohttp
import orjson

from runstream.blobstore import LocalBlobStore
from runstream.errors import DeliveryError, RunstreamError
from runstream.schemas import events as ev
from runstream.schemas.blobs import blob_path
from runstream.sender import FLUSH, encode_items
from runstream.settings import ClientSettings
from runstream.transport import is_outage

if TYPE_CHECKING:
    from runstream.run import Run
    from runstream.sinks import Sink

__all__ = ["SpoolSink", "SyncReport", "sync", "EVENTS_FILE", "SYNCED_FILE"]

EVENTS_FILE = "events.jsonl"
SYNCED_FILE = "synced.json"
BLOBS_DIR = "blobs"
LINGER_S = 0.2
"""How long the spool writer waits for more calls to fold into one event."""
SYNC_BATCH = 5_000
"""Events sent (and recorded as synced) per batch by ``runstream sync``."""


class SpoolSink:
    """Writes runs' events to ``<spool>/<run_id>/events.jsonl`` from a background thread."""

    online = False

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._queue: collections.deque[tuple[Any, tuple[Any, ...]]] = collections.deque()
        self._wake = threading.Event()
        self._urgent = threading.Event()  # a flush is waiting: cut the linger short
        self._files: dict[str, BinaryIO] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="runstream-spool", daemon=True)
        self._thread.start()

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    # ---- Sink -------------------------------------------------------------------
    def put(self, run: Run, item: tuple[Any, ...]) -> None:
        self._queue.append((run, item))
        self._wake.set()

    def flush(self, timeout: float | None = None) -> None:
        """Return when everything queued so far is written and fsynced."""
        done = threading.Event()
        self._queue.append((None, (FLUSH, done)))
        self._urgent.set()
        self._wake.set()
        if not done.wait(timeout):
            raise DeliveryError(f"spool {self.root} not written within {timeout} s")
        if self._error is not None:
            raise DeliveryError(f"writing the spool {self.root} failed: {self._error}") from self._error

    def store_blob(self, run: Run, stream: BinaryIO) -> tuple[str, int]:
        return LocalBlobStore(self.run_dir(run.id) / BLOBS_DIR).put_stream(stream)

    def status(self, run: Run, payload: dict[str, Any]) -> None:
        run._event("run.status", payload)

    def child_sink(self) -> Sink:
        return self

    # ---- the writer thread ------------------------------------------------------
    def _main(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._urgent.wait(LINGER_S)  # let a burst of calls fold into one event
            self._urgent.clear()
            drained = [self._queue.popleft() for _ in range(len(self._queue))]
            items = [(run, item) for run, item in drained if item[0] != FLUSH]
            try:
                for run_id, data in encode_items(items):
                    self._file(run_id).write(data + b"\n")
                for f in self._files.values():
                    f.flush()
                if len(items) != len(drained):
                    for f in self._files.values():
                        os.fsync(f.fileno())
            except Exception as exc:  # reported by the next flush
                self._error = exc
            for _, item in drained:
                if item[0] == FLUSH:
                    item[1].set()

    def _file(self, run_id: str) -> BinaryIO:
        f = self._files.get(run_id)
        if f is None:
            directory = self.run_dir(run_id)
            directory.mkdir(parents=True, exist_ok=True)
            f = self._files[run_id] = open(directory / EVENTS_FILE, "ab")
        return f


# ---- runstream sync ---------------------------------------------------------------


@dataclass
class SyncReport:
    """What one ``sync`` did."""

    runs: list[str] = field(default_factory=list)
    """Run folders looked at."""
    sent: int = 0
    """Events sent (and acknowledged) now."""
    already: int = 0
    """Events a previous sync had sent."""
    blobs: int = 0
    """Artifacts uploaded now."""


def run_dirs(path: Path) -> list[Path]:
    """The run folders at ``path``: the folder itself if it is one, else its run subfolders
    (sorted by name: run ids are UUIDv7, so parents come before their children)."""
    if (path / EVENTS_FILE).is_file():
        return [path]
    if not path.is_dir():
        raise RunstreamError(f"sync: {path} is not a spool directory (or a run folder in one)")
    return sorted(d for d in path.iterdir() if (d / EVENTS_FILE).is_file())


def sync(settings: ClientSettings, path: str | os.PathLike[str] | None = None) -> SyncReport:
    """Upload spooled runs (all of ``settings.spool_dir``, or ``path``) in order, once."""
    root = Path(path) if path is not None else Path(settings.spool_dir)
    if path is None and not root.exists():
        return SyncReport()
    report = SyncReport()
    dirs = run_dirs(root)
    if dirs:
        try:
            asyncio.run(_sync(settings, dirs, report))
        except RunstreamError:
            raise
        except Exception as exc:
            if not is_outage(exc):
                raise
            where = settings.ingest_url if settings.transport == "http" else settings.kafka_bootstrap
            raise DeliveryError(f"the service at {where} is unreachable ({type(exc).__name__}: {exc}); "
                                f"{report.sent} event(s) were sent; run it again when it is back") from exc
    return report


async def _sync(settings: ClientSettings, dirs: list[Path], report: SyncReport) -> None:
    from runstream.transport import HttpTransport, KafkaTransport, Transport

    async with aiohttp.ClientSession(headers=settings.auth_headers()) as session:
        transport: Transport = (HttpTransport(settings, session) if settings.transport == "http"
                                else KafkaTransport(settings))
        await transport.start()
        try:
            for directory in dirs:
                report.runs.append(directory.name)
                with _locked(directory):
                    if not (directory / EVENTS_FILE).is_file():
                        continue  # a running sender delivered it to its end and removed it meanwhile
                    await _sync_run(settings, session, transport, directory, report)
        finally:
            await transport.close()


async def _sync_run(settings: ClientSettings, session: aiohttp.ClientSession, transport: Any,
                    directory: Path, report: SyncReport) -> None:
    state = read_state(directory)
    report.already += state["events"]
    with open(directory / EVENTS_FILE, "rb") as f:
        f.seek(state["offset"])
        data = f.read()
    end = data.rfind(b"\n") + 1  # a line still being written is left for the next sync
    lines = data[:end].split(b"\n")[:-1]
    offset = state["offset"]
    for start in range(0, len(lines), SYNC_BATCH):
        batch = lines[start:start + SYNC_BATCH]
        decoded = [_decode(directory, state["events"] + start + i, line) for i, line in enumerate(batch)]
        for sha in dict.fromkeys(_blobs(decoded)):
            report.blobs += await _upload_blob(settings, session, directory, sha)
        await (await transport.send([(e.run_id, line) for e, line in zip(decoded, batch)]))
        offset += sum(len(line) + 1 for line in batch)
        state = {"offset": offset, "events": state["events"] + len(batch)}
        write_state(directory, state)
        report.sent += len(batch)


def _decode(directory: Path, index: int, line: bytes) -> ev.Event:
    try:
        return ev.decode(line)
    except ev.EventError as exc:
        raise RunstreamError(f"{directory / EVENTS_FILE}: event {index + 1} is not valid: {exc}") from None


def _blobs(events: list[ev.Event]) -> Iterator[str]:
    for e in events:
        if isinstance(e, ev.ArtifactRecorded):
            yield e.payload.sha256
        elif isinstance(e, ev.MetricImage):
            yield e.payload.artifact.sha256


async def _upload_blob(settings: ClientSettings, session: aiohttp.ClientSession, directory: Path, sha: str) -> int:
    """Put one spooled artifact where the query API reads it; 1 if it was uploaded."""
    source = blob_path(directory / BLOBS_DIR, sha)
    url = f"{settings.ingest_url.rstrip('/')}/api/v1/blobs/{sha}"
    if not source.is_file():
        # A sender's outbox holds only the bytes it could not store: the rest are in the store.
        if settings.transport != "http":
            stored = LocalBlobStore(settings.blob_dir).exists(sha)
        else:
            async with session.head(url) as resp:
                stored = resp.status == 200
        if stored:
            return 0
        raise RunstreamError(f"sync: {directory.name} refers to artifact bytes {sha} missing from {source.parent}")
    if settings.transport != "http":
        target = LocalBlobStore(settings.blob_dir)
        if target.exists(sha):
            return 0
        await asyncio.to_thread(target.put_file, source)
        return 1
    data = await asyncio.to_thread(source.read_bytes)
    async with session.put(url, data=data) as resp:
        if resp.status >= 500 or resp.status == 429:  # the gateway's trouble (or rate), not the bytes': retried
            raise ConnectionError(f"artifact upload: the gateway answered {resp.status}")
        if resp.status >= 400:
            raise RunstreamError(f"sync: artifact upload failed ({resp.status}): {await resp.text()}")
    return 1


def read_state(directory: Path) -> dict[str, int]:
    try:
        state = orjson.loads((directory / SYNCED_FILE).read_bytes())
        return {"offset": int(state["offset"]), "events": int(state["events"])}
    except FileNotFoundError:
        return {"offset": 0, "events": 0}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RunstreamError(f"sync: {directory / SYNCED_FILE} is unreadable ({exc}); "
                             "delete it to send the whole run again (duplicates are dropped)") from None


def write_state(directory: Path, state: dict[str, int]) -> None:
    tmp = directory / (SYNCED_FILE + ".tmp")
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(state))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / SYNCED_FILE)


class _locked:
    """An exclusive lock on a run folder, so two syncs never send it at once."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / ".sync.lock"

    def __enter__(self) -> None:
        try:
            self._fd: int | None = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o600)
        except FileNotFoundError:  # the folder is gone (a sender's outbox, delivered and removed)
            self._fd = None
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
