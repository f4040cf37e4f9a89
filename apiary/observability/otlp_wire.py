"""Finished spans as an OTLP `ExportTraceServiceRequest`, written straight to protobuf's
wire format.

The OTLP exporter's own encoder builds a protobuf message object per span, attribute and
value before serializing them: about 50 µs a span on this project's bench machine, on the
export thread but under the same GIL as the requests being served, which made the
export of the sampled tenth of the gateway's calls most of tracing's cost. Writing the
bytes directly takes a fraction of that. The output parses to the same message as the
library's (tests/observability/test_tracing.py checks it field for field).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from apiary.observability.spans import UNSET as _UNSET

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext

_SMALL = [bytes((n,)) for n in range(128)]
_U64 = (1 << 64) - 1
_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack
_FIXED32 = struct.Struct("<I").pack
# Span.flags (field 16): the parent's is-remote bit is known, and whether it is set.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_FLAGS_TAG = b"\x85\x01"  # field 16, fixed32
_LOCAL_PARENT = _FLAGS_TAG + _FIXED32(_HAS_IS_REMOTE)
_REMOTE_PARENT = _FLAGS_TAG + _FIXED32(_HAS_IS_REMOTE | _IS_REMOTE)
# Span.kind (field 6): the proto's SPAN_KIND_INTERNAL is 1, the API's SpanKind.INTERNAL 0.
_KINDS = {kind: b"\x30" + bytes((kind.value + 1,)) for kind in SpanKind}
# Span.status (field 15) without a description: its code alone (UNSET, the default, is
# an empty message).
_STATUSES = {
    code: b"\x7a\x00" if code.value == 0 else b"\x7a\x02\x18" + bytes((code.value,))
    for code in StatusCode
}


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes or message) with its one-byte tag."""
    return tag + _varint(len(payload)) + payload


