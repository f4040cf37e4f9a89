"""The fake OpenAI upstream as its own process, for the gateway benchmark.

Runs `tests.fakes.upstream.FakeUpstream` (the same server the gateway tests use) on
127.0.0.1 with request recording off, prints `PORT <n>` on stdout once it listens, and
serves until SIGTERM or SIGINT. Started by `bench/gateway.py` under `taskset -c 0`.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

# Appended, so a snapshot named on PYTHONPATH (bench/gateway.py --ref) comes first.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from tests.fakes.upstream import FakeUpstream  # needs the repo root on sys.path


async def serve() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with FakeUpstream(record_requests=False) as upstream:
        print("PORT", upstream.base_url.rsplit(":", 1)[1], flush=True)
        await stop.wait()


def main() -> None:
    try:
        import uvloop
    except ImportError:  # the upstream still works, only slower
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
