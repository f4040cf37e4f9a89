"""The fake upstream speaks the providers' real protocols: the official SDKs are the judges."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anthropic
import httpx
import httpx2
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from tests.fakes.upstream import (
    DEFAULT_API_KEY,
    Drop,
    Fail,
    FakeUpstream,
    Reply,
    Slow,
    StreamThenDrop,
    ToolCall,
    embedding_for,
)

WEATHER_ARGS = '{"city": "Paris", "unit": "celsius"}'
USER: ChatCompletionMessageParam = {"role": "user", "content": "hello there world"}
CLAUDE_USER: MessageParam = {"role": "user", "content": "hello there world"}


@pytest.fixture
async def oai(fake_upstream: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=fake_upstream.base_url + "/v1", api_key=DEFAULT_API_KEY, max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def azure(fake_upstream: FakeUpstream) -> AsyncIterator[openai.AsyncAzureOpenAI]:
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=fake_upstream.base_url,
        api_version="2024-10-21",
        api_key=DEFAULT_API_KEY,
        max_retries=0,
    ) as client:
        yield client


@pytest.fixture
async def claude(fake_upstream: FakeUpstream) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=fake_upstream.base_url, api_key=DEFAULT_API_KEY, max_retries=0
    ) as client:
        yield client


# -- OpenAI ---------------------------------------------------------------------------------


async def test_openai_default_reply_echoes_the_last_user_message(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    completion = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "say hi"}]},
        ],
    )

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == "echo: say hi"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    # Word counts: the prompt's six words (system message included), the reply's three.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (6, 3)
    assert completion.usage.total_tokens == 9
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    [recorded] = fake_upstream.requests
    assert (recorded.family, recorded.method, recorded.path) == (
        "openai",
        "POST",
        "/v1/chat/completions",
    )
    assert recorded.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert recorded.body is not None
    assert recorded.body["model"] == "gpt-4o-mini"


async def test_openai_scripted_replies_are_consumed_in_order(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script(
        "openai",
        Reply("one", usage=(11, 22), cached_tokens=4),
        Reply("two", finish_reason="length"),
    )
    fake_upstream.script("anthropic", Fail(529))  # another family's script is not touched

    first = await oai.chat.completions.create(model="m", messages=[USER])
    second = await oai.chat.completions.create(model="m", messages=[USER])
    third = await oai.chat.completions.create(model="m", messages=[USER])

    assert first.choices[0].message.content == "one"
    assert first.usage is not None
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (11, 22)
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 4
    assert (second.choices[0].message.content, second.choices[0].finish_reason) == (
        "two",
        "length",
    )
    assert third.choices[0].message.content == "echo: hello there world"
    assert fake_upstream.pending("openai") == 0
    assert fake_upstream.pending("anthropic") == 1


async def test_openai_stream_with_usage(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=[USER],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    finish_reasons = []
    usage_chunks = []
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage_chunks.append(chunk)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.finish_reason is not None:
                finish_reasons.append(choice.finish_reason)

    assert text == "echo: hello there world"
    assert finish_reasons == ["stop"]
    [last] = usage_chunks
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 4)


async def test_openai_stream_without_include_usage_has_no_usage_chunk(
    oai: openai.AsyncOpenAI,
) -> None:
    stream = await oai.chat.completions.create(model="m", messages=[USER], stream=True)
    chunks = [chunk async for chunk in stream]

    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hello there world"


async def test_openai_tool_calls_non_streaming(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script(
        "openai",
        Reply(
            tool_calls=[
                ToolCall("get_weather", WEATHER_ARGS, id="call_abc"),
                ToolCall("get_time", '{"tz": "CET"}'),
            ]
        ),
    )

    completion = await oai.chat.completions.create(model="m", messages=[USER])

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None
    first, second = calls
    assert first.type == "function"
    assert second.type == "function"
    assert (first.id, first.function.name) == ("call_abc", "get_weather")
    assert json.loads(first.function.arguments) == {"city": "Paris", "unit": "celsius"}
    assert second.id.startswith("call_")
    assert (second.function.name, second.function.arguments) == ("get_time", '{"tz": "CET"}')


async def test_openai_tool_calls_streamed_as_deltas(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script(
        "openai",
        Reply(tool_calls=[ToolCall("get_weather", WEATHER_ARGS), ToolCall("get_time", "{}")]),
    )

    async with oai.chat.completions.stream(model="m", messages=[USER]) as stream:
        argument_deltas = [
            event async for event in stream if event.type == "tool_calls.function.arguments.delta"
        ]
        completion = await stream.get_final_completion()

    assert len(argument_deltas) > 2  # the arguments really came in fragments
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None
    assert [c.function.name for c in calls if c.type == "function"] == ["get_weather", "get_time"]
    weather = calls[0]
    assert weather.type == "function"
    assert weather.id.startswith("call_")
    assert json.loads(weather.function.arguments) == {"city": "Paris", "unit": "celsius"}


async def test_openai_embeddings_are_deterministic_in_both_encodings(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    # The SDK asks for base64 unless told otherwise and decodes it itself.
    default = await oai.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    floats = await oai.embeddings.create(
        model="text-embedding-3-small", input="a b", encoding_format="float"
    )
    wider = await oai.embeddings.create(model="text-embedding-3-small", input="c", dimensions=32)

    assert [e.index for e in default.data] == [0, 1]
    assert default.data[0].embedding == embedding_for("a b")
    assert default.data[1].embedding == embedding_for("c")
    assert len(default.data[0].embedding) == 8
    assert default.data[0].embedding != default.data[1].embedding
    assert floats.data[0].embedding == default.data[0].embedding
    assert len(wider.data[0].embedding) == 32
    assert (default.usage.prompt_tokens, default.usage.total_tokens) == (3, 3)
    assert [r.body["encoding_format"] for r in fake_upstream.requests if r.body] == [
        "base64",
        "float",
        "base64",
    ]


async def test_openai_models(oai: openai.AsyncOpenAI) -> None:
    page = await oai.models.list()

    assert [m.id for m in page.data] == ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]


async def test_openai_wrong_key_is_401(fake_upstream: FakeUpstream) -> None:
    async with openai.AsyncOpenAI(
        base_url=fake_upstream.base_url + "/v1", api_key="sk-wrong-key-123", max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="m", messages=[USER])

    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"
    assert isinstance(caught.value.body, dict)
    assert set(caught.value.body) == {"message", "type", "param", "code"}


async def test_openai_429_carries_retry_after(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script("openai", Fail(429, retry_after=7))

    with pytest.raises(openai.RateLimitError) as caught:
        await oai.chat.completions.create(model="m", messages=[USER])

    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "rate_limit_exceeded"


async def test_openai_500_and_context_length(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script("openai", Fail(500), Fail(400, code="context_length_exceeded"))

    with pytest.raises(openai.InternalServerError) as server_error:
        await oai.chat.completions.create(model="m", messages=[USER])
    with pytest.raises(openai.BadRequestError) as bad_request:
        await oai.chat.completions.create(model="m", messages=[USER])

    assert server_error.value.type == "server_error"
    assert bad_request.value.code == "context_length_exceeded"
    assert bad_request.value.param == "messages"


async def test_openai_missing_messages_is_400(fake_upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=fake_upstream.base_url) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "m"},
            headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"},
        )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


async def test_unknown_path_is_an_openai_style_404(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await oai.completions.create(model="m", prompt="hi")

    assert "Invalid URL (POST /v1/completions)" in caught.value.message


# -- connection failures --------------------------------------------------------------------


async def test_drop_is_a_connection_error(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.script("openai", Drop())
    fake_upstream.script("anthropic", Drop())

    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(model="m", messages=[USER])
    with pytest.raises(anthropic.APIConnectionError):
        await claude.messages.create(model="c", max_tokens=10, messages=[CLAUDE_USER])


async def test_stream_then_drop_delivers_n_tokens_first(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script("openai", StreamThenDrop(2, text="one two three four"))

    received: list[str] = []

    async def read_tokens() -> None:
        stream = await oai.chat.completions.create(model="m", messages=[USER], stream=True)
        async for chunk in stream:
            received.extend(c.delta.content for c in chunk.choices if c.delta.content)

    with pytest.raises(openai.APIConnectionError):
        await read_tokens()

    assert received == ["one ", "two "]


async def test_stream_then_drop_zero_drops_before_the_first_token(
    fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.script("anthropic", StreamThenDrop(0))

    event_types: list[str] = []

    async def read_events() -> None:
        async with claude.messages.stream(
            model="c", max_tokens=10, messages=[CLAUDE_USER]
        ) as stream:
            async for event in stream:
                event_types.append(event.type)

    # Unlike openai's, the anthropic SDK lets a mid-stream disconnect out unwrapped.
    with pytest.raises(httpx2.RemoteProtocolError):
        await read_events()

    assert event_types == ["message_start", "content_block_start"]


async def test_stream_then_drop_on_a_non_streaming_call(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script("openai", StreamThenDrop(1))

    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(model="m", messages=[USER])


async def test_slow_times_out_the_client_then_answers_late(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script("openai", Slow(5.0), Slow(0.05, then=Reply("late")))

    with pytest.raises(openai.APITimeoutError):
        await oai.chat.completions.create(model="m", messages=[USER], timeout=0.2)
    completion = await oai.chat.completions.create(model="m", messages=[USER])

    assert completion.choices[0].message.content == "late"


async def test_set_default_applies_once_the_script_is_used_up(
    fake_upstream: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake_upstream.script("openai", Reply("scripted"))
    fake_upstream.set_default("openai", Fail(503))

    first = await oai.chat.completions.create(model="m", messages=[USER])
    with pytest.raises(openai.InternalServerError) as caught:
        await oai.chat.completions.create(model="m", messages=[USER])
    fake_upstream.set_default("openai", None)
    third = await oai.chat.completions.create(model="m", messages=[USER])

    assert first.choices[0].message.content == "scripted"
    assert caught.value.status_code == 503
    assert third.choices[0].message.content == "echo: hello there world"


async def test_stopped_upstream_refuses_connections() -> None:
    async with FakeUpstream() as upstream:
        base_url = upstream.base_url
    async with openai.AsyncOpenAI(
        base_url=base_url + "/v1", api_key=DEFAULT_API_KEY, max_retries=0
    ) as client:
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(model="m", messages=[USER])


# -- Azure OpenAI ---------------------------------------------------------------------------


async def test_azure_chat_routes_by_deployment_with_api_key(
    fake_upstream: FakeUpstream, azure: openai.AsyncAzureOpenAI
) -> None:
    completion = await azure.chat.completions.create(model="my-gpt4o", messages=[USER])

    assert completion.choices[0].message.content == "echo: hello there world"
    [recorded] = fake_upstream.requests
    assert recorded.family == "azure"
    assert recorded.path == "/openai/deployments/my-gpt4o/chat/completions"
    assert recorded.query == {"api-version": "2024-10-21"}
    assert recorded.headers["api-key"] == DEFAULT_API_KEY


async def test_azure_stream_opens_with_a_choiceless_filter_chunk(
    azure: openai.AsyncAzureOpenAI,
) -> None:
    stream = await azure.chat.completions.create(
        model="dep", messages=[USER], stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    assert chunks[0].choices == []
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there world"
    assert chunks[-1].usage is not None


async def test_azure_errors(fake_upstream: FakeUpstream, azure: openai.AsyncAzureOpenAI) -> None:
    fake_upstream.script("azure", Fail(429, retry_after=2.5))

    with pytest.raises(openai.RateLimitError) as limited:
        await azure.chat.completions.create(model="dep", messages=[USER])
    async with openai.AsyncOpenAI(  # plain client: no api-version
        base_url=fake_upstream.base_url + "/openai/deployments/dep",
        api_key=DEFAULT_API_KEY,
        max_retries=0,
    ) as versionless:
        with pytest.raises(openai.NotFoundError):
            await versionless.chat.completions.create(model="dep", messages=[USER])
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=fake_upstream.base_url,
        api_version="2024-10-21",
        api_key="wrong",
        max_retries=0,
    ) as wrong_key:
        with pytest.raises(openai.AuthenticationError):
            await wrong_key.chat.completions.create(model="dep", messages=[USER])

    assert limited.value.response.headers["retry-after"] == "2.5"
    assert limited.value.response.headers["retry-after-ms"] == "2500"
    assert limited.value.code == "429"


async def test_azure_accepts_an_entra_bearer_token(fake_upstream: FakeUpstream) -> None:
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=fake_upstream.base_url,
        api_version="2024-10-21",
        azure_ad_token=DEFAULT_API_KEY,
        max_retries=0,
    ) as client:
        completion = await client.chat.completions.create(model="dep", messages=[USER])

    assert completion.choices[0].message.content == "echo: hello there world"
    assert "api-key" not in fake_upstream.requests[0].headers


# -- Anthropic ------------------------------------------------------------------------------


async def test_anthropic_message(
    fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.script("anthropic", Reply("hi there", usage=(12, 2), cached_tokens=5))

    message = await claude.messages.create(
        model="claude-opus-4-6", max_tokens=100, system="be nice", messages=[CLAUDE_USER]
    )

    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "claude-opus-4-6"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    [block] = message.content
    assert block.type == "text"
    assert block.text == "hi there"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 2)
    assert message.usage.cache_read_input_tokens == 5
    assert message.usage.cache_creation_input_tokens == 0
    headers = fake_upstream.requests[0].headers
    assert headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"  # the 2.x SDK's choice
    assert "anthropic-version" in headers


async def test_anthropic_stream(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(
        model="claude-opus-4-6", max_tokens=100, messages=[CLAUDE_USER]
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        message = await stream.get_final_message()

    assert len(pieces) == 4
    assert "".join(pieces) == "echo: hello there world"
    [block] = message.content
    assert block.type == "text"
    assert block.text == "echo: hello there world"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 4)


async def test_anthropic_tool_use(
    fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.script(
        "anthropic",
        Reply("Let me check.", tool_calls=[ToolCall("get_weather", WEATHER_ARGS)]),
    )

    message = await claude.messages.create(model="c", max_tokens=100, messages=[CLAUDE_USER])

    assert message.stop_reason == "tool_use"
    text, tool = message.content
    assert text.type == "text"
    assert text.text == "Let me check."
    assert tool.type == "tool_use"
    assert tool.id.startswith("toolu_")
    assert tool.name == "get_weather"
    assert tool.input == {"city": "Paris", "unit": "celsius"}


async def test_anthropic_tool_use_streamed_as_input_json_deltas(
    fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.script(
        "anthropic", Reply(tool_calls=[ToolCall("get_weather", WEATHER_ARGS, id="toolu_01")])
    )

    async with claude.messages.stream(model="c", max_tokens=100, messages=[CLAUDE_USER]) as stream:
        fragments = [
            event.delta.partial_json
            async for event in stream
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta"
        ]
        message = await stream.get_final_message()

    assert len(fragments) > 2
    assert message.stop_reason == "tool_use"
    [tool] = message.content
    assert tool.type == "tool_use"
    assert (tool.id, tool.name) == ("toolu_01", "get_weather")
    assert tool.input == {"city": "Paris", "unit": "celsius"}


async def test_anthropic_errors(
    fake_upstream: FakeUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    fake_upstream.script("anthropic", Fail(429, retry_after=3), Fail(529), Fail(500))

    with pytest.raises(anthropic.RateLimitError) as limited:
        await claude.messages.create(model="c", max_tokens=10, messages=[CLAUDE_USER])
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        await claude.messages.create(model="c", max_tokens=10, messages=[CLAUDE_USER])
    with pytest.raises(anthropic.InternalServerError) as server_error:
        await claude.messages.create(model="c", max_tokens=10, messages=[CLAUDE_USER])

    assert limited.value.response.headers["retry-after"] == "3"
    assert limited.value.type == "rate_limit_error"
    assert overloaded.value.status_code == 529
    assert isinstance(overloaded.value, anthropic.OverloadedError)
    assert overloaded.value.type == "overloaded_error"
    assert server_error.value.type == "api_error"


async def test_anthropic_auth_and_version_headers(fake_upstream: FakeUpstream) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=fake_upstream.base_url, api_key="wrong", max_retries=0
    ) as client:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await client.messages.create(model="c", max_tokens=10, messages=[CLAUDE_USER])
    async with httpx.AsyncClient(base_url=fake_upstream.base_url) as http:
        classic = await http.post(
            "/v1/messages",
            json={"model": "c", "max_tokens": 10, "messages": [USER]},
            headers={"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"},
        )
        versionless = await http.post(
            "/v1/messages",
            json={"model": "c", "max_tokens": 10, "messages": [USER]},
            headers={"x-api-key": DEFAULT_API_KEY},
        )
        no_max_tokens = await http.post(
            "/v1/messages",
            json={"model": "c", "messages": [USER]},
            headers={"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"},
        )
        bad_role = await http.post(
            "/v1/messages",
            json={"model": "c", "max_tokens": 10, "messages": [{"role": "tool", "content": "x"}]},
            headers={"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"},
        )

    assert caught.value.type == "authentication_error"
    assert classic.status_code == 200
    assert classic.json()["content"] == [{"type": "text", "text": "echo: hello there world"}]
    assert versionless.status_code == 400
    assert versionless.json()["error"]["type"] == "invalid_request_error"
    assert no_max_tokens.status_code == 400
    assert no_max_tokens.json()["error"]["message"] == "max_tokens: Field required"
    assert bad_role.status_code == 400
