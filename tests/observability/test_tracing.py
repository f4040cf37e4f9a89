"""OpenTelemetry traces, received in process over real OTLP/HTTP by oteltap: the spans of a
/v1 call that falls back, of a swarm run on a real Celery worker (the worker's spans in
the API request's trace), of a knowledge ingestion, the trace id on log lines, and
nothing installed when no endpoint is set."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceState
from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

from apiary.authz.permissions import Role
from apiary.config import OTelSettings
from apiary.observability import tracing
from apiary.observability.logging import configure_logging
from apiary.observability.spans import (
    SAMPLED,
    UNSAMPLED,
    LightTracer,
    RecordedSpan,
    local_context,
)
from apiary.runtime import Runtime
from tests.conftest import TEST_REDIS
from tests.factories import make_api_key, make_tenant
from tests.fakes import Fail, FakeUpstream, Reply, ToolCall
from tests.gateway.conftest import Gateway, make_gateway, minute_to_spare  # noqa: F401 - fixture
from tests.gateway.test_cache_and_limits import set_limits
from tests.knowledge.helpers import create_base, ingested, upload
from tests.swarm.conftest import FINAL
from tests.swarm.test_celery_worker import Workers, celery_app, workers  # noqa: F401 - fixtures

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello gateway"}]
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"  # a caller's trace id, W3C's example


async def _chat(
    http: httpx.AsyncClient, key: str, *, traceparent: str | None = None, stream: bool = False
) -> httpx.Response:
    """One /v1 chat call, as the caller of a traced service sends it."""
    headers = {"Authorization": f"Bearer {key}"}
    if traceparent is not None:
        headers["traceparent"] = traceparent
    body: dict[str, Any] = {"model": "default", "messages": HELLO}
    if stream:
        body["stream"] = True
    return await http.post("/v1/chat/completions", headers=headers, json=body)


def _a_step_records() -> bool:
    """Whether a step started here (`tracing.child`, as the hot path starts them) records."""
    with tracing.child("apiary.probe") as step:
        return step.is_recording()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Spans:
    """Every span the receiver got, kept as they arrive (subscribed before any is sent)."""

    def __init__(self, receiver: OtelTapHttpProtobufReceiver) -> None:
        self.received: list[Span] = []
        self._receiver = receiver
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for span in self._receiver.stream_traces():
            self.received.append(span)

    async def wait(
        self, predicate: Callable[[list[Span]], bool], timeout_s: float = 20.0
    ) -> list[Span]:
        """Flush this process's spans, then wait until what arrived satisfies `predicate`."""
        await asyncio.to_thread(tracing.flush)
        for _ in range(int(timeout_s / 0.05)):
            if predicate(self.received):
                return self.received
            await asyncio.sleep(0.05)
        names = sorted({span.name for span in self.received})
        raise AssertionError(f"spans never arrived; got {names}")

    def named(self, name: str, trace_id: bytes | None = None) -> list[Span]:
        return [
            span
            for span in self.received
            if span.name == name and trace_id in (None, span.trace_id)
        ]

    def one(self, name: str, trace_id: bytes | None = None) -> Span:
        found = self.named(name, trace_id)
        assert len(found) == 1, (name, [s.name for s in self.received])
        return found[0]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def attributes(span: Span) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in span.attributes:
        value = pair.value
        kind = value.WhichOneof("value")
        found[pair.key] = getattr(value, kind) if kind else None
    return found


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[OtelTapHttpProtobufReceiver, str]]:
    port = free_port()
    settings = OtelTapHttpProtobufReceiverSettings(http_port=port)
    async with OtelTapHttpProtobufReceiver(settings) as tap:
        yield tap, f"http://127.0.0.1:{port}"


@pytest.fixture
async def spans(
    receiver: tuple[OtelTapHttpProtobufReceiver, str],
) -> AsyncIterator[Spans]:
    """Tracing on in this process, exporting every span to the receiver."""
    tap, endpoint = receiver
    collected = Spans(tap)
    await asyncio.sleep(0)  # the collector subscribes before anything is sent
    assert tracing.install(OTelSettings(endpoint=endpoint, service_name="apiary-test"))
    yield collected
    await asyncio.to_thread(tracing.shutdown)
    await collected.close()


async def test_a_v1_call_that_falls_back_is_one_trace_with_an_attempt_per_provider(
    make_gateway: Any,  # noqa: F811 - the imported fixture
    spans: Spans,
) -> None:
    gateway: Gateway = await make_gateway(
        prices={"claude/claude-sonnet-4": {"input": 3, "output": 15}}
    )
    gateway.upstream.set_default("openai", Fail(503))
    async with gateway.http() as http:
        response = await _chat(http, gateway.key)
    assert response.status_code == 200, response.text
    await spans.wait(lambda got: any(s.name == "POST /v1/chat/completions" for s in got))

    server = spans.one("POST /v1/chat/completions")
    assert server.kind == Span.SPAN_KIND_SERVER
    assert attributes(server)["http.route"] == "/v1/chat/completions"
    assert attributes(server)["http.response.status_code"] == 200
    trace_id = server.trace_id
    assert attributes(server)["apiary.tenant_id"] == str(gateway.tenant.id)
    authenticate = spans.one("apiary.authenticate", trace_id)  # a new key: read and cached
    call = spans.one("chat default", trace_id)
    attempts = spans.named("apiary.gateway.attempt", trace_id)
    assert authenticate.parent_span_id == server.span_id
    assert attributes(authenticate)["apiary.auth.kind"] == "api_key"
    assert call.parent_span_id == server.span_id
    assert spans.named("apiary.limits.admit", trace_id) == []  # no limits: nothing to count

    assert call.kind == Span.SPAN_KIND_CLIENT  # the GenAI client span, attempts or none
    described = attributes(call)
    assert described["gen_ai.operation.name"] == "chat"
    assert described["gen_ai.request.model"] == "default"
    assert described["gen_ai.system"] == "anthropic"
    assert described["gen_ai.response.model"].startswith("claude-sonnet-4")
    assert described["gen_ai.usage.input_tokens"] > 0
    assert described["gen_ai.usage.output_tokens"] > 0
    assert described["apiary.cost_usd"] > 0
    assert described["apiary.route"] == "default"
    assert described["apiary.cache"] == "off"
    assert described["apiary.attempts"] == 2
    assert described["apiary.upstream_s"] > 0

    # The failed provider (its retries included) and the one that answered, in order.
    assert [a.parent_span_id for a in attempts] == [call.span_id, call.span_id]
    first, second = sorted(attempts, key=lambda s: s.start_time_unix_nano)
    assert attributes(first)["apiary.provider"] == "oai"
    assert attributes(first)["gen_ai.system"] == "openai"
    assert attributes(first)["error.type"] == "server"
    assert first.status.code == first.status.STATUS_CODE_ERROR
    assert attributes(second)["apiary.provider"] == "claude"
    assert attributes(second)["gen_ai.request.model"] == "claude-sonnet-4"
    assert attributes(second)["gen_ai.response.model"] == described["gen_ai.response.model"]
    assert "error.type" not in attributes(second)
    assert second.status.code == second.status.STATUS_CODE_UNSET
    # Each covers its own time: the failed one (its retries) ends before the other starts.
    assert call.start_time_unix_nano <= first.start_time_unix_nano < first.end_time_unix_nano
    assert first.end_time_unix_nano <= second.start_time_unix_nano < second.end_time_unix_nano
    assert second.end_time_unix_nano <= call.end_time_unix_nano


