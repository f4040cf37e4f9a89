"""Request ids, route-template metrics, JSON access logs and secret redaction, end to end.

Each test drives a small FastAPI app wrapped in `ObservabilityMiddleware` through httpx's ASGI
transport and reads what an operator would see: response headers, the `/metrics` exposition and
the JSON lines written by the configured log handler. Metrics live in a process-wide registry, so
metric assertions compare a scrape taken before the requests with one taken after.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import TypeAlias

import httpx
import orjson
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import Response

from apiary.observability.logging import (
    REDACTED,
    JsonFormatter,
    RequestContext,
    configure_logging,
    log_info,
    redact,
    request_context,
)
from apiary.observability.metrics import ObservabilityMiddleware, metrics_response

REQUESTS_TOTAL = "apiary_http_requests_total"
LATENCY_COUNT = "apiary_http_request_duration_seconds_count"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")

log = logging.getLogger("tests.observability")

Samples: TypeAlias = dict[tuple[str, frozenset[tuple[str, str]]], float]
LogLine: TypeAlias = dict[str, object]


def _tag_tenant() -> None:
    # A sync dependency runs in a threadpool on a copy of the context, like the real auth layer.
    ctx = request_context.get()
    if ctx:
        ctx.tenant_id = "tenant-42"


def _build_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(ObservabilityMiddleware)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        return metrics_response(request, None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    @app.get("/whoami", dependencies=[Depends(_tag_tenant)])
    async def whoami(request: Request) -> dict[str, str]:
        log.info("handling whoami")
        return {"state_request_id": request.state.request_id}

    tenants = APIRouter(prefix="/tenants")

    @tenants.get("/{tenant_id}")
    async def read_tenant(tenant_id: str) -> dict[str, str]:
        return {"tenant_id": tenant_id}

    api = APIRouter(prefix="/api/v1")
    api.include_router(tenants)
    app.include_router(api)

    sub_app = FastAPI()

    @sub_app.get("/things/{thing_id}")
    async def read_thing(thing_id: str) -> dict[str, str]:
        return {"thing_id": thing_id}

    app.mount("/sub", sub_app)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # Unhandled errors come back as the 500 a real client would get instead of raising here.
    transport = httpx.ASGITransport(app=_build_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Point the Apiary log handler at a buffer, and undo all logging changes afterwards."""
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore")
    saved_loggers = {
        name: (list(lg.handlers), lg.propagate, lg.disabled, lg.level)
        for name, lg in ((name, logging.getLogger(name)) for name in names)
    }
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    yield stream
    for handler in root.handlers:
        if handler not in saved_root[0]:
            handler.close()
    root.handlers[:] = saved_root[0]
    root.setLevel(saved_root[1])
    for name, (handlers, propagate, disabled, level) in saved_loggers.items():
        lg = logging.getLogger(name)
        lg.handlers[:] = handlers
        lg.propagate = propagate
        lg.disabled = disabled
        lg.setLevel(level)


def _lines(stream: io.StringIO) -> list[LogLine]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def _access_lines(stream: io.StringIO) -> list[LogLine]:
    return [line for line in _lines(stream) if line["logger"] == "apiary.access"]


async def _scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def _route_labels(samples: Samples) -> set[str]:
    return {dict(labels)["route"] for name, labels in samples if name == REQUESTS_TOTAL}


async def test_request_id_is_generated_echoed_and_put_on_request_state(
    client: httpx.AsyncClient,
) -> None:
    first = await client.get("/whoami")
    second = await client.get("/whoami")

    first_id = first.headers["x-request-id"]
    assert GENERATED_ID.fullmatch(first_id)
    assert first.json() == {"state_request_id": first_id}
    assert second.headers["x-request-id"] != first_id


async def test_well_formed_incoming_request_id_is_kept(client: httpx.AsyncClient) -> None:
    response = await client.get("/whoami", headers={"X-Request-ID": "edge-01.Req_9"})

    assert response.headers["x-request-id"] == "edge-01.Req_9"
    assert response.json() == {"state_request_id": "edge-01.Req_9"}


