"""The sender's close ends its pump even when the pump is woken at the moment it is cancelled.

On Python 3.11 ``asyncio.wait_for`` returns the inner result instead of raising when the
awaited event completes in the same loop iteration as the cancellation; the pump then
kept looping and ``Workspace.close()`` timed out after 30 s (seen under load). No network
is needed: the HTTP transport connects nothing until it sends.
"""

from __future__ import annotations

import asyncio

from runstream.sender import Sender
from runstream.settings import Settings
from tests.support.waiting import wait_for


def test_a_pump_woken_while_cancelled_still_ends() -> None:
    sender = Sender(Settings.from_env({}, transport="http", ingest_url="http://127.0.0.1:9"))
    try:
        wait_for(lambda: sender._idle, timeout=10, what="the pump waiting for work")

        async def wake_and_cancel() -> bool:
            sender._wake.set()  # completes the pump's wait in the next loop iteration ...
            sender._pump_task.cancel()  # ... the same one that delivers the cancellation
            await asyncio.wait({sender._pump_task}, timeout=5)
            return sender._pump_task.done()

        ended = asyncio.run_coroutine_threadsafe(wake_and_cancel(), sender._loop).result(10)
        assert ended, "the pump swallowed its cancellation"
    finally:
        if sender._pump_task.done():  # a new pump, so that close() can flush as usual
            async def restart() -> None:
                sender._pump_task = asyncio.get_running_loop().create_task(sender._pump())

            asyncio.run_coroutine_threadsafe(restart(), sender._loop).result(10)
        sender.close(timeout=10)