@pytest.mark.skipif(not TEST_REDIS, reason="limits count in Redis in production")
async def test_authentication_and_admission_are_steps_when_they_wait_on_a_store(
    make_gateway: Any,  # noqa: F811 - the imported fixture
    spans: Spans,
) -> None:
    """A key's first call reads the key from the database and takes a lease of the
    tenant's counters in Redis: each a step of its trace. The next call, served from the
    key cache and the lease, records neither; its request span still names the tenant."""
    gateway: Gateway = await make_gateway()
    await set_limits(gateway, gateway.tenant.admin, key_rpm=1000)
    await minute_to_spare()  # the lease is of this minute's counters
    client = gateway.client()
    for _ in range(2):
        await client.chat.completions.create(model="default", messages=HELLO)
    served = "POST /v1/chat/completions"
    await spans.wait(lambda got: sum(s.name == served for s in got) == 2)
    first, second = sorted(spans.named(served), key=lambda s: s.start_time_unix_nano)
    assert attributes(first)["apiary.tenant_id"] == str(gateway.tenant.id)
    assert attributes(second)["apiary.tenant_id"] == str(gateway.tenant.id)

    assert spans.one("apiary.authenticate", first.trace_id).parent_span_id == first.span_id
    call = spans.one("chat default", first.trace_id)
    assert spans.one("apiary.limits.admit", first.trace_id).parent_span_id == call.span_id
    assert spans.named("apiary.authenticate", second.trace_id) == []
    assert spans.named("apiary.limits.admit", second.trace_id) == []
    assert spans.one("chat default", second.trace_id).parent_span_id == second.span_id


@pytest.mark.skipif(not TEST_REDIS, reason="limits count in Redis in production")
async def test_a_refusal_is_the_admission_step_s_error(
    make_gateway: Any,  # noqa: F811 - the imported fixture
    spans: Spans,
) -> None:
    """A limit too small to lease is counted in Redis call by call: each call's admission
    is a step, and the one refused is marked failed, naming the refusal (as it was when
    every admission was a step)."""
    gateway: Gateway = await make_gateway()
    await set_limits(gateway, gateway.tenant.admin, key_rpm=1)
    await minute_to_spare()
    async with gateway.http() as http:
        assert (await _chat(http, gateway.key)).status_code == 200
        assert (await _chat(http, gateway.key)).status_code == 429
    served = "POST /v1/chat/completions"
    await spans.wait(lambda got: sum(s.name == served for s in got) == 2)
    first, second = sorted(spans.named(served), key=lambda s: s.start_time_unix_nano)
    admitted = spans.one("apiary.limits.admit", first.trace_id)
    refused = spans.one("apiary.limits.admit", second.trace_id)
    assert admitted.status.code == admitted.status.STATUS_CODE_UNSET
    assert refused.status.code == refused.status.STATUS_CODE_ERROR
    assert refused.status.message.startswith("TooManyRequests: API key request rate limit")
    assert attributes(second)["http.response.status_code"] == 429


async def test_the_prompts_of_one_completions_call_are_calls_side_by_side_in_its_trace(
    make_gateway: Any,  # noqa: F811 - the imported fixture
    spans: Spans,
) -> None:
    """`/v1/completions` runs a list of prompts as gateway calls together: each is a
    child of the request with its own admission and attempt under it, not under the
    other prompt's."""
    gateway: Gateway = await make_gateway()
    completion = await gateway.client().completions.create(
        model="default", prompt=["first prompt", "second prompt"], max_tokens=8
    )
    assert len(completion.choices) == 2
    await spans.wait(lambda got: any(s.name == "POST /v1/completions" for s in got))
    server = spans.one("POST /v1/completions")
    calls = spans.named("chat default", server.trace_id)
    assert [call.parent_span_id for call in calls] == [server.span_id, server.span_id]
    # Each answered by the first provider tried: the call's span says so, no attempt span.
    assert spans.named("apiary.gateway.attempt", server.trace_id) == []
    for call in calls:
        assert attributes(call)["apiary.provider"] == "oai"
        assert attributes(call)["apiary.attempts"] == 1
        assert (
            0
            < attributes(call)["apiary.upstream_s"] * 1e9
            <= (call.end_time_unix_nano - call.start_time_unix_nano)
        )


async def test_a_streamed_call_is_described_when_its_stream_ends(
    make_gateway: Any,  # noqa: F811 - the imported fixture
    spans: Spans,
) -> None:
    gateway: Gateway = await make_gateway()
    async with gateway.http() as http:
        response = await _chat(http, gateway.key, stream=True)
    assert response.status_code == 200, response.text
    assert "[DONE]" in response.text
    await spans.wait(lambda got: any(s.name == "POST /v1/chat/completions" for s in got))
    server = spans.one("POST /v1/chat/completions")
    call = spans.one("chat default", server.trace_id)
    assert call.parent_span_id == server.span_id
    described = attributes(call)
    assert described["apiary.streamed"] is True
    assert described["gen_ai.system"] == "openai"
    assert described["gen_ai.usage.output_tokens"] > 0
    assert call.end_time_unix_nano <= server.end_time_unix_nano
    assert 0 < described["apiary.ttft_s"] <= described["apiary.upstream_s"]
    assert spans.named("apiary.gateway.attempt", server.trace_id) == []  # answered at once


