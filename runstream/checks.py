"""Call-time checks of the SDK: the error names the argument and the limit it broke.

Everything these accept is a value the event schema (schemas.events) accepts and the
database stores exactly: strings without NUL or lone surrogates, ints within int64.
``scalar`` runs on every ``run.log``, so its common cases (a float, a small int, a short
str) cost one class test and at most one C-level comparison or regex search."""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from runstream.errors import LimitError
from runstream.schemas import limits, values
from runstream.schemas.events import INT64_MAX, INT64_MIN

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""NUL (PostgreSQL text and jsonb refuse it) and lone surrogates (UTF-8 cannot encode them)."""
_UNSTORABLE_IN_PATH = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""The same plus control characters: a path travels in URLs and HTTP headers."""


def _describe(char: str) -> str:
    if char == "\x00":
        return "a NUL character"
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate {char!r}"
    return f"a control character {char!r}"


def text(value: str, what: str, pattern: re.Pattern[str] = _UNSTORABLE) -> str:
    """``value`` if the database can store it, else a LimitError naming ``what``."""
    bad = pattern.search(value)
    if bad is not None:
        raise LimitError(f"{what} contains {_describe(bad.group())} at index {bad.start()}, "
                         f"which runstream cannot store (PostgreSQL text and UTF-8 refuse it)")
    return value


def storable(value: str) -> str:
    """``value`` with every character the database cannot store replaced by U+FFFD (for
    text runstream records on the user's behalf, such as a failed run's traceback)."""
    return _UNSTORABLE.sub("\ufffd", value)


def name(value: Any, what: str = "name") -> str:
    if not isinstance(value, str):
        raise LimitError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise LimitError(f"{what} must not be empty")
    if len(value) > limits.MAX_NAME_LENGTH:
        raise LimitError(f"{what} {value[:40]!r}... is {len(value)} characters; MAX_NAME_LENGTH={limits.MAX_NAME_LENGTH}")
    if ("\x00" in value or not value.isascii()) and _UNSTORABLE.search(value):  # message built only if needed
        text(value, f"{what} {value[:40]!r}")
    return value


def description(value: Any, what: str = "description") -> str | None:
    """An optional description: None or a storable str of at most MAX_STRING_VALUE_LENGTH."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise LimitError(f"{what} must be a str, not {type(value).__name__}")
    if len(value) > limits.MAX_STRING_VALUE_LENGTH:
        raise LimitError(f"{what} is {len(value)} characters; MAX_STRING_VALUE_LENGTH={limits.MAX_STRING_VALUE_LENGTH}")
    return text(value, what)


def _int(value: int, what: str) -> int:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    raise LimitError(f"{what} is the int {value}, outside the 64-bit range runstream stores exactly "
                     f"(-2**63 .. 2**63-1); log it as a float or a str")


def scalar(value: Any, what: str = "value") -> Any:
    """A loggable value in its JSON form (bool, int, float, str; numpy scalars accepted)."""
    cls = value.__class__
    if cls is float:
        return value if math.isfinite(value) else values.encode(value)
    if cls is int:
        return value if -0x20000000000000 <= value <= 0x20000000000000 else _int(value, what)
    if cls is bool:
        return value
    if cls is str:
        if len(value) > limits.MAX_STRING_VALUE_LENGTH:
            raise LimitError(f"{what} is a string of {len(value)} characters; "
                             f"MAX_STRING_VALUE_LENGTH={limits.MAX_STRING_VALUE_LENGTH}")
        if "\x00" in value or not value.isascii():  # an ASCII str can hold no surrogate: two C scans
            text(value, what)
        return value
    if isinstance(value, bool) or (cls.__name__ in ("bool", "bool_") and cls.__module__ == "numpy"):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return _int(int(value), what)
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
    if ("\x00" in value or not value.isascii()) and _UNSTORABLE.search(value):
        text(value, f"tag key {value[:40]!r}")
    return value


def artifact_path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise LimitError(f"file name must be a non-empty str, not {value!r:.60}")
    if len(value) > limits.MAX_ARTIFACT_PATH_LENGTH:
        raise LimitError(f"file name is {len(value)} characters; MAX_ARTIFACT_PATH_LENGTH={limits.MAX_ARTIFACT_PATH_LENGTH}")
    text(value, f"file name {value[:60]!r}", _UNSTORABLE_IN_PATH)
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
