"""Profile Apiary's /v1/chat/completions hot path under load, with py-spy.

Starts the fake upstream and `apiary serve` exactly as bench/gateway.py does, drives
non-streaming load at concurrency 10 (or --stream / --concurrency), and samples the server
with py-spy (installed into bench/.profile-venv on first use, not a project dependency).
Prints where the time goes per request, grouped by layer, and the top functions; the raw
collapsed stacks stay in bench/results/ for a flame graph (e.g. speedscope, inferno).

    .venv/bin/python bench/profile_gateway.py [--seconds 20] [--stream] [--log-level INFO]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import (  # the sibling script, found through the path above
    BENCH,
    LOADGEN_CPU,
    RESULTS,
    ROOT,
    Backends,
    Services,
    _measure,
    export_ref,
    run_async,
    start_apiary,
    start_otlp_sink,
    start_upstream,
)

PROFILE_VENV = BENCH / ".profile-venv"
PY_SPY = PROFILE_VENV / "bin" / "py-spy"

# Where a sample's time is spent: the innermost frame matching one of these, in this order
# of precedence, names its bucket (exclusive: the buckets add up to 100%).
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging (access line, redaction, JSON)", ("logging/__init__.py", "observability/logging.py")),
    ("prometheus_client", ("prometheus_client/",)),
    ("aiosqlite (thread hand-off)", ("aiosqlite/",)),
    ("redis-py (counters, cache, pub/sub)", ("redis/",)),
    ("asyncpg (PostgreSQL driver)", ("asyncpg/",)),
    ("SQLAlchemy (ORM, Core, pool)", ("sqlalchemy/",)),
    ("aiohttp client (upstream call)", ("aiohttp/", "yarl/", "multidict/")),
    ("uuid / datetime", ("uuid.py", "utcnow (")),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("FastAPI (routing, dependencies)", ("fastapi/",)),
    ("Starlette (requests, responses, middleware)", ("starlette/",)),
    ("uvicorn (HTTP protocol)", ("uvicorn/",)),
    ("OpenTelemetry (spans, context, export)", ("opentelemetry/", "google/protobuf")),
    ("apiary code itself", ("apiary/",)),
    ("asyncio / threading machinery", ("asyncio/", "threading.py", "concurrent/", "queue.py")),
)

# Inclusive views of Apiary's own steps: a sample counts in each step it passes through.
STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ObservabilityMiddleware (everything inside it)", ("ObservabilityMiddleware.__call__ (",)),
    ("auth: current_auth (API-key lookup)", ("current_auth (",)),
    ("limits: admit + settle (counter store)", ("admit (apiary/limits", "settle (apiary/limits")),
    ("DB session for the request (open/commit/close)", ("session_scope (",)),
    ("handler: chat_completions", ("chat_completions (",)),
    ("  gateway.complete/stream (upstream call)", ("apiary/gateway/service.py",)),
    ("  ledger entry built and queued", ("_ledger (", "record (apiary/usage/ledger.py")),
    ("access log line", ("_access_log", "access_log", "Logger.info (", "Logger._log (")),
    ("ledger writer flush (background task)", ("flush (apiary/usage/ledger.py",)),
    ("tracing: OpenTelemetry, its export thread included", ("opentelemetry/", "tracing.py")),
)


def ensure_py_spy() -> Path:
    if not PY_SPY.exists():
        print("installing py-spy into bench/.profile-venv ...", flush=True)
        subprocess.run(["python3", "-m", "venv", str(PROFILE_VENV)], check=True)  # noqa: S603,S607
        subprocess.run(  # noqa: S603 - fixed command
            [str(PROFILE_VENV / "bin" / "pip"), "install", "--quiet", "py-spy"], check=True
        )
    return PY_SPY


def parse_raw(path: Path) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """Samples per bucket (exclusive), per step (inclusive), per function (self), and total."""
    buckets: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [frame for frame in stack.split(";") if "(" in frame]
        buckets[_bucket(frames)] += count
        text = ";".join(frames)
        for name, needles in STEPS:
            if any(needle in text for needle in needles):
                steps[name] += count
        if frames:
            own[_short(frames[-1])] += count
    return buckets, steps, own, total


def _bucket(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in BUCKETS:
            if any(needle in frame for needle in needles):
                return name
    return "other (interpreter, imports, C calls)"


def _short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--ref", help="profile `git archive REF` instead of the working tree")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument(
        "--production",
        action="store_true",
        help="run Apiary on PostgreSQL and Redis of its own, as deployed",
    )
    parser.add_argument(
        "--tracing",
        type=float,
        metavar="RATIO",
        help="tracing on at this sampling ratio, exporting to a local OTLP receiver",
    )
    parser.add_argument(
        "--all-threads",
        dest="gil_only",
        action="store_false",
        help="sample every thread, waiting ones too (default: only the one holding the GIL)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    py_spy = ensure_py_spy()
    import os

    os.sched_setaffinity(0, {LOADGEN_CPU})
    RESULTS.mkdir(parents=True, exist_ok=True)
    mode = "stream" if args.stream else "json"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    deployment = "-production" if args.production else ""
    deployment += f"-otel{args.tracing:g}" if args.tracing is not None else ""
    raw = RESULTS / f"profile-{mode}-c{args.concurrency}{deployment}-{stamp}.txt"
    services = Services()
    backends: Backends | None = None
    with tempfile.TemporaryDirectory(prefix="apiary-profile-") as tmp:
        source, commit = export_ref(args.ref, Path(tmp)) if args.ref else (None, "working tree")
        try:
            upstream, upstream_url = start_upstream(services, Path(tmp), source=source)
            if args.production:
                backends = Backends(Path(tmp))
            otel: dict[str, str] | None = None
            if args.tracing is not None:
                _, otlp_url = start_otlp_sink(services, Path(tmp))
                otel = {
                    "APIARY_OTEL__ENDPOINT": otlp_url,
                    "APIARY_OTEL__SAMPLING_RATIO": str(args.tracing),
                }
            apiary, url, key, limits = start_apiary(
                services,
                Path(tmp),
                upstream_url,
                log_level=args.log_level,
                source=source,
                backends=backends.new() if backends is not None else None,
                extra_env=otel,
            )
            spy = subprocess.Popen(  # noqa: S603 - fixed command
                [
                    str(py_spy),
                    "record",
                    "--pid",
                    str(apiary.pid),
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(int(args.seconds)),
                    "--format",
                    "raw",
                    *(["--gil"] if args.gil_only else []),
                    "--nonblocking",  # never pauses the server: its CPU figures stay true
                    "--output",
                    str(raw),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(1.0)  # py-spy attaches
            cell = run_async(
                _measure(
                    "apiary",
                    url,
                    key,
                    mode=mode,
                    concurrency=args.concurrency,
                    duration_s=args.seconds - 1.5,
                    warmup_s=0.5,
                    max_requests=10_000_000,
                    gateway=apiary,
                    upstream=upstream,
                )
            )
            _, spy_err = spy.communicate(timeout=args.seconds + 60)
            if spy.returncode != 0:
                print(spy_err.decode(errors="replace"), file=sys.stderr)
                return 1
        finally:
            services.stop_all()
            if backends is not None:
                backends.stop()

    buckets, steps, own, total = parse_raw(raw)
    cpu_us = cell.gateway_cpu_us_per_request or 0.0
    print(
        f"\nApiary {commit[:12]}, {mode} c={args.concurrency}, APIARY_LOG_LEVEL={args.log_level}, "
        f"limits {limits}"
        + (f", tracing at ratio {args.tracing:g}" if args.tracing is not None else "")
        + "\n"
        f"{cell.rps:,.0f} req/s "
        f"(under the profiler), p50 {cell.p50_ms:.2f} ms, gateway CPU {cell.gateway_cpu_pct}% "
        f"= {cpu_us:,.0f} µs/request"
    )
    what = "the thread holding the GIL" if args.gil_only else "all non-idle threads"
    print(f"{total} samples of {what}; µs/req = share x the gateway's CPU per request.\n")
    print(f"{'where the time goes (exclusive)':<52} {'share':>6} {'µs/req':>8}")
    for name, count in buckets.most_common():
        print(f"{name:<52} {count / total:>6.1%} {count / total * cpu_us:>8.0f}")
    print(f"\n{'Apiary steps (inclusive, they nest)':<52} {'share':>6} {'µs/req':>8}")
    for name, _ in STEPS:
        share = steps[name] / total if total else 0.0
        print(f"{name:<52} {share:>6.1%} {share * cpu_us:>8.0f}")
    print("\ntop functions by self time:")
    for frame, count in own.most_common(15):
        print(f"  {count / total:>6.1%}  {frame}")
    print(f"\nraw collapsed stacks: {raw.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
