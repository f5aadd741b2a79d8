"""Call-time checks of the SDK: the error names the argument and the limit it broke."""

from __future__ import annotations

import math
import numbers
from typing import Any

from runstream.errors import LimitError
from schemas import limits, values


def name(value: Any, what: str = "name") -> str:
    if not isinstance(value, str):
        raise LimitError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise LimitError(f"{what} must not be empty")
    if len(value) > limits.MAX_NAME_LENGTH:
        raise LimitError(f"{what} {value[:40]!r}... is {len(value)} characters; MAX_NAME_LENGTH={limits.MAX_NAME_LENGTH}")
    return value


def scalar(value: Any, what: str = "value") -> Any:
    """A loggable value in its JSON form (bool, int, float, str; numpy scalars accepted)."""
    cls = value.__class__
    if cls is float:
        return value if math.isfinite(value) else values.encode(value)
    if cls is int or cls is bool:
        return value
    if cls is str:
        if len(value) > limits.MAX_STRING_VALUE_LENGTH:
            raise LimitError(f"{what} is a string of {len(value)} characters; "
                             f"MAX_STRING_VALUE_LENGTH={limits.MAX_STRING_VALUE_LENGTH}")
        if "\x00" in value:
            raise LimitError(f"{what} contains a NUL character, which PostgreSQL text cannot store")
        return value
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return scalar(float(value), what)
    if isinstance(value, str):
        return scalar(str(value), what)
    raise LimitError(f"{what} must be a float, int, bool or str, not {type(value).__name__} ({value!r:.60})")


def step(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) <= 2**62:
        raise LimitError(f"step must be an int between 0 and 2**62, not {value!r}")
    return int(value)


def tag_key(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > limits.MAX_TAG_KEY_LENGTH:
        raise LimitError(f"tag key must be a non-empty str of at most MAX_TAG_KEY_LENGTH={limits.MAX_TAG_KEY_LENGTH} "
                         f"characters, not {value!r:.60}")
    return value


def artifact_path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise LimitError(f"file name must be a non-empty str, not {value!r:.60}")
    if len(value) > limits.MAX_ARTIFACT_PATH_LENGTH:
        raise LimitError(f"file name is {len(value)} characters; MAX_ARTIFACT_PATH_LENGTH={limits.MAX_ARTIFACT_PATH_LENGTH}")
    parts = value.replace("\\", "/").split("/")
    if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise LimitError(f"file name {value!r} must be a relative path without '.', '..' or empty parts")
    return "/".join(parts)


def row(cols: dict[str, Any], what: str) -> dict[str, Any]:
    if not cols:
        raise LimitError(f"{what} needs at least one column")
    if len(cols) > limits.MAX_COLUMNS_PER_ROW:
        raise LimitError(f"{what} has {len(cols)} columns; MAX_COLUMNS_PER_ROW={limits.MAX_COLUMNS_PER_ROW}")
    return {name(k, f"{what} column name"): scalar(v, f"{what} column {k!r}") for k, v in cols.items()}
