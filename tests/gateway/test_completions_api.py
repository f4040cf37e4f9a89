"""Legacy /v1/completions and GET /v1/models/{id} through the official openai SDK."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from apiary.gateway.config import RouteConfig
from tests.fakes import Fail, Reply
from tests.gateway.conftest import Gateway, GatewayFactory


def sent(gateway: Gateway, back: int = 1) -> dict[str, Any]:
    body = gateway.upstream.requests[-back].body
    assert body is not None
    return body


async def test_completion_of_a_prompt(gateway: Gateway) -> None:
    raw = await gateway.client().completions.with_raw_response.create(
        model="oai/gpt-4o-mini", prompt="Once upon a time", stop=["\n"], temperature=0.3
    )
    completion = raw.parse()
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    [choice] = completion.choices
    assert (choice.text, choice.index, choice.finish_reason) == (
        "echo: Once upon a time",
        0,
        "stop",
    )
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5
    assert raw.headers["x-apiary-provider"] == "oai"
    body = sent(gateway)
    assert body["messages"] == [{"role": "user", "content": "Once upon a time"}]
    assert (body["max_tokens"], body["stop"], body["temperature"]) == (16, ["\n"], 0.3)
    [entry] = await gateway.ledger()
    assert (entry.kind, entry.provider, entry.completion_tokens) == ("chat", "oai", 5)


async def test_a_list_of_prompts_gets_a_choice_each(gateway: Gateway) -> None:
    completion = await gateway.client().completions.create(
        model="oai/gpt-4o-mini", prompt=["first", "second"], max_tokens=100
    )
    texts = sorted((choice.index, choice.text) for choice in completion.choices)
    assert texts == [(0, "echo: first"), (1, "echo: second")]
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4
    assert all(
        request.body and request.body["max_tokens"] == 100 for request in gateway.upstream.requests
    )
    assert len(await gateway.ledger()) == 2


async def test_streamed_completion(gateway: Gateway) -> None:
    stream = await gateway.client().completions.create(
        model="oai/gpt-4o-mini",
        prompt="tell me a story",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.object == "text_completion" for chunk in chunks)
    text = "".join(choice.text for chunk in chunks for choice in chunk.choices)
    assert text == "echo: tell me a story"
    finishes = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    [entry] = await gateway.ledger()
    assert entry.streamed


async def test_completions_fall_back_like_chat(gateway: Gateway) -> None:
    gateway.upstream.set_default("openai", Fail(503))
    raw = await gateway.client().completions.with_raw_response.create(model="default", prompt="hi")
    assert raw.parse().choices[0].text == "echo: hi"
    assert raw.headers["x-apiary-provider"] == "claude"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"echo": True}, "echo"),
        ({"suffix": "end"}, "suffix"),
        ({"logprobs": 2}, "logprobs"),
        ({"best_of": 3}, "best_of"),
        ({"prompt": [[1, 2, 3]]}, "token-array"),
        ({"prompt": None}, "prompt: required"),
    ],
)
async def test_what_chat_models_cannot_do_is_refused(
    gateway: Gateway, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await gateway.client().completions.create(
            model="oai/gpt-4o-mini", prompt="hello", extra_body=options
        )
    assert named in caught.value.message
    assert gateway.upstream.requests == []


async def test_retrieve_a_model(make_gateway: GatewayFactory) -> None:
    gateway: Gateway = await make_gateway(
        routes={"smart": RouteConfig(models=["oai/gpt-4o", "claude/claude-sonnet-4"])}
    )
    client = gateway.client()
    listed = {model.id async for model in client.models.list()}
    model = await client.models.retrieve("oai/gpt-4o-mini")
    assert (model.id, model.object, model.owned_by) == ("oai/gpt-4o-mini", "model", "oai")
    route = await client.models.retrieve("smart")
    assert (route.id, route.owned_by) == ("smart", "apiary-route")
    assert {"oai/gpt-4o-mini", "smart"} <= listed
    for name in ("oai/gpt-5-ultra", "gpt-4o-mini"):
        assert name not in listed
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            await client.models.retrieve(name)


async def test_scripted_reply_reaches_the_completion(gateway: Gateway) -> None:
    gateway.upstream.script("openai", Reply(text="a fox", finish_reason="length"))
    completion = await gateway.client().completions.create(
        model="oai/gpt-4o-mini", prompt="the quick brown", max_tokens=2
    )
    assert (completion.choices[0].text, completion.choices[0].finish_reason) == ("a fox", "length")
