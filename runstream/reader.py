"""The SDK's reads (query API GETs, downloads) run on a loop of their own.

Apart from the sender's loop: reading a run never starts a Kafka producer or waits behind
event sending, and a long download never holds up delivery. One daemon thread and one
aiohttp session per process, started on the first read.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
import orjson

T = TypeVar("T")


class Reader:
    """A daemon thread running an event loop with one HTTP session; :meth:`call` runs a
    coroutine function on it from any thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        threading.Thread(target=self._loop.run_forever, name="runstream-reader", daemon=True).start()

    def call(self, fn: Callable[[aiohttp.ClientSession], Coroutine[Any, Any, T]], timeout: float | None = 60) -> T:
        """Run ``fn(session)`` on the reader's loop and return its result (or raise its error).
        After ``timeout`` seconds the call is cancelled on the loop (its request ends too) and
        :class:`TimeoutError` is raised."""
        return wait_cancelling(asyncio.run_coroutine_threadsafe(self._run(fn), self._loop), timeout)

    async def _run(self, fn: Callable[[aiohttp.ClientSession], Coroutine[Any, Any, T]]) -> T:
        if self._session is None:
            self._session = aiohttp.ClientSession(json_serialize=lambda o: orjson.dumps(o).decode())
        return await fn(self._session)


def wait_cancelling(future: concurrent.futures.Future[T], timeout: float | None) -> T:
    """``future.result(timeout)``, but a timeout also cancels the coroutine behind it: a
    caller that gave up leaves no request running on the loop."""
    try:
        return future.result(timeout)
    except TimeoutError:
        future.cancel()
        raise


_reader: Reader | None = None
_lock = threading.Lock()


def reader() -> Reader:
    """This process's reader, started on first use."""
    global _reader
    with _lock:
        if _reader is None:
            _reader = Reader()
        return _reader


@atexit.register
def _close_at_exit() -> None:
    """Close the session on its loop (else aiohttp reports it unclosed at exit)."""
    current = _reader
    if current is not None and current._session is not None:
        try:
            asyncio.run_coroutine_threadsafe(current._session.close(), current._loop).result(2)
        except Exception:  # exiting anyway: a loop already gone or busy is not worth a traceback
            pass


def _forget_after_fork() -> None:
    global _reader
    _reader = None  # the thread is not in the child


os.register_at_fork(after_in_child=_forget_after_fork)
