"""Deleting a tenant: every row, its vectors, cache entries, counters and memory go, a report
says what went, and nothing naming it is left in any table, the vector store or Redis.

Runs on the store the configuration picks: PostgreSQL + Redis (memory, cache and counters in
Redis) and SQLite (all of them in process or in the database)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from redis.asyncio import Redis

from apiary.audit.service import audit_service
from apiary.authz.permissions import Role
from apiary.authz.scope import TenantScope
from apiary.executions.models import Execution
from apiary.runtime import Runtime
from tests.conftest import TEST_REDIS
from tests.factories import PASSWORD, TenantFixture, login, make_super_admin, make_tenant
from tests.gateway.conftest import GatewayFactory
from tests.knowledge.helpers import create_base, upload
from tests.privacy.leftovers import keys_naming, points_naming, rows_naming
from tests.swarm.conftest import Swarm, build_swarm

pytestmark = pytest.mark.both_databases

HANDBOOK = (
    b"# On-call handbook\n\nWhen the pager rings, acknowledge within five minutes. "
    b"Escalate to the incident commander after fifteen minutes without progress.\n" * 20
)
# Deterministic, so the gateway caches it: the second call is a hit.
HI = {"model": "default", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}


async def _fill(swarm: Swarm, runtime: Runtime, client: httpx.AsyncClient) -> dict[str, str]:
    """A tenant using everything: an execution in a memory thread, a cached gateway call
    under rate limits, a knowledge base with an ingested upload, a member of its own and a
    member shared with another tenant."""
    gateway = swarm.gateway
    http, admin = swarm.http, gateway.tenant.admin
    limits = await http.patch(
        "/api/v1/limits", headers=admin.headers, json={"tenant_rpm": 1000, "key_rpm": 1000}
    )
    assert limits.status_code == 200, limits.text
    started = await swarm.start("Plan a trip", thread_id="t-1", options={"mode": "single"})
    assert (await swarm.wait(started["id"]))["state"] == "succeeded"
    for _ in range(2):
        called = await http.post(
            "/v1/chat/completions",
            headers=swarm.headers,
            json={
                "model": "default",
                "temperature": 0,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert called.status_code == 200, called.text
    assert called.headers["x-apiary-cache"].startswith("hit")
    kb = await create_base(http, admin)
    await upload(http, admin, kb["id"], "oncall.md", HANDBOOK)
    await gateway.runtime.ingestion.join()
    own = await http.post(
        "/api/v1/members",
        headers=admin.headers,
        json={"email": "solo@gw.example", "role": "developer", "password": PASSWORD},
    )
    assert own.status_code == 201, own.text
    await login(http, "solo@gw.example")  # a sign-in: a session and a refresh token
    return {"kb": kb["id"], "solo": own.json()["user_id"], "execution": started["id"]}


async def _share_member(
    runtime: Runtime, client: httpx.AsyncClient, owner: TenantFixture, other: TenantFixture
) -> str:
    """`other`'s admin, also invited into `owner` and accepted: a member of two tenants."""
    invited = await client.post(
        "/api/v1/members/invitations",
        headers=owner.admin.headers,
        json={"email": other.admin.email, "role": Role.VIEWER.value},
    )
    assert invited.status_code == 201, invited.text
    accepted = await client.post(
        f"/api/v1/invitations/{invited.json()['id']}/accept", headers=other.admin.headers
    )
    assert accepted.status_code == 200, accepted.text
    assert other.admin.user_id is not None
    return other.admin.user_id


