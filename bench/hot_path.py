"""The gateway's hot path without an HTTP server: CPU per `/v1/chat/completions` call of the
ASGI app itself.

Sets up the fake upstream and an Apiary data dir exactly as bench/gateway.py does (API key,
budget and rate limits on, INFO access log to a file), then, in this process, builds the app,
runs its lifespan and calls it `--calls` times with in-memory ASGI messages; the upstream
call is real (TCP to the fake). What uvicorn adds is left out, so differences in Apiary's
own per-call work stand out. It prints the CPU time per call; under callgrind, which counts
instructions and so is not moved by other load on the machine, the difference between two
`--calls` values is the instruction count of that many calls:

    .venv/bin/python bench/hot_path.py --calls 3000
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/hot_path.py --calls 520     # minus the same with --calls 20

`--ref REF` measures `git archive REF` instead of the working tree.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import (  # the sibling script, found through the path above
    ROOT,
    Services,
    clean_env,
    export_ref,
    request_body,
    run_async,
    start_apiary,
    start_upstream,
)

WARMUP_CALLS = 300


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls measured")
    parser.add_argument("--ref", help="measure `git archive REF` instead of the working tree")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="calls in flight at once (as the bench's c)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print cProfile's top functions"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="apiary-hot-path-") as tmp:
        workdir = Path(tmp)
        if args.ref:
            # The app is imported in this process: run again with the snapshot first on the path.
            source, commit = export_ref(args.ref, workdir)
            print(f"Apiary source: git archive {args.ref} = {commit[:12]}", flush=True)
            done = subprocess.run(  # noqa: S603 - this script, with its own arguments
                [sys.executable, __file__, *_passed_on(args)],
                env=clean_env(source),
                cwd=ROOT,
                check=False,
            )
            return done.returncode
        services = Services()
        try:
            _, upstream_url = start_upstream(services, workdir)
            server, _, key, _ = start_apiary(services, workdir, upstream_url, log_level="INFO")
            services.stop(server)  # only its data dir, key and limits are used
            home = workdir / "apiary-info"
            os.environ.update(
                APIARY_DATA_DIR=str(home / "data"),
                APIARY_CONFIG=str(home / "apiary.yaml"),
                APIARY_LOG_LEVEL="INFO",
            )
            with (workdir / "access.log").open("w") as log:
                cpu_us = run_async(
                    measure(
                        key,
                        calls=args.calls,
                        concurrency=args.concurrency,
                        profile=args.profile,
                        log=log,
                    )
                )
            print(
                f"{args.calls} calls, {args.concurrency} at once: "
                f"{cpu_us:.0f} µs of CPU per call (this process)"
            )
        finally:
            services.stop_all()
    return 0


def _passed_on(args: argparse.Namespace) -> list[str]:
    passed = ["--calls", str(args.calls), "--concurrency", str(args.concurrency)]
    return [*passed, "--profile"] if args.profile else passed


async def measure(key: str, *, calls: int, concurrency: int, profile: bool, log: Any) -> float:
    from apiary.config import load_settings
    from apiary.main import create_app
    from apiary.observability.logging import configure_logging

    configure_logging("INFO", stream=log)
    app = create_app(load_settings())
    body = request_body(stream=False)
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"authorization", f"Bearer {key}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]

    async def call() -> None:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "method": "POST",
            "root_path": "",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "headers": headers,
        }
        messages = iter([{"type": "http.request", "body": body, "more_body": False}])
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return next(messages, {"type": "http.disconnect"})

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        if statuses != [200]:
            raise RuntimeError(f"the call answered {statuses}")

    async def caller(count: int) -> None:
        for _ in range(count):
            await call()

    async def run(total: int) -> None:
        share, extra = divmod(total, concurrency)
        await asyncio.gather(*(caller(share + (i < extra)) for i in range(concurrency)))

    async with app.router.lifespan_context(app):
        await run(WARMUP_CALLS)
        profiler = cProfile.Profile() if profile else None
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        await run(calls)
        if profiler is not None:
            profiler.disable()
        cpu_us = (time.process_time() - started) / calls * 1e6
    if profiler is not None:  # inflated by the profiler itself: read it for proportions
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)
    return cpu_us


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
