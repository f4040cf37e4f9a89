"""Azure AD group and app role claims mapped to Apiary roles, applied at every OIDC sign-in.

The test settings map groups and an app role for IdP tenant `tid-mapped` only
(`OIDC_ROLE_MAPS` in tests/auth/oidc_issuer.py); people sign in through the local identity
provider with the authorization code flow, as the dashboard does.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from apiary.audit.models import AuditEntry
from apiary.auth.oidc import OIDCIdentity
from apiary.auth.service import _mapped_role
from apiary.authz.permissions import Role
from apiary.config import OIDCSettings
from apiary.errors import Forbidden
from apiary.runtime import Runtime
from tests.auth.oidc_issuer import (
    GROUP_ADMINS,
    GROUP_DEVELOPERS,
    MAPPED_TID,
    Account,
    BrowserAttempt,
    LocalIssuer,
    sign_in_at_issuer,
)
from tests.auth.test_oidc_login import _link
from tests.factories import TenantFixture, make_tenant

CALLBACK = "http://apiary.test/auth/oidc/callback"


async def _mapped_tenant(client: httpx.AsyncClient, runtime: Runtime) -> TenantFixture:
    tenant = await make_tenant(runtime, client, "contoso")
    await _link(client, runtime, tenant.id, MAPPED_TID)
    return tenant


def _person(issuer: LocalIssuer, **claims: list[str] | bool) -> Account:
    suffix = uuid.uuid4().hex[:8]
    account = Account(email=f"p-{suffix}@contoso.example", sub=suffix, tid=MAPPED_TID)
    for name, value in claims.items():
        setattr(account, name, value)
    return issuer.add_account(account)


async def _sign_in(
    client: httpx.AsyncClient, issuer: LocalIssuer, account: Account
) -> httpx.Response:
    attempt = BrowserAttempt(redirect_uri=CALLBACK)
    code = await sign_in_at_issuer(issuer, attempt, email=account.email)
    return await client.post(
        "/api/v1/auth/oidc/code",
        json={
            "code": code,
            "code_verifier": attempt.code_verifier,
            "redirect_uri": CALLBACK,
            "nonce": attempt.nonce,
        },
    )


async def test_groups_choose_the_role_at_every_sign_in(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    tenant = await _mapped_tenant(client, runtime)
    person = _person(local_issuer, groups=[GROUP_DEVELOPERS, "some-unmapped-group"])
    first = await _sign_in(client, local_issuer, person)
    assert first.status_code == 200, first.text
    assert first.json()["role"] == "developer"

    person.groups = [GROUP_DEVELOPERS, GROUP_ADMINS]  # the highest mapped role wins
    promoted = await _sign_in(client, local_issuer, person)
    assert promoted.json()["role"] == "tenant_admin"
    headers = {"Authorization": f"Bearer {promoted.json()['access_token']}"}
    assert (await client.get("/api/v1/auth/me", headers=headers)).json()["role"] == "tenant_admin"

    # Removed from every mapped group at the IdP: the next sign-in gives the default role,
    # and the membership itself follows, so the older session loses the role too.
    person.groups = []
    demoted = await _sign_in(client, local_issuer, person)
    assert demoted.json()["role"] == "viewer"
    assert (await client.get("/api/v1/auth/me", headers=headers)).json()["role"] == "viewer"

    members = (await client.get("/api/v1/members", headers=tenant.admin.headers)).json()
    roles = {member["email"]: member["role"] for member in members["items"]}
    assert roles[person.email] == "viewer"
    async with runtime.session_factory() as session:
        changes = (
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.action == "member.role_changed")
                .order_by(AuditEntry.created_at)
            )
        ).all()
    assert [(c.details["from"], c.details["to"]) for c in changes] == [
        ("developer", "tenant_admin"),
        ("tenant_admin", "viewer"),
    ]
    assert {c.details["source"] for c in changes} == {"oidc"}


async def test_an_app_role_maps_too(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    await _mapped_tenant(client, runtime)
    response = await _sign_in(client, local_issuer, _person(local_issuer, roles=["Apiary.Billing"]))
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "billing_admin"


async def test_keys_the_lowered_role_could_not_grant_stop(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    await _mapped_tenant(client, runtime)
    person = _person(local_issuer, groups=[GROUP_ADMINS])
    admin = await _sign_in(client, local_issuer, person)
    headers = {"Authorization": f"Bearer {admin.json()['access_token']}"}
    created = await client.post(
        "/api/v1/api-keys", headers=headers, json={"name": "ci", "role": "developer"}
    )
    assert created.status_code == 201, created.text
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    assert (await client.get("/api/v1/auth/me", headers=key)).status_code == 200

    person.groups = []  # out of the groups: a viewer, who may not grant developer keys
    assert (await _sign_in(client, local_issuer, person)).json()["role"] == "viewer"
    assert (await client.get("/api/v1/auth/me", headers=key)).status_code == 401


async def test_a_group_overage_is_refused_with_what_to_do(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    await _mapped_tenant(client, runtime)
    response = await _sign_in(client, local_issuer, _person(local_issuer, groups_overage=True))
    assert response.status_code == 403
    assert "left your groups out of the ID token" in response.json()["detail"]


async def test_without_a_map_an_idp_tenant_keeps_roles_given_in_apiary(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    await _link(client, runtime, tenant.id, "azure-tid-acme")
    person = _person(local_issuer, groups=[GROUP_ADMINS])
    person.tid = "azure-tid-acme"  # the map is for tid-mapped, not for this IdP tenant
    response = await _sign_in(client, local_issuer, person)
    assert response.json()["role"] == "viewer"


def _identity(values: set[str], tenant_ref: str = "t1") -> OIDCIdentity:
    return OIDCIdentity(
        subject="s",
        email="a@b.example",
        name="A",
        tenant_ref=tenant_ref,
        role_claim_values=frozenset(values),
    )


def test_a_tenants_map_wins_over_the_global_one_and_unmatched_users_may_be_refused() -> None:
    oidc = OIDCSettings(
        issuer="https://idp.example",
        audience="apiary",
        role_map={"g-all": "developer", "g-ops": "tenant_admin"},
        tenant_role_maps={"t1": {"g-ops": "viewer"}},
    )
    assert _mapped_role(_identity({"g-ops"}), oidc) is Role.VIEWER
    assert _mapped_role(_identity({"g-ops"}, tenant_ref="t2"), oidc) is Role.TENANT_ADMIN
    assert _mapped_role(_identity({"g-all", "g-ops"}), oidc) is Role.DEVELOPER
    assert _mapped_role(_identity(set()), oidc) is Role.VIEWER  # the default role
    strict = oidc.model_copy(update={"require_mapped_role": True})
    with pytest.raises(Forbidden, match="gives a role in Apiary"):
        _mapped_role(_identity({"unmapped"}), strict)


def test_no_identity_provider_sign_in_makes_a_super_admin() -> None:
    with pytest.raises(ValidationError, match="super_admin"):
        OIDCSettings(issuer="https://idp.example", audience="a", default_role="super_admin")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="super_admin"):
        OIDCSettings(issuer="https://idp.example", audience="a", role_map={"g": "super_admin"})  # type: ignore[dict-item]