async def test_deleting_a_tenant_removes_everything_and_reports_it(
    make_gateway: GatewayFactory, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    swarm = await build_swarm(make_gateway)
    gateway = swarm.gateway
    doomed = gateway.tenant
    bystander = await make_tenant(runtime, client, "bystander")
    shared = await _share_member(runtime, client, doomed, bystander)
    filled = await _fill(swarm, runtime, client)
    bystander_kb = await create_base(swarm.http, bystander.admin)
    await upload(swarm.http, bystander.admin, bystander_kb["id"], "oncall.md", HANDBOOK)
    await gateway.runtime.ingestion.join()
    await gateway.runtime.ledger.flush()
    doomed_scope = TenantScope(uuid.UUID(doomed.id))
    assert await gateway.runtime.vectors.count(doomed_scope) > 0
    bystander_points = await gateway.runtime.vectors.count(TenantScope(uuid.UUID(bystander.id)))
    assert bystander_points > 0
    if TEST_REDIS:
        redis = Redis.from_url(TEST_REDIS)
        assert await keys_naming(redis, doomed.id)  # memory, cache, counters, slots

    root = await make_super_admin(runtime, client)
    response = await swarm.http.delete(f"/api/v1/privacy/tenants/{doomed.id}", headers=root.headers)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["name"] == doomed.name
    for table in ("executions", "knowledge_documents", "ledger_entries", "memberships", "tenants"):
        assert report["tables"][table] >= 1, (table, report["tables"])
    assert report["tables"]["memberships"] == 3  # its admin, the solo member, the shared one
    assert report["vectors"] > 0
    assert report["memory_threads"] == 1
    assert report["users_erased"] == 2  # its admin and the solo member; not the shared one
    if TEST_REDIS:
        assert report["cache_entries"] >= 1
        assert report["counters"] >= 1

    # Nothing names the tenant but its audit entries, kept for the retention period.
    found = await rows_naming(runtime, doomed.id)
    assert set(found) == {"audit_entries"}, {t: len(r) for t, r in found.items()}
    assert await points_naming(gateway.runtime, doomed.id) == 0
    assert await gateway.runtime.vectors.count(doomed_scope) == 0
    if TEST_REDIS:
        assert await keys_naming(redis, doomed.id) == []
        # Cache keys hash the request; only the doomed tenant made cached calls.
        assert [key async for key in redis.scan_iter(match="apiary:cache:*")] == []
        await redis.aclose()
    # Its own members are erased: their addresses are nowhere, their ids only by reference.
    for email in ("solo@gw.example", doomed.admin.email or ""):
        assert await rows_naming(runtime, email) == {}, email
    solo = await rows_naming(runtime, filled["solo"])
    assert set(solo) <= {"users", "audit_entries"}, set(solo)
    assert solo["users"][0]["is_active"] is False

    # The other tenant and the shared member are untouched.
    assert await gateway.runtime.vectors.count(TenantScope(uuid.UUID(bystander.id))) == (
        bystander_points
    )
    assert (await client.get("/api/v1/auth/me", headers=bystander.admin.headers)).status_code == 200
    members = await client.get("/api/v1/members", headers=bystander.admin.headers)
    assert {m["user_id"] for m in members.json()["items"]} == {shared}

    async with runtime.session_factory() as session:
        assert (await audit_service.verify(session)).ok
    entries = await client.get(
        "/api/v1/audit-log", params={"action": "tenant.deleted"}, headers=bystander.admin.headers
    )
    assert entries.json()["items"] == []  # another tenant's trail, not this one's
    again = await swarm.http.delete(f"/api/v1/privacy/tenants/{doomed.id}", headers=root.headers)
    assert again.status_code == 404
    assert again.json() == {
        "error": "NotFound",
        "detail": f"tenant {doomed.id} not found (already deleted, or never was)",
    }


async def test_only_the_super_admin_deletes_a_tenant(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    refused = await client.delete(f"/api/v1/privacy/tenants/{acme.id}", headers=acme.admin.headers)
    assert refused.status_code == 403
    root = await make_super_admin(runtime, client)
    unknown = uuid.uuid4()
    missing = await client.delete(f"/api/v1/privacy/tenants/{unknown}", headers=root.headers)
    assert missing.status_code == 404
    assert str(unknown) in missing.json()["detail"]
    still = await client.get("/api/v1/auth/me", headers=acme.admin.headers)
    assert still.status_code == 200


async def test_a_tenant_with_executions_still_running_is_not_deleted(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    root = await make_super_admin(runtime, client)
    execution_id = uuid.uuid4()
    async with runtime.session_factory() as session:  # running: a worker holds it now
        session.add(
            Execution(
                id=execution_id,
                tenant_id=uuid.UUID(acme.id),
                agent_version=1,
                agent={},
                task="still going",
                state="running",
                role="developer",
            )
        )
        await session.commit()
    refused = await client.delete(f"/api/v1/privacy/tenants/{acme.id}", headers=root.headers)
    assert refused.status_code == 409
    assert refused.json() == {
        "error": "Conflict",
        "detail": "tenant 'acme' has 1 execution(s) still running: cancel them "
        "(POST /api/v1/executions/{id}/cancel) or wait for them to end",
    }
    assert (await client.get("/api/v1/auth/me", headers=acme.admin.headers)).status_code == 200
    async with runtime.session_factory() as session:
        execution = await session.get(Execution, execution_id)
        assert execution is not None
        execution.state = "succeeded"
        await session.commit()
    deleted = await client.delete(f"/api/v1/privacy/tenants/{acme.id}", headers=root.headers)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["tables"]["executions"] == 1
