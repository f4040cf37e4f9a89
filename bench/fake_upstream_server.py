"""The fake OpenAI upstream as its own process, for the benchmarks.

Runs `tests.fakes.upstream.FakeUpstream` (the same server the gateway tests use) on
127.0.0.1 with request recording off, prints `PORT <n>` on stdout once it listens, and
serves until SIGTERM or SIGINT. Started by `bench/gateway.py` under `taskset -c 0`.

`--delay S` makes every chat call wait S seconds before it answers; with `--subtasks N` a
call that asks for a JSON-schema answer (the swarm's decomposition) gets `{"subtasks":
[...]}` with N items (0: as many as the schema's `maxItems` allows) and every other chat
call a short text. `bench/swarm.py` runs it as `--delay 1.0 --subtasks 0`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

# Appended, so a snapshot named on PYTHONPATH (bench/gateway.py --ref) comes first.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from tests.fakes.upstream import (  # needs the repo root on sys.path
    Behaviour,
    Endpoint,
    FakeUpstream,
    Family,
    Reply,
    Slow,
)

# The behaviour chosen for the request this task is handling (aiohttp runs each in a task).
_CHOSEN: contextvars.ContextVar[Behaviour | None] = contextvars.ContextVar("chosen", default=None)


class SwarmUpstream(FakeUpstream):
    """Every chat call answered after `delay_s`; decompositions with `subtasks` items."""

    def __init__(self, *, delay_s: float, subtasks: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay_s = delay_s
        self.subtasks = subtasks  # None: echo (no decomposition answers)

    def _decomposition(self, body: dict[str, Any]) -> str:
        count = self.subtasks or 0
        if count == 0:
            try:
                schema = body["response_format"]["json_schema"]["schema"]
                count = int(schema["properties"]["subtasks"]["maxItems"])
            except (KeyError, TypeError, ValueError):
                count = 1
        items = [f"Part {i + 1} of the benchmark task" for i in range(count)]
        return orjson.dumps({"subtasks": items}).decode()

    async def _chat_completion(
        self, request: web.Request, body: dict[str, Any], *, family: Family, model: str
    ) -> web.StreamResponse:
        answer: Behaviour | None = None
        if self.subtasks is not None:
            response_format = body.get("response_format")
            if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
                answer = Reply(text=self._decomposition(body))
            else:
                answer = Reply(text="A short answer from the fake upstream.")
        chosen: Behaviour | None = answer
        if self.delay_s > 0:
            chosen = Slow(self.delay_s, answer)
        token = _CHOSEN.set(chosen)
        try:
            return await super()._chat_completion(request, body, family=family, model=model)
        finally:
            _CHOSEN.reset(token)

    def _next(self, family: Family, endpoint: Endpoint) -> Behaviour | None:
        chosen = _CHOSEN.get()
        if chosen is not None and endpoint == "chat":
            return chosen
        return super()._next(family, endpoint)


async def serve(delay_s: float, subtasks: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    upstream: FakeUpstream
    if delay_s > 0 or subtasks is not None:
        upstream = SwarmUpstream(delay_s=delay_s, subtasks=subtasks, record_requests=False)
    else:
        upstream = FakeUpstream(record_requests=False)
    async with upstream:
        print("PORT", upstream.base_url.rsplit(":", 1)[1], flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument(
        "--subtasks",
        type=int,
        default=None,
        help="answer JSON-schema calls with this many subtasks (0: the schema's maxItems)",
    )
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # the upstream still works, only slower
        asyncio.run(serve(args.delay, args.subtasks))
    else:
        uvloop.run(serve(args.delay, args.subtasks))


if __name__ == "__main__":
    main()
