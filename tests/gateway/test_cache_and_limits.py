"""The response cache, rate limits and budgets, as an OpenAI SDK client meets them."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.auth.context import Actor, AuthContext
from apiary.authz.permissions import Role
from apiary.errors import PaymentRequired
from apiary.gateway.config import PriceConfig
from apiary.gateway.providers.base import Usage
from apiary.limits.enforcer import Admission
from apiary.usage.ledger import ledger_row
from tests.factories import Caller, make_api_key, make_member, make_tenant
from tests.fakes import Fail
from tests.gateway.conftest import Gateway, GatewayFactory, minute_to_spare

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello cache"}]


def upstream_calls(gateway: Gateway) -> int:
    return len([r for r in gateway.upstream.requests if r.path.endswith("/chat/completions")])


async def set_limits(gateway: Gateway, caller: Caller, **limits: Any) -> None:
    async with gateway.http() as http:
        response = await http.patch("/api/v1/limits", headers=caller.headers, json=limits)
    assert response.status_code == 200, response.text


async def test_deterministic_requests_are_served_from_cache(gateway: Gateway) -> None:
    client = gateway.client()
    first = await client.chat.completions.with_raw_response.create(
        model="oai/gpt-4o-mini", messages=HELLO, temperature=0
    )
    second = await client.chat.completions.with_raw_response.create(
        model="oai/gpt-4o-mini", messages=HELLO, temperature=0
    )
    assert first.headers["x-apiary-cache"] == "miss"
    assert second.headers["x-apiary-cache"] == "hit; exact"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert upstream_calls(gateway) == 1
    miss, hit = await gateway.ledger()
    assert hit.cache_hit
    assert hit.cost_usd == 0.0
    assert hit.saved_usd == pytest.approx(miss.cost_usd)
    assert miss.cost_usd is not None
    assert miss.cost_usd > 0


async def test_any_differing_parameter_misses(gateway: Gateway) -> None:
    client = gateway.client()
    await client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO, temperature=0)
    for variant in ({"max_tokens": 5}, {"seed": 7}, {"stop": ["x"]}):
        response = await client.chat.completions.with_raw_response.create(
            model="oai/gpt-4o-mini", messages=HELLO, temperature=0, **variant
        )
        assert response.headers["x-apiary-cache"] == "miss", variant
    other_model = await client.chat.completions.with_raw_response.create(
        model="oai/gpt-4o", messages=HELLO, temperature=0
    )
    assert other_model.headers["x-apiary-cache"] == "miss"
    assert upstream_calls(gateway) == 5


async def test_two_tenants_never_share_an_entry(
    gateway: Gateway, make_gateway: GatewayFactory
) -> None:
    await gateway.client().chat.completions.create(
        model="oai/gpt-4o-mini", messages=HELLO, temperature=0
    )
    other = await make_tenant(gateway.runtime, gateway.http(), "other-tenant")
    other_key = await make_api_key(gateway.runtime, other, Role.DEVELOPER)
    response = await gateway.client(key=other_key.token).chat.completions.with_raw_response.create(
        model="oai/gpt-4o-mini", messages=HELLO, temperature=0
    )
    assert response.headers["x-apiary-cache"] == "miss"
    assert upstream_calls(gateway) == 2


async def test_sampling_requests_are_not_cached_unless_asked(gateway: Gateway) -> None:
    client = gateway.client()
    for _ in range(2):
        response = await client.chat.completions.with_raw_response.create(
            model="oai/gpt-4o-mini", messages=HELLO, temperature=0.7
        )
        assert "x-apiary-cache" not in response.headers
    assert upstream_calls(gateway) == 2
    for _ in range(2):
        await client.chat.completions.create(
            model="oai/gpt-4o-mini",
            messages=HELLO,
            temperature=0.7,
            extra_headers={"X-Apiary-Cache": "true"},
        )
    assert upstream_calls(gateway) == 3
    await client.chat.completions.create(
        model="oai/gpt-4o-mini", messages=HELLO, extra_body={"cache": True}
    )
    assert "cache" not in (gateway.upstream.requests[-1].body or {})  # ours, not forwarded


async def test_key_request_rate_limit_is_429_with_retry_after(gateway: Gateway) -> None:
    await set_limits(gateway, gateway.tenant.admin, key_rpm=2)
    client = gateway.client()
    await minute_to_spare()
    for _ in range(2):
        await client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert "API key request rate limit" in caught.value.message
    assert upstream_calls(gateway) == 2
    # Another key of the same tenant has its own allowance.
    second = await make_api_key(gateway.runtime, gateway.tenant, Role.DEVELOPER)
    await gateway.client(key=second.token).chat.completions.create(
        model="oai/gpt-4o-mini", messages=HELLO
    )


async def test_tenant_token_rate_limit(gateway: Gateway) -> None:
    await set_limits(gateway, gateway.tenant.admin, tenant_tpm=5)
    client = gateway.client()
    await client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    assert "token rate limit" in caught.value.message


async def test_budget_stops_spending_at_the_limit(make_gateway: GatewayFactory) -> None:
    # One dollar per token makes the arithmetic visible: each call costs a few dollars.
    gateway: Gateway = await make_gateway(
        prices={"lab/mystery-7b": PriceConfig(input=1_000_000, output=1_000_000)}
    )
    await set_limits(gateway, gateway.tenant.admin, monthly_budget_usd=60)
    client = gateway.client()

    async def spend_until_refused() -> None:
        for _ in range(50):
            await client.chat.completions.create(
                model="lab/mystery-7b", messages=HELLO, max_tokens=8
            )

    with pytest.raises(openai.APIStatusError) as caught:
        await spend_until_refused()
    assert caught.value.status_code == 402
    assert "monthly budget of $60.00 reached" in caught.value.message
    entries = await gateway.ledger()
    assert len(entries) >= 5
    assert sum(e.cost_usd or 0 for e in entries) <= 60


async def test_the_budget_survives_a_counter_store_that_forgot_the_spend(
    make_gateway: GatewayFactory,
) -> None:
    """A restart of the embedded store, or a Redis flush, loses the month's spend counter:
    it starts again from the ledger, so the budget still holds."""
    gateway: Gateway = await make_gateway(
        prices={"lab/mystery-7b": PriceConfig(input=1_000_000, output=1_000_000)}
    )
    await set_limits(gateway, gateway.tenant.admin, monthly_budget_usd=60)
    client = gateway.client()
    spent = 0.0
    while spent < 45:  # a few dollars a call; each reserves about $20 (its prompt and max_tokens)
        await client.chat.completions.create(model="lab/mystery-7b", messages=HELLO, max_tokens=8)
        spent = sum(e.cost_usd or 0 for e in await gateway.ledger())
    month = time.strftime("%Y%m", time.gmtime())
    await gateway.runtime.counters.delete(f"spend:{gateway.tenant.id}:{month}")
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model="lab/mystery-7b", messages=HELLO, max_tokens=8)
    assert caught.value.status_code == 402
    assert f"(${spent:,.2f} spent this month)" in caught.value.message


async def test_a_call_settled_after_the_spend_counter_was_lost_does_not_restart_it(
    gateway: Gateway,
) -> None:
    """The store loses the month's spend counter (a Redis restart) while a call is in
    flight: that call's settle must not start the counter from its own small delta, or
    the tenant would spend from zero again; the next admission starts it from the ledger."""
    await set_limits(gateway, gateway.tenant.admin, monthly_budget_usd=100)
    runtime, enforcer = gateway.runtime, gateway.runtime.limits
    tenant_id = uuid.UUID(str(gateway.tenant.id))
    auth = AuthContext(role=Role.DEVELOPER, tenant_id=tenant_id, actor=Actor())
    runtime.ledger.record(
        ledger_row(
            auth,
            {"model": "oai/gpt-4o"},
            kind="chat",
            route=None,
            reason="explicit model",
            provider="oai",
            model="gpt-4o",
            usage=Usage(prompt_tokens=1000),
            cost_usd=90.0,
            latency_s=1.0,
        )
    )
    await runtime.ledger.flush()  # $90 of $100 spent this month

    in_flight = await enforcer.admit(auth, estimate_cost_usd=lambda: 5.0)
    month = time.strftime("%Y%m", time.gmtime())
    await runtime.counters.delete(f"spend:{tenant_id}:{month}")
    await enforcer.settle(in_flight, tokens=10, cost_usd=1.0)

    async def attempt() -> bool:
        try:
            await enforcer.admit(auth, estimate_cost_usd=lambda: 5.0)
        except PaymentRequired:
            return False
        return True

    assert [await attempt() for _ in range(3)] == [True, True, False]  # $90 + $5 + $5


async def test_concurrent_reservations_cannot_overspend(gateway: Gateway) -> None:
    await set_limits(gateway, gateway.tenant.admin, monthly_budget_usd=100)
    enforcer = gateway.runtime.limits
    key = await make_api_key(gateway.runtime, gateway.tenant, Role.DEVELOPER)
    async with gateway.http() as http:
        me = (await http.get("/api/v1/auth/me", headers=key.headers)).json()
    auth = AuthContext(
        role=Role.DEVELOPER,
        tenant_id=uuid.UUID(me["tenant_id"]),
        actor=Actor(api_key_id=uuid.UUID(me["api_key_id"])),
    )

    async def attempt() -> Admission | None:
        try:
            return await enforcer.admit(auth, estimate_cost_usd=lambda: 10.0)
        except PaymentRequired:
            return None

    admitted = [a for a in await asyncio.gather(*[attempt() for _ in range(25)]) if a]
    assert len(admitted) == 10  # $100 of $10 reservations, however the 25 interleave
    for admission in admitted:
        await enforcer.settle(admission, tokens=10, cost_usd=4.0)
    # Settled at $4 each, $60 is free again: six more $10 reservations fit.
    again = [a for a in await asyncio.gather(*[attempt() for _ in range(10)]) if a]
    assert len(again) == 6


async def test_a_swarm_of_calls_reads_the_tenants_limits_once(gateway: Gateway) -> None:
    """A hundred sub-agents calling at once with the cached limits expired wait for one
    read of the tenant's limits, not a hundred (and all get the limits set)."""
    await set_limits(gateway, gateway.tenant.admin, monthly_budget_usd=100)
    enforcer = gateway.runtime.limits
    tenant_id = uuid.UUID(str(gateway.tenant.id))
    enforcer.forget(tenant_id)
    auth = AuthContext(role=Role.DEVELOPER, tenant_id=tenant_id, actor=Actor())
    reads = 0

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        nonlocal reads
        reads += statement.lstrip().upper().startswith("SELECT") and "tenant_limits" in statement

    engine = gateway.runtime.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        admitted = await asyncio.gather(
            *[enforcer.admit(auth, estimate_cost_usd=lambda: 0.0) for _ in range(100)]
        )
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert {a.limits.monthly_budget_usd for a in admitted} == {100}
    assert reads == 1


