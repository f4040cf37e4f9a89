"""OpenTelemetry traces, exported over OTLP/HTTP when `APIARY_OTEL__ENDPOINT` is set.

`TRACER` is None until `install` finds an endpoint, and code on the hot path tests it
before building any span or attribute (`if tracing.TRACER is None or tracing.dropped()`):
with tracing off a /v1 call pays one module attribute read per instrumented step, nothing
more, and with tracing on a request the sampler dropped builds no span at all: its trace
id is noted for its log lines (the children of an unsampled span would record nothing),
and each step asks `dropped()`, a context variable's `get`, not a Python function.
A sampled request records its steps on itself (`RequestTrace`, in spans.py), apart from
OpenTelemetry's context. Code off the hot path uses `span(...)`, which hands back a shared
null context when off.
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
from contextvars import Token
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    INVALID_SPAN,
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

from apiary.observability.spans import (
    SAMPLED,
    UNSAMPLED,
    RecordedSpan,
    RequestTrace,
    dropped_trace,
    local_context,
    new_span_id,
    new_trace_id,
    request_step,
)

if TYPE_CHECKING:
    from apiary.config import OTelSettings
    from apiary.observability.spans import LightTracer

__all__ = [
    "DROPS_FROM",
    "TRACER",
    "AttributeValue",
    "Span",
    "SpanKind",
    "Started",
    "Status",
    "StatusCode",
    "Tracer",
    "child",
    "current_ids",
    "current_span",
    "dropped",
    "extract",
    "inject",
    "install",
    "note_dropped",
    "record_error",
    "shutdown",
    "span",
    "started_at",
    "trace",
]

log = logging.getLogger("apiary.tracing")

TRACER: trace.Tracer | None = None
_tracer: LightTracer | None = None  # TRACER, as its own type
# The ratio sampler's test on a request id of Apiary's own (32 lowercase hex digits, its
# trace id), written for a comparison of text: the request is sampled out when the id's
# second half (its low 64 bits) is at or above this. None when no request is (ratio 1).
# Set with TRACER; ObservabilityMiddleware decides most requests with it, without a call.
DROPS_FROM: str | None = None
_PROPAGATOR = TraceContextTextMapPropagator()
_NO_SPAN: AbstractContextManager[None] = nullcontext()
TRACES_PATH = "/v1/traces"


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
    global TRACER, _tracer, DROPS_FROM
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
    _tracer.orphan_parent = _request_parent
    DROPS_FROM = format(_tracer.bound, "016x") if _tracer.bound < 1 << 64 else None
    TRACER = _tracer
    log.info(
        "tracing on: OTLP/HTTP to %s, sampling ratio %g",
        traces_url(settings.endpoint),
        settings.sampling_ratio,
    )
    return True


def shutdown() -> None:
    """Export what is buffered and remove the provider (tracing is off afterwards)."""
    global TRACER, _tracer, DROPS_FROM
    tracer, _tracer, TRACER, DROPS_FROM = _tracer, None, None, None
    if tracer is not None:
        tracer.processor.shutdown()


def flush(timeout_ms: int = 5000) -> None:
    if _tracer is not None:
        _tracer.processor.force_flush(timeout_ms)


# Truthy in a request whose trace is not recorded (`spans.dropped_trace`): its trace id,
# or True. Hot-path code asks before building a step's name and attributes, and with
# tracing off does not even ask:
#
#     if tracing.TRACER is None or tracing.dropped():
#         ...  # the step untraced
#     else:
#         with tracing.child("apiary.step", attributes={...}) as span:
#             ...  # the same step
#
# The bound `get` of a context variable: asking costs no Python frame, on a path where
# nine requests in ten ask four times and record nothing (docs/benchmarks.md, issue 17).
# Outside a request it is None, and `child` decides (under an unsampled span, a span that
# records nothing).
dropped = dropped_trace.get
# Marks the request being served as sampled out, with its trace id (`start_server_span`'s
# answer for such a request; reset with `Token.var.reset`): the bound `set`, no frame.
note_dropped = dropped_trace.set


def child(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
    end: bool = True,
    record_exception: bool = True,
) -> AbstractContextManager[Span]:
    """A span for one step of the work under way (with tracing on and not `dropped()`),
    current for the block it is used in and ended after it, unless `end` is False. In a
    sampled request it is recorded in the request's trace (`RequestTrace`) under the step
    under way, else under OpenTelemetry's current span. An exception escaping the block
    marks the span failed (and is recorded on it, unless `record_exception` is False)."""
    step = request_step.get()
    if (
        step is not None
        and (span := step.child(name, kind, attributes, end=end, record_exception=record_exception))
        is not None
    ):
        return span
    tracer = _tracer
    if tracer is None:  # shut down since the caller looked (the process is stopping)
        return nullcontext(INVALID_SPAN)
    return tracer.start_as_current_span(
        name,
        kind=kind,
        attributes=attributes,
        record_exception=record_exception,
        end_on_exit=end,
    )


def started_at(span: Span, start_ns: int) -> None:
    """Date a span just started back to `start_ns` (`time.time_ns()`): a step recorded once
    it is over (a gateway call's attempt, when it has to be)."""
    if isinstance(span, RecordedSpan):
        span.start_time = start_ns


def current_span() -> Span:
    """The span of the step under way: a sampled request's own (which OpenTelemetry's
    `get_current_span` does not see), else OpenTelemetry's current span."""
    step = request_step.get()
    if step is not None and step.open_trace() is not None:
        return step
    return trace.get_current_span()


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> AbstractContextManager[Span | None]:
    """A current span for the block, or a null context (yielding None) with tracing off.
    In a sampled request, a step of its trace (`child`)."""
    if TRACER is None:
        return _NO_SPAN
    return child(name, kind=kind, attributes=attributes)


def record_error(span: Span, error: BaseException | str) -> None:
    """Mark a span failed, with `error.type` as the semantic conventions name it."""
    kind = error if isinstance(error, str) else type(error).__name__
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR))


