"""/v1/responses through its real clients: the openai SDK's `responses.create`, `.parse`,
`.stream`, `.retrieve`, `.delete` and `input_items`, and an OpenAI Agents SDK agent, against
providers that speak only chat completions (the fake upstream)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import openai
import orjson
import pytest
from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool
from agents import set_tracing_disabled as set_agents_tracing_disabled
from openai.types.responses import FunctionToolParam
from pydantic import BaseModel
from sqlalchemy import func, select

from apiary.auth.context import AuthContext
from apiary.authz.permissions import Role
from apiary.config import ResponsesSettings
from apiary.db import utcnow
from apiary.gateway.responses_wire import row_id
from apiary.responses.models import StoredResponse
from apiary.responses.service import ResponseService, response_service
from apiary.runtime import Runtime
from tests.factories import make_api_key, make_tenant
from tests.fakes import Fail, Reply, StreamThenDrop, ToolCall
from tests.fakes.upstream import Family
from tests.gateway.conftest import Gateway, GatewayFactory, minute_to_spare

WEATHER_TOOL: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def sent(gateway: Gateway, back: int = 1) -> dict[str, Any]:
    """The chat-completions body the fake upstream received `back` requests ago."""
    body = gateway.upstream.requests[-back].body
    assert body is not None
    return body


async def test_string_input_answers_a_response_routed_and_accounted(gateway: Gateway) -> None:
    raw = await gateway.client().responses.with_raw_response.create(
        model="oai/gpt-4o-mini", input="hello gateway", metadata={"ticket": "42"}
    )
    response = raw.parse()
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text == "echo: hello gateway"
    assert response.metadata == {"ticket": "42"}
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens == 3
    assert response.usage.total_tokens == response.usage.input_tokens + 3
    assert raw.headers["x-apiary-provider"] == "oai"
    assert sent(gateway)["messages"] == [{"role": "user", "content": "hello gateway"}]
    [entry] = await gateway.ledger()
    assert (entry.kind, entry.provider, entry.status) == ("chat", "oai", "ok")
    assert entry.completion_tokens == response.usage.output_tokens


async def test_item_list_with_instructions_becomes_the_conversation(gateway: Gateway) -> None:
    response = await gateway.client().responses.create(
        model="oai/gpt-4o-mini",
        instructions="Answer in one word.",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "first question"}]},
            {"role": "assistant", "content": "first answer"},
            {"type": "message", "role": "user", "content": "second question"},
        ],
        max_output_tokens=50,
        temperature=0.5,
        top_p=0.9,
    )
    assert response.output_text == "echo: second question"
    body = sent(gateway)
    assert body["messages"] == [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (50, 0.5, 0.9)
    assert (response.instructions, response.max_output_tokens) == ("Answer in one word.", 50)


async def test_function_tool_round_trip(gateway: Gateway) -> None:
    gateway.upstream.script(
        "openai", Reply(tool_calls=[ToolCall("get_weather", '{"city":"Paris"}')])
    )
    client = gateway.client()
    first = await client.responses.create(
        model="oai/gpt-4o-mini",
        input="weather in Paris?",
        tools=[WEATHER_TOOL],
        tool_choice="auto",
    )
    [call] = first.output
    assert call.type == "function_call"
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert sent(gateway)["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": WEATHER_TOOL["parameters"],
                "strict": True,
            },
        }
    ]

    gateway.upstream.script("openai", Reply(text="Sunny, 21 degrees."))
    follow_up: list[Any] = [
        {"role": "user", "content": "weather in Paris?"},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"},
    ]
    second = await client.responses.create(
        model="oai/gpt-4o-mini", input=follow_up, tools=[WEATHER_TOOL]
    )
    assert second.output_text == "Sunny, 21 degrees."
    messages = sent(gateway)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21C"}


class City(BaseModel):
    name: str
    population: int


async def test_json_schema_format_is_sent_and_parsed(gateway: Gateway) -> None:
    gateway.upstream.script("openai", Reply(text='{"name": "Paris", "population": 2100000}'))
    parsed = await gateway.client().responses.parse(
        model="oai/gpt-4o-mini", input="the capital of France", text_format=City
    )
    assert parsed.output_parsed == City(name="Paris", population=2100000)
    response_format = sent(gateway)["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "City"
    assert response_format["json_schema"]["schema"]["required"] == ["name", "population"]
    assert parsed.text is not None
    assert parsed.text.format is not None
    assert parsed.text.format.type == "json_schema"

    await gateway.client().responses.create(
        model="oai/gpt-4o-mini", input="any JSON", text={"format": {"type": "json_object"}}
    )
    assert sent(gateway)["response_format"] == {"type": "json_object"}


async def test_previous_response_id_continues_the_conversation(gateway: Gateway) -> None:
    client = gateway.client()
    first = await client.responses.create(
        model="oai/gpt-4o-mini", input="my name is Ada", instructions="Be kind."
    )
    second = await client.responses.create(
        model="oai/gpt-4o-mini", input="what is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    # The earlier turn comes along; its instructions do not (as at OpenAI).
    assert sent(gateway)["messages"] == [
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "echo: my name is Ada"},
        {"role": "user", "content": "what is my name?"},
    ]
    third = await client.responses.create(
        model="oai/gpt-4o-mini", input="and again?", previous_response_id=second.id
    )
    assert len(sent(gateway)["messages"]) == 5
    items = await client.responses.input_items.list(third.id, order="asc")
    texts = [item.model_dump()["content"][0]["text"] for item in items.data]
    assert texts == [
        "my name is Ada",
        "echo: my name is Ada",
        "what is my name?",
        "echo: what is my name?",
        "and again?",
    ]


async def test_retrieve_and_delete(gateway: Gateway) -> None:
    client = gateway.client()
    created = await client.responses.create(model="oai/gpt-4o-mini", input="keep this")
    fetched = await client.responses.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()
    await client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(created.id)
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        await client.responses.create(
            model="oai/gpt-4o-mini", input="go on", previous_response_id=created.id
        )


async def test_store_false_keeps_nothing(gateway: Gateway) -> None:
    client = gateway.client()
    created = await client.responses.create(model="oai/gpt-4o-mini", input="forget", store=False)
    assert created.output_text == "echo: forget"
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)


async def test_another_tenants_response_is_not_found(gateway: Gateway) -> None:
    created = await gateway.client().responses.create(model="oai/gpt-4o-mini", input="mine")
    other = await make_tenant(gateway.runtime, gateway.http(), "responses-other")
    key = await make_api_key(gateway.runtime, other, Role.DEVELOPER)
    outsider = gateway.client(key.token)
    with pytest.raises(openai.NotFoundError):
        await outsider.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await outsider.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await outsider.responses.input_items.list(created.id)
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        await outsider.responses.create(
            model="oai/gpt-4o-mini", input="steal", previous_response_id=created.id
        )
    assert (await gateway.client().responses.retrieve(created.id)).id == created.id


async def test_stream_events_in_order_and_the_final_response(gateway: Gateway) -> None:
    client = gateway.client()
    async with client.responses.stream(model="oai/gpt-4o-mini", input="stream me please") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    kinds = [event.type for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas == 4  # "echo: ", "stream ", "me ", "please"
    expected = [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert kinds == expected
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert final.output_text == "echo: stream me please"
    assert final.status == "completed"
    assert final.usage is not None
    assert final.usage.output_tokens == 4
    stored = await client.responses.retrieve(final.id)
    assert stored.output_text == "echo: stream me please"
    [entry] = await gateway.ledger()
    assert entry.streamed
    assert entry.completion_tokens == 4


async def test_stream_of_a_function_call(gateway: Gateway) -> None:
    arguments = '{"city": "San Francisco, CA"}'
    gateway.upstream.script("openai", Reply(tool_calls=[ToolCall("get_weather", arguments)]))
    async with gateway.client().responses.stream(
        model="oai/gpt-4o-mini",
        input="weather?",
        tools=[WEATHER_TOOL],
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    kinds = [event.type for event in events]
    fragments = kinds.count("response.function_call_arguments.delta")
    assert fragments >= 2
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * fragments,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    [call] = final.output
    assert call.type == "function_call"
    assert (call.name, call.arguments) == ("get_weather", arguments)


async def test_stream_broken_off_by_the_provider_fails(gateway: Gateway) -> None:
    gateway.upstream.script("openai", StreamThenDrop(n_chunks=2))
    async with gateway.http() as http:
        response = await http.post(
            "/v1/responses",
            headers={"authorization": f"Bearer {gateway.key}"},
            json={"model": "oai/gpt-4o-mini", "input": "this will break", "stream": True},
        )
    assert response.status_code == 200
    events = [
        orjson.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")
    ]
    kinds = [event["type"] for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-2:] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_error"


async def test_chat_routing_and_fallback_apply(gateway: Gateway) -> None:
    gateway.upstream.set_default("openai", Fail(503))
    raw = await gateway.client().responses.with_raw_response.create(model="default", input="hi")
    assert raw.parse().output_text == "echo: hi"
    assert raw.headers["x-apiary-provider"] == "claude"
    [entry] = await gateway.ledger()
    assert entry.fallback_path == ["oai/gpt-4o-mini: server"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"tools": [{"type": "web_search"}, {"type": "file_search"}]}, "file_search, web_search"),
        ({"input": None}, "input: required"),
        ({"background": True}, "background"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name"),
        ({"input": [{"type": "input_file", "file_id": "f"}]}, "input.0.type"),
        ({"surprise": 1}, "unknown parameter(s): surprise"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"top_logprobs": 3}, "top_logprobs"),
    ],
)
async def test_bad_requests_name_what_is_wrong(
    gateway: Gateway, body: dict[str, Any], named: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await gateway.client().responses.create(
            model="oai/gpt-4o-mini", input="hi", extra_body=body
        )
    assert named in caught.value.message
    assert gateway.upstream.requests == []


async def test_expired_responses_are_not_served_and_are_swept(gateway: Gateway) -> None:
    runtime = gateway.runtime
    runtime.settings = runtime.settings.model_copy(
        update={"responses": ResponsesSettings(retention_days=1 / 86_400)}  # one second
    )
    client = gateway.client()
    kept = await client.responses.create(model="oai/gpt-4o-mini", input="soon gone")
    assert (await client.responses.retrieve(kept.id)).id == kept.id
    await asyncio.sleep(1.1)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(kept.id)
    assert await response_service.sweep(runtime.session_factory, now=utcnow()) == 1
    assert await response_service.sweep(runtime.session_factory, now=utcnow()) == 0


async def test_an_agents_sdk_agent_runs_its_tool_to_the_final_output(
    gateway: Gateway,
) -> None:
    set_agents_tracing_disabled(True)
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"sunny in {city}"

    gateway.upstream.script(
        "openai",
        Reply(tool_calls=[ToolCall("get_weather", '{"city": "Paris"}')]),
        Reply(text="It is sunny in Paris."),
    )
    agent = Agent(
        name="forecaster",
        instructions="Use the tool to answer.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model="oai/gpt-4o-mini", openai_client=gateway.client()),
        model_settings=ModelSettings(temperature=0.2),
    )
    result = await Runner.run(agent, "What is the weather in Paris?")
    assert result.final_output == "It is sunny in Paris."
    assert asked == ["Paris"]
    messages = sent(gateway)["messages"]
    assert messages[0] == {"role": "system", "content": "Use the tool to answer."}
    assert messages[-1]["role"] == "tool"
    assert messages[-1]["content"] == "sunny in Paris"

    gateway.upstream.script(
        "openai",
        Reply(tool_calls=[ToolCall("get_weather", '{"city": "Oslo"}')]),
        Reply(text="Snow in Oslo."),
    )
    streamed = Runner.run_streamed(agent, "And in Oslo?")
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == "Snow in Oslo."
    assert asked == ["Paris", "Oslo"]
    assert len(await gateway.ledger()) == 4


async def test_saved_responses_are_written_in_one_batch_and_served_meanwhile(
    gateway: Gateway,
) -> None:
    runtime = gateway.runtime
    writer = runtime.stored_responses
    await writer.close()  # no timed writes: the test says when
    client = gateway.client()
    first = await client.responses.create(model="oai/gpt-4o-mini", input="one")
    second = await client.responses.create(
        model="oai/gpt-4o-mini", input="two", previous_response_id=first.id
    )
    await client.responses.create(
        model="oai/gpt-4o-mini", input="three", previous_response_id=second.id
    )
    assert [m["content"] for m in sent(gateway)["messages"]] == [
        "one",
        "echo: one",
        "two",
        "echo: two",
        "three",
    ]

    async def stored() -> int:
        async with runtime.session_factory() as session:
            count = await session.scalar(select(func.count()).select_from(StoredResponse))
            return int(count or 0)

    assert await stored() == 0  # all three served from the writer's queue so far
    before = runtime.writes.transactions
    await writer.flush()
    assert runtime.writes.transactions == before + 1
    assert await stored() == 3


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("oai/gpt-4o-mini", "openai"),
        ("claude/claude-sonnet-4", "anthropic"),
        ("azure-east/gpt-4o", "azure"),
        ("kimi/kimi-k2.5", "openai"),
        ("lab/mystery-7b", "openai"),
    ],
)
async def test_every_provider_kind_serves_tools_and_streams(
    gateway: Gateway, model: str, family: Family
) -> None:
    client = gateway.client()
    gateway.upstream.script(family, Reply(tool_calls=[ToolCall("get_weather", '{"city":"Rome"}')]))
    called = await client.responses.create(model=model, input="Rome?", tools=[WEATHER_TOOL])
    [call] = called.output
    assert call.type == "function_call"
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Rome"})
    async with client.responses.stream(
        model=model,
        input=[
            {"role": "user", "content": "Rome?"},
            call.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"type": "function_call_output", "call_id": call.call_id, "output": "hot"},
        ],
        tools=[WEATHER_TOOL],
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    # The echo of the last user turn: Anthropic's wire carries the tool result as one.
    assert final.output_text in ("echo: Rome?", "echo: hot")
    assert '"hot"' in json.dumps(sent(gateway))  # the tool's output reached the provider
    assert final.usage is not None
    assert final.usage.output_tokens > 0
    assert {r.family for r in gateway.upstream.requests} == {family}


async def test_the_chat_cache_and_rate_limits_apply(gateway: Gateway) -> None:
    client = gateway.client()
    first = await client.responses.with_raw_response.create(
        model="oai/gpt-4o-mini", input="cache me", temperature=0
    )
    second = await client.responses.with_raw_response.create(
        model="oai/gpt-4o-mini", input="cache me", temperature=0
    )
    assert (first.headers["x-apiary-cache"], second.headers["x-apiary-cache"]) == (
        "miss",
        "hit; exact",
    )
    assert second.parse().output_text == first.parse().output_text == "echo: cache me"
    assert second.parse().id != first.parse().id  # a response of its own, stored too
    assert len(gateway.upstream.requests) == 1

    async with gateway.http() as http:
        limited = await http.patch(
            "/api/v1/limits", headers=gateway.tenant.admin.headers, json={"key_rpm": 1}
        )
    assert limited.status_code == 200, limited.text
    await minute_to_spare()
    await client.responses.create(model="oai/gpt-4o-mini", input="one more")
    with pytest.raises(openai.RateLimitError) as caught:
        await client.responses.create(model="oai/gpt-4o-mini", input="too many")
    assert "API key request rate limit" in caught.value.message
    assert caught.value.body == {
        "message": "API key request rate limit reached (1 per minute)",
        "type": "rate_limit_error",
        "param": None,
        "code": "TooManyRequests",
    }


async def test_output_cut_at_max_output_tokens_is_incomplete(gateway: Gateway) -> None:
    client = gateway.client()
    gateway.upstream.script("openai", Reply(text="a long", finish_reason="length"))
    cut = await client.responses.create(
        model="oai/gpt-4o-mini", input="write a lot", max_output_tokens=2
    )
    assert cut.status == "incomplete"
    assert cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output_text == "a long"

    gateway.upstream.script("openai", Reply(text="a long", finish_reason="length"))
    async with client.responses.stream(
        model="oai/gpt-4o-mini", input="write a lot", max_output_tokens=2
    ) as stream:
        kinds = [event.type async for event in stream]
    assert kinds[-1] == "response.incomplete"


async def test_another_replica_continues_a_response_saved_a_moment_ago(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two apps on one database: two replicas behind a balancer.
    first_replica: Gateway = await make_gateway()
    second_replica: Gateway = await make_gateway()
    queue = first_replica.runtime.stored_responses
    await queue.close()  # its timed writes stopped: written below, when the test says
    started = await first_replica.client().responses.create(
        model="oai/gpt-4o-mini", input="remember 42"
    )
    assert queue.is_pending(row_id(started.id) or uuid.uuid4())
    find = ResponseService._find
    misses = 0

    async def first_replica_writes_after_a_miss(
        self: ResponseService, runtime: Runtime, auth: AuthContext, key: uuid.UUID
    ) -> Any:
        nonlocal misses
        found = await find(self, runtime, auth, key)
        if found is None:
            misses += 1
            await queue.flush()  # the first replica's next timed write lands meanwhile
        return found

    monkeypatch.setattr(ResponseService, "_find", first_replica_writes_after_a_miss)
    continued = await second_replica.client(first_replica.key).responses.create(
        model="oai/gpt-4o-mini", input="what number?", previous_response_id=started.id
    )
    assert misses == 1
    assert continued.output_text == "echo: what number?"
    assert [m["content"] for m in sent(first_replica)["messages"]] == [
        "remember 42",
        "echo: remember 42",
        "what number?",
    ]
