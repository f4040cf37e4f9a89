"""The dashboard's OIDC sign-in: the authorization code flow with PKCE, against the local
identity provider, with Apiary's server redeeming the code (tests/auth/oidc_issuer.py)."""

from __future__ import annotations

import secrets
import uuid

import httpx
import pytest
from sqlalchemy import select

from apiary.audit.models import AuditEntry
from apiary.auth.oidc import OIDCVerifier
from apiary.errors import ServiceUnavailable, Unauthorized
from apiary.runtime import Runtime
from tests.auth.oidc_issuer import Account, BrowserAttempt, LocalIssuer, sign_in_at_issuer
from tests.auth.test_oidc_login import _link
from tests.factories import make_tenant

CALLBACK = "http://apiary.test/auth/oidc/callback"
BROWSER = {"Origin": "http://apiary.test", "X-Apiary-CSRF": "1"}


def _account(issuer: LocalIssuer, tid: str = "azure-tid-acme") -> Account:
    """A person of the IdP, unique to the test (the issuer is shared by the session)."""
    suffix = uuid.uuid4().hex[:8]
    return issuer.add_account(Account(email=f"ada-{suffix}@acme.example", sub=suffix, tid=tid))


def _body(attempt: BrowserAttempt, code: str, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "code": code,
        "code_verifier": attempt.code_verifier,
        "redirect_uri": attempt.redirect_uri,
        "nonce": attempt.nonce,
        "refresh_cookie": True,
    }
    return {**body, **changes}


async def test_the_code_flow_with_pkce_signs_in_with_the_refresh_token_in_a_cookie(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    await _link(client, runtime, tenant.id, "azure-tid-acme")
    account = _account(local_issuer)
    attempt = BrowserAttempt(redirect_uri=CALLBACK)
    code = await sign_in_at_issuer(local_issuer, attempt, email=account.email)
    redeemed_before = local_issuer.token_requests
    response = await client.post(
        "/api/v1/auth/oidc/code", headers=BROWSER, json=_body(attempt, code)
    )
    assert response.status_code == 200, response.text
    assert local_issuer.token_requests == redeemed_before + 1  # Apiary redeemed it
    pair = response.json()
    assert pair["tenant_id"] == tenant.id
    assert pair["role"] == "viewer"
    assert pair["refresh_token"] is None
    assert client.cookies.get("apiary_refresh")
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"}
    )
    assert me.json()["email"] == account.email
    # A reload: the cookie alone restores the session.
    restored = await client.post("/api/v1/auth/refresh", headers=BROWSER)
    assert restored.status_code == 200, restored.text


async def test_a_code_works_once(
    client: httpx.AsyncClient, runtime: Runtime, local_issuer: LocalIssuer
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    await _link(client, runtime, tenant.id, "azure-tid-acme")
    attempt = BrowserAttempt(redirect_uri=CALLBACK)
    code = await sign_in_at_issuer(local_issuer, attempt, email=_account(local_issuer).email)
    first = await client.post(
        "/api/v1/auth/oidc/code", json=_body(attempt, code, refresh_cookie=False)
    )
    assert first.status_code == 200
    again = await client.post(
        "/api/v1/auth/oidc/code", json=_body(attempt, code, refresh_cookie=False)
    )
    assert again.status_code == 401
    assert "refused the sign-in code (invalid_grant" in again.json()["detail"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # Someone who caught the code (a log, a referrer) lacks the verifier the browser kept.
        ({"code_verifier": secrets.token_urlsafe(48)}, "PKCE verification failed"),
        ({"redirect_uri": "http://apiary.test/elsewhere"}, "redirect_uri mismatch"),
        # A code of another attempt (a login CSRF, an injected code) carries another nonce.
        ({"nonce": secrets.token_urlsafe(16)}, "nonce does not match"),
    ],
)
async def test_a_code_with_the_wrong_secrets_is_refused_and_audited(
    client: httpx.AsyncClient,
    runtime: Runtime,
    local_issuer: LocalIssuer,
    change: dict[str, str],
    expected: str,
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    await _link(client, runtime, tenant.id, "azure-tid-acme")
    attempt = BrowserAttempt(redirect_uri=CALLBACK)
    code = await sign_in_at_issuer(local_issuer, attempt, email=_account(local_issuer).email)
    response = await client.post(
        "/api/v1/auth/oidc/code", headers=BROWSER, json=_body(attempt, code, **change)
    )
    assert response.status_code == 401, response.text
    assert expected in response.json()["detail"]
    assert client.cookies.get("apiary_refresh") is None
    async with runtime.session_factory() as session:
        reasons = [
            entry.details["reason"]
            for entry in await session.scalars(
                select(AuditEntry).where(AuditEntry.action == "auth.oidc_failed")
            )
        ]
    assert any(expected in reason for reason in reasons)
    members = await client.get("/api/v1/members", headers=tenant.admin.headers)
    assert members.json()["total"] == 1  # nobody was provisioned


async def test_a_malformed_code_request_names_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/oidc/code",
        json={"code": "c", "code_verifier": "short", "redirect_uri": CALLBACK, "nonce": "n" * 16},
    )
    assert response.status_code == 422
    assert "code_verifier" in response.text


async def test_the_server_redeems_codes_as_a_confidential_client_when_given_a_secret() -> None:
    with LocalIssuer(client_id="apiary-web", client_secret="s3cret/with+odd chars") as issuer:
        account = issuer.add_account(Account(email="ada@acme.example", sub="ada"))
        async with httpx.AsyncClient() as http:
            for secret, expected in (("s3cret/with+odd chars", None), ("wrong", "invalid_client")):
                settings = issuer.settings(audience="apiary-web", client_secret=secret)
                verifier = OIDCVerifier(settings, http)
                attempt = BrowserAttempt(redirect_uri=CALLBACK)
                code = await sign_in_at_issuer(issuer, attempt, email=account.email)
                redeem = verifier.redeem_code(
                    code, code_verifier=attempt.code_verifier, redirect_uri=CALLBACK
                )
                if expected is None:
                    identity = await verifier.verify(await redeem, nonce=attempt.nonce)
                    assert identity.email == "ada@acme.example"
                else:
                    with pytest.raises(Unauthorized, match=expected):
                        await redeem


async def test_an_unreachable_identity_provider_is_a_503_naming_it() -> None:
    issuer = LocalIssuer().start()
    settings = issuer.settings()
    issuer.stop()
    async with httpx.AsyncClient() as http:
        verifier = OIDCVerifier(settings, http)
        with pytest.raises(ServiceUnavailable, match="identity provider cannot be reached"):
            await verifier.redeem_code(
                "code", code_verifier=secrets.token_urlsafe(48), redirect_uri=CALLBACK
            )
