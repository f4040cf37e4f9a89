"""Bad input on /v1 is answered with a clear 400 and hurts nobody else: deep JSON is refused
where the body is parsed, and requests refused for what they contain (a provider's 4xx, a
part the local model cannot read) fail alone, never opening a breaker for every tenant."""

from __future__ import annotations

from typing import Any, cast

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from apiary.gateway.openai_api import MAX_JSON_DEPTH
from tests.gateway.conftest import Gateway

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello gateway"}]


def nested(levels: int) -> dict[str, Any]:
    """`levels` objects, each inside the one before."""
    value: Any = "deep"
    for _ in range(levels):
        value = {"a": value}
    return cast(dict[str, Any], value)


def deep_requests(levels: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """The same deep value in each place of a /v1 body where a client may put one."""
    deep = nested(levels)
    chat = {"model": "oai/gpt-4o-mini", "messages": HELLO}
    return {
        "message content": (
            "/v1/chat/completions",
            {"model": "oai/gpt-4o-mini", "messages": [{"role": "user", "content": [deep]}]},
        ),
        "metadata": ("/v1/chat/completions", {**chat, "metadata": deep}),
        "tools": (
            "/v1/chat/completions",
            {
                **chat,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": deep}}],
            },
        ),
        "response_format": (
            "/v1/chat/completions",
            {**chat, "response_format": {"type": "json_schema", "json_schema": {"schema": deep}}},
        ),
        "embeddings input": (
            "/v1/embeddings",
            {"model": "oai/text-embedding-3-small", "input": [deep]},
        ),
    }


@pytest.mark.parametrize("place", list(deep_requests(1)))
async def test_deep_json_anywhere_in_the_body_is_a_400_naming_the_limit(
    gateway: Gateway, place: str
) -> None:
    # Sent raw: a hostile client, not an SDK, builds 300 levels of objects.
    path, body = deep_requests(300)[place]
    async with gateway.http() as http:
        response = await http.post(
            path, headers={"Authorization": f"Bearer {gateway.key}"}, json=body
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert f"limit of {MAX_JSON_DEPTH} levels" in error["message"]
    assert gateway.upstream.requests == []  # refused before any provider saw it


async def test_json_up_to_the_depth_limit_is_served(gateway: Gateway) -> None:
    client = gateway.client()
    # The body is level 1, `metadata` level 2: 63 objects in it reach exactly the limit.
    await client.chat.completions.create(
        model="oai/gpt-4o-mini", messages=HELLO, extra_body={"metadata": nested(63)}
    )
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="oai/gpt-4o-mini", messages=HELLO, extra_body={"metadata": nested(64)}
        )
    assert f"limit of {MAX_JSON_DEPTH} levels" in caught.value.message
    # Many containers side by side are not depth: a long list of token-id arrays is fine.
    result = await client.embeddings.create(
        model="oai/text-embedding-3-small", input=[[1, 2, 3]] * 500
    )
    assert len(result.data) == 500
