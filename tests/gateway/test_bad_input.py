"""Bad input on /v1 is answered with a clear 400 and hurts nobody else: deep JSON is refused
where the body is parsed, and requests refused for what they contain (a provider's 4xx, a
part the local model cannot read) fail alone, never opening a breaker for every tenant."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from apiary.authz.permissions import Role
from apiary.gateway.openai_api import MAX_JSON_DEPTH
from apiary.gateway.resilience import BreakerState
from tests.factories import make_api_key, make_tenant
from tests.fakes import Fail
from tests.gateway.conftest import Gateway, GatewayFactory

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello gateway"}]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


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


async def test_the_local_model_reads_text_parts_and_refuses_other_parts(
    make_gateway: GatewayFactory,
) -> None:
    gateway: Gateway = await make_gateway(local=True)
    client = gateway.client()
    parts: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": [{"type": "text", "text": "Say hello."}]}
    ]
    stream = await client.chat.completions.create(
        model="local/smollm2", messages=parts, max_tokens=8, temperature=0, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text.strip()
    completion = await client.chat.completions.create(
        model="local/smollm2", messages=parts, max_tokens=8, temperature=0
    )
    assert (completion.choices[0].message.content or "").strip()

    with_image = [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, IMAGE]}]
    for streamed in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="local/smollm2",
                messages=cast(list[ChatCompletionMessageParam], with_image),
                max_tokens=8,
                stream=streamed,
            )
        assert "messages.0.content.1" in caught.value.message
        assert "reads text only, not a 'image_url' part" in caught.value.message


async def test_a_load_of_bad_requests_from_one_tenant_does_not_hurt_another(
    make_gateway: GatewayFactory,
) -> None:
    """Requests with a part the local model cannot read crashed its chat template, each
    counted as a provider failure, and the breaker took the model away from every tenant."""
    gateway: Gateway = await make_gateway(local=True)
    bad_tenant = gateway.client()
    with_image = cast(
        list[ChatCompletionMessageParam],
        [{"role": "user", "content": [{"type": "text", "text": "Describe this."}, IMAGE]}],
    )
    for n in range(50):  # streamed and not: before the fix, a 500 and a counted 502
        with pytest.raises(openai.BadRequestError):
            await bad_tenant.chat.completions.create(
                model="local/smollm2", messages=with_image, max_tokens=4, stream=n % 2 == 0
            )
    assert gateway.runtime.providers.handles["local"].breaker.state is BreakerState.CLOSED

    other = await make_tenant(gateway.runtime, gateway.http())
    key = await make_api_key(gateway.runtime, other, Role.DEVELOPER)
    bystander = gateway.client(key=key.token)
    stream = await bystander.chat.completions.create(
        model="local/smollm2", messages=HELLO, max_tokens=4, temperature=0, stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])


async def test_a_refused_request_on_a_half_open_breaker_does_not_jam_it(
    make_gateway: GatewayFactory,
) -> None:
    """The one trial call a half-open breaker lets through is a request the provider refuses
    for its content: that says nothing about the provider, so the next call is the trial,
    instead of the breaker waiting forever for a verdict and refusing every call."""
    gateway: Gateway = await make_gateway(provider_overrides={"oai": {"max_retries": 0}})
    breaker = gateway.runtime.providers.handles["oai"].breaker
    breaker.cooldown_s = 0.2
    client = gateway.client()
    gateway.upstream.set_default("openai", Fail(500))
    for _ in range(breaker.failure_threshold):
        with pytest.raises(openai.APIStatusError):
            await client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    assert breaker.state is BreakerState.OPEN

    await asyncio.sleep(0.25)
    gateway.upstream.set_default("openai", None)
    gateway.upstream.script("openai", Fail(400, message="bad temperature"))
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    completion = await client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    assert completion.choices[0].message.content == "echo: hello gateway"
    assert breaker.consecutive_failures == 0  # the trial succeeded: closed again


MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    "content a number": ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    "content parts not objects": (
        {"messages": [{"role": "user", "content": [1, "x"]}]},
        "messages.0.content",
    ),
    "tool calls not objects": (
        {"messages": [{"role": "assistant", "tool_calls": [1]}, *HELLO]},
        "messages.0.tool_calls",
    ),
    "tools without a function": ({"tools": [{"type": "function"}]}, "tools"),
    "stream a string": ({"stream": "yes"}, "stream"),
    "stream_options a number": ({"stream": True, "stream_options": 5}, "stream_options"),
    "response_format a number": ({"response_format": 5}, "response_format"),
    "max_tokens a string": ({"max_tokens": "lots"}, "max_tokens"),
    "max_tokens negative": ({"max_tokens": -5}, "max_tokens"),
    "temperature a string": ({"temperature": "hot"}, "temperature"),
    "stop a number": ({"stop": 5}, "stop"),
}


@pytest.mark.parametrize("model", ["oai/gpt-4o-mini", "claude/claude-sonnet-4"])
@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_field_the_gateway_reads_is_a_400_naming_it(
    gateway: Gateway, model: str, case: str
) -> None:
    fields, name = MALFORMED[case]
    body = {"model": model, "messages": HELLO, **fields}
    async with gateway.http() as http:
        response = await http.post(
            "/v1/chat/completions", headers={"Authorization": f"Bearer {gateway.key}"}, json=body
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith(f"{name}:")
    assert gateway.upstream.requests == []


async def test_a_request_anthropics_format_cannot_hold_is_a_400_not_a_breaker_failure(
    gateway: Gateway,
) -> None:
    odd_image = {"type": "image_url", "image_url": "not an object"}
    messages = cast(list[ChatCompletionMessageParam], [{"role": "user", "content": [odd_image]}])
    client = gateway.client()
    for _ in range(6):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="claude/claude-sonnet-4", messages=messages)
        assert "cannot be put in Anthropic's format" in caught.value.message
    completion = await client.chat.completions.create(
        model="claude/claude-sonnet-4", messages=HELLO
    )
    assert completion.choices[0].message.content == "echo: hello gateway"


async def test_the_local_model_refuses_bad_options_by_name(make_gateway: GatewayFactory) -> None:
    """Options of the wrong type reach llama.cpp's sampler, whose errors name nothing: they
    are refused as the request's fault, naming the option, and count against no breaker."""
    gateway: Gateway = await make_gateway(local=True)
    client = gateway.client()
    for option, value, expected in (
        ("seed", "seven", "seed: must be an integer"),
        ("presence_penalty", "high", "presence_penalty: must be a number"),
    ):
        for streamed in (False, True):
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(
                    model="local/smollm2",
                    messages=HELLO,
                    max_tokens=4,
                    stream=streamed,
                    extra_body={option: value},
                )
            assert expected in caught.value.message
    assert gateway.runtime.providers.handles["local"].breaker.consecutive_failures == 0


async def test_the_local_runtime_failing_is_a_server_error_the_breaker_counts(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama.cpp raises ValueError, TypeError and KeyError for its own failures too: one not
    raised by the chat template rendering the request is the provider's fault, not a 400."""
    gateway: Gateway = await make_gateway(local=True)
    client = gateway.client()
    completion = await client.chat.completions.create(
        model="local/smollm2", messages=HELLO, max_tokens=2, temperature=0
    )
    assert completion.choices  # the model is loaded and answers
    handle = gateway.runtime.providers.handles["local"]
    llama = handle.provider._llama  # type: ignore[attr-defined]
    for failure in (
        ValueError("Requested tokens (600) exceed batch size of 512"),
        KeyError("tokenizer.ggml.eos_token_id"),
    ):

        def broken(*_: Any, failure: Exception = failure, **__: Any) -> Any:
            raise failure

        monkeypatch.setattr(llama, "create_chat_completion", broken)
        for streamed in (False, True):
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(
                    model="local/smollm2", messages=HELLO, max_tokens=2, stream=streamed
                )
            assert caught.value.status_code >= 500, caught.value.message
    assert handle.breaker.consecutive_failures > 0
