"""A lighter span than the OpenTelemetry SDK's, for the spans Apiary itself records.

The SDK's span is general: every attribute map and event list is bounded and guarded by a
lock, each start goes through a sampler object and the span processors, each end copies
the span into a readable snapshot. On the /v1 path a kept call's five spans cost about
165 µs of the GIL that way (docs/benchmarks.md, issue 17), most of tracing's cost. This
span keeps what Apiary uses (a name, a kind, ids and parent, times, a plain attribute
dict, events, links, a status). Finished, it goes to the span queue (`span_queue`), alone
or with the other spans of its request (`RequestTrace`), and on to `otlp_wire`'s
exporter, which read the same fields they read from an SDK span (so an SDK span
processor takes them too, as the tests' does).

Sampling is the SDK's default rule, written out: a span under a parent follows the
parent's flag (a remote parent's too, so a trace is kept or dropped whole); a new trace is
kept when its random id's low 64 bits fall under the ratio's bound, as `TraceIdRatioBased`
decides, so every service sampling by ratio agrees on a given trace.

Unlike the SDK's, these spans are not guarded by a lock: a span is recorded by the task
that started it. Attribute values of None are dropped, as the SDK drops them.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceState
from opentelemetry.util.types import Attributes, AttributeValue

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, SpanProcessor
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from apiary.observability.span_queue import SpanQueue

_ID_LIMIT = (1 << 64) - 1
SAMPLED = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
UNSAMPLED = TraceFlags(TraceFlags.DEFAULT | TraceFlags.RANDOM_TRACE_ID)
UNSET = Status(StatusCode.UNSET)  # a span's status until one is set: one shared object


def local_context(
    trace_id: int, span_id: int, flags: TraceFlags, state: TraceState | None = None
) -> SpanContext:
    """`SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags, trace_state=state)`
    for ids known to be valid (never 0), made as the tuple it is without its constructor's
    Python-level checks (tests/observability/test_tracing.py holds the two equal)."""
    fields = (
        trace_id,
        span_id,
        False,
        flags,
        DEFAULT_TRACE_STATE if state is None else state,
        True,
    )
    return tuple.__new__(SpanContext, fields)


def bound_for(ratio: float) -> int:
    """The ratio sampler's bound: a trace is kept when its id's low 64 bits are under it."""
    return round(ratio * (_ID_LIMIT + 1))


def new_trace_id() -> int:
    return random.getrandbits(128) or 1


def new_span_id() -> int:
    return random.getrandbits(64) or 1


class RecordedSpan(trace.Span):
    """A sampled span being recorded; handed to the processor when it ends. Its fields
    have the names `otlp_wire` and the SDK's span processors read on an SDK span."""

    __slots__ = (
        "_attributes",
        "_context",
        "_end_on_exit",
        "_events",
        "_links",
        "_record_exception",
        "_request_trace",
        "_token",
        "_tracer",
        "end_time",
        "kind",
        "name",
        "parent",
        "start_time",
        "status",
    )
    dropped_attributes = 0
    dropped_events = 0
    dropped_links = 0

    def __init__(
        self,
        tracer: LightTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link] | None,
        request_trace: RequestTrace | None = None,
    ) -> None:
        self._tracer = tracer
        self._request_trace = request_trace  # the trace it is recorded in, if any
        self.name = name
        self._context = context
        self.parent = parent
        self.kind = kind
        self._attributes: dict[str, AttributeValue] = dict(attributes) if attributes else {}
        if None in self._attributes.values():  # a scan in C: the hot path passes no None
            self._attributes = {k: v for k, v in self._attributes.items() if v is not None}
        self._events: list[Event] | None = None
        self._links = list(links) if links else None
        self.status = UNSET
        self.start_time = time.time_ns()
        self.end_time: int | None = None
        # As a step of its request's trace, made current for a block (`child`):
        self._token: Token[RecordedSpan | None] | None = None
        self._record_exception = True
        self._end_on_exit = True

    # What the exporter and the batch processor read.
    @property
    def context(self) -> SpanContext:
        return self._context

    @property
    def attributes(self) -> Mapping[str, AttributeValue]:
        return self._attributes

    @property
    def events(self) -> Sequence[Event]:
        return self._events or ()

    @property
    def links(self) -> Sequence[Link]:
        return self._links or ()

    @property
    def resource(self) -> Resource:
        return self._tracer.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return self._tracer.scope

    # The span API.
    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if value is not None:
            self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            if value is not None:
                self._attributes[key] = value

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        from opentelemetry.sdk.trace import Event

        if self._events is None:
            self._events = []
        self._events.append(Event(name, attributes, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self._links is None:
            self._links = []
        self._links.append(Link(context, attributes))

    def update_name(self, name: str) -> None:
        self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.status.status_code is StatusCode.OK:
            return  # OK is final, as the specification has it
        self.status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        kind = type(exception)
        module = kind.__module__
        described: dict[str, AttributeValue] = {
            "exception.type": (
                f"{module}.{kind.__qualname__}" if module != "builtins" else kind.__qualname__
            ),
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            described.update(attributes)
        self.add_event("exception", described, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return  # ended twice: the first end stands
        self.end_time = end_time or time.time_ns()
        request_trace = self._request_trace
        if request_trace is not None and request_trace.open:
            request_trace.ended.append(self)  # handed on with the request's other spans
            return
        self._request_trace = None  # ended after its request: see `RequestTrace.close`
        self._tracer.processor.on_end(self)  # type: ignore[arg-type]  # reads the same fields

    def open_trace(self) -> RequestTrace | None:
        """The request trace this span is recorded in, while its request is served."""
        request_trace = self._request_trace
        return request_trace if request_trace is not None and request_trace.open else None

    def child(
        self,
        name: str,
        kind: SpanKind,
        attributes: Attributes,
        *,
        end: bool,
        record_exception: bool,
    ) -> RecordedSpan | None:
        """A step under this one in its request's trace, to be made current for a block
        (`with`: the request's step under way for the block, in `request_step`); None
        once the request is over. `end`: whether the block's end ends it."""
        request_trace = self._request_trace
        if request_trace is None or not request_trace.open:
            return None
        parent = self._context
        trace_id, _, _, flags, state = parent[:5]
        context = local_context(trace_id, new_span_id(), flags, state)
        span = RecordedSpan(self._tracer, name, context, parent, kind, attributes, None)
        span._request_trace = request_trace
        span._end_on_exit = end
        span._record_exception = record_exception
        return span

    def __enter__(self) -> RecordedSpan:  # a step of a request's trace (`child`)
        self._token = request_step.set(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        request_step.reset(self._token)  # type: ignore[arg-type]  # set by __enter__
        self._token = None  # a Token holds its Context: not kept past the block
        if error is not None:
            _leave(self, error, self._record_exception, True, self._end_on_exit)
        elif self._end_on_exit:
            self.end()

    def __repr__(self) -> str:
        return f"RecordedSpan({self.name!r}, span_id={self._context.span_id:016x})"


class Current:
    """`span` made current for a block (`start_as_current_span`'s context manager): a
    class, cheaper than a generator-based one."""

    __slots__ = ("_end", "_record_exception", "_set_status", "_span", "_token")

    def __init__(
        self, span: trace.Span, record_exception: bool, set_status: bool, end: bool
    ) -> None:
        self._span = span
        self._record_exception = record_exception
        self._set_status = set_status
        self._end = end
        self._token: object = None

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]  # what attach returned
        _leave(self._span, error, self._record_exception, self._set_status, self._end)


def _leave(
    span: trace.Span,
    error: BaseException | None,
    record_exception: bool,
    set_status: bool,
    end: bool,
) -> None:
    """The block `span` was current for is over: an exception that escaped it marks the
    span failed (exceptions only, as OpenTelemetry's `use_span`: a cancellation, a caller
    gone, or a generator closed is not the span's failure), then the span ends if `end`."""
    if isinstance(error, Exception) and span.is_recording():
        if record_exception:
            span.record_exception(error, escaped=True)
        if set_status:
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    if end:
        span.end()


# The sampled request being served: the step of its trace under way (its server span
# between steps), a `RecordedSpan` of its `RequestTrace`; else None. A context variable, so
# a task the request starts carries the step it started in, as it would carry
# OpenTelemetry's context, and its own steps do not become the request's.
request_step: ContextVar[RecordedSpan | None] = ContextVar("apiary_trace", default=None)

# A request being served whose trace is not recorded: its trace id in hex when the sampler
# dropped it, True when its caller sent a trace it did not sample (which OpenTelemetry's
# context carries); else None. Hot-path code reads it through `tracing.dropped`, a call
# into C with no Python frame of its own.
dropped_trace: ContextVar[str | bool | None] = ContextVar("apiary_dropped", default=None)


class RequestTrace:
    """The spans of one sampled HTTP request, recorded apart from OpenTelemetry's context.

    A span made current through OpenTelemetry's context costs a new context mapping, a
    `Context` object and a context-variable set and reset each time, and each span ended
    goes to the span queue on its own. At a ratio such as 0.1 a sampled request is a rare
    one, so its code runs cold (out of the CPU's caches) and each call on it costs several
    times what it costs in a loop (docs/benchmarks.md, issue 17). So the request's own steps
    (authentication, limits, the gateway call and its attempts, a Celery hop: `tracing.child`
    and `tracing.span`, in the request's task or in tasks it starts) are spans made current
    in `request_step` alone (`RecordedSpan.child`, used as a context manager), their ended
    spans wait here (`ended`), and the request hands them to the queue together when its
    server span (`root`) ends. A span still open then (a stream's, if its generator is
    closed late) goes to the queue alone when it ends.

    So no span is current in OpenTelemetry's context in a sampled request, and its steps
    need not look there. A span started through OpenTelemetry's API under the request (by
    an instrumentation library) takes the step under way as its parent
    (`LightTracer.orphan_parent`)."""

    __slots__ = ("ended", "open", "root", "token")

    def __init__(self, root: RecordedSpan) -> None:
        self.root = root
        self.ended: list[RecordedSpan] = []
        self.open = True
        self.token: object = None  # what setting `request_step` to the root returned
        root._request_trace = self

    def close(self) -> None:
        """The root has ended: hand every span ended so far to the queue at once."""
        self.open = False
        ended, self.ended = self.ended, []
        for span in ended:
            # A span and its trace refer to each other: left so, every request's spans
            # would be garbage only the cyclic collector frees, later and at a cost.
            span._request_trace = None
        self.root._tracer.end_all(ended)


class LightTracer(trace.Tracer):
    """Starts `RecordedSpan`s for sampled traces and bare non-recording spans for the
    rest; `processor` gets each recorded span when it ends."""

    def __init__(
        self,
        processor: SpanQueue | SpanProcessor,
        resource: Resource,
        scope: InstrumentationScope,
        ratio: float,
    ) -> None:
        self.processor = processor
        self.resource = resource
        self.scope = scope
        self.ratio = ratio
        self.bound = bound_for(ratio)
        # Where a span with no span current looks for a parent that is not in
        # OpenTelemetry's context (tracing.py: the request being served, its current span).
        self.orphan_parent: Callable[[], SpanContext | None] | None = None
        # Hands a request's spans to the processor (`RequestTrace.close`): at once to the
        # span queue, one by one to any other processor.
        self.end_all: Callable[[list[RecordedSpan]], None] = (
            getattr(processor, "on_end_all", None) or self._end_each
        )

    def _end_each(self, spans: list[RecordedSpan]) -> None:
        for span in spans:
            self.processor.on_end(span)  # type: ignore[arg-type]  # reads the same fields

    def keeps(self, trace_id: int) -> bool:
        """The ratio sampler's decision for a new trace."""
        return trace_id & _ID_LIMIT < self.bound

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        if not parent.is_valid and context is None and self.orphan_parent is not None:
            parent = self.orphan_parent() or parent  # the request being served, not current
        # A SpanContext is a tuple: its fields unpacked at once, not through five properties.
        trace_id, _, _, flags, state, valid = parent
        if not valid:  # a new trace: the ratio decides
            trace_id = new_trace_id()
            return self.start(name, trace_id, None, self.keeps(trace_id), kind, attributes, links)
        # Under a parent, local or remote: its flag decides, so a trace is kept whole.
        sampled = bool(flags & TraceFlags.SAMPLED)
        return self.start(name, trace_id, parent, sampled, kind, attributes, links, flags, state)

    def start(
        self,
        name: str,
        trace_id: int,
        parent: SpanContext | None,
        sampled: bool,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        flags: TraceFlags | None = None,
        state: trace.TraceState | None = None,
    ) -> trace.Span:
        """A span of `trace_id` whose sampling is already decided."""
        if flags is None:  # a trace of our own: its id is random, as the flag says
            flags = SAMPLED if sampled else UNSAMPLED
        context = local_context(trace_id, new_span_id(), flags, state)
        if not sampled:
            return NonRecordingSpan(context)
        return RecordedSpan(self, name, context, parent, kind, attributes, links)

    def start_as_current_span(  # type: ignore[override]  # a context manager, as the API's
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Current:
        span = self.start_span(name, context, kind, attributes, links)
        return Current(span, record_exception, set_status_on_exception, end_on_exit)
