"""Each entitlement refused where its action happens, with an error naming it and the plan:
402 for what a bigger plan lifts, 403 for a feature the plan lacks."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from tests.auth.oidc_issuer import LocalIssuer
from tests.factories import Caller, TenantFixture, make_member, make_super_admin, make_tenant
from tests.fakes.upstream import Slow
from tests.gateway.conftest import Gateway, GatewayFactory, minute_to_spare
from tests.knowledge.helpers import BASES, create_base, ingested, upload
from tests.swarm.conftest import Swarm, build_swarm

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


async def custom_plan(
    client: httpx.AsyncClient, root: Caller, key: str, **entitlements: Any
) -> None:
    created = await client.post(
        "/api/v1/admin/plans",
        headers=root.headers,
        json={"key": key, "name": key.title(), "monthly_fee_usd": "10.00", **entitlements},
    )
    assert created.status_code == 201, created.text


async def put_on(client: httpx.AsyncClient, root: Caller, tenant_id: str, plan: str) -> None:
    moved = await client.patch(
        f"/api/v1/tenants/{tenant_id}", headers=root.headers, json={"plan": plan}
    )
    assert moved.status_code == 200, moved.text


def refused(response: httpx.Response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == ("EntitlementExceeded" if status == 402 else "FeatureNotInPlan")
    for needle in needles:
        assert needle in body["detail"], body["detail"]


async def test_seats(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acme = await make_tenant(runtime, client, "acme", plan="free")
    await make_member(client, acme, Role.DEVELOPER)
    await make_member(client, acme, Role.VIEWER)
    fourth = await client.post(
        "/api/v1/members",
        headers=acme.admin.headers,
        json={"email": "four@acme.example", "role": "viewer", "password": "x" * 12},
    )
    refused(fourth, 402, "seats: the Free plan allows 3 members", "the tenant has 3")
    members = await client.get("/api/v1/members", headers=acme.admin.headers)
    assert members.json()["total"] == 3


async def test_seats_bind_invitations_too(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acme = await make_tenant(runtime, client, "acme", plan="free")
    other = await make_tenant(runtime, client, "other")
    await make_member(client, acme, Role.DEVELOPER)
    invited = await client.post(
        "/api/v1/members/invitations",
        headers=acme.admin.headers,
        json={"email": other.admin.email, "role": "viewer"},
    )
    assert invited.status_code == 201, invited.text
    await make_member(client, acme, Role.VIEWER)  # the third seat, before the answer
    accepted = await client.post(
        f"/api/v1/invitations/{invited.json()['id']}/accept", headers=other.admin.headers
    )
    refused(accepted, 402, "seats", "Free")


async def _swarm_on(
    make_gateway: GatewayFactory, client: httpx.AsyncClient, root: Caller, plan: str
) -> Swarm:
    swarm = await build_swarm(make_gateway)  # its agent asks for 10 sub-agents
    await put_on(client, root, swarm.gateway.tenant.id, plan)
    return swarm


async def test_sub_agents_per_execution(
    make_gateway: GatewayFactory, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await make_super_admin(runtime, client)
    swarm = await _swarm_on(make_gateway, client, root, "free")
    body = {"agent_id": swarm.agent_id, "task": "Plan a trip"}
    default = await swarm.http.post("/api/v1/executions", headers=swarm.headers, json=body)
    refused(
        default,
        402,
        "max_subagents: the Free plan allows 5 sub-agents per execution",
        "asks for 10",
        "options.max_agents to at most 5",
    )
    asked = await swarm.http.post(
        "/api/v1/executions",
        headers=swarm.headers,
        json={**body, "options": {"max_agents": 6}},
    )
    refused(asked, 402, "asks for 6")
    fits = await swarm.http.post(
        "/api/v1/executions",
        headers=swarm.headers,
        json={**body, "options": {"max_agents": 5}},
    )
    assert fits.status_code == 202, fits.text
    await swarm.wait(fits.json()["id"])


async def test_concurrent_executions_under_50_concurrent_creates(
    make_gateway: GatewayFactory, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await make_super_admin(runtime, client)
    await custom_plan(client, root, "five", concurrent_executions=5)
    swarm = await _swarm_on(make_gateway, client, root, "five")
    # The admitted executions' model calls take 8 s: they stay running through the burst.
    swarm.gateway.upstream.script("openai", *(Slow(8) for _ in range(5)))
    body = {"agent_id": swarm.agent_id, "task": "Plan a trip", "options": {"max_agents": 1}}
    responses = await asyncio.gather(
        *(
            swarm.http.post("/api/v1/executions", headers=swarm.headers, json=body)
            for _ in range(50)
        )
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [202] * 5 + [402] * 45
    refusal = next(response for response in responses if response.status_code == 402)
    refused(
        refusal,
        402,
        "concurrent_executions: the Five plan allows 5 executions queued or running at once",
        "5 are",
    )
    admitted = [r.json()["id"] for r in responses if r.status_code == 202]
    for execution_id in admitted:
        await swarm.wait(execution_id, timeout_s=40)
    # Finished executions free their places.
    again = await swarm.http.post("/api/v1/executions", headers=swarm.headers, json=body)
    assert again.status_code == 202, again.text
    await swarm.wait(again.json()["id"])


async def test_knowledge_bases(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acme = await make_tenant(runtime, client, "acme", plan="free")
    await create_base(client, acme.admin, "handbook")
    second = await client.post(BASES, headers=acme.admin.headers, json={"name": "runbooks"})
    refused(second, 402, "knowledge_bases: the Free plan allows 1 knowledge base", "has 1")


async def test_stored_bytes(client: httpx.AsyncClient, runtime: Runtime) -> None:
    root = await make_super_admin(runtime, client)
    await custom_plan(client, root, "tiny", storage_bytes=100)
    acme = await make_tenant(runtime, client, "acme", plan="tiny")
    base = await create_base(client, acme.admin, "handbook")
    await upload(client, acme.admin, base["id"], "a.md", b"# A\n\n" + b"a" * 55)  # 60 bytes
    response = await client.post(
        f"{BASES}/{base['id']}/documents",
        headers=acme.admin.headers,
        files={"file": ("b.md", b"# B\n\n" + b"b" * 45, "application/octet-stream")},
    )
    refused(
        response,
        402,
        "storage_bytes: the Tiny plan allows 100 bytes of stored documents",
        "60 bytes are stored and this upload is 50 bytes",
    )
    await upload(client, acme.admin, base["id"], "c.md", b"# C\n\n" + b"c" * 35)  # fits: 100
    await ingested(runtime)


async def test_oidc_is_a_feature_of_the_plan(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    root = await make_super_admin(runtime, client)
    free = await make_tenant(runtime, client, "freeco", plan="free")
    link = await client.patch(
        f"/api/v1/tenants/{free.id}", headers=root.headers, json={"oidc_tenant_id": "tid-free"}
    )
    refused(link, 403, "oidc: OIDC single sign-on is not in the Free plan")
    premium = await make_tenant(runtime, client, "acme", plan="premium")
    linked = await client.patch(
        f"/api/v1/tenants/{premium.id}", headers=root.headers, json={"oidc_tenant_id": "tid-acme"}
    )
    assert linked.status_code == 200, linked.text

    def token() -> str:
        return local_issuer.token(sub="oid-1", email="ada@acme.example", tid="tid-acme")

    assert (await client.post("/api/v1/auth/oidc", json={"id_token": token()})).status_code == 200
    await put_on(client, root, premium.id, "team")  # no OIDC in Team
    signed_in = await client.post("/api/v1/auth/oidc", json={"id_token": token()})
    refused(signed_in, 403, "oidc:", "not in the Team plan")


async def test_the_plans_rate_bounds_a_looser_tenant_limit(
    make_gateway: GatewayFactory, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await make_super_admin(runtime, client)
    await custom_plan(client, root, "slow", requests_per_minute=3)
    gateway: Gateway = await make_gateway()
    await put_on(client, root, gateway.tenant.id, "slow")
    await _set_limits(gateway, gateway.tenant, tenant_rpm=100)  # looser: the plan's 3 holds
    openai_client = gateway.client()
    await minute_to_spare()
    for _ in range(3):
        await openai_client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as caught:
        await openai_client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    assert "tenant request rate limit reached (3 per minute, the Slow plan's limit)" in (
        caught.value.message
    )


async def test_a_stricter_tenant_limit_wins(
    make_gateway: GatewayFactory, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await make_super_admin(runtime, client)
    await custom_plan(client, root, "slow", requests_per_minute=3)
    gateway: Gateway = await make_gateway()
    await put_on(client, root, gateway.tenant.id, "slow")
    await _set_limits(gateway, gateway.tenant, tenant_rpm=2)
    openai_client = gateway.client()
    await minute_to_spare()
    for _ in range(2):
        await openai_client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as caught:
        await openai_client.chat.completions.create(model="oai/gpt-4o-mini", messages=HELLO)
    assert "tenant request rate limit reached (2 per minute)" in caught.value.message


async def test_included_spend_is_a_cap_without_overage(
    make_gateway: GatewayFactory, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await make_super_admin(runtime, client)
    await custom_plan(client, root, "capped", included_spend_usd="0.05", overage=False)
    prices = {"oai/gpt-4o-mini": {"input": 1000.0, "output": 1000.0}}  # $0.001 a token
    gateway: Gateway = await make_gateway(prices=prices)
    await put_on(client, root, gateway.tenant.id, "capped")
    openai_client = gateway.client()
    served = 0
    refusal: openai.APIStatusError | None = None
    for _ in range(20):
        try:
            await openai_client.chat.completions.create(
                model="oai/gpt-4o-mini", messages=HELLO, max_tokens=5
            )
        except openai.APIStatusError as error:
            refusal = error
            break
        served += 1
    assert served >= 1
    assert refusal is not None
    assert refusal.status_code == 402
    assert "included_spend: the Capped plan's included spend of $0.05 a month is spent" in (
        refusal.message
    )
    spent = sum(entry.cost_usd or 0 for entry in await gateway.ledger())
    assert spent <= 0.05 + 1e-9


async def _set_limits(gateway: Gateway, tenant: TenantFixture, **limits: Any) -> None:
    async with gateway.http() as http:
        response = await http.patch("/api/v1/limits", headers=tenant.admin.headers, json=limits)
        assert response.status_code == 200, response.text


async def test_the_tenant_sees_its_plan_and_usage(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acme = await make_tenant(runtime, client, "acme", plan="free")
    billing = await make_member(client, acme, Role.BILLING_ADMIN)
    await create_base(client, acme.admin, "handbook")
    seen = await client.get("/api/v1/billing/plan", headers=billing.headers)
    assert seen.status_code == 200, seen.text
    body = seen.json()
    assert body["plan"]["key"] == "free"
    assert body["currency"] == "USD"
    usage = {e["entitlement"]: (e["limit"], e["used"]) for e in body["entitlements"]}
    assert usage["seats"] == (3, 2)
    assert usage["knowledge_bases"] == (1, 1)
    assert usage["concurrent_executions"] == (2, 0)
    assert usage["requests_per_minute"] == (60, None)
    assert body["features"] == {"semantic_cache": False, "oidc": False, "audit_export": False}
    assert body["period"]["billed_usd"] == "0.00"


async def test_audit_export_is_a_feature_of_the_plan(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    team = await make_tenant(runtime, client, "teamco", plan="team")
    refusal = await client.get("/api/v1/audit-log/export.csv", headers=team.admin.headers)
    refused(refusal, 403, "audit_export: audit log export is not in the Team plan")
    premium = await make_tenant(runtime, client, "acme", plan="premium")
    await make_member(client, premium, Role.VIEWER)
    exported = await client.get("/api/v1/audit-log/export.csv", headers=premium.admin.headers)
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    lines = exported.text.splitlines()
    assert lines[0].startswith("seq,created_at,action,")
    actions = [line.split(",")[2] for line in lines[1:]]
    assert actions[:2] == ["tenant.created", "member.added"]  # oldest first
    assert actions.count("member.added") == 2
    assert "auth.login" in actions


async def test_the_semantic_cache_is_a_feature_of_the_plan(
    make_gateway: GatewayFactory, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await make_super_admin(runtime, client)
    gateway: Gateway = await make_gateway(cache={"semantic": True, "semantic_threshold": 0.9})
    await put_on(client, root, gateway.tenant.id, "free")
    openai_client = gateway.client()

    async def ask(text: str) -> str:
        response = await openai_client.chat.completions.with_raw_response.create(
            model="oai/gpt-4o-mini", messages=[{"role": "user", "content": text}], temperature=0
        )
        return str(response.headers["x-apiary-cache"])

    assert await ask("What is the capital city of France?") == "miss"
    assert await ask("what's the capital city of France") == "miss"  # Free: no semantic cache
    await put_on(client, root, gateway.tenant.id, "team")
    gateway.runtime.limits.forget(uuid.UUID(gateway.tenant.id))
    assert await ask("What is the capital city of Italy?") == "miss"
    assert await ask("what's the capital city of Italy") == "hit; semantic"
