"""``run.log_image``'s helpers: an image file or a matplotlib figure as PNG bytes, and the
background pool that stores them so the caller never waits on the network."""

from __future__ import annotations

import io
import mimetypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runstream.errors import LimitError
from runstream.schemas.limits import MAX_IMAGE_BYTES

__all__ = ["image_bytes", "artifact_name", "uploader", "IMAGE_DIR"]

IMAGE_DIR = "images"
"""Artifacts folder of logged images: ``images/<name>.png``, then ``images/<name>_<n>.png``."""
UPLOAD_THREADS = 2
"""Threads storing images in the background (blob store writes or gateway uploads)."""

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def uploader() -> ThreadPoolExecutor:
    """The process's image upload pool (its threads finish their work before exit)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="runstream-images")
        return _pool


def _forget_after_fork() -> None:
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_after_fork)


def image_bytes(name: str, path: str | os.PathLike[str] | None, plot: Any) -> tuple[bytes, str, str]:
    """``(bytes, content_type, suffix)`` of the image given to ``log_image(name, path, plot)``."""
    if (path is None) == (plot is None):
        raise LimitError(f"log_image({name!r}) needs exactly one of path= (an image file) or plot= "
                         "(a matplotlib Figure or matplotlib.pyplot)")
    if path is not None:
        return _read_file(name, Path(path))
    return _render(name, plot), "image/png", ".png"


def _read_file(name: str, path: Path) -> tuple[bytes, str, str]:
    content_type = mimetypes.guess_type(path.name)[0] or ""
    if not content_type.startswith("image/"):
        raise LimitError(f"log_image({name!r}): {str(path)!r} is not an image file by its extension "
                         f"({content_type or 'unknown type'}); use upload_file for other files")
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise LimitError(f"log_image({name!r}): {str(path)!r} is {size} bytes; MAX_IMAGE_BYTES={MAX_IMAGE_BYTES}")
        return path.read_bytes(), content_type, path.suffix.lower()
    except FileNotFoundError:
        raise LimitError(f"log_image({name!r}): no such image file {str(path)!r}") from None
    except IsADirectoryError:
        raise LimitError(f"log_image({name!r}): {str(path)!r} is a directory, not an image file") from None


def _render(name: str, plot: Any) -> bytes:
    """PNG bytes of a matplotlib Figure, or of ``pyplot``'s current figure."""
    figure = plot.gcf() if callable(getattr(plot, "gcf", None)) else plot
    if not callable(getattr(figure, "savefig", None)):
        raise LimitError(f"log_image({name!r}): plot= must be a matplotlib Figure or matplotlib.pyplot, "
                         f"not {type(plot).__name__}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    data = buffer.getvalue()
    if len(data) > MAX_IMAGE_BYTES:
        raise LimitError(f"log_image({name!r}): the figure renders to {len(data)} bytes; MAX_IMAGE_BYTES={MAX_IMAGE_BYTES}")
    return data


def artifact_name(name: str, index: int, suffix: str) -> str:
    """Where the ``index``-th image logged under ``name`` is stored."""
    return f"{IMAGE_DIR}/{name}{suffix}" if index == 0 else f"{IMAGE_DIR}/{name}_{index}{suffix}"
