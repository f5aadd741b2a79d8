"""Showing user-supplied text on a terminal inertly.

Names, tags and error reasons come from whoever sent the events. Printed as they are, an
ANSI escape could recolour or erase the terminal, a carriage return overwrite a line and
a right-to-left override reorder what follows; :func:`inert` replaces every such character
with its visible escape (``\\x1b``, ``\\u202e``), the same rule the web UI applies
(``ui/src/dom.ts``).
"""

from __future__ import annotations

import re

__all__ = ["inert"]

_INVISIBLE = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)
"""C0 controls but tab (newlines too: one record, one line), DEL and C1, bidi controls, zero-width and format characters."""


def inert(text: str) -> str:
    """``text`` with control, bidirectional-control and invisible format characters escaped."""
    return _INVISIBLE.sub(lambda m: repr(m.group())[1:-1] if ord(m.group()) <= 0xFF else f"\\u{ord(m.group()):04x}", text)
