"""Members: add (creating the user), change role, remove; nobody grants above their role,
and a tenant always keeps an admin."""

from __future__ import annotations

import httpx
import pytest

from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from tests.factories import PASSWORD, login, make_member, make_tenant

pytestmark = pytest.mark.both_databases


async def test_admin_adds_a_member_who_can_sign_in(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    created = await client.post(
        "/api/v1/members",
        headers=tenant.admin.headers,
        json={"email": "New.Person@Acme.example", "role": "developer", "name": "New Person"},
    )
    assert created.status_code == 201
    body = created.json()
    assert body["email"] == "new.person@acme.example"
    password = body["temporary_password"]
    assert password
    caller = await login(client, "new.person@acme.example", password)
    assert caller.tenant_id == tenant.id
    listed = await client.get("/api/v1/members", headers=tenant.admin.headers)
    assert [m["email"] for m in listed.json()["items"]] == [
        "admin@acme.example",
        "new.person@acme.example",
    ]
    assert password not in listed.text


async def test_adding_a_member_twice_is_409(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    again = await client.post(
        "/api/v1/members",
        headers=tenant.admin.headers,
        json={"email": "admin@acme.example", "role": "viewer"},
    )
    assert again.status_code == 409
    assert again.json()["error"] == "Conflict"


async def test_role_change_takes_effect_on_the_next_request(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    dev = await make_member(client, tenant, Role.DEVELOPER)
    assert (await client.get("/api/v1/api-keys", headers=dev.headers)).status_code == 200
    changed = await client.patch(
        f"/api/v1/members/{dev.extra['membership_id']}",
        headers=tenant.admin.headers,
        json={"role": "viewer"},
    )
    assert changed.status_code == 200
    assert changed.json()["role"] == "viewer"
    # Same access token, new role: roles are read per request, not baked into tokens.
    assert (await client.get("/api/v1/api-keys", headers=dev.headers)).status_code == 403


async def test_the_last_admin_cannot_be_demoted_or_removed(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    members = (await client.get("/api/v1/members", headers=tenant.admin.headers)).json()
    admin_membership = members["items"][0]["id"]
    demote = await client.patch(
        f"/api/v1/members/{admin_membership}",
        headers=tenant.admin.headers,
        json={"role": "viewer"},
    )
    assert demote.status_code == 409
    assert "at least one tenant_admin" in demote.json()["detail"]
    remove = await client.delete(
        f"/api/v1/members/{admin_membership}", headers=tenant.admin.headers
    )
    assert remove.status_code == 409
    second = await make_member(client, tenant, Role.TENANT_ADMIN)
    assert second.tenant_id == tenant.id
    remove = await client.delete(
        f"/api/v1/members/{admin_membership}", headers=tenant.admin.headers
    )
    assert remove.status_code == 204


async def test_removed_member_loses_access_immediately(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    viewer = await make_member(client, tenant, Role.VIEWER)
    removed = await client.delete(
        f"/api/v1/members/{viewer.extra['membership_id']}", headers=tenant.admin.headers
    )
    assert removed.status_code == 204
    assert (await client.get("/api/v1/members", headers=viewer.headers)).status_code == 401
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": viewer.refresh_token}
    )
    assert refreshed.status_code == 401


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEVELOPER, Role.BILLING_ADMIN])
async def test_non_admins_cannot_manage_members(
    client: httpx.AsyncClient, runtime: Runtime, role: Role
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    caller = await make_member(client, tenant, role)
    assert (await client.get("/api/v1/members", headers=caller.headers)).status_code == 200
    add = await client.post(
        "/api/v1/members",
        headers=caller.headers,
        json={"email": "x@acme.example", "role": "viewer"},
    )
    assert add.status_code == 403
    assert "members:write" in add.json()["detail"]


async def test_nobody_is_made_super_admin_through_membership(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    response = await client.post(
        "/api/v1/members",
        headers=tenant.admin.headers,
        json={"email": "climber@acme.example", "role": "super_admin"},
    )
    assert response.status_code == 403
    listed = await client.get("/api/v1/members", headers=tenant.admin.headers)
    assert listed.json()["total"] == 1


async def test_short_password_is_refused_naming_the_field(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    response = await client.post(
        "/api/v1/members",
        headers=tenant.admin.headers,
        json={"email": "p@acme.example", "role": "viewer", "password": "short"},
    )
    assert response.status_code == 422
    assert "body.password" in response.json()["detail"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "nul\x00byte@acme.example"),
        ("email", "zero\u200bwidth@acme.example"),
        ("name", "Eve\x00"),
        ("name", "line\nbreak"),
        ("name", "\u202egnp.exe"),  # right-to-left override: shows as "exe.png"
    ],
)
async def test_control_and_invisible_characters_are_refused_naming_the_field(
    client: httpx.AsyncClient, runtime: Runtime, field: str, value: str
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    body = {"email": "plain@acme.example", "role": "viewer", "name": "Plain", field: value}
    response = await client.post("/api/v1/members", headers=tenant.admin.headers, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationError"
    assert f"body.{field}" in response.json()["detail"]
    assert "control or invisible" in response.json()["detail"]
    listed = await client.get("/api/v1/members", headers=tenant.admin.headers)
    assert listed.json()["total"] == 1
    # Sign-in too answers 422, not a database error, for such an email.
    if field == "email":
        login_response = await client.post(
            "/api/v1/auth/login", json={"email": value, "password": PASSWORD}
        )
        assert login_response.status_code == 422
        assert "body.email" in login_response.json()["detail"]


async def test_a_name_may_use_zero_width_joiners(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    name = "Family \U0001f468\u200d\U0001f469\u200d\U0001f467"  # one emoji, joined
    created = await client.post(
        "/api/v1/members",
        headers=tenant.admin.headers,
        json={"email": "fam@acme.example", "role": "viewer", "name": name},
    )
    assert created.status_code == 201, created.text
    assert created.json()["name"] == name
