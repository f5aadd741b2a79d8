"""Reads through the query API, on the SDK's reader loop (``runstream.reader``), never the sender's."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from runstream.errors import ApiError, ApiUnreachable
from runstream.reader import Reader
from runstream.schemas import values

MAX_WAIT_MS = 30_000
"""The longest ``wait_ms`` the query API accepts (``query_api.handlers.MAX_WAIT_MS``)."""


class ApiClient:
    def __init__(self, reader: Reader, base_url: str, token: str | None = None) -> None:
        self._reader = reader
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, **params: Any) -> Any:
        """GET ``/api{path}`` and return the decoded JSON, or raise ApiError."""
        query = [(k, str(v).lower() if isinstance(v, bool) else str(v))
                 for k, v in params.items() if v is not None]

        async def fetch(session: aiohttp.ClientSession) -> Any:
            async with session.get(self._base + "/api" + path, params=query, headers=self._headers) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise ApiError(resp.status, _message(body))
                return orjson.loads(body)

        return self._call(fetch)

    def _call(self, fn: Any, timeout: float | None = 60) -> Any:
        """Run a request on the reader; the API out of reach is an :class:`ApiUnreachable`
        naming it (an SDK caller catches RunstreamError, not aiohttp's classes)."""
        try:
            return self._reader.call(fn, timeout)
        except (aiohttp.ClientConnectionError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise ApiUnreachable(f"the query API at {self._base} cannot be reached: {exc}") from exc

    def send(self, method: str, path: str, body: Any = None) -> Any:
        """``method`` ``/api{path}`` with a JSON body; the decoded answer, or raise ApiError."""

        async def fetch(session: aiohttp.ClientSession) -> Any:
            data = None if body is None else orjson.dumps(body)
            headers = {**self._headers, "Content-Type": "application/json"}
            async with session.request(method, self._base + "/api" + path, data=data, headers=headers) as resp:
                answer = await resp.read()
                if resp.status >= 400:
                    raise ApiError(resp.status, _message(answer))
                return orjson.loads(answer)

        return self._call(fetch)

    def wait_for_seq(self, run_id: str, min_seq: int, timeout: float) -> None:
        """Return once the API has materialized ``run_id`` up to event ``min_seq``.

        Asks ``GET /api/runs/{run_id}?min_seq=...&wait_ms=...`` (the server waits), again
        while it answers 504 (not there yet) or 503 (database down) and time is left.
        Raises :class:`TimeoutError` after ``timeout`` seconds (a hung API included),
        :class:`ApiError` for another error answer and :class:`ApiUnreachable` if the API
        cannot be reached.
        """
        deadline = time.monotonic() + timeout
        url = f"{self._base}/api/runs/{run_id}"

        async def fetch(session: aiohttp.ClientSession) -> None:
            while (remaining := deadline - time.monotonic()) > 0:
                params = {"min_seq": str(min_seq), "wait_ms": str(min(int(remaining * 1000), MAX_WAIT_MS))}
                async with asyncio.timeout(remaining):  # bounds a server that never answers too
                    async with session.get(url, params=params, headers=self._headers) as resp:
                        body = await resp.read()
                if resp.status < 400:
                    return
                if resp.status not in (503, 504):
                    raise ApiError(resp.status, _message(body))
                await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            raise TimeoutError(f"run {run_id} not materialized up to seq {min_seq} within {timeout:g} s")

        # The loop-side timeout ends the request; this one bounds a reader loop that is busy.
        self._call(fetch, timeout=timeout + 1)

    def download(self, path: str, target: Path, **params: Any) -> None:
        async def fetch(session: aiohttp.ClientSession) -> None:
            async with session.get(self._base + "/api" + path, params=params, headers=self._headers) as resp:
                if resp.status >= 400:
                    raise ApiError(resp.status, _message(await resp.read()))
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:  # small blocking writes on the reader's own loop
                    async for chunk in resp.content.iter_chunked(1024 * 1024):
                        out.write(chunk)

        self._call(fetch, timeout=None)


def _message(body: bytes) -> str:
    try:
        return str(orjson.loads(body)["error"]["message"])
    except Exception:
        return body.decode(errors="replace")[:500]


def decode_metric(value: Any) -> Any:
    """A get_metrics value from its JSON form: scalar, list, table columns or image ref."""
    if isinstance(value, list):
        return [values.decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"f"} and isinstance(value["f"], str):
            return values.decode(value)
        if "artifact" in value and not isinstance(value["artifact"], list):
            return value
        return {col: [values.decode(v) for v in vs] for col, vs in value.items()}
    return value
