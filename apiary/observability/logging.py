"""One-JSON-object-per-line logging with request correlation and secret redaction.

`configure_logging` installs a single stderr handler on the root logger whose records carry the
current request id and tenant id (from `request_context`, set by the observability middleware and
filled in by the auth layer), any `extra=` fields, and a redacted traceback. Redaction runs on the
handler rather than on a logger, because logger filters never see records propagated from child
loggers; it blanks sensitive extra fields by key name and scrubs credential-shaped substrings from
messages, string values and tracebacks.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import TextIO, cast

import orjson

from apiary.observability import tracing

__all__ = [
    "REDACTED",
    "JsonFormatter",
    "RedactingFilter",
    "RequestContext",
    "configure_logging",
    "log_info",
    "redact",
    "request_context",
]

REDACTED = "[redacted]"


@dataclass
class RequestContext:
    """What a log line needs to know about the request it was written for.

    Mutable on purpose: the auth layer sets `tenant_id` on the shared object, so the change is
    seen by the middleware even when made inside a copied context (threadpool, child task).
    """

    request_id: str
    tenant_id: str | None = None


request_context: ContextVar[RequestContext | None] = ContextVar("request_context", default=None)

# "token(?!s)" keeps LLM usage counts such as `prompt_tokens` readable; the value patterns
# below still scrub any credential that lands in them.
_SENSITIVE_KEY = re.compile(
    r"password|secret|token(?!s)|authorization|api_?key|cookie|key_hash", re.IGNORECASE
)

# The look-behinds stop ordinary words such as "task-..." from being mistaken for key prefixes.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(Bearer)\s+\S+", re.IGNORECASE), rf"\1 {REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"(?<![A-Za-z0-9_])apy_[A-Za-z0-9_-]{8,}"), REDACTED),
    (re.compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{16,}"), REDACTED),
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
# Standard LogRecord attributes, plus uvicorn's ANSI-coloured duplicate of the message.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
_CORE_KEYS = ("ts", "level", "logger", "message", "exc", "stack", "trace_id", "span_id")
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")
_UVICORN_ACCESS_LOGGER = "uvicorn.access"
# httpx logs every outbound URL at INFO, query string included, which is where some LLM
# providers take their API key.
_CHATTY_CLIENT_LOGGERS = ("httpx", "httpcore")


# Every pattern above starts with one of these literals: when none is in the text (nearly
# every log line), one quick scan for them settles it.
_MAYBE_SECRET = re.compile(r"(?i:bearer)|eyJ|apy_|sk-")


def redact(text: str) -> str:
    """Replace every credential-shaped substring of `text` with a redaction marker."""
    if _MAYBE_SECRET.search(text) is None:
        return text
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@lru_cache(maxsize=1024)  # the same few `extra=` names come back on every line
def _is_sensitive_name(key: str) -> bool:
    return _SENSITIVE_KEY.search(key) is not None


def _is_sensitive_key(key: object) -> bool:
    return isinstance(key, str) and _is_sensitive_name(key)


# Values that cannot hold a secret, checked first: most extra fields are numbers.
_PLAIN_TYPES = frozenset({int, float, bool, type(None)})


def _redact_value(value: object) -> object:
    if type(value) in _PLAIN_TYPES:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            key: REDACTED if _is_sensitive_key(key) else _redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    return value


# Where `RedactingFilter` leaves a record's redacted extra fields for the formatter, so they
# are found once per record (names starting with "_" are never taken for extra fields).
_EXTRA_ATTR = "_apiary_extra"


def _extra_fields(record: logging.LogRecord) -> dict[str, object]:
    found: dict[str, object] | None = record.__dict__.get(_EXTRA_ATTR)
    if found is not None:
        return found
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRS and not key.startswith("_")
    }


class RedactingFilter(logging.Filter):
    """Scrub secrets from a record in place before any formatter sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # A broken format string must not make logging raise into the caller.
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        extra = {
            key: REDACTED if _is_sensitive_key(key) else _redact_value(value)
            for key, value in _extra_fields(record).items()
        }
        record.__dict__.update(extra)
        record.__dict__[_EXTRA_ATTR] = extra
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _correlation(record: logging.LogRecord) -> tuple[object, object]:
    # An explicit `extra=` wins so code running outside the request (e.g. a 500 handler after
    # the middleware has unwound) can still attach the id it read from `request.state`.
    ctx = request_context.get()
    request_id = record.__dict__.get("request_id", ctx.request_id if ctx else None)
    tenant_id = record.__dict__.get("tenant_id", ctx.tenant_id if ctx else None)
    return request_id, tenant_id