async def test_soft_limit_warns_once_in_the_audit_log(make_gateway: GatewayFactory) -> None:
    gateway: Gateway = await make_gateway(
        prices={"lab/mystery-7b": PriceConfig(input=1_000_000, output=1_000_000)}
    )
    await set_limits(gateway, gateway.tenant.admin, monthly_budget_usd=1000, soft_limit_ratio=0.001)
    client = gateway.client()
    raw = await client.chat.completions.with_raw_response.create(
        model="lab/mystery-7b", messages=HELLO, max_tokens=8
    )
    assert "of the monthly budget" in raw.headers["x-apiary-budget-warning"]
    await client.chat.completions.create(model="lab/mystery-7b", messages=HELLO, max_tokens=8)
    async with gateway.http() as http:
        log = await http.get(
            "/api/v1/audit-log",
            params={"action": "budget.soft_limit_reached"},
            headers=gateway.tenant.admin.headers,
        )
    assert log.json()["total"] == 1


async def test_limits_api_validates_and_checks_roles(gateway: Gateway) -> None:
    viewer = await make_member(gateway.http(), gateway.tenant, Role.VIEWER)
    billing = await make_member(gateway.http(), gateway.tenant, Role.BILLING_ADMIN)
    async with gateway.http() as http:
        bad = await http.patch(
            "/api/v1/limits",
            headers=gateway.tenant.admin.headers,
            json={"monthly_budget_usd": -1},
        )
        assert bad.status_code == 422
        assert "monthly_budget_usd" in bad.json()["detail"]
        refused = await http.patch(
            "/api/v1/limits", headers=viewer.headers, json={"monthly_budget_usd": 5}
        )
        assert refused.status_code == 403
        allowed = await http.patch(
            "/api/v1/limits", headers=billing.headers, json={"monthly_budget_usd": 5}
        )
        assert allowed.status_code == 200
        current = await http.get("/api/v1/limits", headers=gateway.tenant.admin.headers)
    assert current.json()["monthly_budget_usd"] == 5
    assert current.json()["key_rpm"] is None


