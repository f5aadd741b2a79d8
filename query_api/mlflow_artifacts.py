"""MLflow's proxied artifact store (``mlflow-artifacts:``) over runstream's blob store.

A run's ``artifact_uri`` is ``mlflow-artifacts:/<experiment id>/<run id>/artifacts``;
MLflow's clients resolve it against the tracking URI to
``/api/2.0/mlflow-artifacts/artifacts/<experiment id>/<run id>/artifacts/<path>`` and
``PUT`` a file's bytes there, ``GET`` them back and list a folder with
``GET /api/2.0/mlflow-artifacts/artifacts?path=...``. The bytes go into the
content-addressed blob store (:mod:`runstream.blobstore`, stored once however often
uploaded), and the file becomes an ``artifact.recorded`` event of the run, exactly like an
SDK upload: runstream's own file routes and UI serve it too.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
import uuid
from typing import Any

from aiohttp import web

from runstream.blobstore import BlobError, LocalBlobStore
from runstream.ingest.quota import BlobQuota, receive
from runstream.query_api import auth, queries
from runstream.query_api.errors import json_response
from runstream.query_api.handlers import POOL, SETTINGS, download_headers
from runstream.query_api.mlflow_runs import children
from runstream.query_api.mlflow_shapes import MlflowError, invalid, missing, parse_run_id
from runstream.query_api.writes import WRITER, Draft
from runstream.schemas.blobs import blob_path
from runstream.schemas.limits import MAX_ARTIFACT_PATH_LENGTH

PREFIX = "/api/2.0/mlflow-artifacts/artifacts"
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""What an artifact path may not hold (schemas.events.STORABLE_PATH): CR/LF would break its download header."""
QUOTA = web.AppKey("mlflow_blob_quota", BlobQuota)
"""The workspaces' blob quota, charged like the gateway's uploads (same markers in the blob store)."""


def _locate(path: str) -> tuple[uuid.UUID, str]:
    """``<experiment id>/<run id>/artifacts[/<file path>]`` as (run id, file path)."""
    parts = path.strip("/").split("/", 3)
    if len(parts) < 3 or parts[2] != "artifacts" or any(p in ("", ".", "..") for p in path.strip("/").split("/")):
        raise invalid(f"Invalid artifact path {path!r}: expected <experiment id>/<run id>/artifacts/<path>")
    return parse_run_id(parts[1]), parts[3] if len(parts) > 3 else ""


async def _run_exists(request: web.Request, rid: uuid.UUID) -> None:
    """404 for an unknown run; for a known one, its acknowledged writes materialized first."""
    if await queries.run_state(request.app[POOL], rid, auth.principal_of(request).workspace) is None:
        raise missing(f"Run with id={rid.hex} not found")
    await queries.settle(request.app[POOL], runs=[rid])


async def upload(request: web.Request) -> web.Response:
    """Store a file's bytes and record it, with the gateway's limits: at most
    ``max_upload_bytes`` (413, nothing stored), charged to the workspace's blob quota (507),
    and a path the run already recorded with other bytes is refused (artifacts are immutable:
    processors.integrity; the same bytes again change nothing)."""
    rid, path = _locate(request.match_info["path"])
    if not path:
        raise invalid("Invalid artifact path: a file path after 'artifacts/' is required")
    if _UNSTORABLE.search(path) or len(path) > MAX_ARTIFACT_PATH_LENGTH:
        raise invalid(f"Invalid artifact path {path!r}: control characters are refused and at most "
                      f"{MAX_ARTIFACT_PATH_LENGTH} characters (MAX_ARTIFACT_PATH_LENGTH)")
    await _run_exists(request, rid)
    settings, quota = request.app[SETTINGS], request.app[QUOTA]
    workspace = auth.principal_of(request).workspace
    try:
        sha, size = await receive(request.content, request.content_length, LocalBlobStore(settings.blob_dir), quota,
                                  workspace, settings.max_upload_bytes)
    except BlobError as exc:
        raise invalid(str(exc)) from None
    recorded = next((f for f in await queries.artifacts(request.app[POOL], rid) if f["path"] == path), None)
    if recorded is not None:
        if recorded["sha256"] == sha:
            return json_response({})  # the same bytes again: nothing to record
        raise MlflowError(400, f"Artifact {path!r} of run {rid.hex} is already recorded with other content; "
                               "a run's artifacts are immutable: log it under another path", "RESOURCE_ALREADY_EXISTS")
    content_type = request.headers.get("Content-Type") or mimetypes.guess_type(path)[0] or "application/octet-stream"
    payload = {"path": path, "sha256": sha, "size": size, "content_type": content_type[:255]}
    await request.app[WRITER].write(auth.principal_of(request), rid, [Draft("artifact.recorded", payload)], wait=False)
    return json_response({})


async def download(request: web.Request) -> web.StreamResponse:
    rid, path = _locate(request.match_info["path"])
    await _run_exists(request, rid)
    files = await queries.artifacts(request.app[POOL], rid)
    record = next((f for f in files if f["path"] == path), None)
    if record is None:
        raise missing(f"Artifact {path!r} of run {rid.hex} not found")
    blob = blob_path(request.app[SETTINGS].blob_dir, record["sha256"])
    if not await asyncio.to_thread(blob.is_file):
        raise missing(f"The bytes of artifact {path!r} (sha256 {record['sha256']}) are missing from the blob store")
    # Never the declared type as is: an HTML or SVG file would run in the API's origin.
    return web.FileResponse(blob, headers=download_headers(path, record["content_type"]))


async def list_folder(request: web.Request) -> web.Response:
    rid, path = _locate(request.query.get("path", ""))
    await _run_exists(request, rid)
    entries: list[dict[str, Any]] = children(await queries.artifacts(request.app[POOL], rid), path)
    return json_response({"files": entries})
