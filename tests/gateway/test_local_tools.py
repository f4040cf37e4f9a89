"""The bundled chat model (SmolLM2, really run by llama.cpp) is honest: tools give tool calls
whose arguments parse and match the schema, `tool_choice`, `n` and logprobs are honoured,
and what it cannot do is a 400 naming it. max_tokens stays small: two shared cores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest
from fastapi import FastAPI
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from tests.factories import make_api_key, make_tenant

WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
}
TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather forecast for a city",
            "parameters": WEATHER_PARAMETERS,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"],
            },
        },
    },
]
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather in Paris for the next 3 days?"}
]


class GetWeather(BaseModel):
    """The weather forecast for a city."""

    model_config = ConfigDict(extra="forbid")  # the schema's keys and no others

    city: str = Field(max_length=24)
    days: int = Field(ge=1, le=7)


class Add(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: float
    b: float


SCHEMAS: dict[str, type[BaseModel]] = {"get_weather": GetWeather, "add": Add}


@pytest.fixture
async def key(client: httpx.AsyncClient, runtime: Runtime) -> str:
    assert [p.kind for p in runtime.providers.config.providers] == ["local"]
    tenant = await make_tenant(runtime, client, "acme")
    return (await make_api_key(runtime, tenant, Role.DEVELOPER)).token


@pytest.fixture
async def sdk(app: FastAPI, key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://apiary.test") as http:
        yield openai.AsyncOpenAI(
            base_url="http://apiary.test/v1", api_key=key, max_retries=0, http_client=http
        )


def check_arguments(call: object) -> None:
    """The call names a tool and its arguments parse and match that tool's schema."""
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    SCHEMAS[call.function.name].model_validate(orjson.loads(call.function.arguments))


async def test_required_and_named_tool_choice_give_valid_calls(sdk: openai.AsyncOpenAI) -> None:
    required = await sdk.chat.completions.create(
        model="local/smollm2",
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=40,
        temperature=0,
    )
    choice = required.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.id.startswith("call_")
    check_arguments(call)

    named = await sdk.chat.completions.create(
        model="local/smollm2",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "add"}},
        max_tokens=24,
        temperature=0,
    )
    assert named.choices[0].message.tool_calls is not None
    [forced] = named.choices[0].message.tool_calls
    assert isinstance(forced, ChatCompletionMessageFunctionToolCall)
    assert forced.function.name == "add"
    check_arguments(forced)


async def test_tool_results_are_answered_in_text_and_none_offers_no_tool(
    sdk: openai.AsyncOpenAI,
) -> None:
    history: list[ChatCompletionMessageParam] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris","days":3}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21C"},
    ]
    answer = await sdk.chat.completions.create(
        model="local/smollm2",
        messages=history,
        tools=TOOLS,
        max_tokens=12,
        temperature=0,
    )
    assert answer.choices[0].message.tool_calls is None
    assert (answer.choices[0].message.content or "").strip()
    declined = await sdk.chat.completions.create(
        model="local/smollm2",
        messages=ASK,
        tools=TOOLS,
        tool_choice="none",
        max_tokens=8,
        temperature=0,
    )
    assert declined.choices[0].message.tool_calls is None
    assert declined.choices[0].finish_reason in ("stop", "length")


async def test_a_streamed_tool_call(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="local/smollm2",
        messages=ASK,
        tools=TOOLS[:1],
        tool_choice="required",
        max_tokens=40,
        temperature=0,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                if delta.function and delta.function.name:
                    call["name"] += delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather"
    GetWeather.model_validate(orjson.loads(calls[0]["arguments"]))


async def test_n_choices_and_logprobs(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(
        model="local/smollm2",
        messages=[{"role": "user", "content": "Name a fruit."}],
        n=2,
        max_tokens=6,
        temperature=1.0,
        seed=3,
        logprobs=True,
        top_logprobs=3,
    )
    assert [choice.index for choice in completion.choices] == [0, 1]
    assert completion.usage is not None
    assert completion.usage.completion_tokens >= 2
    for choice in completion.choices:
        assert choice.logprobs is not None
        assert choice.logprobs.content
        # One entry per token of the text, each with its alternatives.
        assert "".join(entry.token for entry in choice.logprobs.content) == choice.message.content
        for entry in choice.logprobs.content:
            assert entry.logprob <= 0
            assert len(entry.top_logprobs) == 3
            best = entry.top_logprobs[0].logprob
            assert best >= entry.logprob - 1e-9
            assert best == max(alternative.logprob for alternative in entry.top_logprobs)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"logit_bias": {"50256": -100}}, "logit_bias: not supported by the local model"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio: not supported by the local model"),
        ({"n": 2, "stream": True}, "n: more than one choice is not streamed"),
        ({"logprobs": True, "stream": True}, "logprobs: not streamed by the local model"),
        ({"top_logprobs": 2}, "top_logprobs: requires logprobs: true"),
        ({"n": 99}, "n: must be an integer from 1 to 16"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name: 'nope' is not one of the tools",
        ),
    ],
)
async def test_what_it_cannot_do_is_a_400_naming_it(
    sdk: openai.AsyncOpenAI, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(
            model="local/smollm2",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            **extra,
        )
    assert message in caught.value.message


async def test_langchain_bind_tools(app: FastAPI, key: str) -> None:
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://apiary.test") as http:
        model = ChatOpenAI(
            model_name="local/smollm2",
            openai_api_base="http://apiary.test/v1",
            openai_api_key=SecretStr(key),
            http_async_client=http,
            max_tokens=40,
            temperature=0,
            max_retries=0,
        )
        bound = model.bind_tools([GetWeather], tool_choice="GetWeather")
        reply = await bound.ainvoke("What is the weather in Oslo this week?")
    assert isinstance(reply, AIMessage)
    [call] = reply.tool_calls
    assert call["name"] == "GetWeather"
    GetWeather.model_validate(call["args"])


async def test_anthropic_tool_use_on_the_bundled_model(app: FastAPI, key: str) -> None:
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://apiary.test") as http:
        claude = anthropic.AsyncAnthropic(
            base_url="http://apiary.test", api_key=key, max_retries=0, http_client=http
        )
        message = await claude.messages.create(
            model="local/smollm2",
            max_tokens=40,
            messages=[{"role": "user", "content": "Weather in Rome for 2 days?"}],
            tools=[
                {
                    "name": "get_weather",
                    "description": "The weather forecast for a city",
                    "input_schema": WEATHER_PARAMETERS,
                }
            ],
            tool_choice={"type": "any"},
        )
    assert message.stop_reason == "tool_use"
    [use] = [block for block in message.content if block.type == "tool_use"]
    assert use.type == "tool_use"
    assert use.name == "get_weather"
    GetWeather.model_validate(use.input)
