"""/v1 through the official openai SDK, against fake upstreams speaking the real protocols."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from apiary.auth.context import Actor, AuthContext
from apiary.authz.permissions import Role
from apiary.gateway import openai_api
from apiary.gateway.client import ChatReply
from apiary.gateway.config import PriceConfig, RouteConfig
from apiary.gateway.providers.base import Usage
from apiary.gateway.resilience import ProviderLimiter
from apiary.observability.metrics import REGISTRY
from apiary.usage.ledger import ledger_row
from tests.factories import make_api_key
from tests.fakes import Drop, Fail, Reply, Slow, StreamThenDrop, ToolCall
from tests.gateway.conftest import Gateway, GatewayFactory

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello gateway"}]


def sent(gateway: Gateway) -> dict[str, Any]:
    """The JSON body of the last request the fake upstream received."""
    body = gateway.upstream.requests[-1].body
    assert body is not None
    return body


async def test_chat_completion_is_forwarded_and_accounted(gateway: Gateway) -> None:
    client = gateway.client()
    raw = await client.chat.completions.with_raw_response.create(
        model="oai/gpt-4o-mini",
        messages=HELLO,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello gateway"
    assert raw.headers["x-apiary-provider"] == "oai"
    assert raw.headers["x-apiary-model"] == "gpt-4o-mini"
    assert float(raw.headers["x-apiary-cost-usd"]) > 0
    assert "upstream;dur=" in raw.headers["server-timing"]
    upstream_call = gateway.upstream.requests[-1]
    assert upstream_call.headers["authorization"].startswith("Bearer sk-")
    assert sent(gateway)["model"] == "gpt-4o-mini"

    [entry] = await gateway.ledger()
    assert str(entry.tenant_id) == gateway.tenant.id
    assert (entry.provider, entry.model, entry.status) == ("oai", "gpt-4o-mini", "ok")
    assert completion.usage is not None
    assert entry.prompt_tokens == completion.usage.prompt_tokens
    assert entry.cost_usd is not None
    assert entry.cost_usd > 0
    assert entry.api_key_id is not None


async def test_streaming_with_usage(gateway: Gateway) -> None:
    client = gateway.client()
    stream = await client.chat.completions.create(
        model="oai/gpt-4o-mini",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == "echo: hello gateway"
    assert usage is not None
    assert usage.completion_tokens > 0
    [entry] = await gateway.ledger()
    assert entry.streamed
    assert entry.completion_tokens == usage.completion_tokens
    assert entry.ttft_ms is not None


async def test_stream_without_include_usage_hides_the_usage_chunk(gateway: Gateway) -> None:
    stream = await gateway.client().chat.completions.create(
        model="oai/gpt-4o-mini",
        messages=HELLO,
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    [entry] = await gateway.ledger()
    assert entry.completion_tokens > 0  # the gateway still accounted it


async def test_server_errors_fall_back_down_the_chain(gateway: Gateway) -> None:
    gateway.upstream.set_default("openai", Fail(503))
    raw = await gateway.client().chat.completions.with_raw_response.create(
        model="default",
        messages=HELLO,
    )
    assert raw.parse().choices[0].message.content == "echo: hello gateway"
    assert raw.headers["x-apiary-provider"] == "claude"
    [entry] = await gateway.ledger()
    assert entry.fallback_path == ["oai/gpt-4o-mini: server"]
    assert entry.route == "default"
    retries = [r for r in gateway.upstream.requests if r.family == "openai"]
    assert len(retries) == 3  # the first try and two retries before falling back


async def test_retry_after_is_honoured(gateway: Gateway) -> None:
    gateway.upstream.script("openai", Fail(429, retry_after=0.3))
    started = time.perf_counter()
    raw = await gateway.client().chat.completions.with_raw_response.create(
        model="default",
        messages=HELLO,
    )
    assert time.perf_counter() - started >= 0.3
    assert raw.headers["x-apiary-provider"] == "oai"  # retried, no fallback needed


async def test_every_provider_failing_is_an_openai_error(gateway: Gateway) -> None:
    gateway.upstream.set_default("openai", Fail(500))
    gateway.upstream.set_default("anthropic", Fail(529))
    with pytest.raises(openai.APIStatusError) as caught:
        await gateway.client().chat.completions.create(model="default", messages=HELLO)
    assert caught.value.status_code == 502
    assert "every provider failed" in caught.value.message
    [entry] = await gateway.ledger()
    assert entry.status == "error"
    assert len(entry.fallback_path) == 2


async def test_rate_limited_everywhere_is_429_with_retry_after(gateway: Gateway) -> None:
    gateway.upstream.set_default("openai", Fail(429, retry_after=120))
    gateway.upstream.set_default("anthropic", Fail(429, retry_after=120))
    with pytest.raises(openai.RateLimitError) as caught:
        await gateway.client().chat.completions.create(model="default", messages=HELLO)
    assert int(caught.value.response.headers["retry-after"]) >= 1


async def test_bad_request_is_not_retried_or_fallen_back(gateway: Gateway) -> None:
    gateway.upstream.script("openai", Fail(400, message="bad temperature"))
    with pytest.raises(openai.BadRequestError) as caught:
        await gateway.client().chat.completions.create(model="default", messages=HELLO)
    assert "bad temperature" in caught.value.message
    assert not [r for r in gateway.upstream.requests if r.family == "anthropic"]


async def test_context_length_error_falls_back(gateway: Gateway) -> None:
    gateway.upstream.script(
        "openai", Fail(400, code="context_length_exceeded", message="maximum context length")
    )
    raw = await gateway.client().chat.completions.with_raw_response.create(
        model="default",
        messages=HELLO,
    )
    assert raw.headers["x-apiary-provider"] == "claude"


async def test_stream_falls_back_only_before_the_first_token(gateway: Gateway) -> None:
    gateway.upstream.script("openai", StreamThenDrop(0))
    stream = await gateway.client().chat.completions.create(
        model="default",
        messages=HELLO,
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "echo: hello gateway"  # from claude, seamlessly

    gateway.upstream.script("openai", StreamThenDrop(2))
    stream = await gateway.client().chat.completions.create(
        model="default",
        messages=HELLO,
        stream=True,
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    entries = await gateway.ledger()
    assert entries[-1].status == "error"
    assert entries[-1].provider == "oai"


async def test_dropped_connection_falls_back(gateway: Gateway) -> None:
    gateway.upstream.set_default("openai", Drop())
    raw = await gateway.client().chat.completions.with_raw_response.create(
        model="default",
        messages=HELLO,
    )
    assert raw.headers["x-apiary-provider"] == "claude"
    [entry] = await gateway.ledger()
    assert entry.fallback_path == ["oai/gpt-4o-mini: connection"]


async def test_anthropic_tool_calls_are_translated(gateway: Gateway) -> None:
    gateway.upstream.script(
        "anthropic", Reply(text="Checking.", tool_calls=[ToolCall("weather", '{"city": "Paris"}')])
    )
    tools: list[ChatCompletionToolParam] = [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be brief."},
        *HELLO,
    ]
    completion = await gateway.client().chat.completions.create(
        model="claude/claude-sonnet-4",
        messages=messages,
        tools=tools,
        tool_choice="required",
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "weather"
    assert call.function.arguments == '{"city":"Paris"}'
    request_body = sent(gateway)
    assert request_body["system"] == "Be brief."
    assert request_body["tools"][0]["input_schema"]["properties"]["city"] == {"type": "string"}
    assert request_body["tool_choice"] == {"type": "any"}
    assert request_body["max_tokens"] > 0

    # The tool result goes back as a tool_result block in a user turn.
    await gateway.client().chat.completions.create(
        model="claude/claude-sonnet-4",
        messages=[
            *HELLO,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "weather", "arguments": call.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "18C"},
        ],
    )
    turns = sent(gateway)["messages"]
    assert turns[1]["content"][0]["type"] == "tool_use"
    assert turns[2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": call.id,
        "content": "18C",
    }


async def test_anthropic_streamed_tool_call_arrives_as_openai_deltas(
    gateway: Gateway,
) -> None:
    gateway.upstream.script(
        "anthropic", Reply(text="", tool_calls=[ToolCall("weather", '{"city": "Oslo"}')])
    )
    stream = await gateway.client().chat.completions.create(
        model="claude/claude-sonnet-4",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    name, arguments, finish, usage = "", "", None, None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                name += (delta.function.name or "") if delta.function else ""
                arguments += (delta.function.arguments or "") if delta.function else ""
            finish = choice.finish_reason or finish
    assert name == "weather"
    assert arguments.replace(" ", "") == '{"city":"Oslo"}'
    assert finish == "tool_calls"
    assert usage is not None
    assert usage.prompt_tokens > 0


async def test_azure_uses_deployments_and_api_key_header(make_gateway: GatewayFactory) -> None:
    gateway: Gateway = await make_gateway(
        provider_overrides={"azure-east": {"deployments": {"gpt-4o": "prod-4o"}}}
    )
    completion = await gateway.client().chat.completions.create(
        model="azure-east/gpt-4o",
        messages=HELLO,
    )
    assert completion.choices[0].message.content == "echo: hello gateway"
    sent = gateway.upstream.requests[-1]
    assert sent.path == "/openai/deployments/prod-4o/chat/completions"
    assert sent.query["api-version"] == "2024-10-21"
    assert sent.headers["api-key"] == "sk-fake-upstream"
    assert "authorization" not in sent.headers


async def test_kimi_k2_6_drops_custom_sampling(gateway: Gateway) -> None:
    await gateway.client().chat.completions.create(
        model="kimi/kimi-k2.6",
        messages=HELLO,
        temperature=0.2,
        top_p=0.9,
    )
    assert "temperature" not in sent(gateway)
    assert "top_p" not in sent(gateway)
    await gateway.client().chat.completions.create(
        model="kimi/kimi-k2.5",
        messages=HELLO,
        temperature=0.2,
    )
    assert sent(gateway)["temperature"] == 0.2


async def test_unpriced_model_is_recorded_as_unpriced(gateway: Gateway) -> None:
    labels = {"provider": "lab", "model": "mystery-7b"}
    before = REGISTRY.get_sample_value("apiary_gateway_unpriced_calls_total", labels) or 0
    raw = await gateway.client().chat.completions.with_raw_response.create(
        model="lab/mystery-7b",
        messages=HELLO,
    )
    assert raw.headers["x-apiary-cost-usd"] == "unpriced"
    [entry] = await gateway.ledger()
    assert entry.cost_usd is None
    assert entry.priced is False
    # ... and in the metrics: unknown, not zero.
    assert REGISTRY.get_sample_value("apiary_gateway_unpriced_calls_total", labels) == before + 1


async def test_price_override_applies(make_gateway: GatewayFactory) -> None:
    gateway: Gateway = await make_gateway(
        prices={"lab/mystery-7b": PriceConfig(input=1_000_000, output=1_000_000)}
    )
    completion = await gateway.client().chat.completions.create(
        model="lab/mystery-7b",
        messages=HELLO,
    )
    usage = completion.usage
    assert usage is not None
    [entry] = await gateway.ledger()
    assert entry.cost_usd == pytest.approx(usage.prompt_tokens + usage.completion_tokens)


async def test_cost_route_picks_the_cheapest_model(make_gateway: GatewayFactory) -> None:
    gateway: Gateway = await make_gateway(
        routes={
            "cheap": RouteConfig(policy="cost", models=["oai/gpt-4o", "oai/gpt-4o-mini"]),
        }
    )
    raw = await gateway.client().chat.completions.with_raw_response.create(
        model="cheap",
        messages=HELLO,
    )
    assert raw.headers["x-apiary-model"] == "gpt-4o-mini"
    [entry] = await gateway.ledger()
    assert entry.reason is not None
    assert entry.reason.startswith("cost")


async def test_circuit_breaker_opens_and_skips_the_provider(
    make_gateway: GatewayFactory,
) -> None:
    gateway: Gateway = await make_gateway(provider_overrides={"oai": {"max_retries": 0}})
    gateway.upstream.set_default("openai", Fail(500))
    client = gateway.client()
    for _ in range(5):
        await client.chat.completions.create(model="default", messages=HELLO)
    calls = len([r for r in gateway.upstream.requests if r.family == "openai"])
    assert calls == 5
    raw = await client.chat.completions.with_raw_response.create(
        model="default",
        messages=HELLO,
    )
    assert raw.headers["x-apiary-provider"] == "claude"
    assert len([r for r in gateway.upstream.requests if r.family == "openai"]) == calls
    entries = await gateway.ledger()
    assert entries[-1].fallback_path == ["oai/gpt-4o-mini: circuit open"]


async def test_max_concurrency_queues_instead_of_failing(make_gateway: GatewayFactory) -> None:
    gateway: Gateway = await make_gateway(provider_overrides={"oai": {"max_concurrency": 1}})
    service = gateway.runtime.providers
    request = {"model": "oai/gpt-4o-mini", "messages": HELLO}
    decision = service.router.decide("oai/gpt-4o-mini", request)
    gateway.upstream.script("openai", Slow(0.3), Slow(0.3))
    started = time.perf_counter()
    results = await asyncio.gather(*[service.complete(request, decision) for _ in range(2)])
    assert time.perf_counter() - started >= 0.6  # one after the other, both served
    assert all(r.completion is not None for r in results)
    assert max(r.queue_s for r in results) >= 0.25

    # Control: without the limit the same two calls overlap.
    unlimited = (await make_gateway()).runtime.providers
    gateway.upstream.script("openai", Slow(0.3), Slow(0.3))
    started = time.perf_counter()
    await asyncio.gather(*[unlimited.complete(request, decision) for _ in range(2)])
    assert time.perf_counter() - started < 0.55


async def test_a_stream_given_up_before_its_first_token_gives_its_turn_back(
    make_gateway: GatewayFactory,
) -> None:
    """A caller that stops waiting (a sub-agent's timeout) while a provider with
    `max_concurrency: 1` has not answered yet: the next caller must get the turn, not
    wait forever behind a turn nobody holds."""
    gateway: Gateway = await make_gateway(provider_overrides={"oai": {"max_concurrency": 1}})
    auth = AuthContext(
        role=Role.DEVELOPER, tenant_id=uuid.UUID(str(gateway.tenant.id)), actor=Actor()
    )
    body = {"model": "oai/gpt-4o-mini", "messages": HELLO, "stream": True}
    gateway.upstream.script("openai", Slow(2.0))
    with pytest.raises(TimeoutError) as gave_up:
        await asyncio.wait_for(gateway.runtime.client.chat(auth, dict(body)), 0.2)
    # The caller keeps its error (a sub-agent records why it failed), and with it the
    # traceback: the turn must not depend on that error being garbage collected.
    failures = [gave_up.value]
    stream = await asyncio.wait_for(gateway.runtime.client.chat(auth, dict(body)), 5)
    assert not isinstance(stream, ChatReply)
    chunks = [orjson.loads(chunk) async for chunk in stream.chunks]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: hello gateway"
    del failures  # held until here, as a sub-agent holds the error it records


async def test_rpm_limit_queues_the_request_over_the_limit(make_gateway: GatewayFactory) -> None:
    gateway: Gateway = await make_gateway(provider_overrides={"oai": {"rpm": 2}})
    limiter = gateway.runtime.providers.handles["oai"].limiter
    for _ in range(2):
        async with limiter.slot() as waited:
            assert waited < 0.05
    third = asyncio.create_task(_take(limiter))
    await asyncio.sleep(0.2)
    assert not third.done()  # waiting for the minute to roll over, not failed
    assert limiter.waiting == 1
    third.cancel()


async def _take(limiter: ProviderLimiter) -> None:
    async with limiter.slot():
        pass


async def test_unknown_model_is_404_in_openai_shape(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await gateway.client().chat.completions.create(model="gpt-99", messages=HELLO)
    assert "gpt-99" in caught.value.message
    assert "/v1/models" in caught.value.message


async def test_bad_body_names_the_field(gateway: Gateway) -> None:
    async with gateway.http() as http:
        response = await http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {gateway.key}"},
            json={"model": "default", "messages": []},
        )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("messages:")
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_auth_and_permission(gateway: Gateway, runtime: object) -> None:
    with pytest.raises(openai.AuthenticationError):
        await gateway.client(key="apy_nope").chat.completions.create(
            model="default",
            messages=HELLO,
        )
    viewer = await make_api_key(gateway.runtime, gateway.tenant, Role.VIEWER)
    with pytest.raises(openai.PermissionDeniedError):
        await gateway.client(key=viewer.token).chat.completions.create(
            model="default",
            messages=HELLO,
        )
    assert await gateway.ledger() == []


async def test_models_lists_routes_and_models(gateway: Gateway) -> None:
    listed = await gateway.client().models.list()
    ids = [model.id async for model in listed]
    assert ids[0] == "default"
    assert "oai/gpt-4o-mini" in ids
    assert "claude/claude-sonnet-4" in ids


async def test_embeddings(gateway: Gateway) -> None:
    result = await gateway.client().embeddings.create(
        model="oai/text-embedding-3-small", input=["alpha", "beta"]
    )
    assert len(result.data) == 2
    assert len(result.data[0].embedding) == 8


async def test_a_ledger_row_that_cannot_be_written_does_not_block_the_rest(
    gateway: Gateway,
) -> None:
    client = gateway.client()
    await client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    # A row whose tenant no longer exists joins the queue...
    ghost = AuthContext(role=Role.DEVELOPER, tenant_id=uuid.uuid4(), actor=Actor())
    gateway.runtime.ledger.record(
        ledger_row(
            ghost,
            {"model": "oai/gpt-4o-mini"},
            kind="chat",
            route=None,
            reason="test",
            provider="oai",
            model="gpt-4o-mini",
            usage=Usage(prompt_tokens=1),
            cost_usd=0.0,
            latency_s=0.001,
        )
    )
    await client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    entries = await gateway.ledger()
    assert len(entries) == 2  # both real calls written; only the orphan dropped
    assert gateway.runtime.ledger.dropped == 1


async def test_in_process_callers_are_accounted_like_http_ones(gateway: Gateway) -> None:
    key = await make_api_key(gateway.runtime, gateway.tenant, Role.DEVELOPER)
    async with gateway.http() as http:
        me = (await http.get("/api/v1/auth/me", headers=key.headers)).json()
    auth = AuthContext(
        role=Role.DEVELOPER,
        tenant_id=uuid.UUID(me["tenant_id"]),
        actor=Actor(api_key_id=uuid.UUID(me["api_key_id"])),
    )
    reply = await gateway.runtime.client.chat(
        auth, {"model": "default", "messages": [{"role": "user", "content": "in process"}]}
    )
    assert isinstance(reply, ChatReply)
    assert reply.json()["choices"][0]["message"]["content"] == "echo: in process"
    assert reply.headers["x-apiary-provider"] == "oai"
    [entry] = await gateway.ledger()
    assert str(entry.tenant_id) == me["tenant_id"]
    assert entry.route == "default"


async def test_azure_ad_without_its_library_is_a_clear_error(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity.aio", None)  # as if not installed
    gateway: Gateway = await make_gateway(
        provider_overrides={"azure-east": {"azure_ad": True, "api_key": None}}
    )
    with pytest.raises(openai.APIStatusError) as caught:
        await gateway.client().chat.completions.create(model="azure-east/gpt-4o", messages=HELLO)
    assert caught.value.status_code == 502
    assert not [r for r in gateway.upstream.requests if r.family == "azure"]
    [entry] = await gateway.ledger()
    assert entry.error is not None
    assert "azure-identity" in entry.error


async def test_a_body_over_the_limit_is_413(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openai_api, "MAX_BODY_BYTES", 1024)
    async with gateway.http() as http:
        response = await http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {gateway.key}"},
            json={"model": "default", "messages": [{"role": "user", "content": "x" * 2000}]},
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PayloadTooLarge"
    assert gateway.upstream.requests == []


async def test_a_client_hanging_up_mid_stream_stops_the_call_and_is_accounted(
    gateway: Gateway,
) -> None:
    # Driven at the ASGI level: the client goes away after the first event, so the
    # server's next `send` fails the way uvicorn's does for a closed connection.
    gateway.upstream.script("openai", Reply(text="one two three four five", chunk_delay_s=0.05))
    body = orjson.dumps(
        {"model": "oai/gpt-4o-mini", "messages": HELLO, "stream": True, "max_tokens": 9}
    )
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {gateway.key}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("apiary.test", 80),
        "app": gateway.app,
    }
    messages = iter([{"type": "http.request", "body": body, "more_body": False}])
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and any(
            m["type"] == "http.response.body" for m in sent
        ):
            raise OSError("client went away")
        sent.append(message)

    with pytest.raises(OSError, match="went away"):
        await gateway.app(scope, receive, send)
    assert sent[0]["status"] == 200
    [entry] = await gateway.ledger()
    assert entry.streamed
    assert entry.latency_ms < 200  # not the whole stream: the upstream call was closed early


async def test_other_methods_on_a_hot_route_are_405(gateway: Gateway) -> None:
    async with gateway.http() as http:
        response = await http.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert "POST /v1/chat/completions" in response.json()["error"]["message"]


async def test_an_unexpected_error_on_a_hot_route_is_an_openai_500_counted_and_logged(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hot path bypasses FastAPI's stack, yet an error it does not expect must still get
    # the outer error handler (a 500 naming the request id, nothing internal), the metrics
    # and the request id every other route gets.
    async def broken(*args: Any) -> ChatReply:
        raise RuntimeError("ledger password is hunter2")

    route = openai_api.HOT_ROUTES["/v1/chat/completions"]
    monkeypatch.setitem(openai_api.HOT_ROUTES, route.path, dataclasses.replace(route, call=broken))
    samples_before = _requests_total(route="/v1/chat/completions", status="500")
    transport = httpx.ASGITransport(app=gateway.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://apiary.test") as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "oai/gpt-4o-mini", "messages": HELLO},
            headers={"authorization": f"Bearer {gateway.key}"},
        )
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "InternalError"
    assert error["type"] == "api_error"
    assert response.headers["x-request-id"] in error["message"]
    assert "hunter2" not in response.text
    assert _requests_total(route="/v1/chat/completions", status="500") == samples_before + 1


def _requests_total(*, route: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "apiary_http_requests_total", {"method": "POST", "route": route, "status": status}
    )
    return value or 0.0
