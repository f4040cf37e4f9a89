"""OpenTelemetry traces, exported over OTLP/HTTP when `APIARY_OTEL__ENDPOINT` is set.

`TRACER` is None until `install` finds an endpoint, and code on the hot path tests it
before building any span or attribute (`tracer = tracing.TRACER and tracing.active()`):
with tracing off a /v1 call pays one module attribute read per instrumented step, nothing
more, and with tracing on a request the sampler dropped builds no span at all: its trace
id is noted for its log lines (the children of an unsampled span would record nothing).
Code off the hot path uses `span(...)`, which hands back a shared null context when off.
A request without a `traceparent` takes the request id Apiary made for it as its trace
id, so the `X-Request-ID` a client sees finds the trace.

The context crosses Celery as a W3C `traceparent` header on the task message (`inject`
at send, `extract` at run), so a worker's spans join the trace of the request that
created the execution. Log lines carry `trace_id` and `span_id` (`current_ids`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from apiary.observability.spans import UNSAMPLED, Current, new_trace_id

if TYPE_CHECKING:
    from apiary.config import OTelSettings
    from apiary.observability.spans import LightTracer

__all__ = [
    "TRACER",
    "AttributeValue",
    "Span",
    "SpanKind",
    "Tracer",
    "active",
    "current_ids",
    "extract",
    "inject",
    "install",
    "record_error",
    "shutdown",
    "span",
    "trace",
]

log = logging.getLogger("apiary.tracing")

TRACER: trace.Tracer | None = None
_tracer: LightTracer | None = None  # TRACER, as its own type
_PROPAGATOR = TraceContextTextMapPropagator()
_NO_SPAN: AbstractContextManager[None] = nullcontext()
TRACES_PATH = "/v1/traces"

# The current request's server span (None outside a request): its children read whether
# it is sampled there instead of looking up the current span (`active`).
_request: ContextVar[ServerSpan | None] = ContextVar("apiary_trace_request", default=None)
# The trace id (hex) of the request being served when the sampler dropped it, else None.
# A dropped request makes nothing current: its log lines, a Celery hop and spans started
# under it read its trace here, and its span id is the trace id's first 16 digits.
_dropped: ContextVar[str | None] = ContextVar("apiary_trace_dropped", default=None)


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for an endpoint given as a collector's base URL (as
    `OTEL_EXPORTER_OTLP_ENDPOINT` is) or as the full traces URL."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def _headers(raw: str | None) -> dict[str, str]:
    """`key=value,key2=value2`, the format of `OTEL_EXPORTER_OTLP_HEADERS`."""
    pairs = (part.split("=", 1) for part in (raw or "").split(",") if "=" in part)
    return {key.strip(): value.strip() for key, value in pairs}


def install(settings: OTelSettings) -> bool:
    """Install the tracer provider and its OTLP exporter when an endpoint is configured;
    returns whether this call installed it (its caller then calls `shutdown`). Once per
    process: a later call keeps the first provider."""
    global TRACER, _tracer
    if settings.endpoint is None or TRACER is not None:
        return False
    # Imported here: a process with tracing off never loads the SDK or the exporter.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from apiary.observability.otlp_wire import SpanExporter
    from apiary.observability.span_queue import SpanQueue
    from apiary.observability.spans import LightTracer

    headers = settings.headers.get_secret_value() if settings.headers else None
    exporter = SpanExporter(endpoint=traces_url(settings.endpoint), headers=_headers(headers))
    # Exported every second, or as soon as 2048 spans wait: fewer, larger POSTs (each
    # costs about a millisecond of the export thread's time, under the GIL the requests
    # need), and room for 8192 spans, four seconds of a busy API pod's sampled calls,
    # before any is dropped while a slow collector answers.
    processor = SpanQueue(exporter, delay_s=1.0, max_queued=8192, batch=2048)
    # The SDK's exporter, Apiary's own lighter spans (spans.py) and queue (span_queue.py).
    # Parent-based: a trace started upstream (a traceparent header, the API's side of a
    # Celery hop) is kept or dropped as a whole, never in pieces.
    _tracer = LightTracer(
        processor,
        Resource.create({"service.name": settings.service_name}),
        InstrumentationScope("apiary"),
        settings.sampling_ratio,
    )
    _tracer.orphan_parent = _dropped_request_span
    TRACER = _tracer
    log.info(
        "tracing on: OTLP/HTTP to %s, sampling ratio %g",
        traces_url(settings.endpoint),
        settings.sampling_ratio,
    )
    return True


def shutdown() -> None:
    """Export what is buffered and remove the provider (tracing is off afterwards)."""
    global TRACER, _tracer
    tracer, _tracer, TRACER = _tracer, None, None
    if tracer is not None:
        tracer.processor.shutdown()


def flush(timeout_ms: int = 5000) -> None:
    if _tracer is not None:
        _tracer.processor.force_flush(timeout_ms)


def active() -> Tracer | None:
    """The tracer, unless the current span belongs to a trace the sampler dropped: spans
    under it would record nothing, so the hot path skips even building them (the use is
    `tracing.TRACER and tracing.active()`, which costs nothing with tracing off). With no
    current span, the sampler decides for a new trace as usual."""
    if _dropped.get() is not None:
        return None
    request = _request.get()
    if request is not None:  # in a request: decided once, at its server span
        return TRACER if request.sampled else None
    parent = trace.get_current_span().get_span_context()
    if parent.is_valid and not parent.trace_flags.sampled:
        return None
    return TRACER


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> AbstractContextManager[Span | None]:
    """A current span for the block, or a null context (yielding None) with tracing off."""
    if TRACER is None:
        return _NO_SPAN
    return TRACER.start_as_current_span(name, kind=kind, attributes=attributes)


def using(span: Span) -> AbstractContextManager[Span]:
    """`span` current for the block and not ended after it; an exception escaping the block
    is recorded on it (OpenTelemetry's `use_span(span, end_on_exit=False)`, without its
    generator)."""
    return Current(span, record_exception=True, set_status=True, end=False)


def record_error(span: Span, error: BaseException | str) -> None:
    """Mark a span failed, with `error.type` as the semantic conventions name it."""
    kind = error if isinstance(error, str) else type(error).__name__
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR))


def inject() -> dict[str, str]:
    """The current context as W3C headers (`traceparent`), to carry across a process hop."""
    carrier: dict[str, str] = {}
    if TRACER is not None:
        _PROPAGATOR.inject(carrier, _dropped_request_context())
    return carrier


def _dropped_request_span() -> Span | None:
    """The server span of the dropped request being served, if any (for spans started
    under it with no span current)."""
    dropped = _dropped.get()
    if dropped is None:
        return None
    # A span id of 0 (its trace id's first half all zeros, one chance in 2**64) is not
    # valid: 1 stands in for it.
    span_id = int(dropped[:16], 16) or 1
    context = SpanContext(int(dropped, 16), span_id, is_remote=False, trace_flags=UNSAMPLED)
    return NonRecordingSpan(context)


def _dropped_request_context() -> otel_context.Context | None:
    """With no span current, the context of a dropped request's server span (which is
    not made current: see `start_server_span`); else None, the current context."""
    span = _dropped_request_span()
    if span is None or trace.get_current_span().get_span_context().is_valid:
        return None
    return trace.set_span_in_context(span)


def extract(carrier: Mapping[str, str]) -> otel_context.Context:
    return _PROPAGATOR.extract(carrier)


@contextmanager
def attached(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make the context carried in `carrier` (from `inject`) current for the block."""
    if TRACER is None or not carrier:
        yield
        return
    token = otel_context.attach(extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span, in the hex form trace viewers show."""
    if TRACER is None:
        return None
    dropped = _dropped.get()
    if dropped is not None:  # nothing is current in a dropped request: its lines carry its ids
        return dropped, dropped[:16]
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return format(found.trace_id, "032x"), format(found.span_id, "016x")


class ServerSpan:
    """What `start_server_span` made current, for `end_server_span` to undo."""

    __slots__ = ("request_token", "sampled", "span", "token")

    def __init__(self, span: Span, token: object) -> None:
        self.span = span
        self.token = token  # what OpenTelemetry's `attach` returned
        self.sampled = span.is_recording()
        self.request_token: Token[ServerSpan | None] | None = None


def start_server_span(
    tracer: trace.Tracer,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    *,
    random_id: str | None = None,
) -> ServerSpan | Token[str | None]:
    """The SERVER span of one HTTP request, made current; it continues the caller's trace
    when the request carries a `traceparent`. Named by method alone until the route
    template is known (`end_server_span`), never by the raw path.

    `random_id`: the request id when Apiary made it (32 hex digits of 128 random bits, as
    a W3C trace id is), which then is the request's trace id: the id a client sees in
    `X-Request-ID` finds its trace. A request of its own trace is sampled here, once. A
    dropped one does next to nothing: its trace id is noted (`_dropped`) for its log
    lines, a Celery hop and spans started under it, which carry it flagged unsampled;
    nothing is made current and its children skip building spans altogether (`active`).
    Returns what `end_server_span` takes."""
    traceparent = tracestate = None
    for name, value in headers:
        if name == b"traceparent":
            traceparent = value
        elif name == b"tracestate":
            tracestate = value
    server: Span
    parent: otel_context.Context | None = None
    if traceparent is None:
        assert _tracer is not None  # tracing is on: the caller checked TRACER
        if random_id is not None:
            # The ratio sampler's test (`LightTracer.keeps`) on the id's low 64 bits.
            if int(random_id[16:], 16) >= _tracer.bound:
                return _dropped.set(random_id)
            trace_id = int(random_id, 16)
        else:
            trace_id = new_trace_id()
            if not _tracer.keeps(trace_id):
                return _dropped.set(format(trace_id, "032x"))
        attributes = {"http.request.method": method, "url.path": path}  # kept requests only
        server = _tracer.start(method, trace_id, None, True, SpanKind.SERVER, attributes)
    else:
        carrier = {"traceparent": traceparent.decode("latin-1")}
        if tracestate is not None:
            carrier["tracestate"] = tracestate.decode("latin-1")
        parent = _PROPAGATOR.extract(carrier)
        server = tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )
    started = ServerSpan(server, otel_context.attach(trace.set_span_in_context(server, parent)))
    started.request_token = _request.set(started)
    return started


def end_server_span(
    started: ServerSpan | Token[str | None],
    *,
    method: str,
    route: str,
    status: int,
    error: str | None,
) -> None:
    if isinstance(started, Token):  # a dropped request: only its trace id was noted
        _dropped.reset(started)
        return
    if started.request_token is not None:
        _request.reset(started.request_token)
    otel_context.detach(started.token)  # type: ignore[arg-type]  # the token `attach` returned
    server = started.span
    if not server.is_recording():
        return
    server.update_name(f"{method} {route}")
    server.set_attribute("http.route", route)
    server.set_attribute("http.response.status_code", status)
    if error is not None or status >= 500:
        record_error(server, error or str(status))
    server.end()
