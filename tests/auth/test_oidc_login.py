"""OIDC sign-in through the API, against the local issuer the tests run."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from apiary.audit.models import AuditEntry
from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from tests.auth.oidc_issuer import LocalIssuer, new_rsa_key
from tests.factories import make_member, make_super_admin, make_tenant


async def _link(client: httpx.AsyncClient, runtime: Runtime, tenant_id: str, tid: str) -> None:
    root = await make_super_admin(runtime, client)
    linked = await client.patch(
        f"/api/v1/tenants/{tenant_id}", headers=root.headers, json={"oidc_tenant_id": tid}
    )
    assert linked.status_code == 200


async def test_first_sign_in_provisions_a_viewer_in_the_linked_tenant(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    await _link(client, runtime, tenant.id, "azure-tid-acme")
    token = local_issuer.token(sub="oid-1", email="Ada@Acme.example", tid="azure-tid-acme")
    response = await client.post("/api/v1/auth/oidc", json={"id_token": token})
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["tenant_id"] == tenant.id
    assert tokens["role"] == "viewer"
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["email"] == "ada@acme.example"
    again = await client.post(
        "/api/v1/auth/oidc",
        json={
            "id_token": local_issuer.token(
                sub="oid-1", email="ada@acme.example", tid="azure-tid-acme"
            )
        },
    )
    assert again.status_code == 200
    members = await client.get("/api/v1/members", headers=tenant.admin.headers)
    assert members.json()["total"] == 2  # the admin and Ada, once


async def test_an_invited_member_is_linked_keeping_their_role(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    await _link(client, runtime, tenant.id, "azure-tid-acme")
    await make_member(client, tenant, Role.DEVELOPER, email="dev@acme.example")
    token = local_issuer.token(sub="oid-dev", email="dev@acme.example", tid="azure-tid-acme")
    response = await client.post("/api/v1/auth/oidc", json={"id_token": token})
    assert response.status_code == 200
    assert response.json()["role"] == "developer"


async def test_email_claim_cannot_take_over_an_account_elsewhere(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    evil = await make_tenant(runtime, client, "evil")
    await _link(client, runtime, evil.id, "azure-tid-evil")
    # Someone in the evil IdP tenant claims the email of acme's admin, and of the root.
    for email in ("admin@acme.example", runtime.settings.bootstrap_admin_email):
        token = local_issuer.token(sub="attacker", email=email, tid="azure-tid-evil")
        response = await client.post("/api/v1/auth/oidc", json={"id_token": token})
        assert response.status_code == 409, email
        assert "already exists" in response.json()["detail"]
    assert acme.id != evil.id


async def test_unlinked_idp_tenant_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    await make_tenant(runtime, client, "acme")
    token = local_issuer.token(tid="nobody-linked-this")
    response = await client.post("/api/v1/auth/oidc", json={"id_token": token})
    assert response.status_code == 403
    assert "no Apiary tenant is linked" in response.json()["detail"]


@pytest.mark.parametrize("case", ["wrong_signature", "wrong_audience", "expired", "alg_none"])
async def test_bad_id_tokens_are_401(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer, case: str
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    await _link(client, runtime, tenant.id, "tid-1")
    token = {
        "wrong_signature": lambda: local_issuer.token(key=new_rsa_key()),
        "wrong_audience": lambda: local_issuer.token(aud="another-app"),
        "expired": lambda: local_issuer.token(exp_in=-3600, iat=0),
        "alg_none": lambda: local_issuer.unsigned_token(),
    }[case]()
    response = await client.post("/api/v1/auth/oidc", json={"id_token": token})
    assert response.status_code == 401, response.text
    assert response.json()["detail"].startswith("invalid ID token")
    members = await client.get("/api/v1/members", headers=tenant.admin.headers)
    assert members.json()["total"] == 1  # nobody was provisioned


async def test_an_admin_cannot_capture_another_tenants_user_through_oidc(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    acme = await make_tenant(runtime, client, "acme")
    victim = await make_member(client, acme, Role.DEVELOPER, email="victim@acme.example")
    evil = await make_tenant(runtime, client, "evil")
    await _link(client, runtime, evil.id, "azure-tid-evil")
    # evil's admin cannot add the victim's account to evil; an invitation it never accepted
    # changes nothing; and signing in as it from evil's IdP is refused.
    added = await client.post(
        "/api/v1/members",
        headers=evil.admin.headers,
        json={"email": "victim@acme.example", "role": "viewer"},
    )
    assert added.status_code == 409
    invited = await client.post(
        "/api/v1/members/invitations",
        headers=evil.admin.headers,
        json={"email": "victim@acme.example", "role": "viewer"},
    )
    assert invited.status_code == 201
    token = local_issuer.token(sub="attacker", email="victim@acme.example", tid="azure-tid-evil")
    response = await client.post("/api/v1/auth/oidc", json={"id_token": token})
    assert response.status_code == 409
    me = await client.get("/api/v1/auth/me", headers=victim.headers)
    assert me.status_code == 200  # the victim's own sign-in is untouched


async def test_refused_oidc_sign_ins_are_audited(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    await make_tenant(runtime, client, "acme")
    response = await client.post(
        "/api/v1/auth/oidc", json={"id_token": local_issuer.token(aud="another-app")}
    )
    assert response.status_code == 401
    async with runtime.session_factory() as session:
        entries = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "auth.oidc_failed"))
        ).all()
    assert len(entries) == 1
    assert "audience" in entries[0].details["reason"]


async def test_claims_with_control_characters_are_cleaned_or_refused(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    await _link(client, runtime, tenant.id, "azure-tid-acme")
    # A display name the IdP let through with a NUL and a right-to-left override: kept,
    # without them (PostgreSQL refuses NUL in text; the override disguises the name).
    token = local_issuer.token(
        sub="oid-eve",
        email="eve@acme.example",
        tid="azure-tid-acme",
        extra={"name": "Eve\x00 \u202eevE"},
    )
    response = await client.post("/api/v1/auth/oidc", json={"id_token": token})
    assert response.status_code == 200, response.text
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    assert (await client.get("/api/v1/auth/me", headers=headers)).json()["name"] == "Eve evE"
    # An address with a control character in it is nobody's: refused, not a database error.
    bad = local_issuer.token(sub="oid-x", email="x\x00@acme.example", tid="azure-tid-acme")
    refused = await client.post("/api/v1/auth/oidc", json={"id_token": bad})
    assert refused.status_code == 401
    assert "control or invisible" in refused.json()["detail"]


async def test_failed_oidc_sign_ins_from_one_address_lock_no_one_else_out(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    """Behind one NAT, someone's broken or forged tokens must not lock out their colleagues:
    failures are throttled per (claimed account, address), as wrong passwords are."""
    tenant = await make_tenant(runtime, client, "acme")
    await _link(client, runtime, tenant.id, "azure-tid-acme")
    limit = runtime.settings.login_max_failures
    for _ in range(limit + 2):  # the `client` fixture's one address, shared by everyone here
        forged = local_issuer.token(sub="mallory", tid="azure-tid-acme", key=new_rsa_key())
        refused = await client.post("/api/v1/auth/oidc", json={"id_token": forged})
        assert refused.status_code in (401, 429)
    assert refused.status_code == 429  # mallory's guesses from here now wait ...
    assert "not locked" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) > 0
    # ... and Ada, behind the same address, signs in as always.
    token = local_issuer.token(sub="oid-ada", email="ada@acme.example", tid="azure-tid-acme")
    response = await client.post("/api/v1/auth/oidc", json={"id_token": token})
    assert response.status_code == 200, response.text