async def test_semantic_cache_answers_a_paraphrase_but_not_another_question(
    make_gateway: GatewayFactory,
) -> None:
    gateway: Gateway = await make_gateway(cache={"semantic": True, "semantic_threshold": 0.9})
    client = gateway.client()

    async def ask(text: str, **extra: Any) -> Any:
        return await client.chat.completions.with_raw_response.create(
            model="oai/gpt-4o-mini",
            messages=[{"role": "user", "content": text}],
            temperature=0,
            **extra,
        )

    first = await ask("What is the capital city of France?")
    paraphrase = await ask("what's the capital city of France")
    other = await ask("How do I bake sourdough bread at home?")
    different_parameter = await ask("What is the capital city of France?!", max_tokens=9)
    assert first.headers["x-apiary-cache"] == "miss"
    assert paraphrase.headers["x-apiary-cache"] == "hit; semantic"
    assert paraphrase.parse().choices[0].message.content == (
        first.parse().choices[0].message.content
    )
    assert other.headers["x-apiary-cache"] == "miss"
    assert different_parameter.headers["x-apiary-cache"] == "miss"
    assert upstream_calls(gateway) == 3
    entries = await gateway.ledger()
    hits = [e for e in entries if e.cache_hit]
    assert len(hits) == 1
    assert hits[0].reason == "semantic cache hit"


