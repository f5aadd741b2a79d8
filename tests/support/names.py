"""Names and paths tests share."""

from __future__ import annotations

import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
"""The repository root."""


def unique(prefix: str) -> str:
    """A name no other test uses (tests share one database and broker, each owns its names)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