class JsonFormatter(logging.Formatter):
    """Render a record as one compact JSON object."""

    _second = -1
    _second_text = ""

    def _timestamp(self, created: float) -> str:
        """`created` as ISO 8601 UTC to the millisecond; the text up to the second is
        reused while the second lasts (it is the same for every line written in it)."""
        second = int(created)
        micros = round((created - second) * 1_000_000)  # rounded as datetime rounds it
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{micros // 1000:03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        request_id, tenant_id = _correlation(record)
        payload: dict[str, object] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id,
            "tenant_id": tenant_id,
        }
        if tracing.TRACER is not None and (ids := tracing.current_ids()) is not None:
            payload["trace_id"], payload["span_id"] = ids
        for key, value in _extra_fields(record).items():
            # Never let an extra field masquerade as one of the envelope keys.
            payload[f"extra_{key}" if key in _CORE_KEYS else key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exc"] = record.exc_text
        if record.stack_info:
            payload["stack"] = record.stack_info
        return orjson.dumps(payload, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def log_info(logger: logging.Logger, message: str, fields: Mapping[str, object]) -> None:
    """`logger.info(message, extra=fields)`, for a line written on every request.

    When Apiary's own JSON handler is the only place the record would go (as
    `configure_logging` sets things up), the line is built and written straight to it: the
    same bytes, redacted the same way, without building a `LogRecord` and walking the
    logger and handler chain, which cost about 30 µs a line. Any other arrangement (a
    handler or filter added, e.g. by a test's log capture; text format) takes the ordinary
    path."""
    handler = _only_json_handler(logger)
    if handler is None:
        logger.info(message, extra=dict(fields))
        return
    formatter = cast(JsonFormatter, handler.formatter)
    context = request_context.get()
    created = time.time()
    payload: dict[str, object] = {
        "ts": None,  # set under the handler's lock, where the formatter keeps its clock
        "level": "INFO",
        "logger": logger.name,
        "message": redact(message),
        "request_id": context.request_id if context else None,
        "tenant_id": context.tenant_id if context else None,
    }
    if tracing.TRACER is not None:
        # A request the sampler dropped (nine in ten at a 10% ratio) has the ids
        # `current_ids` would give, its trace id and that id's first half, at no call.
        dropped = tracing.dropped()
        ids = (dropped, dropped[:16]) if type(dropped) is str else tracing.current_ids()
        if ids is not None:
            payload["trace_id"], payload["span_id"] = ids
    for key, value in fields.items():
        if key.startswith("_"):  # as on a LogRecord, where such names are never extras
            continue
        redacted = REDACTED if _is_sensitive_key(key) else _redact_value(value)
        payload[f"extra_{key}" if key in _CORE_KEYS else key] = redacted
    with handler.lock:  # type: ignore[union-attr]  # created with the handler
        try:
            payload["ts"] = formatter._timestamp(created)
            line = orjson.dumps(payload, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
            handler.write_line(line)
        except Exception:  # a failed write must not fail the request
            handler.handleError(logging.makeLogRecord({"msg": message}))


def _only_json_handler(logger: logging.Logger) -> _ApiaryHandler | None:
    """Apiary's JSON handler, if an INFO record from `logger` would reach it and nothing else."""
    if logger.filters or not logger.isEnabledFor(logging.INFO):
        return None
    current: logging.Logger | None = logger
    while current is not None and not current.handlers:
        if not current.propagate:
            return None
        current = current.parent
    if current is not logging.getLogger() or len(current.handlers) != 1:
        return None  # handlers below the root, or none at all
    handler = current.handlers[0]
    if (
        type(handler) is not _ApiaryHandler
        or handler.level > logging.INFO
        or type(handler.formatter) is not JsonFormatter
        or len(handler.filters) != 1
        or type(handler.filters[0]) is not RedactingFilter
    ):
        return None
    return handler


class TextFormatter(logging.Formatter):
    """Human-readable single line for local development: same fields, no JSON."""

    def format(self, record: logging.LogRecord) -> str:
        request_id, tenant_id = _correlation(record)
        line = (
            f"{self.formatTime(record)} {record.levelname:<7} {record.name} "
            f"[{request_id or '-'} {tenant_id or '-'}] {record.getMessage()}"
        )
        extras = " ".join(
            f"{key}={value}"
            for key, value in _extra_fields(record).items()
            if key not in ("request_id", "tenant_id")
        )
        if extras:
            line = f"{line} {extras}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{record.stack_info}"
        return line


class _ApiaryHandler(logging.StreamHandler[TextIO]):
    """Apiary's one handler (a subclass, so `configure_logging` can find and replace it).

    With `batch`, lines below WARNING written during one turn of the event loop leave in
    one write when the turn ends, instead of a system call each: a busy server writes an
    access line per request. Warnings and errors, and lines written outside an event loop,
    go at once, taking any held lines with them, in order."""

    def __init__(self, stream: TextIO, *, batch: bool = False) -> None:
        super().__init__(stream)
        self._batch = batch
        self._held: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record), urgent=record.levelno >= logging.WARNING)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_line(self, line: str, *, urgent: bool = False) -> None:
        """Write one formatted line; the caller holds the handler's lock."""
        if self._batch and not urgent:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._held.append(line + self.terminator)
                if len(self._held) == 1:
                    loop.call_soon(self._release)
                return
        self._held.append(line + self.terminator)
        self.flush()

    def _release(self) -> None:
        try:
            self.flush()
        except Exception:  # a failed write must not take the event loop's callback down
            self.handleError(logging.makeLogRecord({"msg": "held log lines"}))

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created with the handler
            if self._held:
                text = "".join(self._held)
                self._held.clear()
                self.stream.write(text)
            super().flush()


def configure_logging(
    level: str = "INFO", *, json: bool = True, stream: TextIO | None = None, batch: bool = False
) -> None:
    """Route all logging through one redacting handler on the root logger.

    Safe to call more than once: the previous Apiary handler is replaced, never duplicated.
    Handlers installed by others (a test harness's capture, for example) are left alone.
    `stream` defaults to stderr and exists so tests can read what was written. `batch`
    (the server sets it) writes the lines of one event-loop turn together; see
    `_ApiaryHandler`.
    """
    # Our lines carry neither the caller's file and line nor thread and process names, so
    # logging need not walk the stack or look them up for every record (the logging
    # HOWTO's "Optimization" section); the access line alone is written on every request.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h, _ApiaryHandler)]:
        root.removeHandler(existing)
        existing.close()

    handler = _ApiaryHandler(stream if stream is not None else sys.stderr, batch=batch)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())

    # Uvicorn installs its own plain-text handlers; send its records through ours instead.
    for name in _UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # The middleware writes a richer access line (route, tenant, duration), so uvicorn's is noise.
    access_logger = logging.getLogger(_UVICORN_ACCESS_LOGGER)
    access_logger.handlers.clear()
    access_logger.propagate = False
    access_logger.disabled = True
    for name in _CHATTY_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
