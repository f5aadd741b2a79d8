"""``run.wait_for_completion(show_output=True)``: follow a run's events until it ends.

Events come from the query API's live stream (``GET /api/runs/{id}/live``, Server-Sent
Events, through :func:`runstream.live.follow`): one message per materialized event,
ending after the terminal status. Where that endpoint is missing (an older server: 404),
the same sequence is read by polling ``/api/runs/{id}`` and ``/api/runs/{id}/events``.
The HTTP client runs on its own thread and loop, so a process that only reads never
starts a Kafka producer.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from runstream.errors import ApiError, RunstreamError
from runstream.schemas.events import TERMINAL_STATUSES

if TYPE_CHECKING:
    from runstream.run import Run

__all__ = ["RunFailedError", "follow_events", "wait_for_completion", "POLL_INTERVAL_S"]

POLL_INTERVAL_S = 0.25
"""Between two reads of the polling fallback when nothing new arrived."""
WAIT_MS = 30_000
"""How long the API may wait for a run that is not materialized yet."""
_END = object()


class RunFailedError(RunstreamError):
    """``wait_for_completion(raise_on_error=True)`` on a run that failed; ``details`` is ``get_details()``."""

    def __init__(self, details: dict[str, Any]) -> None:
        super().__init__(f"run {details.get('run_id')} failed: {details.get('error') or 'no error recorded'}")
        self.details = details


def wait_for_completion(run: Run, show_output: bool, raise_on_error: bool) -> dict[str, Any]:
    if run._writable and not run._sink.online:
        raise RunstreamError(f"run {run.id} is offline: nothing follows it until `runstream sync` uploads it")
    if show_output:
        print(f"RunId: {run.id}\nWeb View: {run.get_portal_url()}\n", flush=True)
    if run._writable and run._sink.online:
        run.flush()  # what this process logged is part of what is followed
    for event in follow_events(run._ws.settings.api_url, run.id, headers=run._ws.settings.auth_headers()):
        if show_output and event.get("type") == "log.lines":
            payload = event["payload"]
            out = sys.stderr if payload.get("stream") == "stderr" else sys.stdout
            out.write("".join(line + "\n" for line in payload["lines"]))
            out.flush()
    details = run.get_details()
    if show_output:
        print(f"\nExecution Summary\n=================\nRunId: {run.id}\nStatus: {details['status']}\n"
              f"Web View: {run.get_portal_url()}\n", flush=True)
    if raise_on_error and details["status"] == "failed":
        raise RunFailedError(details)
    return details


def follow_events(api_url: str, run_id: str, after_seq: int = -1,
                  headers: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """The run's events after ``after_seq`` as they are materialized, until it has ended
    (``headers``: the workspace's ``Authorization``)."""
    q: queue.Queue[Any] = queue.Queue()
    loop = asyncio.new_event_loop()

    async def pump() -> None:
        try:
            async with aiohttp.ClientSession(headers=headers) as session:
                async for event in _events(session, api_url, run_id, after_seq):
                    q.put(event)
        except BaseException as exc:  # handed to the reading thread
            q.put(exc)
        finally:
            q.put(_END)

    task = loop.create_task(pump())
    thread = threading.Thread(target=loop.run_until_complete, args=(task,), name="runstream-follow", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not _END:
            if isinstance(item, BaseException):
                if isinstance(item, asyncio.CancelledError):
                    break
                raise item
            yield item
    finally:
        if thread.is_alive():
            loop.call_soon_threadsafe(task.cancel)
        thread.join()
        loop.close()


async def _events(session: aiohttp.ClientSession, api_url: str, run_id: str,
                  after_seq: int) -> AsyncIterator[dict[str, Any]]:
    try:
        from runstream import live
    except ImportError:
        live = None  # type: ignore[assignment]
    last = after_seq
    if live is not None:
        try:
            async for event in live.follow(session, api_url, run_id, after_seq):
                last = event["seq"]
                yield event
            return
        except ApiError as exc:
            if exc.status != 404 or last != after_seq:
                raise
            # 404 with min_seq given: the server has no live route (an unknown run is waited for).
    async for event in _poll(session, api_url, run_id, last):
        yield event


async def _poll(session: aiohttp.ClientSession, api_url: str, run_id: str,
                last: int) -> AsyncIterator[dict[str, Any]]:
    base = f"{api_url.rstrip('/')}/api/runs/{run_id}"
    while True:
        state = await _get(session, base, min_seq=0, wait_ms=WAIT_MS)  # state first, then events
        while True:
            page = await _get(session, base + "/events", after_seq=last, limit=1000)
            for event in page["events"]:
                last = event["seq"]
                yield event
            if page["next_after_seq"] is None:
                break
        if state["status"] in TERMINAL_STATUSES and last >= state["last_seq"]:
            return
        await asyncio.sleep(POLL_INTERVAL_S)


async def _get(session: aiohttp.ClientSession, url: str, **params: Any) -> Any:
    async with session.get(url, params={k: str(v) for k, v in params.items()}) as resp:
        body = await resp.read()
        if resp.status >= 400:
            try:
                message = str(orjson.loads(body)["error"]["message"])
            except Exception:
                message = body.decode(errors="replace")[:500]
            raise ApiError(resp.status, message)
        return orjson.loads(body)
