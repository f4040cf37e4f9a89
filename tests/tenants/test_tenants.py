"""Tenants: super admins create, list, rename and suspend them; nobody else can."""

from __future__ import annotations

import httpx
import pytest

from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from tests.factories import PASSWORD, login, make_api_key, make_super_admin, make_tenant

pytestmark = pytest.mark.both_databases


async def test_super_admin_creates_a_tenant_with_its_admin(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await make_super_admin(runtime, client)
    created = await client.post(
        "/api/v1/tenants",
        headers=root.headers,
        json={"name": "Initech", "plan": "team", "admin_email": "boss@initech.example"},
    )
    assert created.status_code == 201
    body = created.json()
    assert body["tenant"]["name"] == "Initech"
    assert body["tenant"]["status"] == "active"
    boss = await login(client, "boss@initech.example", body["admin_temporary_password"])
    assert boss.tenant_id == body["tenant"]["id"]

    listed = await client.get("/api/v1/tenants", headers=root.headers)
    assert [t["name"] for t in listed.json()["items"]] == ["Initech"]
    duplicate = await client.post("/api/v1/tenants", headers=root.headers, json={"name": "Initech"})
    assert duplicate.status_code == 409


async def test_suspension_locks_the_tenant_out_and_resume_lets_it_back(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await make_super_admin(runtime, client)
    tenant = await make_tenant(runtime, client, "acme")
    key = await make_api_key(runtime, tenant, Role.VIEWER)
    suspended = await client.patch(
        f"/api/v1/tenants/{tenant.id}", headers=root.headers, json={"status": "suspended"}
    )
    assert suspended.json()["status"] == "suspended"
    assert (await client.get("/api/v1/members", headers=tenant.admin.headers)).status_code == 401
    assert (await client.get("/api/v1/members", headers=key.headers)).status_code == 403
    blocked = await client.post(
        "/api/v1/auth/login", json={"email": "admin@acme.example", "password": PASSWORD}
    )
    assert blocked.status_code == 403
    assert "suspended" in blocked.json()["detail"]

    await client.patch(
        f"/api/v1/tenants/{tenant.id}", headers=root.headers, json={"status": "active"}
    )
    assert (await client.get("/api/v1/members", headers=key.headers)).status_code == 200
    again = await login(client, "admin@acme.example")
    assert again.tenant_id == tenant.id


async def test_tenant_admin_cannot_manage_tenants(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    for method, path, json in (
        ("GET", "/api/v1/tenants", None),
        ("POST", "/api/v1/tenants", {"name": "mine"}),
        ("PATCH", f"/api/v1/tenants/{tenant.id}", {"plan": "enterprise"}),
    ):
        response = await client.request(method, path, headers=tenant.admin.headers, json=json)
        assert response.status_code == 403, path
        assert "tenants:manage" in response.json()["detail"]


async def test_bad_tenant_input_is_refused_without_changes(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await make_super_admin(runtime, client)
    tenant = await make_tenant(runtime, client, "acme")
    for body, field in (
        ({"name": ""}, "body.name"),
        ({"status": "deleted"}, "body.status"),
        ({"plan": "x" * 41}, "body.plan"),
    ):
        response = await client.patch(
            f"/api/v1/tenants/{tenant.id}", headers=root.headers, json=body
        )
        assert response.status_code == 422
        assert field in response.json()["detail"]
    missing = await client.get(
        "/api/v1/tenants/00000000-0000-0000-0000-000000000000", headers=root.headers
    )
    assert missing.status_code == 404
    not_uuid = await client.get("/api/v1/tenants/acme", headers=root.headers)
    assert not_uuid.status_code == 422
    assert "path.tenant_id" in not_uuid.json()["detail"]
    unchanged = await client.get(f"/api/v1/tenants/{tenant.id}", headers=root.headers)
    assert unchanged.json()["name"] == "acme"
    assert unchanged.json()["plan"] == "enterprise"  # the factory's plan


@pytest.mark.parametrize(
    "name",
    ["acme\u200b", "ac\u200dme", "\u202eemca", "acme\x00", "acme\ttwo", "\ufeffacme"],
)
async def test_tenant_names_that_could_pass_for_another_are_refused(
    client: httpx.AsyncClient, runtime: Runtime, name: str
) -> None:
    root = await make_super_admin(runtime, client)
    created = await client.post("/api/v1/tenants", headers=root.headers, json={"name": name})
    assert created.status_code == 422, created.text
    assert "body.name" in created.json()["detail"]
    assert "invisible" in created.json()["detail"]
    tenant = await make_tenant(runtime, client, "acme")
    renamed = await client.patch(
        f"/api/v1/tenants/{tenant.id}", headers=root.headers, json={"name": name}
    )
    assert renamed.status_code == 422
    assert "body.name" in renamed.json()["detail"]
