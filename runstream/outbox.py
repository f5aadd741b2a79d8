"""The sender's disk outbox: events it could not keep in memory or could not deliver yet.

It is the offline spool's format (``runstream.spool``), so ``runstream sync`` delivers an
outbox left behind by a process that ended during an outage::

    <spool_dir>/<run_id>/events.jsonl   the run's undelivered events, encoded once, in seq order
    <spool_dir>/<run_id>/blobs/...      artifact bytes the gateway could not take yet
    <spool_dir>/<run_id>/synced.json    {"offset": <bytes delivered>, "events": <count>}

A run's folder is appended to only by the sender thread of the process that numbers the
run; the sender's drain and ``runstream sync`` both deliver it under the folder's lock
(``.sync.lock``) and advance ``synced.json`` after every acknowledged batch. Once a folder
is delivered to its end the drain deletes it, so the outbox holds only what is unsent.
Everything here runs on the sender's thread.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from runstream.blobstore import LocalBlobStore
from runstream.spool import BLOBS_DIR, EVENTS_FILE, SYNCED_FILE, read_state, write_state

DRAIN_BATCH_BYTES = 4 * 1024 * 1024
"""Most bytes of events the drain reads and sends in one batch (bounds its memory)."""
DRAIN_BATCH_EVENTS = 5_000
_BLOB_TYPES = (b'{"type":"artifact.recorded"', b'{"type":"metric.image"')


class RunOutbox:
    """One run's folder in the outbox, opened for appending."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.run_id = run_id
        self.dir = root / run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO = open(self.dir / EVENTS_FILE, "ab")
        self.size = self._file.tell()
        self.delivered_offset = read_state(self.dir)["offset"]
        self.dirty = False
        self.removed = False
        self.blobs_pending = 0
        """Artifact bytes stored here whose event is not appended yet (the folder must stay)."""
        self.parked: str | None = None
        """Why the sender stopped delivering this folder (it stays for ``runstream sync``)."""

    def append(self, data: bytes) -> None:
        self._file.write(data + b"\n")
        self.size += len(data) + 1
        self.dirty = True
        if self.blobs_pending and data.startswith(_BLOB_TYPES):
            self.blobs_pending -= 1

    def undelivered(self) -> int:
        """How many events in the folder are not delivered yet."""
        self.flush()
        try:
            with open(self.dir / EVENTS_FILE, "rb") as f:
                f.seek(read_state(self.dir)["offset"])
                return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except FileNotFoundError:
            return 0

    def flush(self, sync: bool = False) -> None:
        """Hand what was appended to the OS (it survives the process being killed);
        with ``sync``, to the disk (it survives the machine)."""
        if self.dirty:
            self._file.flush()
            self.dirty = False
        if sync:
            os.fsync(self._file.fileno())

    def lock(self) -> int | None:
        """The folder's sync lock without waiting (None if ``runstream sync`` holds it)."""
        fd = os.open(self.dir / ".sync.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def read_batch(self) -> tuple[list[bytes], dict[str, int]]:
        """The next undelivered events (whole lines only) and the delivered state before them."""
        self.flush()
        state = read_state(self.dir)
        with open(self.dir / EVENTS_FILE, "rb") as f:
            f.seek(state["offset"])
            data = f.read(DRAIN_BATCH_BYTES)
        lines = data[:data.rfind(b"\n") + 1].split(b"\n")[:-1][:DRAIN_BATCH_EVENTS]
        if not lines and data:  # one event longer than a batch: read it whole
            with open(self.dir / EVENTS_FILE, "rb") as f:
                f.seek(state["offset"])
                line = f.readline()
            lines = [line[:-1]] if line.endswith(b"\n") else []
        return lines, state

    def delivered(self, state: dict[str, int], lines: list[bytes]) -> int:
        """Record ``lines`` (read after ``state``) as delivered; the new offset."""
        offset = state["offset"] + sum(len(line) + 1 for line in lines)
        write_state(self.dir, {"offset": offset, "events": state["events"] + len(lines)})
        return offset

    def remove(self) -> None:
        """Delete the folder: every event in it is delivered."""
        self._file.close()
        self.removed = True
        shutil.rmtree(self.dir, ignore_errors=True)

    def close(self) -> None:
        if not self._file.closed:
            self.flush(sync=True)
            self._file.close()

    def store_blob(self, data: bytes) -> tuple[str, int]:
        return LocalBlobStore(self.dir / BLOBS_DIR).put_stream(io.BytesIO(data))


def blob_lines(lines: list[bytes]) -> list[bytes]:
    """The events among ``lines`` that refer to artifact bytes (their blobs go first)."""
    return [line for line in lines if line.startswith(_BLOB_TYPES)]


__all__ = ["RunOutbox", "blob_lines", "SYNCED_FILE"]
