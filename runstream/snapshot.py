"""The snapshot of a submitted ``source_directory``: one deterministic ``snapshot.zip``.

Which files: everything under the folder except what its ``.runstreamignore`` excludes,
or, when there is none, its ``.gitignore`` (both in gitignore syntax, read from the
folder's top level by ``pathspec``); ``.git/`` is always left out. Past
``MAX_SNAPSHOT_BYTES`` or ``MAX_SNAPSHOT_FILES`` the submit fails, naming the largest files.

The zip is deterministic (sorted entries, fixed timestamps and permissions), so the same
folder gives the same bytes, and the content-addressed blob store keeps it once however
often it is submitted.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pathspec

from runstream.errors import LimitError, RunstreamError
from runstream.schemas.limits import MAX_SNAPSHOT_BYTES, MAX_SNAPSHOT_FILES

__all__ = ["Snapshot", "collect", "write_zip", "IGNORE_FILES", "SNAPSHOT_ARTIFACT"]

IGNORE_FILES = (".runstreamignore", ".gitignore")
"""The first of these found at the folder's top level chooses what the snapshot leaves out."""
ALWAYS_IGNORED = (".git/",)
SNAPSHOT_ARTIFACT = "snapshot.zip"
"""The artifact name of a submitted run's snapshot."""
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Snapshot:
    root: Path
    files: list[tuple[str, int]]
    """``(relative posix path, size)``, sorted."""
    ignore_file: str | None
    """The ignore file used, if any."""

    @property
    def size(self) -> int:
        return sum(size for _, size in self.files)


def collect(source_directory: str | os.PathLike[str]) -> Snapshot:
    """The files a snapshot of ``source_directory`` holds; raises past the limits."""
    root = Path(source_directory).resolve()
    if not root.is_dir():
        raise RunstreamError(f"source_directory {str(source_directory)!r} is not a directory")
    ignore_file = next((name for name in IGNORE_FILES if (root / name).is_file()), None)
    lines = list(ALWAYS_IGNORED)
    if ignore_file is not None:
        lines += (root / ignore_file).read_text(errors="replace").splitlines()
    spec = pathspec.GitIgnoreSpec.from_lines(lines)
    files: list[tuple[str, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath).relative_to(root)
        prefix = "" if here == Path(".") else here.as_posix() + "/"
        dirnames[:] = sorted(d for d in dirnames if not spec.match_file(prefix + d + "/"))
        for name in filenames:
            rel = prefix + name
            path = root / rel
            if spec.match_file(rel) or not path.is_file():
                continue
            files.append((rel, path.stat().st_size))
    files.sort()
    snapshot = Snapshot(root, files, ignore_file)
    _check_limits(snapshot)
    return snapshot


def _check_limits(snapshot: Snapshot) -> None:
    count, size = len(snapshot.files), snapshot.size
    if count <= MAX_SNAPSHOT_FILES and size <= MAX_SNAPSHOT_BYTES:
        return
    largest = sorted(snapshot.files, key=lambda f: -f[1])[:5]
    listing = ", ".join(f"{path} ({_mb(n)})" for path, n in largest)
    used = f"after {snapshot.ignore_file}" if snapshot.ignore_file else "with no .runstreamignore or .gitignore"
    raise LimitError(
        f"source_directory {str(snapshot.root)!r} holds {count} files, {_mb(size)} ({used}); a snapshot may "
        f"hold MAX_SNAPSHOT_FILES={MAX_SNAPSHOT_FILES} files and MAX_SNAPSHOT_BYTES={MAX_SNAPSHOT_BYTES} "
        f"({_mb(MAX_SNAPSHOT_BYTES)}). Largest: {listing}. List what to leave out in "
        f"{snapshot.root / IGNORE_FILES[0]} (gitignore syntax)."
    )


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def write_zip(snapshot: Snapshot, target: Path) -> None:
    """Write the snapshot's files to ``target`` as a deterministic zip."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for rel, _ in snapshot.files:
            path = snapshot.root / rel
            info = zipfile.ZipInfo(rel, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            with open(path, "rb") as src, zf.open(info, "w") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