def _value(value: Any) -> bytes:
    """An AnyValue's fields. Its members are a oneof, so a default value (0, "", False)
    is still written."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value & _U64)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _value(item)) for item in value))
    if isinstance(value, Mapping):
        pairs = b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        return _field(b"\x32", pairs)
    raise TypeError(f"an attribute value of type {type(value).__name__} has no OTLP form")


_KEYS: dict[str, bytes] = {}  # attribute keys come from code: a few dozen
# Whole attributes (tag, key and value) whose value is a short string: most repeat from
# call to call (a model, a provider, a tenant id, a route), so each is encoded once.
_PAIRS: dict[tuple[bytes, str, str], bytes] = {}
_CACHED = 4096  # entries each cache holds at most: a bound, not an eviction policy


def _key(key: str) -> bytes:
    encoded = _field(b"\x0a", key.encode())
    if len(_KEYS) < _CACHED:
        _KEYS[key] = encoded
    return encoded


def _key_value(key: str, value: Any) -> bytes:
    return (_KEYS.get(key) or _key(key)) + _field(b"\x12", _value(value))


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    # The SDK's BoundedAttributes wraps a plain dict: read it without the mapping
    # protocol's per-item lookups.
    plain: Mapping[str, Any] = getattr(attributes, "_dict", attributes)
    parts = []
    for key, value in plain.items():
        kind = type(value)
        if kind is str and len(value) <= 64:
            pair = _PAIRS.get((tag, key, value))
            if pair is None:
                pair = _field(tag, _key_value(key, value))
                if len(_PAIRS) < _CACHED:
                    _PAIRS[tag, key, value] = pair
            parts.append(pair)
            continue
        if kind is int or kind is float:  # counts, costs, codes: written here, not cached
            encoded_key = _KEYS.get(key) or _key(key)
            number = b"\x18" + _varint(value & _U64) if kind is int else b"\x21" + _DOUBLE(value)
            # An AnyValue of a number is at most 11 bytes: its length is one byte.
            pair = encoded_key + b"\x12" + _SMALL[len(number)] + number
            parts.append(tag + _varint(len(pair)) + pair)
            continue
        parts.append(_field(tag, _key_value(key, value)))
    return b"".join(parts)


def _trace_state(context: SpanContext) -> str:
    state = context.trace_state
    return ",".join(f"{key}={value}" for key, value in state.items()) if state else ""


def _event(event: Event) -> bytes:
    parts = [b"\x09", _FIXED64(event.timestamp), _field(b"\x12", event.name.encode())]
    parts.append(_attributes(b"\x1a", event.attributes))
    if event.dropped_attributes:
        parts.append(b"\x20" + _varint(event.dropped_attributes))
    return b"".join(parts)


def _link(link: Link) -> bytes:
    context = link.context
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
        _attributes(b"\x22", link.attributes),
    ]
    if link.dropped_attributes:
        parts.append(b"\x28" + _varint(link.dropped_attributes))
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if context.is_remote else 0)
    parts.append(b"\x35" + _FIXED32(flags))
    return b"".join(parts)


# A span's fixed fields in one `pack` each, each behind its tag (and length) bytes:
# trace_id (0x0a 0x10: field 1, 16 bytes big-endian, as two halves) and span_id (0x12 0x08:
# field 2, 8 bytes); parent_span_id (0x22 0x08: field 4); start and end times (0x39, 0x41:
# fields 7 and 8, fixed64 little-endian).
_IDS = struct.Struct(">HQQHQ").pack
_PARENT = struct.Struct(">HQ").pack
_TIMES = struct.Struct("<BQBQ").pack
# Span names come from code and route templates: a few dozen, each encoded once with
# its kind (fields 5 and 6).
_NAMED: dict[tuple[str, int], bytes] = {}
_UNSET_STATUS = _STATUSES[StatusCode.UNSET]


def _named(name: str, kind: SpanKind) -> bytes:
    key = (name, kind._value_)  # the member's value: an Enum's own hash runs in Python
    encoded = _NAMED.get(key)
    if encoded is None:
        encoded = _field(b"\x2a", name.encode()) + _KINDS[kind]
        if len(_NAMED) < _CACHED:
            _NAMED[key] = encoded
    return encoded


def _span(span: ReadableSpan) -> bytes:
    # SpanContext is a tuple (trace_id, span_id, is_remote, flags, state, is_valid): read
    # by index, not through its properties, a function call each.
    context = span.get_span_context()
    assert context is not None  # a finished SDK span always has one
    trace_id, span_id, _, _, state = context[:5]
    parent = span.parent
    parts = [_IDS(0x0A10, trace_id >> 64, trace_id & _U64, 0x1208, span_id)]
    if state is not DEFAULT_TRACE_STATE and state:
        parts.append(_field(b"\x1a", _trace_state(context).encode()))
    if parent is not None:
        parts.append(_PARENT(0x2208, parent[1]))
    parts += (
        _named(span.name, span.kind),
        _TIMES(0x39, span.start_time or 0, 0x41, span.end_time or 0),
        # The SDK span's own fields, not its properties, which copy each into a new
        # tuple or mapping proxy (the test comparing with the library's encoder guards it).
        _attributes(b"\x4a", getattr(span, "_attributes", None) or span.attributes),
    )
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in getattr(span, "_events", None) or ():
        parts.append(_field(b"\x5a", _event(event)))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in getattr(span, "_links", None) or ():
        parts.append(_field(b"\x6a", _link(link)))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    status = span.status
    if status is _UNSET:  # most spans: the shared status a span starts with
        parts.append(_UNSET_STATUS)
    elif status.description:
        code = status.status_code._value_
        described = _field(b"\x12", status.description.encode())
        parts.append(_field(b"\x7a", described + (b"\x18" + _SMALL[code] if code else b"")))
    else:
        parts.append(_STATUSES[status.status_code])
    parts.append(_REMOTE_PARENT if parent is not None and parent[2] else _LOCAL_PARENT)
    return b"".join(parts)


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    parts = [_field(b"\x0a", scope.name.encode())]
    if scope.version:
        parts.append(_field(b"\x12", scope.version.encode()))
    parts.append(_attributes(b"\x1a", scope.attributes))
    return b"".join(parts)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized `ExportTraceServiceRequest` of `spans`: one ResourceSpans per
    resource, one ScopeSpans per instrumentation scope within it, as the library groups
    them."""
    # A provider's spans share one Resource and one scope object: grouped by identity,
    # since hashing a Resource serializes its attributes to JSON and a scope's hash runs
    # in Python. Equal objects that are not the same one are merged below.
    by_identity: dict[tuple[int, int], tuple[Resource, InstrumentationScope | None, list[bytes]]]
    by_identity = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        group = by_identity.get((id(resource), id(scope)))
        if group is None:
            group = by_identity[id(resource), id(scope)] = (resource, scope, [])
        one = _span(span)
        group[2].append(b"\x12" + _varint(len(one)) + one)
    grouped: dict[int, tuple[Resource, dict[InstrumentationScope | None, list[bytes]]]] = {}
    for resource, scope, encoded_spans in by_identity.values():
        _, scopes = grouped.setdefault(id(resource), (resource, {}))
        scopes.setdefault(scope, []).extend(encoded_spans)
    out = []
    for resource, scopes in grouped.values():
        parts = [_field(b"\x0a", _attributes(b"\x0a", resource.attributes))]
        for scope, encoded in scopes.items():
            body = [_field(b"\x0a", _scope(scope)), *encoded]
            if scope is not None and scope.schema_url:
                body.append(_field(b"\x1a", scope.schema_url.encode()))
            parts.append(_field(b"\x12", b"".join(body)))
        if resource.schema_url:
            parts.append(_field(b"\x1a", resource.schema_url.encode()))
        out.append(_field(b"\x0a", b"".join(parts)))
    return b"".join(out)


class SpanExporter(OTLPSpanExporter):
    """The OTLP/HTTP exporter (its endpoint, headers, compression, retries and timeouts
    as they are), sending the bytes of `encode_spans` instead of its own encoding."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            body = encode_spans(spans)
        except Exception:  # a span the encoder cannot write must not stop the export thread
            return super().export(spans)
        done = self._client.export(body)
        return SpanExportResult.SUCCESS if done.success else SpanExportResult.FAILURE
