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
        "oidc": {"issuer": oidc.issuer, "client_id": oidc.audience},
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
