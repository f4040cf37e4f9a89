"""The gateway's upstream HTTP client against aiohttp's, side by side: CPU per request.

Starts the fake OpenAI upstream (bench/fake_upstream_server.py) pinned to CPU 0, then in
this process, pinned to CPU 1, sends the benchmark's chat request through each client at
concurrency 10 (non-streaming, then streaming to the end), with one warm-up round each, on
uvloop (as uvicorn runs the gateway), and prints this process's CPU time per request and
the ratio: what the gateway's one core spends on the client side of every call.

    .venv/bin/python bench/http_client.py [--requests 20000]

aiohttp is a dev dependency (the fake upstreams use its server), so both are installed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import GATEWAY_CPU, Services, start_upstream  # the sibling script

from apiary.gateway.http import HttpClient

BODY = orjson.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello to the benchmark"}],
        "max_tokens": 16,
    }
)
STREAM_BODY = orjson.dumps({**orjson.loads(BODY), "stream": True})
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench"}

Call = Callable[[bytes], Awaitable[int]]


async def _measure(call: Call, body: bytes, requests: int, concurrency: int) -> float:
    """CPU µs per request over `requests` calls made by `concurrency` workers."""
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call(body)

    for _ in range(2):  # the first round warms connections and caches up
        remaining = requests if _ else max(200, requests // 10)
        cpu = time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - cpu) / requests * 1e6


async def run(base_url: str, requests: int) -> None:
    url = f"{base_url}/v1/chat/completions"
    ours = HttpClient()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    timeout = aiohttp.ClientTimeout(total=60, sock_connect=10)

    async def ours_json(body: bytes) -> int:
        response = await ours.post(url, body, HEADERS, timeout_s=60)
        await response.read()
        response.release()
        return response.status

    async def ours_stream(body: bytes) -> int:
        response = await ours.post(url, body, HEADERS, timeout_s=60)
        async for _ in response.lines():
            pass
        response.release()
        return response.status

    async def aiohttp_json(body: bytes) -> int:
        async with session.post(url, data=body, headers=HEADERS, timeout=timeout) as response:
            await response.read()
            return response.status

    async def aiohttp_stream(body: bytes) -> int:
        async with session.post(url, data=body, headers=HEADERS, timeout=timeout) as response:
            async for _ in response.content:
                pass
            return response.status

    print(f"{'mode':<8} {'apiary.gateway.http':>20} {'aiohttp':>10} {'aiohttp / ours':>15}")
    for mode, body, mine, theirs in (
        ("json", BODY, ours_json, aiohttp_json),
        ("stream", STREAM_BODY, ours_stream, aiohttp_stream),
    ):
        a = await _measure(mine, body, requests, 10)
        b = await _measure(theirs, body, requests, 10)
        print(f"{mode:<8} {a:>17.0f} µs {b:>7.0f} µs {b / a:>14.2f}x")
    await ours.close()
    await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {GATEWAY_CPU})
    services = Services()
    with tempfile.TemporaryDirectory() as workdir:
        try:
            _, base_url = start_upstream(services, Path(workdir))
            uvloop.run(run(base_url, args.requests))
        finally:
            services.stop_all()


if __name__ == "__main__":
    main()
