"""Per-workspace blob quota of the gateway.

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

import hashlib
import os
import threading
from pathlib import Path

from runstream.query_api.errors import InsufficientStorage

__all__ = ["BlobQuota"]

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
