"""OpenTelemetry traces, exported over OTLP/HTTP when `APIARY_OTEL__ENDPOINT` is set.

`TRACER` is None until `install` finds an endpoint, and code on the hot path tests it
before building any span or attribute (`tracer = tracing.TRACER and tracing.active()`):
with tracing off a /v1 call pays one module attribute read per instrumented step, nothing
more, and with tracing on a request the sampler dropped builds only its server span (the
children of an unsampled span would record nothing). Code off the hot path uses
`span(...)`, which hands back a shared null context when off.

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

from apiary.observability.spans import UNSAMPLED, Current, new_span_id, new_trace_id

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
# it is sampled there instead of looking up the current span (`active`, `current_ids`).
_request: ContextVar[ServerSpan | None] = ContextVar("apiary_trace_request", default=None)


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
    request = _request.get()
    return request.span if request is not None and not request.sampled else None


def _dropped_request_context() -> otel_context.Context | None:
    """With no span current, the context of a dropped request's server span (which is
    not made current: see `start_server_span`); else None, the current context."""
    request = _request.get()
    if request is None or request.sampled or trace.get_current_span().get_span_context().is_valid:
        return None
    return trace.set_span_in_context(request.span)


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
    request = _request.get()
    if request is not None and not request.sampled:
        # A dropped request records no span under its server span: its lines carry its ids.
        if request.ids is None:
            request.ids = format(request.trace_id, "032x"), format(request.span_id, "016x")
        return request.ids
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return format(found.trace_id, "032x"), format(found.span_id, "016x")


_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})


class ServerSpan:
    """What `start_server_span` made current, for `end_server_span` to undo. A dropped
    request's span is made only if something asks for it (`span`)."""

    __slots__ = ("_span", "ids", "request_token", "sampled", "span_id", "token", "trace_id")

    def __init__(
        self, span: Span | None, token: object, *, trace_id: int = 0, span_id: int = 0
    ) -> None:
        self._span = span
        self.token = token  # None: nothing was attached to OpenTelemetry's context
        self.sampled = span is not None and span.is_recording()
        self.trace_id, self.span_id = trace_id, span_id
        self.ids: tuple[str, str] | None = None  # hex, once a log line asked
        self.request_token: Token[ServerSpan | None] | None = None

    @property
    def span(self) -> Span:
        if self._span is None:
            context = SpanContext(
                self.trace_id, self.span_id, is_remote=False, trace_flags=UNSAMPLED
            )
            self._span = NonRecordingSpan(context)
        return self._span


def start_server_span(
    tracer: trace.Tracer, method: str, path: str, headers: list[tuple[bytes, bytes]]
) -> ServerSpan:
    """The SERVER span of one HTTP request, made current; it continues the caller's trace
    when the request carries a `traceparent`. Named by method alone until the route
    template is known (`end_server_span`), never by the raw path.

    A request of its own trace is sampled here, once: the ones dropped get a fresh trace id
    (log lines, a Celery hop and spans started under it carry it, flagged unsampled), are
    not made current in OpenTelemetry's context, and their children skip building spans
    altogether (`active`)."""
    carrier = {
        name.decode(): value.decode("latin-1") for name, value in headers if name in _TRACE_HEADERS
    }
    parent = _PROPAGATOR.extract(carrier) if carrier else None
    attributes: dict[str, AttributeValue]
    server: Span
    if parent is None:
        assert _tracer is not None  # tracing is on: the caller checked TRACER
        trace_id = new_trace_id()
        if not _tracer.keeps(trace_id):
            # Dropped: nothing goes into OpenTelemetry's context (a copy and two sets a
            # request). Its ids are kept for its log lines, `inject` and spans started
            # under it (`LightTracer.start_span` asks `_dropped_request_span`).
            started = ServerSpan(None, None, trace_id=trace_id, span_id=new_span_id())
            started.request_token = _request.set(started)
            return started
        attributes = {"http.request.method": method, "url.path": path}
        server = _tracer.start(method, trace_id, None, True, SpanKind.SERVER, attributes)
    else:
        attributes = {"http.request.method": method, "url.path": path}
        server = tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
    token = otel_context.attach(trace.set_span_in_context(server, parent))
    # The ids are kept for log lines, as a dropped request's are: a request continuing a
    # trace its caller did not sample records nothing, yet its lines carry that trace.
    context = server.get_span_context()
    started = ServerSpan(server, token, trace_id=context.trace_id, span_id=context.span_id)
    started.request_token = _request.set(started)
    return started


def end_server_span(
    started: ServerSpan, *, method: str, route: str, status: int, error: str | None
) -> None:
    if started.request_token is not None:
        _request.reset(started.request_token)
    if started.token is None:  # a dropped request: nothing was attached
        return
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
