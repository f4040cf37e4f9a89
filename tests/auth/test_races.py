"""What must hold when requests race: throttles, refresh rotation, the last admin, and
unique records. Each test fires its requests concurrently."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from apiary.users.models import Membership
from tests.factories import make_member, make_tenant

pytestmark = pytest.mark.both_databases


async def test_parallel_guesses_do_not_slip_past_the_throttle(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_tenant(runtime, client, "acme")
    limit = runtime.settings.login_max_failures
    responses = await asyncio.gather(
        *[
            client.post(
                "/api/v1/auth/login",
                json={"email": "admin@acme.example", "password": f"guess-{i:04d}"},
            )
            for i in range(limit * 3)
        ]
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(401) <= limit  # only `limit` guesses were ever checked
    assert statuses.count(429) >= limit * 2


async def test_concurrent_refreshes_with_one_token_yield_one_winner(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    responses = await asyncio.gather(
        *[
            client.post("/api/v1/auth/refresh", json={"refresh_token": tenant.admin.refresh_token})
            for _ in range(4)
        ]
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) <= 1
    assert statuses.count(401) >= 3


async def test_two_admins_demoting_each_other_leave_one_admin(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    second = await make_member(client, tenant, Role.TENANT_ADMIN)
    members = (await client.get("/api/v1/members", headers=tenant.admin.headers)).json()
    first_id = next(m["id"] for m in members["items"] if m["email"] == "admin@acme.example")
    responses = await asyncio.gather(
        client.patch(
            f"/api/v1/members/{second.extra['membership_id']}",
            headers=tenant.admin.headers,
            json={"role": "viewer"},
        ),
        client.patch(
            f"/api/v1/members/{first_id}", headers=second.headers, json={"role": "viewer"}
        ),
    )
    assert sorted(r.status_code for r in responses) in ([200, 409], [200, 403])
    async with runtime.session_factory() as session:
        admins = await session.scalar(select(func.count()).where(Membership.role == "tenant_admin"))
    assert admins == 1


async def test_racing_to_add_the_same_member_is_409_not_500(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    responses = await asyncio.gather(
        *[
            client.post(
                "/api/v1/members",
                headers=tenant.admin.headers,
                json={"email": "twin@acme.example", "role": "viewer"},
            )
            for _ in range(3)
        ]
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 201
    assert set(statuses[1:]) <= {409}
    listed = await client.get("/api/v1/members", headers=tenant.admin.headers)
    assert [m["email"] for m in listed.json()["items"]].count("twin@acme.example") == 1
