"""What tracing itself costs per /v1 call, apart from the rest of the gateway: CPU time of
this process (the export thread included) for the spans one chat call makes, in the same
order and with the same attributes as apiary/gateway and apiary/auth make them, exported
over OTLP/HTTP to bench/otlp_sink.py.

    .venv/bin/python bench/tracing_cost.py [--ratio 0.1] [--calls 100000] [--ref REF ...]

Prints µs per call with tracing off, on at the ratio, and the difference, for the working
tree and each `--ref` (`git archive REF`, imported first). bench/gateway.py --tracing
measures the same end to end, where a busy machine's noise is larger than this cost.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import subprocess
import sys
import tempfile
import time
from contextvars import Token
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"authorization", b"Bearer apy_x"),
    (b"content-type", b"application/json"),
    (b"content-length", b"100"),
]
_HEADER_NAME = operator.itemgetter(0)
TENANT = "5f0c8a4e-8d3b-4f4e-9d55-4c3f1b1e2a10"


def _call() -> None:
    """The tracing steps of one non-streamed chat call that the first provider answers."""
    from apiary.observability import tracing

    if not hasattr(tracing, "child"):  # builds before the request's steps had their own
        _call_before_child()
        return
    # `tracing.dropped`, or what builds before it asked (`not tracing.recording()`).
    dropped = getattr(tracing, "dropped", None) or (lambda: not tracing.recording())
    # The request id the middleware makes for every request, which (since `dropped`) is
    # also its trace id, sampled once.
    request_id = os.urandom(16).hex()
    started: Any = None
    if tracing.TRACER is not None:
        path = "/v1/chat/completions"
        drops_from = getattr(tracing, "DROPS_FROM", None)
        if (
            drops_from is not None
            and request_id[16:] >= drops_from
            and b"traceparent" not in map(_HEADER_NAME, HEADERS)
        ):
            # Sampled out by ObservabilityMiddleware itself, since `DROPS_FROM`: no call.
            started = tracing.note_dropped(request_id)
        elif hasattr(tracing, "dropped"):
            started = tracing.start_server_span(
                tracing.TRACER, "POST", path, HEADERS, random_id=request_id
            )
        else:
            started = tracing.start_server_span(tracing.TRACER, "POST", path, HEADERS)
    # Since `LimitEnforcer._count`, a step that only reads memory (a cached key, the
    # in-process counters or a lease) is no span: the request's span names the tenant.
    from apiary.limits.enforcer import LimitEnforcer

    steps_that_wait = hasattr(LimitEnforcer, "_count")
    if tracing.TRACER is not None and not dropped():  # apiary/auth/dependencies.py
        if steps_that_wait:
            tracing.current_span().set_attribute("apiary.tenant_id", TENANT)
        else:
            with tracing.child("apiary.authenticate") as span:
                span.set_attribute("apiary.auth.kind", "api_key")
                span.set_attribute("apiary.tenant_id", TENANT)
    if tracing.TRACER is not None and not dropped():  # GatewayClient.chat
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "default",
            "apiary.tenant_id": TENANT,
        }
        # Since `started_at`, the call is the GenAI client span, and a call its first provider
        # answers has no attempt span under it (its upstream time is an attribute).
        answered_at_once = hasattr(tracing, "started_at")
        kind = tracing.SpanKind.CLIENT if answered_at_once else tracing.SpanKind.INTERNAL
        with tracing.child("chat default", kind=kind, attributes=attributes, end=False) as call:
            if tracing.TRACER is not None and not dropped():  # BilledCall.admit
                tracing.current_span()  # it keeps the call's span
                if not steps_that_wait:
                    with tracing.child("apiary.limits.admit"):
                        pass
            if not answered_at_once and tracing.TRACER is not None and not dropped():
                with tracing.child(  # Gateway.complete, in builds before `started_at`
                    "apiary.gateway.attempt",
                    kind=tracing.SpanKind.CLIENT,
                    attributes=ATTEMPT,
                    record_exception=False,
                ) as span:
                    span.set_attribute("gen_ai.response.model", "gpt-4o-mini")
            call.set_attributes(DESCRIBED if not answered_at_once else TIMED)  # _describe_call
        call.set_attribute("apiary.cache", "off")
        call.end()
    if tracing.TRACER is not None:
        route = "/v1/chat/completions"
        if hasattr(tracing, "dropped") and isinstance(started, Token):
            # Dropped, as ObservabilityMiddleware and `log_info` take it: the access line's
            # ids without a call, the context variable reset in place.
            trace_id: Any = dropped()  # the hex id of a request the sampler dropped
            _ = (trace_id, trace_id[:16])
            started.var.reset(started)
            return
        tracing.current_ids()  # the access log line
        tracing.end_server_span(started, method="POST", route=route, status=200, error=None)


ATTEMPT: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "apiary.provider": "fake",
}
DESCRIBED: dict[str, Any] = {
    "gen_ai.usage.input_tokens": 12,
    "gen_ai.usage.output_tokens": 9,
    "apiary.attempts": 1,
    "gen_ai.system": "openai",
    "apiary.provider": "fake",
    "gen_ai.response.model": "gpt-4o-mini",
    "apiary.cost_usd": 0.00001,
    "apiary.route": "default",
}
TIMED = {**DESCRIBED, "apiary.upstream_s": 0.000412}


def _call_before_child() -> None:
    """The same steps as builds before `tracing.recording` and `tracing.child` made them."""
    from apiary.observability import tracing

    active = getattr(tracing, "active")  # noqa: B009 - gone from builds since

    tracer = tracing.TRACER
    started: Any = None
    if tracer is not None:
        started = tracing.start_server_span(tracer, "POST", "/v1/chat/completions", HEADERS)
    if step := tracing.TRACER and active():  # apiary/auth/dependencies.py
        with step.start_as_current_span("apiary.authenticate") as span:
            span.set_attribute("apiary.auth.kind", "api_key")
            span.set_attribute("apiary.tenant_id", TENANT)
    if step := tracing.TRACER and active():  # GatewayClient.chat
        call = step.start_span(
            "chat default",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "default",
                "apiary.tenant_id": TENANT,
            },
        )
        using = getattr(tracing, "using", None)  # builds before it used OpenTelemetry's
        with using(call) if using else tracing.trace.use_span(call, end_on_exit=False):
            if admit := tracing.TRACER and active():  # BilledCall.admit
                with admit.start_as_current_span("apiary.limits.admit"):
                    pass
            if attempt := tracing.TRACER and active():  # Gateway.complete
                with attempt.start_as_current_span(
                    "apiary.gateway.attempt",
                    kind=tracing.SpanKind.CLIENT,
                    attributes=ATTEMPT,
                    record_exception=False,
                ) as span:
                    span.set_attribute("gen_ai.response.model", "gpt-4o-mini")
            call.set_attributes(DESCRIBED)  # _describe_call
        call.set_attribute("apiary.cache", "off")
        call.end()
    if tracing.TRACER is not None:
        tracing.current_ids()  # the access log line
        route = "/v1/chat/completions"
        if isinstance(started, tuple):  # builds before the server span had its own type
            tracing.end_server_span(*started, method="POST", route=route, status=200, error=None)
        else:
            tracing.end_server_span(started, method="POST", route=route, status=200, error=None)


def _cpu_us_per_call(calls: int) -> float:
    """CPU per call, the calls made in a task of an event loop, as a server makes them."""
    from apiary.observability import tracing

    async def run() -> float:
        for _ in range(2000):
            _call()
        begun = time.process_time()
        for index in range(calls):
            _call()
            if index % 100 == 0:
                # The export thread keeps up, as at a server's pace: the loop is held on purpose.
                time.sleep(0.003)  # noqa: ASYNC251
        if tracing.TRACER is not None:
            tracing.flush()
        return (time.process_time() - begun) / calls * 1e6

    return asyncio.run(run())


def measure(ratio: float, calls: int, label: str) -> None:
    from apiary.config import OTelSettings
    from apiary.observability import tracing

    sink = subprocess.Popen(  # noqa: S603 - the bench's own receiver
        [sys.executable, str(BENCH / "otlp_sink.py")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None
        port = sink.stdout.readline().split()[1]
        off = _cpu_us_per_call(calls)
        tracing.install(OTelSettings(endpoint=f"http://127.0.0.1:{port}", sampling_ratio=ratio))
        on = _cpu_us_per_call(calls)
        tracing.shutdown()
    finally:
        sink.kill()
    print(
        f"{label:<24} off {off:6.2f} µs/call, on at {ratio:g} {on:6.2f} µs/call: "
        f"tracing costs {on - off:5.1f} µs a call",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--ref", action="append", default=[])
    parser.add_argument("--label", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.label is not None:  # one build, in a process of its own
        measure(args.ratio, args.calls, args.label)
        return 0
    builds: list[tuple[str, str]] = [("working tree", str(ROOT))]
    with tempfile.TemporaryDirectory(prefix="apiary-tracing-cost-") as tmp:
        for ref in args.ref:
            tree = Path(tmp) / ref.replace("/", "_")
            tree.mkdir()
            archive = subprocess.run(  # noqa: S603 - git, a ref named by the user
                ["git", "archive", ref, "apiary"],  # noqa: S607
                cwd=ROOT,
                capture_output=True,
                check=True,
            )
            subprocess.run(  # noqa: S603
                ["tar", "-x", "-C", str(tree)],  # noqa: S607
                input=archive.stdout,
                check=True,
            )
            builds.append((ref, str(tree)))
        for label, path in builds:
            env = {**os.environ, "PYTHONPATH": path}
            subprocess.run(  # noqa: S603 - this script again
                [
                    sys.executable,
                    __file__,
                    f"--label={label}",
                    f"--ratio={args.ratio}",
                    f"--calls={args.calls}",
                ],
                env=env,
                check=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