async def test_embeddings_count_against_the_key_request_rate(gateway: Gateway) -> None:
    await set_limits(gateway, gateway.tenant.admin, key_rpm=3)
    client = gateway.client()
    await minute_to_spare()
    for _ in range(3):
        await client.embeddings.create(model="oai/text-embedding-3-small", input="alpha")
    with pytest.raises(openai.RateLimitError) as caught:
        await client.embeddings.create(model="oai/text-embedding-3-small", input="alpha")
    assert "API key request rate limit" in caught.value.message
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    with pytest.raises(openai.RateLimitError):  # one allowance for every kind of call
        await client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    embedded = [r for r in gateway.upstream.requests if r.path.endswith("/embeddings")]
    assert len(embedded) == 3


async def test_embeddings_stop_spending_at_the_budget(make_gateway: GatewayFactory) -> None:
    # A dollar per token: each call of two words costs $2 and reserves a few dollars more.
    gateway: Gateway = await make_gateway(
        prices={"oai/text-embedding-3-small": PriceConfig(input=1_000_000, output=0)}
    )
    await set_limits(gateway, gateway.tenant.admin, monthly_budget_usd=20)
    client = gateway.client()

    async def spend_until_refused() -> None:
        for _ in range(50):
            await client.embeddings.create(
                model="oai/text-embedding-3-small", input=["alpha", "beta"]
            )

    with pytest.raises(openai.APIStatusError) as caught:
        await spend_until_refused()
    assert caught.value.status_code == 402
    assert "monthly budget of $20.00 reached" in caught.value.message
    entries = await gateway.ledger()
    assert {e.kind for e in entries} == {"embedding"}
    assert len(entries) >= 5
    assert sum(e.cost_usd or 0 for e in entries) <= 20


async def test_a_failed_embeddings_call_is_in_the_ledger_and_releases_its_reservation(
    make_gateway: GatewayFactory,
) -> None:
    gateway: Gateway = await make_gateway(
        prices={"oai/text-embedding-3-small": PriceConfig(input=1_000_000, output=0)},
        provider_overrides={"oai": {"max_retries": 0}},
    )
    await set_limits(gateway, gateway.tenant.admin, monthly_budget_usd=20)
    gateway.upstream.script("openai", *[Fail(500)] * 10, endpoint="embeddings")
    client = gateway.client()
    for _ in range(10):  # each reserves a few dollars; a leaked reservation would add up
        with pytest.raises(openai.APIStatusError) as caught:
            await client.embeddings.create(model="oai/text-embedding-3-small", input="alpha")
        assert caught.value.status_code == 502
    result = await client.embeddings.create(model="oai/text-embedding-3-small", input="alpha")
    assert len(result.data) == 1
    entries = await gateway.ledger()
    assert [e.status for e in entries] == ["error"] * 10 + ["ok"]


async def test_a_limits_change_during_a_read_of_the_old_limits_applies_at_once(
    gateway: Gateway,
) -> None:
    """A call reading the tenant's limits when they are changed keeps the limits it read,
    but does not cache them: the next call on this replica has the new ones."""
    await set_limits(gateway, gateway.tenant.admin, monthly_budget_usd=100)
    enforcer = gateway.runtime.limits
    tenant_id = uuid.UUID(str(gateway.tenant.id))
    enforcer.forget(tenant_id)
    auth = AuthContext(role=Role.DEVELOPER, tenant_id=tenant_id, actor=Actor())
    real_factory, gate = enforcer._factory, asyncio.Event()

    @contextlib.asynccontextmanager
    async def held_session() -> AsyncIterator[AsyncSession]:
        async with real_factory() as session:
            yield session
            await gate.wait()  # the old limits are read; the change lands meanwhile

    enforcer._factory = held_session  # type: ignore[assignment]
    try:
        reading = asyncio.create_task(enforcer.admit(auth, estimate_cost_usd=lambda: 0.0))
        await asyncio.sleep(0.05)
        enforcer._factory = real_factory
        await set_limits(gateway, gateway.tenant.admin, monthly_budget_usd=250)
        gate.set()
        assert (await reading).limits.monthly_budget_usd == 100  # what it read
    finally:
        enforcer._factory = real_factory
        gate.set()
    admitted = await enforcer.admit(auth, estimate_cost_usd=lambda: 0.0)
    assert admitted.limits.monthly_budget_usd == 250