@pytest.mark.parametrize("incoming", ["has space", "a" * 65, "semi;colon", 'quote"d'])
async def test_malformed_incoming_request_id_is_replaced(
    client: httpx.AsyncClient, incoming: str
) -> None:
    response = await client.get("/whoami", headers={"X-Request-ID": incoming})

    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])
    assert response.json() == {"state_request_id": response.headers["x-request-id"]}


async def test_path_parameters_share_one_series_labelled_by_route_template(
    client: httpx.AsyncClient,
) -> None:
    before = await _scrape(client)
    assert (await client.get("/items/101")).status_code == 200
    assert (await client.get("/items/202")).status_code == 200
    after = await _scrape(client)

    labels = {"method": "GET", "route": "/items/{item_id}"}
    assert _delta(before, after, REQUESTS_TOTAL, status="200", **labels) == 2
    assert _delta(before, after, LATENCY_COUNT, **labels) == 2
    assert {"/items/101", "/items/202"}.isdisjoint(_route_labels(after))


@pytest.mark.parametrize(
    ("path", "route", "status"),
    [
        ("/api/v1/tenants/t-1", "/api/v1/tenants/{tenant_id}", "200"),
        ("/sub/things/t-9", "/sub/things/{thing_id}", "200"),
        ("/sub/no-such-thing", "/sub/{path}", "404"),
        ("/no/such/path", "unmatched", "404"),
        ("/items/not-a-number", "/items/{item_id}", "422"),
    ],
)
async def test_route_label_is_the_full_template_or_unmatched(
    client: httpx.AsyncClient, path: str, route: str, status: str
) -> None:
    before = await _scrape(client)
    assert str((await client.get(path)).status_code) == status
    after = await _scrape(client)

    assert _delta(before, after, REQUESTS_TOTAL, method="GET", route=route, status=status) == 1
    assert path not in _route_labels(after)


