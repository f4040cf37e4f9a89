"""Tracing switched off and on in turn inside one `apiary serve`: bench/gateway.py's
`--tracing-alternate`, which puts this directory first on the traced server's PYTHONPATH.

Two server processes of the same build differ in req/s by more than the 5% that issue 17's
target allows (docs/benchmarks.md), so comparing a traced process with an untraced one
needs many runs to say anything. Here one process is its own baseline: a thread sets
`tracing.TRACER` to None and back every `BENCH_TRACING_ALTERNATE_S` seconds, and writes
for each phase a line `<1 if tracing was on> <requests served> <CPU seconds of the
process>` to `BENCH_TRACING_ALTERNATE_OUT`. With TRACER None, every instrumented step
takes the path it takes with tracing off; a request that straddles a switch is counted in
the phase it began in. Nothing happens unless both variables are set.
"""

from __future__ import annotations

import os
import threading
import time


def _install(phase_s: float, out: str) -> None:
    from apiary.observability import metrics, tracing

    served = [0]
    middleware = metrics.ObservabilityMiddleware.__call__

    async def counted(self, scope, receive, send):  # type: ignore[no-untyped-def]
        served[0] += 1
        await middleware(self, scope, receive, send)

    metrics.ObservabilityMiddleware.__call__ = counted  # type: ignore[method-assign]

    def alternate() -> None:
        while tracing.TRACER is None:  # installed during the app's start-up
            time.sleep(0.05)
        tracer, on = tracing.TRACER, True
        with open(out, "w") as lines:
            while True:
                cpu, count = time.process_time(), served[0]
                time.sleep(phase_s)
                lines.write(f"{int(on)} {served[0] - count} {time.process_time() - cpu:.6f}\n")
                lines.flush()
                on = not on
                tracing.TRACER = tracer if on else None

    threading.Thread(target=alternate, name="bench-tracing-alternate", daemon=True).start()


if os.environ.get("BENCH_TRACING_ALTERNATE_S") and os.environ.get("BENCH_TRACING_ALTERNATE_OUT"):
    _install(
        float(os.environ["BENCH_TRACING_ALTERNATE_S"]), os.environ["BENCH_TRACING_ALTERNATE_OUT"]
    )