async def test_a_streamed_call_that_falls_back_shows_each_provider_tried(
    make_gateway: Any,  # noqa: F811 - the imported fixture
    spans: Spans,
) -> None:
    gateway: Gateway = await make_gateway()
    gateway.upstream.set_default("openai", Fail(503))
    async with gateway.http() as http:
        response = await _chat(http, gateway.key, stream=True)
    assert response.status_code == 200, response.text
    assert "[DONE]" in response.text
    await spans.wait(lambda got: any(s.name == "POST /v1/chat/completions" for s in got))
    server = spans.one("POST /v1/chat/completions")
    call = spans.one("chat default", server.trace_id)
    assert attributes(call)["apiary.provider"] == "claude"
    failed, answered = sorted(
        spans.named("apiary.gateway.attempt", server.trace_id),
        key=lambda s: s.start_time_unix_nano,
    )
    assert [failed.parent_span_id, answered.parent_span_id] == [call.span_id, call.span_id]
    assert attributes(failed)["apiary.provider"] == "oai"
    assert attributes(failed)["error.type"] == "server"
    assert failed.start_time_unix_nano < failed.end_time_unix_nano  # its retries
    assert attributes(answered)["apiary.provider"] == "claude"
    assert attributes(answered)["apiary.ttft_s"] == attributes(call)["apiary.ttft_s"]


async def test_an_embeddings_call_is_the_client_span_and_its_first_answer_no_attempt(
    make_gateway: Any,  # noqa: F811 - the imported fixture
    spans: Spans,
) -> None:
    gateway: Gateway = await make_gateway()
    result = await gateway.client().embeddings.create(
        model="oai/text-embedding-3-small", input="alpha"
    )
    assert result.data
    await spans.wait(lambda got: any(s.name == "POST /v1/embeddings" for s in got))
    server = spans.one("POST /v1/embeddings")
    call = spans.one("embeddings oai/text-embedding-3-small", server.trace_id)
    assert call.parent_span_id == server.span_id
    assert call.kind == Span.SPAN_KIND_CLIENT
    assert attributes(call)["apiary.provider"] == "oai"
    assert attributes(call)["apiary.upstream_s"] > 0
    assert spans.named("apiary.gateway.attempt", server.trace_id) == []


async def test_a_request_continues_the_callers_trace(
    make_gateway: Any,  # noqa: F811 - the imported fixture
    spans: Spans,
) -> None:
    gateway: Gateway = await make_gateway()
    async with gateway.http() as http:
        response = await _chat(
            http, gateway.key, traceparent=f"00-{CALLER_TRACE}-b7ad6b7169203331-01"
        )
    assert response.status_code == 200, response.text
    await spans.wait(lambda got: any(s.name == "POST /v1/chat/completions" for s in got))
    server = spans.one("POST /v1/chat/completions")
    assert server.trace_id.hex() == CALLER_TRACE
    assert server.parent_span_id.hex() == "b7ad6b7169203331"


async def test_the_request_id_a_client_sees_is_its_trace_id_unless_the_client_chose_it(
    make_gateway: Any,  # noqa: F811 - the imported fixture
    spans: Spans,
) -> None:
    gateway: Gateway = await make_gateway()
    client = gateway.client()  # the OpenAI SDK
    ours = await client.chat.completions.with_raw_response.create(model="default", messages=HELLO)
    chosen = await client.chat.completions.with_raw_response.create(
        model="default", messages=HELLO, extra_headers={"X-Request-ID": "order-42"}
    )
    await client.close()
    served = "POST /v1/chat/completions"
    await spans.wait(lambda got: len([s for s in got if s.name == served]) == 2)
    request_id = ours.headers["x-request-id"]
    assert spans.one(served, bytes.fromhex(request_id)).name == served
    # A client's own id is echoed, and its trace gets a random id of its own.
    assert chosen.headers["x-request-id"] == "order-42"
    [other] = [s for s in spans.named(served) if s.trace_id.hex() != request_id]
    assert other.trace_id != bytes(16)


async def test_log_lines_carry_the_trace_and_span_ids(
    make_gateway: Any,  # noqa: F811 - the imported fixture
    spans: Spans,
) -> None:
    gateway: Gateway = await make_gateway()
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        async with gateway.http() as http:
            response = await _chat(http, gateway.key)
        assert response.status_code == 200
    finally:
        logging.getLogger().handlers.clear()
    await spans.wait(lambda got: any(s.name == "POST /v1/chat/completions" for s in got))
    server = spans.one("POST /v1/chat/completions")
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    [access] = [line for line in lines if line["logger"] == "apiary.access"]
    assert access["trace_id"] == server.trace_id.hex()
    assert access["span_id"] == server.span_id.hex()


async def test_a_dropped_requests_log_line_carries_its_request_id_as_its_trace_id(
    make_gateway: Any,  # noqa: F811 - the imported fixture
) -> None:
    """At ratio 0 every request is dropped: its access line still carries its trace id
    (the request id Apiary made, which the client sees) and a span id (that id's first
    half), and nothing of its trace is left set once it is answered."""
    gateway: Gateway = await make_gateway()
    assert tracing.install(OTelSettings(endpoint="http://127.0.0.1:9", sampling_ratio=0.0))
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        async with gateway.http() as http:
            response = await _chat(http, gateway.key)
        assert response.status_code == 200
        assert tracing.dropped() is None
    finally:
        logging.getLogger().handlers.clear()
        await asyncio.to_thread(tracing.shutdown)
    request_id = response.headers["x-request-id"]
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    [access] = [line for line in lines if line["logger"] == "apiary.access"]
    assert access["trace_id"] == request_id
    assert access["span_id"] == request_id[:16]


