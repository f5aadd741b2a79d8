"""Per-workspace blob quota, and the streamed upload both upload routes share (the
gateway's ``PUT /api/v1/blobs/{sha256}`` and MLflow's artifact store).

The blob store is content-addressed and shared: one blob may serve many workspaces. A
workspace is charged the size of each distinct blob it uploaded (or re-uploaded, when the
bytes were already there: its runs reference them all the same), recorded as one *marker*
per (workspace, blob): an empty file at ``<blob_dir>/.quota/<workspace key>/<sha256>``
truncated to the blob's size. A sparse file takes no disk blocks but its ``st_size`` is the
charge, so a workspace's usage is one directory scan, done once per process and then kept
in memory as this process adds markers. Another gateway process's uploads are seen at the
next start (documented in docs/SECURITY.md: a quota may be exceeded by what two
processes accept at the same moment, never by more).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path

from aiohttp import StreamReader

from runstream.blobstore import LocalBlobStore
from runstream.query_api.errors import InsufficientStorage, PayloadTooLarge

__all__ = ["BlobQuota", "receive", "too_large"]

QUOTA_DIR = ".quota"


class BlobQuota:
    """Bytes charged per workspace against ``limit`` (0: no limit; usage is recorded anyway)."""

    def __init__(self, blob_dir: str | Path, limit: int) -> None:
        self.root = Path(blob_dir) / QUOTA_DIR
        self.limit = limit
        self._usage: dict[str, int] = {}
        self._lock = threading.Lock()

    def _dir(self, workspace: str) -> Path:
        # A hash, not the name: any workspace name becomes a safe directory name.
        return self.root / hashlib.sha256(workspace.encode()).hexdigest()[:32]

    def usage(self, workspace: str) -> int:
        """Bytes charged to ``workspace`` (scanned from its markers on first use)."""
        with self._lock:
            if workspace not in self._usage:
                folder = self._dir(workspace)
                self._usage[workspace] = sum(e.stat().st_size for e in os.scandir(folder)) if folder.is_dir() else 0
            return self._usage[workspace]

    def check(self, workspace: str, size: int) -> None:
        """507 if ``size`` more bytes would put ``workspace`` over its quota."""
        if self.limit <= 0:
            return
        used = self.usage(workspace)
        if used + size > self.limit:
            raise InsufficientStorage(
                f"workspace {workspace!r} would exceed its artifact quota: {used} bytes stored + {size} "
                f"> RUNSTREAM_BLOB_QUOTA_BYTES={self.limit}; ask the operator to raise it",
                used_bytes=used, quota_bytes=self.limit)

    def charge(self, workspace: str, sha: str, size: int) -> None:
        """Record ``sha`` (of ``size`` bytes) against ``workspace``, once."""
        self.usage(workspace)  # loaded before the marker exists, so it is not counted twice
        folder = self._dir(workspace)
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / sha
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        try:
            os.ftruncate(fd, size)  # sparse: the size is the record, no blocks are written
        finally:
            os.close(fd)
        with self._lock:
            self._usage[workspace] += size

    def charged(self, workspace: str, sha: str) -> bool:
        """Whether ``workspace`` is already charged for ``sha``."""
        return (self._dir(workspace) / sha).exists()


def too_large(size: int, limit: int, so_far: bool = False) -> PayloadTooLarge:
    """The 413 of an upload over ``max_upload_bytes`` (nothing of it is kept)."""
    what = "more than " if so_far else ""
    return PayloadTooLarge(f"upload of {what}{size} bytes is over the per-upload limit "
                           f"(RUNSTREAM_MAX_UPLOAD_BYTES={limit}); nothing was stored")


async def receive(content: StreamReader, declared: int | None, store: LocalBlobStore, quota: BlobQuota,
                  workspace: str, limit: int, sha: str | None = None) -> tuple[str, int]:
    """Stream an upload into ``store`` and charge it to ``workspace``: ``(sha256, size)``.
    More than ``limit`` bytes (declared or received) is a 413 and over the workspace's quota a
    507, with nothing stored; ``sha``: the address the bytes must have (else ``BlobError``)."""
    if declared is not None and declared > limit:
        raise too_large(declared, limit)
    quota.check(workspace, declared or 0)
    writer = await asyncio.to_thread(store.writer)
    try:
        received = 0
        async for chunk in content.iter_chunked(1024 * 1024):
            received += len(chunk)
            if received > limit:
                raise too_large(received, limit, so_far=True)
            await asyncio.to_thread(writer.write, chunk)
        quota.check(workspace, received)
        stored, size = await asyncio.to_thread(writer.commit, sha)
    finally:
        writer.__exit__()
    quota.charge(workspace, stored, size)
    return stored, size
