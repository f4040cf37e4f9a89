"""/v1/messages through the official anthropic SDK: any Apiary model or route behind it
(an OpenAI-format provider, the Anthropic adapter, the bundled model), with the chat path's
routing, fallback and ledger."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from anthropic.types import ImageBlockParam, MessageParam, ToolParam

from apiary.authz.permissions import Role
from tests.factories import make_api_key
from tests.fakes import Fail, Reply, StreamThenDrop, ToolCall
from tests.gateway.conftest import Gateway, GatewayFactory, minute_to_spare

WEATHER: ToolParam = {
    "name": "weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}


def claude(gateway: Gateway, key: str | None = None) -> anthropic.AsyncAnthropic:
    transport = httpx2.ASGITransport(app=gateway.app)
    return anthropic.AsyncAnthropic(
        base_url="http://apiary.test",
        api_key=key or gateway.key,
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport, base_url="http://apiary.test"),
    )


def sent(gateway: Gateway) -> dict[str, Any]:
    body = gateway.upstream.requests[-1].body
    assert body is not None
    return body


async def test_create_with_system_and_turns_through_an_openai_provider(
    gateway: Gateway,
) -> None:
    client = claude(gateway)
    raw = await client.messages.with_raw_response.create(
        model="oai/gpt-4o-mini",
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
            {"role": "user", "content": [{"type": "text", "text": "how are you"}]},
        ],
        stop_sequences=["###"],
        metadata={"user_id": "user-7"},
        # Sampling fields of the wire format that this SDK version no longer names.
        extra_body={"temperature": 0.2},
    )
    message = await raw.parse()
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "gpt-4o-mini"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: how are you"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    assert raw.headers["x-apiary-provider"] == "oai"

    upstream = sent(gateway)
    assert upstream["messages"] == [
        {"role": "system", "content": "Be brief.\nBe kind."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how are you"},
    ]
    assert (upstream["max_tokens"], upstream["temperature"]) == (64, 0.2)
    assert (upstream["stop"], upstream["user"]) == (["###"], "user-7")

    [entry] = await gateway.ledger()
    assert (entry.provider, entry.model, entry.status) == ("oai", "gpt-4o-mini", "ok")
    assert entry.prompt_tokens == message.usage.input_tokens
    assert entry.completion_tokens == message.usage.output_tokens


async def test_a_route_falls_back_and_reports_a_stop_sequence_from_claude(
    gateway: Gateway,
) -> None:
    """The default route's first model fails; the Anthropic adapter serves, and the stop
    sequence Claude matched comes back as Anthropic reports it."""
    gateway.upstream.set_default("openai", Fail(503))
    gateway.upstream.script("anthropic", Reply(text="one two", stop_sequence="###"))
    raw = await claude(gateway).messages.with_raw_response.create(
        model="default",
        max_tokens=32,
        messages=[{"role": "user", "content": "count"}],
        stop_sequences=["###"],
        extra_body={"top_k": 5},
    )
    message = await raw.parse()
    assert raw.headers["x-apiary-provider"] == "claude"
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "###")
    upstream = gateway.upstream.requests_for("anthropic")[-1].body
    assert upstream is not None
    assert (upstream["stop_sequences"], upstream["top_k"]) == (["###"], 5)
    [entry] = await gateway.ledger()
    assert entry.route == "default"
    assert entry.fallback_path == ["oai/gpt-4o-mini: server"]


async def test_max_tokens_stop_reason_and_cached_usage(gateway: Gateway) -> None:
    gateway.upstream.script(
        "anthropic", Reply(text="cut", finish_reason="max_tokens", usage=(40, 3), cached_tokens=30)
    )
    message = await claude(gateway).messages.create(
        model="claude/claude-sonnet-4",
        max_tokens=3,
        messages=[{"role": "user", "content": "a long story"}],
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.input_tokens == 40
    assert message.usage.cache_read_input_tokens == 30
    assert message.usage.output_tokens == 3


async def test_tool_round_trip(gateway: Gateway) -> None:
    gateway.upstream.script(
        "openai",
        Reply(text="", tool_calls=[ToolCall("weather", '{"city": "Paris", "days": 2}')]),
        Reply(text="Sunny in Paris."),
    )
    client = claude(gateway)
    history: list[MessageParam] = [{"role": "user", "content": "Weather in Paris?"}]
    first = await client.messages.create(
        model="oai/gpt-4o",
        max_tokens=100,
        messages=history,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "weather", "disable_parallel_tool_use": True},
    )
    assert first.stop_reason == "tool_use"
    [use] = [block for block in first.content if block.type == "tool_use"]
    assert use.type == "tool_use"
    assert (use.name, use.input) == ("weather", {"city": "Paris", "days": 2})
    upstream = sent(gateway)
    assert upstream["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "The weather in a city",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    assert upstream["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert upstream["parallel_tool_calls"] is False

    history += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": use.id, "content": "18C, sunny"},
                {"type": "text", "text": "Thanks; summarise."},
            ],
        },
    ]
    second = await client.messages.create(
        model="oai/gpt-4o", max_tokens=100, messages=history, tools=[WEATHER]
    )
    assert second.content[0].type == "text"
    assert second.content[0].text == "Sunny in Paris."
    assert second.stop_reason == "end_turn"
    turns = sent(gateway)["messages"]
    assert turns[1]["tool_calls"][0]["id"] == use.id
    assert orjson.loads(turns[1]["tool_calls"][0]["function"]["arguments"]) == use.input
    assert turns[2] == {"role": "tool", "tool_call_id": use.id, "content": "18C, sunny"}
    assert turns[3] == {"role": "user", "content": "Thanks; summarise."}


async def test_tool_use_through_the_anthropic_adapter_and_any_choice(
    gateway: Gateway,
) -> None:
    gateway.upstream.script(
        "anthropic",
        Reply(text="Let me look.", tool_calls=[ToolCall("weather", '{"city": "Oslo"}')]),
    )
    message = await claude(gateway).messages.create(
        model="claude/claude-sonnet-4",
        max_tokens=100,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER],
        tool_choice={"type": "any"},
    )
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.stop_reason == "tool_use"
    upstream = gateway.upstream.requests_for("anthropic")[-1].body
    assert upstream is not None
    assert upstream["tool_choice"] == {"type": "any"}


async def test_stream_text(gateway: Gateway) -> None:
    client = claude(gateway)
    async with client.messages.stream(
        model="oai/gpt-4o-mini",
        max_tokens=50,
        messages=[{"role": "user", "content": "tell me three words"}],
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "echo: tell me three words"
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0
    assert final.usage.output_tokens > 0
    [entry] = await gateway.ledger()
    assert entry.streamed
    assert entry.completion_tokens == final.usage.output_tokens


async def test_stream_event_sequence_on_the_wire(gateway: Gateway) -> None:
    async with (
        gateway.http() as http,
        http.stream(
            "POST",
            "/v1/messages",
            headers={"x-api-key": gateway.key, "anthropic-version": "2023-06-01"},
            json={
                "model": "oai/gpt-4o-mini",
                "max_tokens": 20,
                "stream": True,
                "messages": [{"role": "user", "content": "two words"}],
            },
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        names = [line[7:] async for line in response.aiter_lines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_stream_tool_use_with_input_json_deltas(gateway: Gateway) -> None:
    arguments = '{"city": "San Francisco", "days": 3}'
    gateway.upstream.script("openai", Reply(text="", tool_calls=[ToolCall("weather", arguments)]))
    client = claude(gateway)
    fragments: list[str] = []
    async with client.messages.stream(
        model="oai/gpt-4o-mini",
        max_tokens=50,
        messages=[{"role": "user", "content": "Weather in SF?"}],
        tools=[WEATHER],
    ) as stream:
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                fragments.append(event.delta.partial_json)
        final = await stream.get_final_message()
    assert len(fragments) > 1  # streamed in pieces, as the provider sent them
    assert orjson.loads("".join(fragments)) == orjson.loads(arguments)
    [use] = final.content
    assert use.type == "tool_use"
    assert use.input == {"city": "San Francisco", "days": 3}
    assert final.stop_reason == "tool_use"


async def test_a_failure_mid_stream_is_an_error_event(gateway: Gateway) -> None:
    gateway.upstream.script("openai", StreamThenDrop(2))
    client = claude(gateway)

    async def consume() -> None:
        async with client.messages.stream(
            model="oai/gpt-4o-mini",
            max_tokens=50,
            messages=[{"role": "user", "content": "a b c d e f"}],
        ) as stream:
            async for _ in stream:
                pass

    with pytest.raises(anthropic.APIStatusError) as caught:
        await consume()
    assert caught.value.type == "api_error"
    [entry] = await gateway.ledger()
    assert entry.streamed


async def test_x_api_key_and_bearer_auth(gateway: Gateway) -> None:
    body = {
        "model": "oai/gpt-4o-mini",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
    }
    async with gateway.http() as http:
        by_key = await http.post("/v1/messages", headers={"x-api-key": gateway.key}, json=body)
        by_bearer = await http.post(
            "/v1/messages", headers={"authorization": f"Bearer {gateway.key}"}, json=body
        )
        missing = await http.post("/v1/messages", json=body)
        wrong = await http.post("/v1/messages", headers={"x-api-key": "apy_nope"}, json=body)
    assert by_key.status_code == by_bearer.status_code == 200
    assert by_key.json()["content"][0]["text"] == "echo: x"
    assert missing.status_code == 401
    assert missing.json() == {
        "type": "error",
        "error": {
            "type": "authentication_error",
            "message": "send 'x-api-key: <Apiary API key>' or 'Authorization: Bearer <key>'",
        },
    }
    assert wrong.status_code == 401
    with pytest.raises(anthropic.AuthenticationError):
        await claude(gateway, key="apy_not-a-key").messages.create(
            model="oai/gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )


async def test_a_viewer_key_is_refused(gateway: Gateway) -> None:
    viewer = await make_api_key(gateway.runtime, gateway.tenant, Role.VIEWER)
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        await claude(gateway, key=viewer.token).messages.create(
            model="oai/gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert "gateway" in caught.value.message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_tokens": None}, "max_tokens: required, an integer from 1 to 2147483647"),
        ({"messages": []}, "messages: required, a non-empty list"),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "messages.0.role: must be 'user', 'assistant' or 'system'",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages.0.content.0.type: 'document' blocks are not supported in a user turn",
        ),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 1024}},
            "thinking: extended thinking is not supported",
        ),
        (
            {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "tools.0.type: server tool 'web_search_20250305' is not supported",
        ),
        ({"tool_choice": {"type": "any"}}, "tool_choice: requires tools"),
        ({"mcp_servers": []}, "mcp_servers: not a field of the Messages API"),
    ],
)
async def test_bad_requests_are_anthropic_bad_request_errors(
    gateway: Gateway, change: dict[str, Any], message: str
) -> None:
    body: dict[str, Any] = {
        "model": "oai/gpt-4o-mini",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}],
        **change,
    }
    body = {name: value for name, value in body.items() if value is not None}
    with pytest.raises(anthropic.BadRequestError) as caught:
        await claude(gateway).post("/v1/messages", body=body, cast_to=httpx2.Response)
    assert caught.value.status_code == 400
    assert caught.value.type == "invalid_request_error"
    assert caught.value.api_message is not None
    assert caught.value.api_message.startswith(message)
    assert gateway.upstream.requests == []  # refused before any provider was called


async def test_sdk_reports_a_missing_model(gateway: Gateway) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        await claude(gateway).messages.create(
            model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert "GET /v1/models" in (caught.value.api_message or "")


async def test_an_image_is_refused_by_a_route_that_reads_text_only(
    make_gateway: GatewayFactory,
) -> None:
    gateway: Gateway = await make_gateway(local=True)
    image: ImageBlockParam = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    question: list[MessageParam] = [
        {"role": "user", "content": [{"type": "text", "text": "what is it"}, image]}
    ]
    with pytest.raises(anthropic.BadRequestError) as caught:
        await claude(gateway).messages.create(
            model="local/smollm2", max_tokens=5, messages=question
        )
    assert "reads text only" in (caught.value.api_message or "")
    # A route whose model sees images gets it as an image part.
    await claude(gateway).messages.create(model="oai/gpt-4o", max_tokens=5, messages=question)
    part = sent(gateway)["messages"][0]["content"][1]
    assert part == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


async def test_count_tokens(gateway: Gateway) -> None:
    client = claude(gateway)
    short = await client.messages.count_tokens(
        model="oai/gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    longer = await client.messages.count_tokens(
        model="oai/gpt-4o-mini",
        system="You are a careful assistant.",
        messages=[{"role": "user", "content": "hello " * 50}],
        tools=[WEATHER],
    )
    assert short.input_tokens > 0
    assert longer.input_tokens > short.input_tokens + 50
    assert gateway.upstream.requests == []  # counted here, no provider called
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.count_tokens(
            model="no-such-model", messages=[{"role": "user", "content": "hello"}]
        )


async def test_get_is_not_allowed(gateway: Gateway) -> None:
    async with gateway.http() as http:
        response = await http.get("/v1/messages", headers={"x-api-key": gateway.key})
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_openapi_documents_the_messages_routes(gateway: Gateway) -> None:
    async with gateway.http() as http:
        spec = (await http.get("/openapi.json")).json()
    assert "/v1/messages" in spec["paths"]
    assert "/v1/messages/count_tokens" in spec["paths"]


async def test_rate_limits_budgets_and_the_cache_apply(gateway: Gateway) -> None:
    """The chat path's own limits and cache: a key over its rate is an Anthropic 429, and a
    deterministic request is answered from the cache the second time."""
    async with gateway.http() as http:
        response = await http.patch(
            "/api/v1/limits", headers=gateway.tenant.admin.headers, json={"key_rpm": 2}
        )
    assert response.status_code == 200, response.text
    ask: list[MessageParam] = [{"role": "user", "content": "cache me"}]
    client = claude(gateway)
    await minute_to_spare()
    first = await client.messages.with_raw_response.create(
        model="oai/gpt-4o-mini", max_tokens=8, messages=ask, extra_body={"temperature": 0}
    )
    second = await client.messages.with_raw_response.create(
        model="oai/gpt-4o-mini", max_tokens=8, messages=ask, extra_body={"temperature": 0}
    )
    assert (first.headers["x-apiary-cache"], second.headers["x-apiary-cache"]) == (
        "miss",
        "hit; exact",
    )
    assert (await second.parse()).content == (await first.parse()).content
    assert len(gateway.upstream.requests) == 1
    # The first call counted against the rate, the cache hit did not: one more fits.
    await client.messages.create(model="oai/gpt-4o-mini", max_tokens=8, messages=ask)
    with pytest.raises(anthropic.RateLimitError) as caught:
        await client.messages.create(model="oai/gpt-4o-mini", max_tokens=8, messages=ask)
    assert caught.value.type == "rate_limit_error"
    assert "API key request rate limit" in (caught.value.api_message or "")
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60


async def test_output_format_system_turns_and_failed_tool_results(gateway: Gateway) -> None:
    schema: dict[str, object] = {"type": "object", "properties": {"answer": {"type": "string"}}}
    history: list[MessageParam] = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "look it up", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "is_error": True,
                    "content": [{"type": "text", "text": "service down"}],
                }
            ],
        },
        {"role": "system", "content": "Answer in JSON."},
    ]
    await claude(gateway).messages.create(
        model="oai/gpt-4o-mini",
        max_tokens=20,
        messages=history,
        tools=[WEATHER],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    upstream = sent(gateway)
    assert upstream["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }
    turns = upstream["messages"]
    # The earlier turn's thinking is left out; its call and the failed result stay.
    assert turns[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "weather", "arguments": "{}"},
            }
        ],
    }
    assert turns[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: service down"}
    assert turns[3] == {"role": "system", "content": "Answer in JSON."}