async def test_a_request_the_caller_did_not_sample_records_nothing_yet_logs_its_trace(
    make_gateway: Any,  # noqa: F811 - the imported fixture
    spans: Spans,
) -> None:
    """A `traceparent` flagged unsampled is followed whole: no span of that trace is
    exported, and the request's log lines carry the caller's trace id and a span id of
    its own (they once carried zeros)."""
    gateway: Gateway = await make_gateway()
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        async with gateway.http() as http:
            unsampled = await _chat(
                http, gateway.key, traceparent=f"00-{CALLER_TRACE}-b7ad6b7169203331-00"
            )
            # A request of its own trace afterwards: once its spans arrive, the first
            # request's would have too.
            sampled = await _chat(http, gateway.key)
        assert unsampled.status_code == sampled.status_code == 200
    finally:
        logging.getLogger().handlers.clear()
    await spans.wait(lambda got: any(s.name == "POST /v1/chat/completions" for s in got))
    server = spans.one("POST /v1/chat/completions")
    assert server.trace_id.hex() != CALLER_TRACE
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    first, second = [line for line in lines if line["logger"] == "apiary.access"]
    assert first["trace_id"] == CALLER_TRACE
    assert re.fullmatch("[0-9a-f]{16}", first["span_id"])
    assert first["span_id"] not in ("0" * 16, "b7ad6b7169203331")
    assert second["trace_id"] == server.trace_id.hex()


async def test_without_an_endpoint_nothing_is_installed(runtime: Runtime) -> None:
    assert runtime.settings.otel.endpoint is None
    assert tracing.TRACER is None
    assert not runtime.traces
    assert tracing.inject() == {}
    with tracing.span("anything") as current:
        assert current is None
    assert not tracing.install(OTelSettings())
    assert tracing.TRACER is None


def test_a_process_with_tracing_off_never_loads_the_sdk(tmp_path: Path) -> None:
    # In a process of its own: this one's other tests install the SDK.
    probe = (
        "import sys\n"
        "from apiary.config import load_settings\n"
        "from apiary.main import create_app\n"
        "from apiary.runtime import Runtime\n"
        "create_app(load_settings())\n"
        "Runtime.build(load_settings())\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', "
        "'opentelemetry.exporter'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    env["APIARY_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_an_endpoint_installs_the_exporter_with_its_sampling_ratio(
    receiver: tuple[OtelTapHttpProtobufReceiver, str], runtime: Runtime
) -> None:
    _, endpoint = receiver
    settings = runtime.settings.model_copy(
        update={"otel": OTelSettings(endpoint=endpoint, sampling_ratio=0.1)}
    )
    built = Runtime.build(settings)
    try:
        assert built.traces
        assert tracing.TRACER is not None
        installed = tracing._tracer
        assert installed is not None
        assert installed.ratio == 0.1
    finally:
        await built.close()
    assert tracing.TRACER is None


async def test_an_ingestion_is_a_trace_with_a_span_per_step(
    client: httpx.AsyncClient, runtime: Runtime, spans: Spans, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime.settings.knowledge, "embed_batch_size", 2)
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    text = "\n\n".join(
        f"Section {n}. The Kestrel arm's joint {n} turns freely." * 20 for n in range(4)
    )
    created = await upload(client, tenant.admin, kb["id"], "arm.md", text.encode())
    await ingested(runtime)
    await spans.wait(lambda got: any(s.name == "apiary.knowledge.ingest" for s in got))

    ingest = spans.one("apiary.knowledge.ingest")
    assert attributes(ingest)["apiary.document_id"] == created["id"]
    assert ingest.parent_span_id == b""  # a trace of its own, begun by the job
    trace_id = ingest.trace_id
    extract = spans.one("apiary.knowledge.extract", trace_id)
    split = spans.one("apiary.knowledge.split", trace_id)
    embeds = spans.named("apiary.knowledge.embed", trace_id)
    upserts = spans.named("apiary.knowledge.upsert", trace_id)
    chunks = attributes(split)["apiary.chunks"]
    assert chunks >= 3
    assert attributes(extract)["apiary.bytes"] == len(text.encode())
    assert len(embeds) == len(upserts) == -(-chunks // 2)  # one per batch of two
    steps = [extract, split, *embeds, *upserts]
    assert {s.parent_span_id for s in steps} == {ingest.span_id}
    assert sum(attributes(e)["apiary.chunks"] for e in embeds) == chunks
    assert ingest.status.code != ingest.status.STATUS_CODE_ERROR


@pytest.mark.services
async def test_a_swarm_on_a_celery_worker_joins_the_trace_of_the_request_that_created_it(
    celery_app: FastAPI,  # noqa: F811 - the imported fixture
    workers: Workers,  # noqa: F811 - the imported fixture
    fake_upstream: FakeUpstream,
    spans: Spans,
    receiver: tuple[OtelTapHttpProtobufReceiver, str],
) -> None:
    _, endpoint = receiver
    workers.env["APIARY_OTEL__ENDPOINT"] = endpoint
    workers.env["APIARY_OTEL__SERVICE_NAME"] = "apiary-worker"
    runtime: Runtime = celery_app.state.runtime
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=celery_app), base_url="http://t")
    tenant = await make_tenant(runtime, http, "traced-co")
    key = await make_api_key(runtime, tenant, Role.DEVELOPER)
    agent = await http.post(
        "/api/v1/agents",
        headers=key.headers,
        json={"name": "tracer", "model": "default", "max_subagents": 2, "tools": ["calculator"]},
    )
    assert agent.status_code == 201, agent.text
    fake_upstream.script(
        "openai",
        Reply(text=orjson.dumps({"subtasks": ["add", "say"]}).decode(), usage=(5, 5)),
        Reply(tool_calls=[ToolCall("calculator", '{"expression": "1+1"}')], usage=(5, 5)),
    )
    workers.start()
    created = await http.post(
        "/api/v1/executions",
        headers=key.headers,
        json={"agent_id": agent.json()["id"], "task": "add, then say"},
    )
    assert created.status_code == 202, created.text
    execution_id = created.json()["id"]
    for _ in range(600):
        execution = (
            await http.get(f"/api/v1/executions/{execution_id}", headers=key.headers)
        ).json()
        if execution["state"] in FINAL:
            break
        await asyncio.sleep(0.1)
    assert execution["state"] == "succeeded", execution

    # The API's spans (this process) and the worker's (exported by it) share one trace.
    # The worker's consumer span ends last, after every step inside it, and its exporter
    # sends spans in the order they ended: once it is here, the rest are too.
    await spans.wait(
        lambda got: (
            any(s.name == "process apiary.run_execution" for s in got)
            and any(s.name == "POST /api/v1/executions" for s in got)
        )
    )
    request = spans.one("POST /api/v1/executions")
    trace_id = request.trace_id
    send = spans.one("send apiary.run_execution", trace_id)
    assert send.kind == Span.SPAN_KIND_PRODUCER
    assert send.parent_span_id == request.span_id
    process = spans.one("process apiary.run_execution", trace_id)
    assert process.kind == Span.SPAN_KIND_CONSUMER
    assert process.parent_span_id == send.span_id
    run = spans.one("apiary.execution", trace_id)
    assert run.parent_span_id == process.span_id
    assert attributes(run)["apiary.execution_id"] == execution_id

    decompose = spans.one("apiary.swarm.decompose", trace_id)
    synthesize = spans.one("apiary.swarm.synthesize", trace_id)
    subagents = spans.named("apiary.swarm.subagent", trace_id)
    assert decompose.parent_span_id == run.span_id
    assert synthesize.parent_span_id == run.span_id
    assert attributes(decompose)["apiary.subtasks"] == 2
    assert sorted(attributes(s)["apiary.subtask.index"] for s in subagents) == [0, 1]
    assert {s.parent_span_id for s in subagents} == {run.span_id}
    assert all(attributes(s)["apiary.subtask.status"] == "succeeded" for s in subagents)

    # Each model call is a gateway call span under its step; the tool call under its
    # sub-agent, beside the model calls that asked for it and used its answer.
    calls = spans.named("chat default", trace_id)
    parents = [c.parent_span_id for c in calls]
    assert parents.count(decompose.span_id) == 1
    assert parents.count(synthesize.span_id) == 1
    by_subagent = {s.span_id: parents.count(s.span_id) for s in subagents}
    assert sorted(by_subagent.values()) == [1, 2]  # one answered at once, one used the tool
    [tool] = spans.named("execute_tool calculator", trace_id)
    assert tool.parent_span_id in by_subagent
    assert by_subagent[tool.parent_span_id] == 2
    assert attributes(tool)["gen_ai.tool.name"] == "calculator"
    assert all(attributes(c)["gen_ai.system"] == "openai" for c in calls)
    assert all(attributes(c)["gen_ai.usage.input_tokens"] > 0 for c in calls)


