"""What a sign-in page and a role-based UI learn from the API before and after sign-in."""

from __future__ import annotations

import httpx
import pytest

from apiary.authz.permissions import KEY_WITHHELD, MATRIX, Role
from apiary.runtime import Runtime
from tests.factories import make_api_key, make_member, make_tenant

pytestmark = pytest.mark.both_databases


async def test_auth_config_is_public_and_names_the_oidc_issuer(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.get("/api/v1/auth/config")
    assert response.status_code == 200
    oidc = runtime.settings.oidc
    assert oidc is not None  # the test settings configure the local issuer
    assert response.json() == {
        "password": True,
        "oidc": {"issuer": oidc.issuer, "client_id": oidc.audience, "scope": oidc.scopes},
    }


async def test_me_lists_what_the_role_may_do(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client, "perm-corp")
    viewer = await make_member(client, tenant, Role.VIEWER)
    key = await make_api_key(runtime, tenant, Role.DEVELOPER)

    admin_me = (await client.get("/api/v1/auth/me", headers=tenant.admin.headers)).json()
    viewer_me = (await client.get("/api/v1/auth/me", headers=viewer.headers)).json()
    key_me = (await client.get("/api/v1/auth/me", headers=key.headers)).json()

    assert "api_keys:write" in admin_me["permissions"]
    assert "tenants:manage" not in admin_me["permissions"]
    assert "api_keys:write" not in viewer_me["permissions"]
    assert set(viewer_me["permissions"]) == {p.value for p in MATRIX[Role.VIEWER]}
    # A key holds its role's permissions but those that would outlive it.
    assert set(key_me["permissions"]) == {p.value for p in MATRIX[Role.DEVELOPER] - KEY_WITHHELD}
    assert "api_keys:write" not in key_me["permissions"]


async def test_me_lists_the_roles_the_caller_may_grant(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The dashboard's role pickers offer exactly what the server would accept."""
    tenant = await make_tenant(runtime, client, "grant-corp")
    developer = await make_member(client, tenant, Role.DEVELOPER)
    billing = await make_member(client, tenant, Role.BILLING_ADMIN)
    viewer = await make_member(client, tenant, Role.VIEWER)
    key = await make_api_key(runtime, tenant, Role.TENANT_ADMIN)

    async def grantable(headers: dict[str, str]) -> list[str]:
        me = await client.get("/api/v1/auth/me", headers=headers)
        assert me.status_code == 200
        return list(me.json()["grantable_roles"])

    assert await grantable(tenant.admin.headers) == [
        "tenant_admin",
        "developer",
        "billing_admin",
        "viewer",
    ]
    assert await grantable(developer.headers) == ["developer", "viewer"]
    assert await grantable(billing.headers) == ["billing_admin", "viewer"]
    assert await grantable(viewer.headers) == ["viewer"]
    # A key only hands out roles below its own, never its own.
    assert await grantable(key.headers) == ["developer", "billing_admin", "viewer"]

    # What the list names is what the server accepts: the key may add a developer but not
    # another tenant admin.
    for role, status in (("tenant_admin", 403), ("developer", 201)):
        response = await client.post(
            "/api/v1/members",
            headers=key.headers,
            json={"email": f"{role}@grant-corp.example", "role": role, "password": "pw-12345678"},
        )
        assert response.status_code == status, response.text
