"""Issue 17: the calls tracing adds to a `/v1/chat/completions` request, counted, not timed.

Time is a poor instrument for tracing's cost on this project's 2-core machine: two server
processes of one build differ by more than the 5% at stake, and a dropped request's work
(about a thousand instructions under callgrind) reads as 5-10 µs in the server, where the
tracing code runs out of the CPU's caches. What did predict the time is how many calls a
request makes into tracing's code (docs/benchmarks.md, "Tracing: counted calls"). This
script counts them: it starts `apiary serve` as bench/gateway.py does, with cProfile
switched on in the server for a fixed number of requests (`bench/call_counts/`, a
`sitecustomize` toggled by SIGUSR1), tracing off, at ratio 0 (every request dropped) and at
ratio 1 (every request kept), and prints the calls per request each adds: Python functions
(a frame each) and calls into C. Counts do not move with the machine's load.

    .venv/bin/python bench/tracing_calls.py [--requests 3000] [--ref REF ...]

`--ref` as bench/gateway.py takes it (`.` the working tree, the default), several side by
side.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from gateway import (  # the sibling script, found through the path above
    BENCH,
    WORKTREE,
    Services,
    _load,
    export_ref,
    run_async,
    start_apiary,
    start_otlp_sink,
    start_upstream,
)

MODES = {"off": None, "dropped (ratio 0)": "0", "kept (ratio 1)": "1"}


def _counts(profile: Path, requests: int) -> tuple[float, float]:
    """(Python function calls, calls into C) per request in a cProfile dump."""
    python = native = 0
    for (filename, _, _), (_, calls, *_) in pstats.Stats(str(profile)).stats.items():  # type: ignore[attr-defined]
        if filename == "~":
            native += calls
        else:
            python += calls
    return python / requests, native / requests


def _measure(source: Path | None, ratio: str | None, requests: int) -> tuple[float, float]:
    services = Services()
    with tempfile.TemporaryDirectory(prefix="tracing-calls-") as work:
        workdir = Path(work)
        profile = workdir / "profile"
        try:
            _, upstream = start_upstream(services, workdir, source=source)
            tree = source if source is not None else BENCH.parent
            env = {"PYTHONPATH": f"{BENCH / 'call_counts'}{os.pathsep}{tree}"}
            env["BENCH_CALL_COUNTS_OUT"] = str(profile)
            if ratio is not None:
                _, otlp = start_otlp_sink(services, workdir)
                env |= {"APIARY_OTEL__ENDPOINT": otlp, "APIARY_OTEL__SAMPLING_RATIO": ratio}
            server, url, key, _ = start_apiary(
                services, workdir, upstream, log_level="INFO", source=source, extra_env=env
            )

            async def drive(count: int) -> None:
                connector = aiohttp.TCPConnector(limit=10)
                async with aiohttp.ClientSession(connector=connector) as session:
                    await _load(
                        session,
                        url,
                        key,
                        stream=False,
                        concurrency=10,
                        duration_s=1e9,
                        max_requests=count,
                    )

            run_async(drive(2000))  # warm: caches filled, code specialized
            os.kill(server.popen.pid, signal.SIGUSR1)  # profiling on
            time.sleep(0.5)
            run_async(drive(requests))
            os.kill(server.popen.pid, signal.SIGUSR1)  # off, and the counts written
            for _ in range(100):
                if profile.exists():
                    break
                time.sleep(0.1)
            time.sleep(0.5)
            return _counts(profile, requests)
        finally:
            services.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--ref", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tracing-calls-src-") as sources:
        builds: list[tuple[str, Path | None]] = []
        for ref in args.ref or [WORKTREE]:
            if ref == WORKTREE:
                builds.append(("worktree", None))
            else:
                source, commit = export_ref(ref, Path(sources), name=f"source-{len(builds)}")
                builds.append((f"{ref} ({commit[:7]})", source))
        print("calls a request makes, and what tracing adds to it (Python functions / into C)")
        for label, source in builds:
            found = {mode: _measure(source, ratio, args.requests) for mode, ratio in MODES.items()}
            base_python, base_native = found["off"]
            print(f"{label}: off {base_python:.1f} / {base_native:.1f}")
            for mode in list(MODES)[1:]:
                python, native = found[mode]
                print(
                    f"  {mode}: +{python - base_python:.1f} / +{native - base_native:.1f} "
                    f"({(python + native) / (base_python + base_native):.3f} x off)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
