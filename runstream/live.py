"""Follow a run live: a client of the query API's ``GET /api/runs/{run_id}/live`` stream.

:func:`follow` yields the run's events (as JSON objects, exactly as they were sent: ``type``,
``v``, ``event_id``, ``run_id``, ``seq``, ``ts``, ``payload``) in seq order, reconnecting
with ``Last-Event-ID`` if the stream breaks, and returns once the run has ended and every
event up to its terminal status was yielded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from runstream.errors import ApiError

__all__ = ["follow", "SseParser"]

MAX_FAILURES = 6
"""Consecutive connection attempts that may fail (without any event between) before giving up."""
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 5.0
WAIT_MS = 30_000
"""How long the server waits for a run that is not materialized yet (then 504)."""
RETRYABLE = frozenset({502, 503})
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
"""No total limit (a stream lasts as long as the run); the server sends a heartbeat every
15 s, so a minute of silence means a dead connection."""


class SseParser:
    """Incremental Server-Sent Events parser: bytes in, ``(event, id, data)`` messages out.

    Lines end with ``\\n`` (a ``\\r`` before it is dropped); comments and ``retry`` are
    ignored; ``event`` defaults to ``message``.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[tuple[str, str | None, bytes]]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        messages = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    messages.append((self._event or "message", self._id, b"\n".join(self._data)))
                self._data, self._event = [], ""
                continue
            if line.startswith(b":"):
                continue
            field, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if field == b"data":
                self._data.append(value)
            elif field == b"event":
                self._event = value.decode()
            elif field == b"id" and b"\0" not in value:
                self._id = value.decode()
        return messages


def _error_message(body: bytes) -> str:
    try:
        return str(orjson.loads(body)["error"]["message"])
    except Exception:
        return body.decode(errors="replace")[:500]


async def follow(
    session: aiohttp.ClientSession, api_url: str, run_id: str, after_seq: int = -1
) -> AsyncIterator[dict[str, Any]]:
    """Yield the events of run ``run_id`` with seq > ``after_seq`` as they are materialized.

    The iteration ends after the run reached a terminal status (completed, failed,
    canceled; that ``run.status`` event is the last one yielded unless events follow
    it). A broken stream is resumed where it stopped (no event is repeated or skipped);
    after :data:`MAX_FAILURES` failed attempts in a row, or on an error answer (unknown
    run: 404; a run not materialized within 30 s: 504), :class:`ApiError` is raised.
    """
    url = f"{api_url.rstrip('/')}/api/runs/{run_id}/live"
    last, failures, delay = after_seq, 0, BACKOFF_MIN_S
    while True:
        reason = "the stream closed before the run ended"
        try:
            params = {"after_seq": str(last), "min_seq": "0", "wait_ms": str(WAIT_MS)}
            headers = {"Accept": "text/event-stream"}
            if last >= 0:
                headers["Last-Event-ID"] = str(last)
            async with session.get(url, params=params, headers=headers, timeout=TIMEOUT) as resp:
                if resp.status != 200:
                    message = _error_message(await resp.read())
                    if resp.status not in RETRYABLE:
                        raise ApiError(resp.status, message)
                    reason = f"{resp.status}: {message}"
                else:
                    parser = SseParser()
                    async for chunk in resp.content.iter_any():
                        for event, _id, data in parser.feed(chunk):
                            if event == "end":
                                return
                            decoded = orjson.loads(data)
                            if decoded["seq"] <= last:
                                continue
                            last, failures, delay = decoded["seq"], 0, BACKOFF_MIN_S
                            yield decoded
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        failures += 1
        if failures > MAX_FAILURES:
            raise ApiError(503, f"live stream of run {run_id} at {url} failed {failures} times in a row ({reason})")
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX_S)
