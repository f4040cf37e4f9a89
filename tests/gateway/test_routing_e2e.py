"""Routes end to end through /v1 (the openai SDK against fake providers): the complexity
route sends a hard prompt to the strong model and an easy one to the cheap one, a
150K-token prompt reaches the long-context model, each with its reason in the ledger; and a
`together` provider is called in its wire format."""

from __future__ import annotations

import pytest

from apiary.gateway.config import RouteConfig
from tests.fakes import Reply, ToolCall
from tests.gateway.conftest import Gateway, GatewayFactory

HARD = (
    "Design a lock-free concurrent queue in C++ for multiple producers and consumers. Explain "
    "how you avoid the ABA problem, prove it linearizable step by step, and analyze its "
    "throughput under contention against a mutex-based queue."
)
EASY = "hi, thanks!"
TOGETHER_MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


@pytest.fixture
async def routed(make_gateway: GatewayFactory) -> Gateway:
    gateway: Gateway = await make_gateway(
        provider_overrides={"oai": {"models": ["gpt-4o-mini", "o3"]}},
        routes={
            "default": RouteConfig(models=["oai/gpt-4o-mini"]),
            "auto": RouteConfig(
                policy="complexity", models=["oai/gpt-4o-mini", "oai/o3", "kimi/kimi-k2.6"]
            ),
        },
    )
    return gateway


async def test_complexity_route_sends_hard_and_easy_prompts_apart(routed: Gateway) -> None:
    client = routed.client()
    hard = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": HARD}]
    )
    easy = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": EASY}]
    )
    assert (hard.headers["x-apiary-model"], easy.headers["x-apiary-model"]) == ("o3", "gpt-4o-mini")
    assert [r.body["model"] for r in routed.upstream.requests if r.body] == ["o3", "gpt-4o-mini"]
    hard_row, easy_row = await routed.ledger()
    assert hard_row.route == easy_row.route == "auto"
    assert hard_row.reason is not None
    assert hard_row.reason.endswith("best reasoning model")
    assert easy_row.reason is not None
    assert easy_row.reason.endswith("default route")
    assert float(hard_row.reason.split()[1].rstrip(":")) > 0.8


async def test_a_150k_token_prompt_reaches_the_long_context_model(routed: Gateway) -> None:
    prompt = "lorem " * 150_000  # 150,000 tokens in o200k_base, past gpt-4o-mini's 128K
    raw = await routed.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": prompt}], max_tokens=16
    )
    assert raw.headers["x-apiary-provider"] == "kimi"
    assert raw.headers["x-apiary-model"] == "kimi-k2.6"  # a 262K window
    [row] = await routed.ledger()
    assert row.reason is not None
    assert row.reason.startswith("complexity: long context (")
    counted = int(row.reason.split("(")[1].split()[0])
    assert counted > 150_000


async def test_a_together_provider_in_its_wire_format(make_gateway: GatewayFactory) -> None:
    gateway: Gateway = await make_gateway(
        provider_overrides={"lab": {"kind": "together", "models": [TOGETHER_MODEL]}},
    )
    gateway.upstream.script(
        "openai",
        Reply(text="Paris."),
        Reply(tool_calls=[ToolCall("weather", '{"city": "Paris"}')]),
    )
    client = gateway.client()
    raw = await client.chat.completions.with_raw_response.create(
        model=f"lab/{TOGETHER_MODEL}",
        messages=[{"role": "user", "content": "Capital of France?"}],
        max_tokens=8,
    )
    assert raw.parse().choices[0].message.content == "Paris."
    assert raw.headers["x-apiary-provider"] == "lab"
    assert float(raw.headers["x-apiary-cost-usd"]) > 0  # Together's list price applies
    request = gateway.upstream.requests[-1]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"].startswith("Bearer sk-")
    assert request.body is not None
    assert request.body["model"] == TOGETHER_MODEL

    stream = await client.chat.completions.create(
        model=f"lab/{TOGETHER_MODEL}",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        stream=True,
        stream_options={"include_usage": True},
    )
    arguments, usage = "", None
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                arguments += (call.function.arguments if call.function else None) or ""
        usage = chunk.usage or usage
    assert arguments == '{"city": "Paris"}'
    assert usage is not None
    plain, streamed = await gateway.ledger()
    assert (plain.provider, plain.model) == ("lab", TOGETHER_MODEL)
    assert plain.cost_usd is not None
    assert plain.cost_usd > 0
    assert streamed.streamed
    assert streamed.completion_tokens == usage.completion_tokens