async def test_at_a_ratio_a_request_is_kept_whole_by_its_trace_id_or_records_nothing(
    make_gateway: Any,  # noqa: F811 - the imported fixture
    receiver: tuple[OtelTapHttpProtobufReceiver, str],
) -> None:
    # The gateway decides once, at the server span, by the ratio sampler's rule on the
    # trace id (as every other OpenTelemetry service sampling by ratio does): a kept
    # request exports its whole tree, a dropped one nothing, yet its log line still
    # carries its trace id.
    tap, endpoint = receiver
    collected = Spans(tap)
    await asyncio.sleep(0)
    assert tracing.install(OTelSettings(endpoint=endpoint, sampling_ratio=0.5))
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        gateway: Gateway = await make_gateway()
        async with gateway.http() as http:
            for _ in range(24):
                response = await _chat(http, gateway.key)
                assert response.status_code == 200, response.text
        logged = [
            bytes.fromhex(line["trace_id"])
            for line in map(orjson.loads, stream.getvalue().splitlines())
            if line["logger"] == "apiary.access" and line["path"] == "/v1/chat/completions"
        ]
        access = [
            line
            for line in map(orjson.loads, stream.getvalue().splitlines())
            if line["logger"] == "apiary.access"
        ]
        # The request id Apiary makes is the trace id: the one a client sees finds the trace.
        assert all(line["trace_id"] == line["request_id"] for line in access)
        assert tracing._tracer is not None
        bound = tracing._tracer.bound
        kept = {t for t in logged if int.from_bytes(t[8:], "big") < bound}
        for line in access:  # a dropped request's span id: its trace id's first half
            if int(line["trace_id"][16:], 16) >= bound:
                assert line["span_id"] == line["trace_id"][:16]
        assert len(set(logged)) == 24
        assert 0 < len(kept) < 24  # 2^-24 either way
        served = "POST /v1/chat/completions"
        await collected.wait(
            lambda got: len({s.trace_id for s in got if s.name == served}) == len(kept)
        )
        await asyncio.sleep(0.3)  # nothing else is on its way
        exported = {s.trace_id for s in collected.received}
        assert exported & set(logged) == kept
        for trace_id in kept:
            server = collected.one(served, trace_id)
            call = collected.one("chat default", trace_id)
            assert call.parent_span_id == server.span_id
            assert collected.named("apiary.gateway.attempt", trace_id) == []
        # The key is read from the database once, by the first request: only its trace
        # has an authentication step, if it was kept.
        read = [s for s in collected.named("apiary.authenticate") if s.trace_id in kept]
        assert len(read) == int(logged[0] in kept)
    finally:
        logging.getLogger().handlers.clear()
        await asyncio.to_thread(tracing.shutdown)
        await collected.close()


