"""The web UI's static assets and page routes. Filled in by the web-UI issue."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register the UI's routes on ``app``."""
