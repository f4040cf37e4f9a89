"""The bundled SmolLM2-135M model, really run by llama.cpp: with no provider configured it
serves /v1, and a JSON schema in `response_format` yields output that parses."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from tests.factories import make_api_key, make_tenant
from tests.gateway.conftest import Gateway, GatewayFactory


async def test_local_model_answers_and_follows_a_json_schema(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert [p.kind for p in runtime.providers.config.providers] == ["local"]
    tenant = await make_tenant(runtime, client, "acme")
    key = await make_api_key(runtime, tenant, Role.DEVELOPER)
    headers = {**key.headers, "content-type": "application/json"}
    chat = await client.post(
        "/v1/chat/completions",
        headers=headers,
        json={
            "model": "default",
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 16,
            "temperature": 0,
        },
        timeout=120,
    )
    assert chat.status_code == 200, chat.text
    assert chat.headers["x-apiary-provider"] == "local"
    assert chat.headers["x-apiary-cost-usd"] == "0.00000000"  # free, and priced as such
    body = chat.json()
    assert body["choices"][0]["message"]["content"].strip()
    assert body["usage"]["completion_tokens"] > 0

    schema = {
        "type": "object",
        "properties": {
            "subtasks": {
                "type": "array",
                "items": {"type": "string", "maxLength": 40},
                "minItems": 2,
                "maxItems": 3,
            },
            "parallel": {"type": "boolean"},
        },
        "required": ["subtasks", "parallel"],
    }
    structured = await client.post(
        "/v1/chat/completions",
        headers=headers,
        json={
            "model": "local/smollm2",
            "messages": [{"role": "user", "content": "Split 'plan a trip' into subtasks."}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "plan", "schema": schema},
            },
            "max_tokens": 200,
            "temperature": 0,
        },
        timeout=120,
    )
    assert structured.status_code == 200, structured.text
    parsed = orjson.loads(structured.json()["choices"][0]["message"]["content"])
    assert isinstance(parsed["subtasks"], list)
    assert len(parsed["subtasks"]) >= 2
    assert isinstance(parsed["parallel"], bool)


async def test_local_model_streams(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    key = await make_api_key(runtime, tenant, Role.DEVELOPER)
    async with client.stream(
        "POST",
        "/v1/chat/completions",
        headers=key.headers,
        json={
            "model": "default",
            "messages": [{"role": "user", "content": "Count to three."}],
            "max_tokens": 12,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        timeout=120,
    ) as response:
        assert response.status_code == 200
        events = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    chunks = [orjson.loads(e[6:]) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip()
    assert chunks[-1]["usage"]["completion_tokens"] > 0


async def test_a_stream_accounts_the_same_tokens_as_a_completion(
    make_gateway: GatewayFactory,
) -> None:
    """The prompt the model reads is the messages inside its chat template: a stream must
    count those tokens too, or the ledger and the tokens-per-minute limits under-count."""
    gateway: Gateway = await make_gateway(local=True)
    client = gateway.client()
    request: dict[str, Any] = {
        "model": "local/smollm2",
        "messages": [
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "Name a colour."},
        ],
        "max_tokens": 8,
        "temperature": 0,
        "seed": 7,
    }
    completion = await client.chat.completions.create(**request)
    assert completion.usage is not None
    stream = await client.chat.completions.create(
        **request, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    streamed_usage = chunks[-1].usage
    assert streamed_usage is not None
    assert streamed_usage.prompt_tokens == completion.usage.prompt_tokens
    assert streamed_usage.completion_tokens == completion.usage.completion_tokens

    plain, streamed = await gateway.ledger()
    assert (plain.streamed, streamed.streamed) == (False, True)
    assert plain.prompt_tokens == completion.usage.prompt_tokens
    assert streamed.prompt_tokens == plain.prompt_tokens
    assert streamed.completion_tokens == plain.completion_tokens