def inject() -> dict[str, str]:
    """The current context as W3C headers (`traceparent`), to carry across a process hop."""
    carrier: dict[str, str] = {}
    if TRACER is not None:
        _PROPAGATOR.inject(carrier, _request_context())
    return carrier


def _request_parent() -> SpanContext | None:
    """The context of the request being served, for spans started under it with no span
    current: its current step's when it is sampled, its server span's when dropped."""
    request = request_step.get()
    if request is not None:
        return request.get_span_context()
    dropped_id = dropped_trace.get()
    if type(dropped_id) is not str:  # not in a request, or its caller's trace is current
        return None
    # A dropped request's span id is its trace id's first half; when that is all zeros (one
    # chance in 2**64) 1 stands in for it, 0 not being a valid span id.
    span_id = int(dropped_id[:16], 16) or 1
    return SpanContext(int(dropped_id, 16), span_id, is_remote=False, trace_flags=UNSAMPLED)


def _request_context() -> otel_context.Context | None:
    """With no span current, the context of the request being served (which does not
    make its spans current in OpenTelemetry's context: see `start_server_span`); else
    None, the current context."""
    if trace.get_current_span() is not INVALID_SPAN:
        return None
    parent = _request_parent()
    return None if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))


def extract(carrier: Mapping[str, str]) -> otel_context.Context:
    return _PROPAGATOR.extract(carrier)


