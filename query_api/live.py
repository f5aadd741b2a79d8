"""Live updates of a run (Server-Sent Events). Filled in by the seed-workflows issue."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register the live routes and their background listener on ``app``."""
