"""Two `apiary serve` replicas over one PostgreSQL and one Redis: credentials, budgets,
rate limits and the response cache are the same whichever replica a request reaches."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from tests.fakes import Reply, Slow
from tests.topology.conftest import Tenant, new_key, new_tenant
from tests.topology.harness import Topology

pytestmark = pytest.mark.services

KEY_CACHE_S = 5.0  # README / docs/security.md: verified keys are cached in process 5 s


async def test_sign_in_on_a_works_on_b_and_keys_travel_between_replicas(
    cluster: Topology,
) -> None:
    tenant = await new_tenant(cluster, "replicas")  # signed in on A
    async with cluster.http("api-a") as a, cluster.http("api-b") as b:
        me = await b.get("/api/v1/auth/me", headers=tenant.headers)
        assert me.status_code == 200, me.text

        key_id, secret = await new_key(cluster, tenant, on="api-b")
        bearer = {"Authorization": f"Bearer {secret}"}
        assert (await a.get("/api/v1/agents", headers=bearer)).status_code == 200  # at once
        assert (await b.get("/api/v1/agents", headers=bearer)).status_code == 200  # cached on B

        revoked = await a.delete(f"/api/v1/api-keys/{key_id}", headers=tenant.headers)
        assert revoked.status_code == 200, revoked.text
        assert (await a.get("/api/v1/agents", headers=bearer)).status_code == 401  # A: at once
        started = time.monotonic()
        while (await b.get("/api/v1/agents", headers=bearer)).status_code != 401:
            assert time.monotonic() - started < KEY_CACHE_S + 1, "B still accepts a revoked key"
            await asyncio.sleep(0.1)


def _chat(**extra: object) -> dict[str, object]:
    return {"model": "default", "messages": [{"role": "user", "content": "hi"}], **extra}


async def _set_limits(cluster: Topology, tenant: Tenant, **limits: object) -> None:
    async with cluster.http("api-b") as b:
        changed = await b.patch("/api/v1/limits", headers=tenant.headers, json=limits)
        assert changed.status_code == 200, changed.text


async def test_a_budget_holds_across_replicas_within_one_call(cluster: Topology) -> None:
    tenant = await new_tenant(cluster, "budget")
    _, key = await new_key(cluster, tenant)
    call_usd = 0.01  # 5 + 5 tokens at $0.001 a token
    await _set_limits(cluster, tenant, monthly_budget_usd=10 * call_usd)
    cluster.upstream.set_default("openai", Slow(0.2, Reply(text="ok", usage=(5, 5))))
    bearer = {"Authorization": f"Bearer {key}"}

    async with cluster.http("api-a") as a, cluster.http("api-b") as b:
        calls = [
            (a if i % 2 else b).post(
                "/v1/chat/completions", headers=bearer, json=_chat(max_tokens=5)
            )
            for i in range(60)
        ]
        answers = await asyncio.gather(*calls)
        statuses = Counter(r.status_code for r in answers)
        others = [r.text for r in answers if r.status_code not in (200, 402)]
        assert not others, (statuses, others, _warnings(cluster, "api-a", "api-b"))
        assert 1 <= statuses[200] <= 11, statuses
        spent = 0.0
        for _ in range(50):  # the ledger is written in batches: wait for every call's row
            summary = (await a.get("/api/v1/usage/summary", headers=tenant.headers)).json()
            if summary["calls"] >= statuses[200]:
                spent = summary["cost_usd"]
                break
            await asyncio.sleep(0.2)
    assert summary["calls"] == statuses[200], summary
    assert spent <= 10 * call_usd + call_usd + 1e-9, (spent, statuses)


def _warnings(cluster: Topology, *names: str) -> list[str]:
    """The replicas' recent warnings and errors, to say why a call failed."""
    return [
        f"{name}: {line}"
        for name in names
        for line in cluster.processes[name].logs().splitlines()
        if '"WARNING"' in line or '"ERROR"' in line
    ]


async def test_a_key_s_rpm_holds_across_replicas(cluster: Topology) -> None:
    tenant = await new_tenant(cluster, "rpm")
    _, key = await new_key(cluster, tenant)
    await _set_limits(cluster, tenant, key_rpm=20)
    bearer = {"Authorization": f"Bearer {key}"}
    if time.time() % 60 > 50:  # the burst in one fixed one-minute window
        await asyncio.sleep(61 - time.time() % 60)
    async with cluster.http("api-a") as a, cluster.http("api-b") as b:
        answers = await asyncio.gather(
            *(
                (a if i % 2 else b).post("/v1/chat/completions", headers=bearer, json=_chat())
                for i in range(40)
            )
        )
    statuses = Counter(r.status_code for r in answers)
    assert statuses == {200: 20, 429: 20}, statuses
    refused = next(r for r in answers if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1


async def test_the_response_cache_filled_on_a_answers_on_b(cluster: Topology) -> None:
    tenant = await new_tenant(cluster, "cache")
    _, key = await new_key(cluster, tenant)
    bearer = {"Authorization": f"Bearer {key}"}
    body = _chat(temperature=0)
    async with cluster.http("api-a") as a, cluster.http("api-b") as b:
        first = await a.post("/v1/chat/completions", headers=bearer, json=body)
        second = await b.post("/v1/chat/completions", headers=bearer, json=body)
    assert first.status_code == second.status_code == 200
    assert "hit" not in first.headers.get("x-apiary-cache", "")
    assert second.headers["x-apiary-cache"].startswith("hit")
    assert second.json()["choices"] == first.json()["choices"]
    assert len(cluster.upstream.requests) == 1


async def test_an_idle_connection_outlives_the_balancer_s_idle_timeout(cluster: Topology) -> None:
    """A balancer (ingress-nginx keeps upstream connections 60 s) reuses idle connections:
    `apiary serve` must not close one first, or the request sent as it closes is lost.
    Idle past uvicorn's own default (5 s), the connection still answers."""
    host, port = cluster.url("api-a").removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    try:
        for idle_s in (6.5, 0.0):
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            await asyncio.sleep(idle_s)
    finally:
        writer.close()
