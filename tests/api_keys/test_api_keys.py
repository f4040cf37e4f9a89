"""API keys: shown once, stored only as a hash, limited by role, expiry and revocation."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from apiary.api_keys.models import ApiKey
from apiary.authz.permissions import Role
from apiary.db import utcnow
from apiary.runtime import Runtime
from tests.factories import PASSWORD, make_api_key, make_member, make_tenant

pytestmark = pytest.mark.both_databases


async def test_key_is_shown_once_and_stored_as_a_hash(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    created = await client.post(
        "/api/v1/api-keys", headers=tenant.admin.headers, json={"name": "ci", "role": "developer"}
    )
    assert created.status_code == 201
    body = created.json()
    key = body["key"]
    assert key.startswith(f"apy_{body['prefix']}_")

    listed = await client.get("/api/v1/api-keys", headers=tenant.admin.headers)
    assert listed.json()["total"] == 1
    assert key not in listed.text
    assert "key" not in listed.json()["items"][0]
    one = await client.get(f"/api/v1/api-keys/{body['id']}", headers=tenant.admin.headers)
    assert key not in one.text

    async with runtime.session_factory() as session:
        stored = (await session.scalars(select(ApiKey))).one()
    # Only the digest and the visible prefix are kept; no column holds the secret part.
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    # The secret is URL-safe base64 and may itself contain "_": cut the known prefix off.
    secret_part = key.removeprefix(f"apy_{body['prefix']}_")
    assert len(secret_part) >= 32
    assert all(
        secret_part not in str(value) for value in stored.__dict__.values() if value is not None
    )

    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200
    assert me.json()["role"] == "developer"
    assert me.json()["api_key_id"] == body["id"]
    await runtime.key_usage.flush()  # last use is written in batches, every few seconds
    used = await client.get(f"/api/v1/api-keys/{body['id']}", headers=tenant.admin.headers)
    assert used.json()["last_used_at"] is not None


async def test_revoked_key_stops_working_at_once(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    body = (
        await client.post(
            "/api/v1/api-keys", headers=tenant.admin.headers, json={"name": "x", "role": "viewer"}
        )
    ).json()
    headers = {"Authorization": f"Bearer {body['key']}"}
    assert (await client.get("/api/v1/members", headers=headers)).status_code == 200
    revoked = await client.delete(f"/api/v1/api-keys/{body['id']}", headers=tenant.admin.headers)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    refused = await client.get("/api/v1/members", headers=headers)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "API key revoked"


async def test_expired_key_is_refused(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    body = (
        await client.post(
            "/api/v1/api-keys",
            headers=tenant.admin.headers,
            json={"name": "short", "role": "viewer", "expires_at": "2099-01-01T00:00:00Z"},
        )
    ).json()
    async with runtime.session_factory() as session:
        stored = await session.get(ApiKey, uuid.UUID(body["id"]))
        assert stored is not None
        stored.expires_at = utcnow() - timedelta(seconds=1)
        await session.commit()
    response = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['key']}"}
    )
    assert response.status_code == 401
    assert response.json()["detail"] == "API key expired"


@pytest.mark.parametrize(
    ("expires_at", "message"),
    [("2001-01-01T00:00:00Z", "future"), ("2099-01-01T00:00:00", "timezone")],
)
async def test_bad_expiry_is_422(
    client: httpx.AsyncClient, runtime: Runtime, expires_at: str, message: str
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    response = await client.post(
        "/api/v1/api-keys",
        headers=tenant.admin.headers,
        json={"name": "x", "role": "viewer", "expires_at": expires_at},
    )
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert (await client.get("/api/v1/api-keys", headers=tenant.admin.headers)).json()["total"] == 0


async def test_forged_and_malformed_keys_are_401(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    body = (
        await client.post(
            "/api/v1/api-keys", headers=tenant.admin.headers, json={"name": "x", "role": "viewer"}
        )
    ).json()
    forged = body["key"][:-4] + "AAAA"  # right prefix, wrong secret
    for key in (forged, "apy_short", "apy_"):
        response = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 401, key
        assert response.json()["detail"] == "invalid API key"


async def test_developer_cannot_mint_an_admin_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    developer = await make_member(client, tenant, Role.DEVELOPER)
    refused = await client.post(
        "/api/v1/api-keys", headers=developer.headers, json={"name": "x", "role": "tenant_admin"}
    )
    assert refused.status_code == 403
    allowed = await client.post(
        "/api/v1/api-keys", headers=developer.headers, json={"name": "x", "role": "developer"}
    )
    assert allowed.status_code == 201


async def test_viewer_cannot_create_or_list_keys(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    viewer = await make_member(client, tenant, Role.VIEWER)
    for method, path, json in (
        ("POST", "/api/v1/api-keys", {"name": "x", "role": "viewer"}),
        ("GET", "/api/v1/api-keys", None),
    ):
        response = await client.request(method, path, headers=viewer.headers, json=json)
        assert response.status_code == 403
        assert "api_keys" in response.json()["detail"]


async def test_list_is_paginated(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    for i in range(5):
        await client.post(
            "/api/v1/api-keys",
            headers=tenant.admin.headers,
            json={"name": f"k{i}", "role": "viewer"},
        )
    page = await client.get(
        "/api/v1/api-keys", params={"limit": 2, "offset": 2}, headers=tenant.admin.headers
    )
    body = page.json()
    assert (body["total"], body["limit"], body["offset"], len(body["items"])) == (5, 2, 2, 2)
    seen: set[str] = set()
    for offset in (0, 2, 4):
        chunk = await client.get(
            "/api/v1/api-keys", params={"limit": 2, "offset": offset}, headers=tenant.admin.headers
        )
        seen.update(item["name"] for item in chunk.json()["items"])
    assert seen == {f"k{i}" for i in range(5)}
    too_big = await client.get(
        "/api/v1/api-keys", params={"limit": 1000}, headers=tenant.admin.headers
    )
    assert too_big.status_code == 422
    assert "query.limit" in too_big.json()["detail"]


async def test_keys_of_a_removed_member_stop_working(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    developer = await make_member(client, tenant, Role.DEVELOPER)
    key = (
        await client.post(
            "/api/v1/api-keys", headers=developer.headers, json={"name": "d", "role": "developer"}
        )
    ).json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/api/v1/members", headers=headers)).status_code == 200
    removed = await client.delete(
        f"/api/v1/members/{developer.extra['membership_id']}", headers=tenant.admin.headers
    )
    assert removed.status_code == 204
    refused = await client.get("/api/v1/members", headers=headers)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "API key revoked"


async def test_lowering_a_role_revokes_keys_above_it(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    developer = await make_member(client, tenant, Role.DEVELOPER)
    created = {
        role: (
            await client.post(
                "/api/v1/api-keys", headers=developer.headers, json={"name": role, "role": role}
            )
        ).json()["key"]
        for role in ("developer", "viewer")
    }
    await client.patch(
        f"/api/v1/members/{developer.extra['membership_id']}",
        headers=tenant.admin.headers,
        json={"role": "viewer"},
    )
    for role, expected in (("developer", 401), ("viewer", 200)):
        response = await client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {created[role]}"}
        )
        assert response.status_code == expected, role


async def test_a_developer_cannot_revoke_an_admin_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    developer = await make_member(client, tenant, Role.DEVELOPER)
    admin_key = (
        await client.post(
            "/api/v1/api-keys",
            headers=tenant.admin.headers,
            json={"name": "a", "role": "tenant_admin"},
        )
    ).json()
    refused = await client.delete(f"/api/v1/api-keys/{admin_key['id']}", headers=developer.headers)
    assert refused.status_code == 403
    still = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {admin_key['key']}"}
    )
    assert still.status_code == 200


async def test_an_admin_key_cannot_leave_a_lasting_admin_behind(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    key = await make_api_key(runtime, tenant, Role.TENANT_ADMIN)
    developer = await make_member(client, tenant, Role.DEVELOPER)
    made = await client.post(
        "/api/v1/members",
        headers=key.headers,
        json={"email": "stay@acme.example", "role": "tenant_admin", "password": PASSWORD},
    )
    assert made.status_code == 403
    assert "below their own" in made.json()["detail"]
    promoted = await client.patch(
        f"/api/v1/members/{developer.extra['membership_id']}",
        headers=key.headers,
        json={"role": "tenant_admin"},
    )
    assert promoted.status_code == 403
    invited = await client.post(
        "/api/v1/members/invitations",
        headers=key.headers,
        json={"email": "admin@acme.example", "role": "tenant_admin"},
    )
    assert invited.status_code == 403
    # Once the key is revoked, nobody it touched holds its powers.
    revoked = await client.delete(
        f"/api/v1/api-keys/{key.extra['key_id']}", headers=tenant.admin.headers
    )
    assert revoked.status_code == 200
    members = await client.get("/api/v1/members", headers=tenant.admin.headers)
    assert "stay@acme.example" not in {m["email"] for m in members.json()["items"]}
    me = (await client.get("/api/v1/auth/me", headers=developer.headers)).json()
    assert me["role"] == "developer"


async def test_a_key_grants_only_roles_below_its_own_and_holds_no_key_powers(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    key = await make_api_key(runtime, tenant, Role.TENANT_ADMIN)
    other = await make_api_key(runtime, tenant, Role.VIEWER)
    below = await client.post(
        "/api/v1/members",
        headers=key.headers,
        json={"email": "helper@acme.example", "role": "developer"},
    )
    assert below.status_code == 201, below.text
    for method, path in (
        ("POST", "/api/v1/api-keys"),
        ("DELETE", f"/api/v1/api-keys/{other.extra['key_id']}"),
    ):
        body = {"name": "child", "role": "viewer"} if method == "POST" else None
        refused = await client.request(method, path, headers=key.headers, json=body)
        assert refused.status_code == 403, path
        assert "sign in as a user" in refused.json()["detail"]
    me = (await client.get("/api/v1/auth/me", headers=key.headers)).json()
    assert "members:write" in me["permissions"]
    assert "api_keys:write" not in me["permissions"]
    assert "invitations:respond" not in me["permissions"]