@contextmanager
def attached(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make the context carried in `carrier` (from `inject`) current for the block. A trace
    its sender did not sample is also `dropped()` for the block, so the hot path's steps
    under it (a sub-agent's gateway calls) skip building spans, as in the request."""
    if TRACER is None or not carrier:
        yield
        return
    context = extract(carrier)
    token = otel_context.attach(context)
    parent = trace.get_current_span(context).get_span_context()
    unsampled = (
        dropped_trace.set(True) if parent.is_valid and not parent.trace_flags.sampled else None
    )
    try:
        yield
    finally:
        if unsampled is not None:
            dropped_trace.reset(unsampled)
        otel_context.detach(token)


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span, in the hex form trace viewers show."""
    if TRACER is None:
        return None
    dropped_id = dropped_trace.get()
    if type(dropped_id) is str:  # a dropped request: its lines carry its ids
        return dropped_id, dropped_id[:16]
    step = request_step.get()
    if step is not None and step.open_trace() is not None:  # a sampled request's step
        found = step.get_span_context()
    else:
        found = trace.get_current_span().get_span_context()
        if not found.is_valid:
            if step is None:
                return None
            found = step.get_span_context()  # a step outliving its request (a stream's)
    trace_id, span_id = found[:2]  # a SpanContext is a tuple: no property calls
    return format(trace_id, "032x"), format(span_id, "016x")


class ServerSpan:
    """The server span of a request whose caller's trace was not sampled, made current in
    OpenTelemetry's context, for `end_server_span` to undo."""

    __slots__ = ("dropped", "token")

    def __init__(self, token: object, dropped: Token[str | bool | None]) -> None:
        self.token = token  # what OpenTelemetry's `attach` returned
        self.dropped = dropped  # what setting `dropped_trace` returned


# What `start_server_span` returns and `end_server_span` takes: a sampled request's trace,
# a caller's unsampled trace followed, or (a request sampled out) the token of its mark.
Started = RequestTrace | ServerSpan | Token[str | bool | None]


def start_server_span(
    tracer: trace.Tracer,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    *,
    random_id: str | None = None,
) -> Started:
    """The SERVER span of one HTTP request; it continues the caller's trace when the
    request carries a `traceparent`. Named by method alone until the route template is
    known (`end_server_span`), never by the raw path.

    `random_id`: the request id when Apiary made it (32 hex digits of 128 random bits, as
    a W3C trace id is), which then is the request's trace id: the id a client sees in
    `X-Request-ID` finds its trace. A request of its own trace is sampled here, once.

    A sampled request's spans are recorded in its `RequestTrace`, not in OpenTelemetry's
    context. A dropped one does next to nothing: its trace id is noted for its log lines,
    a Celery hop and spans started under it, which carry it flagged unsampled; its steps
    skip building spans altogether (`dropped`). A caller's unsampled trace is followed in
    OpenTelemetry's context, as the caller's flags and state must be handed on (and is
    `dropped` too). Returns what `end_server_span` takes.

    One request per task: a request is never served inside another's context, whose
    trace its context variables would then also hold."""
    traceparent = tracestate = None
    for name, value in headers:
        if name == b"traceparent":
            traceparent = value
        elif name == b"tracestate":
            tracestate = value
    assert _tracer is not None  # tracing is on: the caller checked TRACER
    remote: SpanContext | None = None
    if traceparent is not None:
        carrier = {"traceparent": traceparent.decode("latin-1")}
        if tracestate is not None:
            carrier["tracestate"] = tracestate.decode("latin-1")
        parent = _PROPAGATOR.extract(carrier)
        remote = trace.get_current_span(parent).get_span_context()
        if not remote.is_valid:
            remote = None  # a malformed traceparent: a trace of our own
        elif not remote.trace_flags.sampled:
            server = tracer.start_span(method, context=parent, kind=SpanKind.SERVER)
            token = otel_context.attach(trace.set_span_in_context(server, parent))
            return ServerSpan(token, dropped_trace.set(True))
    attributes = {"http.request.method": method, "url.path": path}
    if remote is not None:
        flags, state = remote.trace_flags, remote.trace_state
        root = _tracer.start(
            method, remote.trace_id, remote, True, SpanKind.SERVER, attributes, None, flags, state
        )
    else:
        if random_id is not None:
            # The ratio sampler's test (`LightTracer.keeps`) on the id's low 64 bits.
            if DROPS_FROM is not None and random_id[16:] >= DROPS_FROM:
                return dropped_trace.set(random_id)
            trace_id = int(random_id, 16)
        else:
            trace_id = new_trace_id()
            if not _tracer.keeps(trace_id):
                return dropped_trace.set(format(trace_id, "032x"))
        context = local_context(trace_id, new_span_id(), SAMPLED, None)
        root = RecordedSpan(_tracer, method, context, None, SpanKind.SERVER, attributes, None)
    assert isinstance(root, RecordedSpan)  # a sampled span
    request = RequestTrace(root)
    request.token = request_step.set(root)
    return request


def end_server_span(
    started: Started,
    *,
    method: str,
    route: str,
    status: int,
    error: str | None,
) -> None:
    if isinstance(started, Token):  # a dropped request: only its trace id was noted
        dropped_trace.reset(started)
        return
    if isinstance(started, ServerSpan):  # a caller's unsampled trace: nothing recorded
        dropped_trace.reset(started.dropped)
        otel_context.detach(started.token)  # type: ignore[arg-type]  # what `attach` returned
        return
    request_step.reset(started.token)  # type: ignore[arg-type]  # what setting it returned
    started.token = None  # a Token holds its Context: not kept past the request
    server = started.root
    server.name = f"{method} {route}"
    server.set_attributes({"http.route": route, "http.response.status_code": status})
    if error is not None or status >= 500:
        record_error(server, error or str(status))
    server.end()
    started.close()