async def test_unhandled_exception_is_counted_and_logged_as_500(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    before = await _scrape(client)
    response = await client.get("/boom")
    after = await _scrape(client)

    assert response.status_code == 500
    assert _delta(before, after, REQUESTS_TOTAL, method="GET", route="/boom", status="500") == 1
    [access] = [line for line in _access_lines(log_stream) if line["path"] == "/boom"]
    assert access["status"] == 500
    assert access["error"] == "RuntimeError"


async def test_access_line_describes_the_request_without_its_query_string(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    response = await client.get("/items/7", params={"token": "qs-secret-value"})

    [access] = _access_lines(log_stream)
    assert access["level"] == "INFO"
    assert access["request_id"] == response.headers["x-request-id"]
    assert access["method"] == "GET"
    assert access["path"] == "/items/7"
    assert access["route"] == "/items/{item_id}"
    assert access["status"] == 200
    assert isinstance(access["duration_ms"], float)
    assert access["duration_ms"] >= 0
    assert isinstance(access["ts"], str)
    assert datetime.fromisoformat(access["ts"]).utcoffset() == UTC.utcoffset(None)
    assert "qs-secret-value" not in log_stream.getvalue()


async def test_tenant_set_on_the_context_object_reaches_app_and_access_logs(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    response = await client.get("/whoami")

    request_id = response.headers["x-request-id"]
    [app_line] = [line for line in _lines(log_stream) if line["message"] == "handling whoami"]
    [access] = _access_lines(log_stream)
    assert (app_line["request_id"], app_line["tenant_id"]) == (request_id, "tenant-42")
    assert (access["request_id"], access["tenant_id"]) == (request_id, "tenant-42")
    # The context is unwound with the request, so later lines are not mis-attributed.
    log.info("after the request")
    assert _lines(log_stream)[-1]["request_id"] is None


async def test_probes_and_scrapes_are_counted_but_not_access_logged(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    before = await _scrape(client)
    await client.get("/healthz")
    await client.get("/items/1")
    after = await _scrape(client)

    assert [line["route"] for line in _access_lines(log_stream)] == ["/items/{item_id}"]
    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    assert _delta(before, after, REQUESTS_TOTAL, **labels) == 1
    assert _delta(before, after, REQUESTS_TOTAL, method="GET", route="/metrics", status="200") == 1


def test_secrets_never_reach_the_log_output(log_stream: io.StringIO) -> None:
    secrets = (
        "hunter2",
        "abc.def.ghi",
        "apy_abcdef123456",
        "sk-abcdefghijklmnop1234",
        "Zm9vOmJhcg",
        "apy_fromtraceback99",
    )
    log.info(
        "auth header was Bearer %s and key %s",
        "abc.def.ghi",
        "apy_abcdef123456",
        extra={
            "password": "hunter2",
            "note": "upstream key sk-abcdefghijklmnop1234",
            "headers": {"Authorization": "Basic Zm9vOmJhcg", "accept": "json"},
            "prompt_tokens": 12,
        },
    )
    try:
        raise ValueError("rejected key apy_fromtraceback99")
    except ValueError:
        log.exception("lookup failed")

    output = log_stream.getvalue()
    for secret in secrets:
        assert secret not in output
    first, second = _lines(log_stream)
    assert first["message"] == f"auth header was Bearer {REDACTED} and key {REDACTED}"
    assert first["password"] == REDACTED
    assert first["note"] == f"upstream key {REDACTED}"
    assert first["headers"] == {"Authorization": REDACTED, "accept": "json"}
    assert first["prompt_tokens"] == 12
    assert isinstance(second["exc"], str)
    assert "ValueError: rejected key [redacted]" in second["exc"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: bearer tok3n!", f"Authorization: bearer {REDACTED}"),
        ("header BeArEr tok3n", f"header BeArEr {REDACTED}"),
        ("jwt=eyJhbGciOi.eyJzdWIiOjF9.c2ln end", f"jwt={REDACTED} end"),
        ("key apy_AbC-12_xyz9 used", f"key {REDACTED} used"),
        ("openai sk-proj-0123456789abcdef!", f"openai {REDACTED}!"),
        ("apy_short and task-0123456789abcdefghij", "apy_short and task-0123456789abcdefghij"),
    ],
)
def test_redact_replaces_only_credential_shapes(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "created",
    [1_795_000_000.0, 1_795_000_000.25, 1_795_000_000.9996, 1_795_000_001.007, 1_795_003_599.5],
)
def test_json_timestamp_is_the_records_time_in_utc_to_the_millisecond(created: float) -> None:
    # One formatter for all of them: the text up to the second is reused within a second.
    record = logging.makeLogRecord({"name": "t", "msg": "m", "created": created})
    line = orjson.loads(_JSON_FORMATTER.format(record))
    expected = datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")
    assert line["ts"] == expected.replace("+00:00", "Z")


_JSON_FORMATTER = JsonFormatter()


def test_configure_logging_twice_writes_each_record_once_and_takes_over_uvicorn(
    log_stream: io.StringIO,
) -> None:
    # What uvicorn's own logging config leaves behind: plain-text handlers, no propagation.
    for name in ("uvicorn", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.addHandler(logging.StreamHandler(log_stream))
        uvicorn_logger.propagate = False
    configure_logging("INFO", stream=log_stream)

    log.info("once")
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET / HTTP/1.1" 200')
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    log.debug("below the configured level")

    assert [(line["logger"], line["message"]) for line in _lines(log_stream)] == [
        ("tests.observability", "once"),
        ("uvicorn.error", "Application startup complete."),
    ]


async def test_text_format_keeps_correlation_and_redaction(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    configure_logging("INFO", json=False, stream=log_stream)

    response = await client.get("/whoami")
    log.info("token %s", "apy_abcdef123456", extra={"api_key": "plain-key"})

    output = log_stream.getvalue()
    assert f"[{response.headers['x-request-id']} tenant-42] handling whoami" in output
    assert "route=/whoami" in output
    assert f"token {REDACTED} api_key={REDACTED}" in output
    for secret in ("apy_abcdef123456", "plain-key"):
        assert secret not in output


def test_the_access_line_written_directly_is_the_line_logging_would_write(
    log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`log_info` skips the logging machinery when Apiary's JSON handler is the only one the
    line would reach: what it writes must be exactly what `logger.info` writes."""
    root = logging.getLogger()
    [ours] = [h for h in root.handlers if getattr(h, "stream", None) is log_stream]
    access = logging.getLogger("apiary.access")
    message = "POST /v1/chat/completions Bearer abc.def 200 1.50ms"
    fields: dict[str, object] = {
        "method": "POST",
        "route": "/v1/chat/completions",
        "status": 200,
        "duration_ms": 1.5,
        "api_key": "apy_0123456789abcdef",
        "level": "DEBUG",  # an extra field may not pass itself off as the envelope's
        "nested": {"password": "hunter2", "note": "sk-0123456789abcdef0123"},
        "_internal": "never an extra field",
    }
    records = 0
    make_record = logging.Logger.makeRecord

    def counting(self: logging.Logger, *args: object, **kwargs: object) -> logging.LogRecord:
        nonlocal records
        records += 1
        return make_record(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(logging.Logger, "makeRecord", counting)
    saved = list(root.handlers)
    context = request_context.set(RequestContext(request_id="req-1", tenant_id="tenant-1"))
    try:
        root.handlers[:] = [ours]  # as in production: nothing else attached
        log_info(access, message, fields)
        assert records == 0  # written directly
        root.handlers[:] = saved
        access.addHandler(logging.NullHandler())  # another destination: the ordinary path
        log_info(access, message, fields)
        assert records == 1
    finally:
        request_context.reset(context)
        root.handlers[:] = saved
        access.handlers.clear()

    direct, ordinary = _lines(log_stream)[-2:]
    assert direct.pop("ts")
    assert ordinary.pop("ts")
    assert direct == ordinary
    assert direct["message"] == "POST /v1/chat/completions Bearer [redacted] 200 1.50ms"
    assert direct["level"] == "INFO"
    assert direct["extra_level"] == "DEBUG"
    assert direct["api_key"] == REDACTED
    assert direct["nested"] == {"password": REDACTED, "note": REDACTED}
    assert (direct["request_id"], direct["tenant_id"]) == ("req-1", "tenant-1")
    assert "_internal" not in direct


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_a_batching_server_writes_a_loop_turn_s_lines_together(
    log_stream: io.StringIO,
) -> None:
    """`apiary serve` batches: INFO lines of one event-loop turn leave in one write when
    the turn ends; a warning goes at once, after the lines held before it."""
    stream = _CountingStream()
    configure_logging("INFO", stream=stream, batch=True)
    root = logging.getLogger()
    saved = list(root.handlers)
    root.handlers[:] = [h for h in saved if getattr(h, "stream", None) is stream]
    try:
        log.info("first")
        log.info("second")
        assert stream.getvalue() == ""
        await asyncio.sleep(0)
        assert [line["message"] for line in _lines(stream)] == ["first", "second"]
        assert stream.writes == 1

        log.info("held")
        log.warning("urgent")
        assert [line["message"] for line in _lines(stream)][2:] == ["held", "urgent"]
        await asyncio.sleep(0)
        assert len(_lines(stream)) == 4  # nothing written twice
    finally:
        root.handlers[:] = saved


def test_a_batching_handler_writes_at_once_outside_an_event_loop(log_stream: io.StringIO) -> None:
    stream = _CountingStream()
    configure_logging("INFO", stream=stream, batch=True)
    log.info("no loop here")
    assert [line["message"] for line in _lines(stream)] == ["no loop here"]
