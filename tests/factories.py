"""Factories: tenants, users and keys made through the real services, and signed-in callers."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import httpx

from apiary.authz.permissions import Role
from apiary.bootstrap import cli_create_api_key, cli_create_tenant
from apiary.runtime import Runtime

PASSWORD = "correct horse battery staple"
# The test app's APIARY_METRICS_TOKEN, which a scrape of /metrics sends as a bearer token.
METRICS_TOKEN = "test-metrics-token-" + secrets.token_hex(8)
METRICS_HEADERS = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@dataclass
class Caller:
    """Someone signed in: their bearer credentials and what the API told them."""

    token: str
    email: str | None = None
    refresh_token: str | None = None
    tenant_id: str | None = None
    user_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class TenantFixture:
    id: str
    name: str
    admin: Caller


async def login(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, tenant: str | None = None
) -> Caller:
    body = {"email": email, "password": password}
    if tenant:
        body["tenant"] = tenant
    response = await client.post("/api/v1/auth/login", json=body)
    assert response.status_code == 200, response.text
    tokens = response.json()
    me = (
        await client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
    ).json()
    return Caller(
        token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        email=email,
        tenant_id=tokens["tenant_id"],
        user_id=me["user_id"],
    )


async def make_tenant(
    runtime: Runtime,
    client: httpx.AsyncClient,
    name: str | None = None,
    *,
    plan: str = "enterprise",
) -> TenantFixture:
    """A tenant and its signed-in admin; on the unlimited plan unless a test is about plans
    (tests/billing), so other tests meet no entitlement."""
    name = name or f"tenant-{secrets.token_hex(3)}"
    email = f"admin@{name}.example"
    created = await cli_create_tenant(
        runtime, name=name, admin_email=email, password=PASSWORD, plan=plan
    )
    admin = await login(client, email)
    return TenantFixture(id=created["tenant_id"], name=name, admin=admin)


async def make_member(
    client: httpx.AsyncClient, tenant: TenantFixture, role: Role, email: str | None = None
) -> Caller:
    email = email or f"{role.value.replace('_', '-')}-{secrets.token_hex(3)}@{tenant.name}.example"
    response = await client.post(
        "/api/v1/members",
        headers=tenant.admin.headers,
        json={"email": email, "role": role.value, "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    caller = await login(client, email)
    caller.extra["membership_id"] = response.json()["id"]
    return caller


async def make_api_key(runtime: Runtime, tenant: TenantFixture, role: Role) -> Caller:
    created = await cli_create_api_key(runtime, tenant=tenant.id, role=role, name="test")
    return Caller(token=created["key"], tenant_id=tenant.id, extra={"key_id": created["id"]})


async def make_super_admin(runtime: Runtime, client: httpx.AsyncClient) -> Caller:
    from apiary.bootstrap import ensure_super_admin

    created = await ensure_super_admin(runtime)
    assert created is not None
    email, password = created
    return await login(client, email, password)
