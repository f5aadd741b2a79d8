"""Content-addressed artifact store on a local directory.

A blob lives where :func:`schemas.blobs.blob_path` puts it; writing the same bytes twice is
free and never corrupts a reader (write to a temp file, then atomic rename). The
functions are synchronous file I/O: async callers run them in a thread.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from runstream.schemas.blobs import blob_path
from runstream.schemas.limits import MAX_ARTIFACT_BYTES

_CHUNK = 1024 * 1024


class BlobError(ValueError):
    """A blob that cannot be stored (too large, or not the bytes it claims to be)."""


class LocalBlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        """Where the blob ``sha256`` is (or would be) stored; ``ValueError`` if it is no sha256."""
        return blob_path(self.root, sha256)

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def writer(self) -> BlobWriter:
        """A writer for bytes that arrive in chunks (e.g. an HTTP upload)."""
        return BlobWriter(self)

    def put_stream(self, stream: BinaryIO, expected_sha256: str | None = None) -> tuple[str, int]:
        """Store a stream's bytes; return ``(sha256, size)``."""
        with self.writer() as w:
            while chunk := stream.read(_CHUNK):
                w.write(chunk)
            return w.commit(expected_sha256)

    def put_file(self, path: str | Path) -> tuple[str, int]:
        with open(path, "rb") as f:
            return self.put_stream(f)


class BlobWriter:
    """Hash and spool chunks to a temp file; :meth:`commit` moves it to its address."""

    def __init__(self, store: LocalBlobStore) -> None:
        tmp_dir = store.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self._store = store
        self._digest = hashlib.sha256()
        self.size = 0
        fd, self._tmp = tempfile.mkstemp(dir=tmp_dir)
        self._out = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > MAX_ARTIFACT_BYTES:
            raise BlobError(f"artifact larger than MAX_ARTIFACT_BYTES={MAX_ARTIFACT_BYTES}")
        self._digest.update(chunk)
        self._out.write(chunk)

    def commit(self, expected_sha256: str | None = None) -> tuple[str, int]:
        self._out.close()
        sha = self._digest.hexdigest()
        if expected_sha256 is not None and sha != expected_sha256:
            raise BlobError(f"content has sha256 {sha}, not the {expected_sha256} it was sent as")
        target = self._store.path_for(sha)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, target)
        return sha, self.size

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._out.close()
        Path(self._tmp).unlink(missing_ok=True)