async def test_a_callers_sampled_trace_is_kept_whatever_the_ratio_says_of_the_request(
    make_gateway: Any,  # noqa: F811 - the imported fixture
    receiver: tuple[OtelTapHttpProtobufReceiver, str],
) -> None:
    # At ratio 0 the middleware samples out every request of a trace of its own before
    # any call (`tracing.DROPS_FROM`), but a request whose caller sent a sampled
    # traceparent is the caller's to decide: it is recorded, in the caller's trace.
    tap, endpoint = receiver
    collected = Spans(tap)
    await asyncio.sleep(0)
    assert tracing.install(OTelSettings(endpoint=endpoint, sampling_ratio=0.0))
    try:
        gateway: Gateway = await make_gateway()
        async with gateway.http() as http:
            own = await _chat(http, gateway.key)
            callers = await _chat(
                http, gateway.key, traceparent=f"00-{CALLER_TRACE}-b7ad6b7169203331-01"
            )
        assert own.status_code == callers.status_code == 200
        served = "POST /v1/chat/completions"
        await collected.wait(lambda got: any(s.name == served for s in got))
        await asyncio.sleep(0.3)  # nothing else is on its way
        assert {s.trace_id.hex() for s in collected.received} == {CALLER_TRACE}
        server = collected.one(served, bytes.fromhex(CALLER_TRACE))
        assert server.parent_span_id.hex() == "b7ad6b7169203331"
    finally:
        await asyncio.to_thread(tracing.shutdown)
        await collected.close()


def test_the_wire_encoder_writes_the_message_the_otlp_library_would() -> None:
    # Exports go through apiary/observability/otlp_wire.py, not the library's encoder:
    # every field a span can carry must come out the same.
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import (
        Link,
        NonRecordingSpan,
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        TraceFlags,
        TraceState,
        set_span_in_context,
    )
    from opentelemetry.util.types import AttributeValue

    from apiary.observability import otlp_wire

    finished = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "t", "replica": 3}))
    provider.add_span_processor(SimpleSpanProcessor(finished))
    tracer = provider.get_tracer("apiary", "1.0")
    caller = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "x1"), ("other", "y")]),
    )
    every_kind: dict[str, AttributeValue] = {
        "text": "héllo",
        "empty": "",
        "negative": -5,
        "zero": 0,
        "big": 2**62,
        "ratio": 0.25,
        "no": False,
        "yes": True,
        "texts": ["a", "b"],
        "numbers": [1, 2, 3],
    }
    with tracer.start_as_current_span(
        "POST /v1/chat/completions",
        context=set_span_in_context(NonRecordingSpan(caller)),
        kind=SpanKind.SERVER,
        attributes=every_kind,
    ) as server:
        server.add_event("retry", {"attempt": 2})
        server.set_status(Status(StatusCode.ERROR, "upstream failed"))
        with tracer.start_as_current_span(
            "apiary.gateway.attempt", kind=SpanKind.CLIENT, links=[Link(caller, {"why": "x"})]
        ) as attempt:
            attempt.set_status(Status(StatusCode.OK))
    with provider.get_tracer("apiary.worker").start_as_current_span(
        "process", kind=SpanKind.CONSUMER
    ):
        pass
    spans: list[ReadableSpan] = list(finished.get_finished_spans())
    assert len(spans) == 3

    ours = ExportTraceServiceRequest.FromString(otlp_wire.encode_spans(spans))
    assert ours == encode_spans(spans)
    provider.shutdown()


class Finished:
    """A span processor keeping each span it is handed, in order."""

    def __init__(self) -> None:
        self.spans: list[RecordedSpan] = []

    def on_end(self, span: RecordedSpan) -> None:
        self.spans.append(span)


