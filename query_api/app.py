"""The query API application: :func:`create_app` builds it, :func:`main` serves it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import orjson
from aiohttp import web

from runstream.query_api import auth, export, handlers, hardening, live, manage, mlflow_api, ui, writes
from runstream.query_api.cache import CACHE, ResponseCache
from runstream.query_api.errors import error_middleware
from runstream.query_api.handlers import POOL, SETTINGS
from runstream.settings import ServiceSettings

__all__ = ["POST_ROUTES", "ROUTES", "create_app", "init_connection", "keep_session", "main", "pg_pool"]

log = logging.getLogger("runstream.query_api")

POOL_MAX_SIZE = 10

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ROUTES: list[tuple[str, str, Handler]] = [
    ("health", "/api/health", handlers.health),
    ("ready", "/api/ready", handlers.ready),
    ("openapi", "/api/openapi.json", handlers.openapi_document),
    ("experiments", "/api/experiments", handlers.experiments),
    ("experiment_runs", "/api/experiments/{name:.+}/runs", handlers.experiment_runs),
    ("experiment_runs_csv", "/api/experiments/{name:.+}/runs.csv", export.runs_csv),
    ("metric_groups", "/api/experiments/{name:.+}/groups", handlers.metric_groups),
    ("search_runs", "/api/runs", handlers.search_runs),
    ("run", "/api/runs/{run_id}", handlers.run),
    ("run_metrics", "/api/runs/{run_id}/metrics", handlers.run_metrics),
    ("metric_csv", "/api/runs/{run_id}/metrics.csv", export.metric_csv),
    ("metric_vector", "/api/runs/{run_id}/metrics/{name:.+}", handlers.metric_vector),
    ("table", "/api/runs/{run_id}/tables/{name:.+}", handlers.table),
    ("files", "/api/runs/{run_id}/files", handlers.files),
    ("file_download", "/api/runs/{run_id}/files/{path:.*}", handlers.file_download),
    ("events", "/api/runs/{run_id}/events", handlers.events),
    ("history", "/api/runs/{run_id}/history", handlers.history),
    ("logs", "/api/runs/{run_id}/logs", handlers.logs),
    ("compare", "/api/compare", handlers.compare),
    ("whoami", "/api/whoami", auth.whoami),
]
"""Every GET (and HEAD) route as (name, path, handler)."""

POST_ROUTES: list[tuple[str, str, Handler]] = [
    ("login", "/api/login", auth.login),
    ("logout", "/api/logout", auth.logout),
]
"""The web UI's login and logout (the cookie ``runstream_token``)."""


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup: json/jsonb decoded to Python objects (and encoded) by orjson."""
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
        format="binary",
    )
    await conn.set_type_codec(
        "json", schema="pg_catalog", encoder=orjson.dumps, decoder=orjson.loads, format="binary"
    )


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's ``reset``: nothing to undo when a connection goes back to the pool.

    asyncpg's default runs ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release: one more round trip per statement run through the pool.
    The query API never changes session state on pool connections (no ``SET``, ``LISTEN``,
    advisory locks or cursors outside a transaction; the live endpoint's LISTEN has its
    own connection), and asyncpg still rolls back an open transaction before calling this.
    """


async def pg_pool(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the asyncpg pool for the app's lifetime, then close it.

    The pool starts empty (``min_size=0``) so the API comes up while the database is
    down; ``/api/ready`` reports that, and the first request connects.
    """
    pool = await asyncpg.create_pool(
        handlers.reader_url(app[SETTINGS]),
        min_size=0,
        max_size=POOL_MAX_SIZE,
        init=init_connection,
        reset=keep_session,
        server_settings={"application_name": "runstream-query-api"},
    )
    app[POOL] = pool
    try:
        yield
    finally:
        await pool.close()


def create_app(settings: ServiceSettings) -> web.Application:
    """Build the query API: routes, the error middleware, the hardening and the pool's lifecycle."""
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.api_max_body_bytes)
    hardening.install(app, allowed_hosts=settings.allowed_hosts, cors_origins=settings.cors_origins,
                      max_body_bytes=settings.api_max_body_bytes, body_limit_exempt={mlflow_api.ARTIFACT_UPLOAD})
    auth.setup(app, handlers.reader_url(settings), enabled=auth.enabled(settings.auth), cookies=True,
               failures=hardening.FailedAuthLimiter(settings.auth_failure_rate_per_s, settings.auth_failure_burst))
    app[SETTINGS] = settings
    app[CACHE] = ResponseCache()  # fed by live's listener: serves only while it LISTENs
    app.cleanup_ctx.append(pg_pool)
    for name, path, handler in ROUTES:
        app.router.add_get(path, handler, name=name)
    for name, path, handler in POST_ROUTES:
        app.router.add_post(path, handler, name=name)
    live.setup(app)
    writes.setup(app)  # the API's own events: MLflow's writes and run management
    manage.setup(app)
    mlflow_api.setup(app)
    ui.setup(app, Path(settings.ui_dir) if settings.ui_dir else ui.DIST)
    return app


def main(settings: ServiceSettings) -> None:
    """Serve the query API on ``settings.api_host:api_port`` until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    auth.check_bind(auth.enabled(settings.auth), [("the query API", settings.api_host)])
    web.run_app(create_app(settings), host=settings.api_host, port=settings.api_port)
