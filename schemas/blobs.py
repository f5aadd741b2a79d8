"""Where an artifact's bytes live: the content-addressed layout of a blob root.

A blob is stored at ``<root>/<sha[:2]>/<sha[2:4]>/<sha>`` (two fan-out levels keep
directories small). The ingest gateway's store (:mod:`runstream.blobstore`) writes there,
the query API reads there, and the SDK's offline spool uses the same layout under a
run's directory; all of them build the path with :func:`blob_path`.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["SHA256_PATTERN", "blob_path", "is_sha256"]

SHA256_PATTERN = r"^[0-9a-f]{64}$"
"""A blob's address: the lower-case hex sha256 of its bytes."""
_SHA256 = re.compile(SHA256_PATTERN)


def is_sha256(text: str) -> bool:
    """True when ``text`` is a blob address (64 lower-case hex digits)."""
    return _SHA256.match(text) is not None


def blob_path(root: str | Path, sha256: str) -> Path:
    """The path of the blob ``sha256`` under ``root``; a ``ValueError`` naming it if it is
    not a sha256 (so no other text can become a path under the root)."""
    if not is_sha256(sha256):
        raise ValueError(f"not a blob address (64 lower-case hex digits): {sha256!r}")
    return Path(root, sha256[:2], sha256[2:4], sha256)