def test_apiarys_light_spans_export_what_the_sdks_spans_would() -> None:
    # apiary/observability/spans.py records Apiary's spans in place of the SDK's: the
    # message sent for them must be the one the library would write for an SDK span with
    # the same content (remote parent, events, links, statuses, an exception, kinds).
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import (
        Link,
        NonRecordingSpan,
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        TraceFlags,
        TraceState,
        set_span_in_context,
    )

    from apiary.observability import otlp_wire

    finished = Finished()
    tracer = LightTracer(
        finished,  # type: ignore[arg-type]  # the one method a processor needs here
        Resource.create({"service.name": "t", "replica": 3}),
        InstrumentationScope("apiary"),
        ratio=1.0,
    )
    caller = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "x1")]),
    )
    with tracer.start_as_current_span(
        "POST",
        context=set_span_in_context(NonRecordingSpan(caller)),
        kind=SpanKind.SERVER,
        attributes={"text": "héllo", "ratio": 0.25, "numbers": [1, 2], "gone": None},
    ) as server:
        server.update_name("POST /v1/chat/completions")
        server.add_event("retry", {"attempt": 2})
        server.set_status(Status(StatusCode.ERROR, "upstream failed"))
        with tracer.start_as_current_span(
            "apiary.gateway.attempt", kind=SpanKind.CLIENT, links=[Link(caller, {"why": "x"})]
        ) as attempt:
            attempt.set_attributes({"gen_ai.system": "openai", "gen_ai.usage.input_tokens": 3})
            attempt.set_status(Status(StatusCode.OK))
            attempt.set_status(Status(StatusCode.ERROR))  # OK is final
        with pytest.raises(RuntimeError), tracer.start_as_current_span("apiary.limits.admit"):
            raise RuntimeError("refused")
    with tracer.start_as_current_span("process", kind=SpanKind.CONSUMER):
        pass
    ours = finished.spans
    assert [span.name for span in ours] == [
        "apiary.gateway.attempt",
        "apiary.limits.admit",
        "POST /v1/chat/completions",
        "process",
    ]
    attempt_span, admit, server_span, process = ours
    assert server_span.get_span_context().trace_id == caller.trace_id  # continues the caller's
    assert attempt_span.parent == server_span.get_span_context()
    assert admit.status.status_code is StatusCode.ERROR
    assert [event.name for event in admit.events] == ["exception"]
    assert "gone" not in server_span.attributes
    assert attempt_span.status.status_code is StatusCode.OK
    assert process.parent is None  # a new trace of its own

    as_sdk = [
        ReadableSpan(
            name=span.name,
            context=span.get_span_context(),
            parent=span.parent,
            resource=span.resource,
            attributes=span.attributes,
            events=span.events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
        for span in ours
    ]
    sent = ExportTraceServiceRequest.FromString(otlp_wire.encode_spans(ours))  # type: ignore[arg-type]
    assert sent == encode_spans(as_sdk)


def test_a_dropped_request_hands_its_trace_on_unsampled() -> None:
    """A request the sampler drops is not made current in OpenTelemetry's context, yet
    everything that carries its trace carries the same one, flagged unsampled: its log
    lines' ids, the `traceparent` of a Celery hop, and spans started under it."""
    assert tracing.install(OTelSettings(endpoint="http://127.0.0.1:9", sampling_ratio=0.0))
    try:
        assert tracing.TRACER is not None
        started = tracing.start_server_span(tracing.TRACER, "POST", "/api/v1/executions", [])
        try:
            ids = tracing.current_ids()
            assert ids is not None
            trace_id, span_id = ids
            assert tracing.inject() == {"traceparent": f"00-{trace_id}-{span_id}-02"}
            assert tracing.dropped() == trace_id  # the hot path builds nothing under it
            assert not _a_step_records()
            with tracing.span("send apiary.run_execution") as child:
                assert child is not None
                context = child.get_span_context()
                assert format(context.trace_id, "032x") == trace_id
                assert not context.trace_flags.sampled
                assert not child.is_recording()
                assert tracing.inject()["traceparent"].startswith(f"00-{trace_id}-")
        finally:
            tracing.end_server_span(
                started, method="POST", route="/api/v1/executions", status=201, error=None
            )
        assert tracing.current_ids() is None  # the request is over
        assert not tracing.dropped()
    finally:
        tracing.shutdown()


def test_a_request_continuing_an_unsampled_trace_records_nothing_under_it() -> None:
    """A caller's trace it did not sample: the hot path's steps are skipped (`dropped`),
    and the request's log lines carry the caller's trace id, until the request ends."""
    assert tracing.install(OTelSettings(endpoint="http://127.0.0.1:9", sampling_ratio=1.0))
    try:
        assert tracing.TRACER is not None
        caller = [(b"traceparent", f"00-{CALLER_TRACE}-b7ad6b7169203331-00".encode())]
        started = tracing.start_server_span(tracing.TRACER, "POST", "/v1/embeddings", caller)
        try:
            assert tracing.dropped() is True
            assert not _a_step_records()
            ids = tracing.current_ids()
            assert ids is not None
            assert ids[0] == CALLER_TRACE
        finally:
            tracing.end_server_span(
                started, method="POST", route="/v1/embeddings", status=200, error=None
            )
        assert not tracing.dropped()
        assert tracing.current_ids() is None
    finally:
        tracing.shutdown()


def test_a_trace_continued_from_a_caller_hands_on_the_callers_flags() -> None:
    """Trace flags come from the caller: sampled or not as it decided, and without the
    random-trace-id flag, which only the service that made the id may set."""
    assert tracing.install(OTelSettings(endpoint="http://127.0.0.1:9", sampling_ratio=1.0))
    try:
        assert tracing.TRACER is not None
        caller = CALLER_TRACE
        for flags in ("00", "01"):
            headers = [(b"traceparent", f"00-{caller}-b7ad6b7169203331-{flags}".encode())]
            started = tracing.start_server_span(tracing.TRACER, "POST", "/v1/x", headers)
            try:
                ids = tracing.current_ids()
                assert ids is not None
                assert ids[0] == caller
                assert tracing.inject() == {"traceparent": f"00-{caller}-{ids[1]}-{flags}"}
            finally:
                tracing.end_server_span(
                    started, method="POST", route="/v1/x", status=200, error=None
                )
    finally:
        tracing.shutdown()


def test_a_span_context_built_as_a_tuple_is_the_one_the_constructor_builds() -> None:
    """`local_context` skips SpanContext's constructor on the hot path: what it makes
    must be equal to, and read the same as, what the constructor makes."""
    state = TraceState([("vendor", "x")])
    for flags, trace_state in ((SAMPLED, None), (UNSAMPLED, state)):
        made = local_context(0x1F << 64 | 7, 0xABC, flags, trace_state)
        expected = SpanContext(
            0x1F << 64 | 7, 0xABC, is_remote=False, trace_flags=flags, trace_state=trace_state
        )
        assert made == expected
        assert (made.trace_id, made.span_id, made.is_remote, made.is_valid) == (
            expected.trace_id,
            expected.span_id,
            False,
            True,
        )
        assert made.trace_flags == flags
        assert made.trace_state == expected.trace_state


@pytest.fixture
def light_tracer() -> Iterator[tuple[LightTracer, Finished]]:
    """Apiary's tracer at ratio 1 as `install` sets it up, its finished spans kept in order
    (`Finished`) rather than exported."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    finished = Finished()
    tracer = LightTracer(
        finished,  # type: ignore[arg-type]  # the one method a processor needs here
        Resource.create({"service.name": "t"}),
        InstrumentationScope("apiary"),
        ratio=1.0,
    )
    tracer.orphan_parent = tracing._request_parent  # as `install` sets it
    previous, tracing.TRACER, tracing._tracer = tracing.TRACER, tracer, tracer
    try:
        yield tracer, finished
    finally:
        tracing.TRACER, tracing._tracer = previous, previous  # type: ignore[assignment]


def test_an_error_escaping_a_step_marks_it_but_a_cancellation_does_not(
    light_tracer: tuple[LightTracer, Finished],
) -> None:
    """In a sampled request's trace and in OpenTelemetry's context alike."""
    tracer, _ = light_tracer
    started = tracing.start_server_span(tracer, "POST", "/v1/chat/completions", [])
    try:

        def in_trace(name: str) -> AbstractContextManager[tracing.Span]:
            return tracing.child(name, end=False)  # the request's own step

        def in_context(name: str) -> AbstractContextManager[tracing.Span]:
            return tracer.start_as_current_span(name, end_on_exit=False)

        for step in (in_trace, in_context):
            with pytest.raises(ValueError, match="bad input"), step("failed") as failed:
                raise ValueError("bad input")
            with pytest.raises(asyncio.CancelledError), step("cancelled") as cancelled:
                raise asyncio.CancelledError
            assert failed.is_recording()  # neither is ended by the block
            assert cancelled.is_recording()
            assert failed.status.status_code is StatusCode.ERROR  # type: ignore[attr-defined]
            assert [event.name for event in failed.events] == ["exception"]  # type: ignore[attr-defined]
            assert cancelled.status.status_code is StatusCode.UNSET  # type: ignore[attr-defined]
            assert not cancelled.events  # type: ignore[attr-defined]
    finally:
        tracing.end_server_span(started, method="POST", route="/", status=200, error=None)


def test_a_sampled_requests_steps_are_its_spans_handed_on_together(
    light_tracer: tuple[LightTracer, Finished],
) -> None:
    """A sampled request records its steps apart from OpenTelemetry's context
    (`RequestTrace`): each step is the child of the one it ran in, a span started through
    OpenTelemetry's API under it takes the step under way as its parent, and the request's
    spans reach the processor when its server span ends, freed then by reference counting
    (they once formed cycles only the collector freed). A step still open then (a stream's)
    follows alone when it ends."""
    import gc

    tracer, finished = light_tracer
    gc.collect()
    gc.disable()
    try:
        started = tracing.start_server_span(tracer, "POST", "/v1/chat/completions", [])
        try:
            server_ids = tracing.current_ids()
            assert tracing.current_span().is_recording()  # the server span, a step
            assert not tracing.dropped()
            with (
                tracing.child("chat m", end=False) as call,
                tracing.child("apiary.limits.admit") as admit,
            ):
                assert tracing.current_span() is admit
                with tracer.start_as_current_span("send apiary.run_execution") as send:
                    assert tracing.inject()["traceparent"].split("-")[2] == format(
                        send.get_span_context().span_id, "016x"
                    )
            assert tracing.current_ids() == server_ids  # back at the server span
            assert [span.name for span in finished.spans] == ["send apiary.run_execution"]
        finally:
            tracing.end_server_span(
                started, method="POST", route="/v1/chat/completions", status=200, error=None
            )
        names = [span.name for span in finished.spans]
        assert names == [
            "send apiary.run_execution",
            "apiary.limits.admit",
            "POST /v1/chat/completions",
        ]
        sent, admitted, server = finished.spans
        assert sent.parent == admitted.get_span_context()
        assert admitted.parent == call.get_span_context()
        assert call.parent == server.get_span_context()  # type: ignore[attr-defined]
        assert server.parent is None
        call.end()  # the stream ended after the request
        assert finished.spans[-1] is call
        assert len({span.get_span_context().trace_id for span in finished.spans}) == 1

        def another_request() -> None:
            started = tracing.start_server_span(tracer, "POST", "/v1/chat/completions", [])
            with tracing.child("chat m"), tracing.child("admit"):
                pass
            tracing.end_server_span(started, method="POST", route="/", status=200, error=None)

        finished.spans.clear()
        del call, admit, send, sent, admitted, server, started
        gc.collect()  # whatever else the test process left
        another_request()
        finished.spans.clear()
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_a_span_started_in_a_sampled_request_is_a_step_of_its_trace(
    light_tracer: tuple[LightTracer, Finished],
) -> None:
    """`tracing.span` in a sampled request (the Celery hop's `send`) is one of its steps:
    current for its block, named by `inject` and by log lines, and handed on with the
    request's other spans."""
    tracer, finished = light_tracer
    started = tracing.start_server_span(tracer, "POST", "/api/v1/executions", [])
    try:
        with tracing.span("send apiary.run_execution", kind=SpanKind.PRODUCER) as send:
            assert send is not None
            span_id = format(send.get_span_context().span_id, "016x")
            assert tracing.current_span() is send
            assert tracing.inject()["traceparent"].split("-")[2] == span_id
            ids = tracing.current_ids()
            assert ids is not None
            assert ids[1] == span_id
        assert finished.spans == []  # it waits for its request
    finally:
        tracing.end_server_span(
            started, method="POST", route="/api/v1/executions", status=201, error=None
        )
    sent, server = finished.spans
    assert sent.name == "send apiary.run_execution"
    assert sent.kind is SpanKind.PRODUCER
    assert sent.parent == server.get_span_context()


def test_a_worker_under_an_unsampled_trace_skips_its_steps() -> None:
    """A Celery task carrying a trace its sender did not sample (`attached`) is `dropped`
    for its block, so the gateway calls of its sub-agents build no spans; a sampled one is
    not."""
    assert tracing.install(OTelSettings(endpoint="http://127.0.0.1:9", sampling_ratio=1.0))
    try:
        unsampled = {"traceparent": f"00-{CALLER_TRACE}-b7ad6b7169203331-00"}
        with tracing.attached(unsampled):
            assert tracing.dropped() is True
            assert not _a_step_records()
            ids = tracing.current_ids()
            assert ids is not None
            assert ids[0] == CALLER_TRACE
        assert tracing.dropped() is None
        with tracing.attached({"traceparent": f"00-{CALLER_TRACE}-b7ad6b7169203331-01"}):
            assert tracing.dropped() is None
            assert _a_step_records()
    finally:
        tracing.shutdown()


def test_tasks_a_sampled_request_runs_together_keep_their_own_steps(
    light_tracer: tuple[LightTracer, Finished],
) -> None:
    """The prompts of one `/v1/completions` call run as tasks together: each task's steps
    nest under its own call span, and each call under the request (the tasks once shared
    the request's current step, and one task's attempt became the other's parent)."""
    tracer, finished = light_tracer

    async def prompt(index: int) -> None:
        with tracing.child(f"chat {index}"):
            await asyncio.sleep(0)  # the other task starts its call meanwhile
            with tracing.child(f"attempt {index}"):
                await asyncio.sleep(0.01 * (2 - index))  # and they end out of order

    async def request() -> None:
        started = tracing.start_server_span(tracer, "POST", "/v1/completions", [])
        try:
            await asyncio.gather(prompt(0), prompt(1))
            with tracing.child("after"):  # the request's own step, after its tasks
                pass
        finally:
            tracing.end_server_span(
                started, method="POST", route="/v1/completions", status=200, error=None
            )

    asyncio.run(request())
    spans = {span.name: span for span in finished.spans}
    assert set(spans) == {
        "chat 0",
        "chat 1",
        "attempt 0",
        "attempt 1",
        "after",
        "POST /v1/completions",
    }
    server = spans["POST /v1/completions"].get_span_context()
    for index in (0, 1):
        call = spans[f"chat {index}"]
        assert call.parent == server
        assert spans[f"attempt {index}"].parent == call.get_span_context()
    assert spans["after"].parent == server
