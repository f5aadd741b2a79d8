"""The web UI: its built assets and the page routes of the single-page app.

``ui/`` holds the source; ``make install`` (``npm ci && npm run build`` in ``ui/``) writes
``ui/dist/``: ``index.html`` and content-hashed files under ``assets/``. Every page URL
(``/``, ``/experiments/{name}``, ``/runs/{run_id}`` — what ``run.get_portal_url()``
gives — and ``/compare``) answers ``index.html``; the page then reads the API. Without a
build, those URLs answer a 503 page that says how to build it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from runstream.query_api import auth

__all__ = ["DIST", "PAGES", "setup"]

DIST = Path(__file__).resolve().parent.parent / "ui" / "dist"
"""Where ``npm run build`` in ``ui/`` writes the UI (next to this package in a source tree)."""

PAGES = ("/", "/experiments/{name:.+}", "/runs/{run_id}", "/compare")
"""The single-page app's routes; each answers ``index.html``."""

DIST_DIR = web.AppKey("ui_dist", Path)

# The page loads only its own script and stylesheet (no inline script or style: styles set
# from script go through the CSSOM, which the policy allows); data are shown as text
# (docs/UI.md), and this policy stops any injected script from running even if that ever failed.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>runstream: web UI not built</title></head>
<body>
<h1>The web UI is not built</h1>
<p>This query API serves the web UI from <code>{dist}</code>, which has no
<code>index.html</code>. Build it once (Node.js 18+ and npm):</p>
<pre>make install
# or only the UI:
cd ui &amp;&amp; npm ci &amp;&amp; npm run build</pre>
<p>then reload this page. The JSON API works without it: <a href="/api/openapi.json">/api/openapi.json</a>.</p>
</body></html>
"""


@auth.public  # the static page holds no data; its API calls are authenticated (or it shows the login)
async def page(request: web.Request) -> web.StreamResponse:
    """``index.html`` for any page of the app, or a 503 page when the UI is not built."""
    index = request.app[DIST_DIR] / "index.html"
    if not await asyncio.to_thread(index.is_file):
        body = NOT_BUILT.replace("{dist}", str(request.app[DIST_DIR]))
        return web.Response(status=503, text=body, content_type="text/html",
                            headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP})
    return web.FileResponse(index, headers={**_PAGE_HEADERS, "Content-Type": "text/html; charset=utf-8"})


@auth.public
async def asset(request: web.Request) -> web.StreamResponse:
    """A built file under ``assets/``. Names carry a content hash, so they never change."""
    root = request.app[DIST_DIR] / "assets"
    name = request.match_info["name"]
    path = (root / name).resolve()
    if "/" in name or "\\" in name or path.parent != root.resolve() or not await asyncio.to_thread(path.is_file):
        raise web.HTTPNotFound()
    return web.FileResponse(
        path, headers={"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}
    )


def setup(app: web.Application, dist: Path = DIST) -> None:
    """Register the UI's page routes and its assets on ``app``."""
    app[DIST_DIR] = dist
    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/assets/{name}", asset, name="ui_asset")
