"""A bounded HTTP load generator for loopback (used when ``wrk`` is not installed).

``python -m benchmarks.loadgen URL --seconds S --requests N [--concurrency C]`` sends GETs
to one 127.0.0.1 URL until S seconds or N requests, whichever comes first, and prints
``{"requests", "errors", "seconds"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from urllib.parse import urlsplit

import aiohttp
import orjson


async def run(url: str, seconds: float, requests: int, concurrency: int) -> dict[str, float]:
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to load a non-loopback address: {url}")
    done = errors = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done, errors
        while done < requests and time.monotonic() < deadline:
            done += 1
            async with session.get(url) as resp:
                await resp.read()
                errors += resp.status != 200

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return {"requests": done, "errors": errors, "seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.url, args.seconds, args.requests, args.concurrency))
    sys.stdout.write(orjson.dumps({**result, "tool": "benchmarks.loadgen"}).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
