"""Password sign-in, refresh rotation, sign-out, and what a token may not be.

Throttling is in test_throttle.py."""

from __future__ import annotations

from datetime import timedelta

import httpx
import jwt
import pytest
from sqlalchemy import select

from apiary.audit.models import AuditEntry
from apiary.db import utcnow
from apiary.runtime import Runtime
from tests.factories import login, make_tenant


async def test_login_returns_tokens_that_open_me(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    me = await client.get("/api/v1/auth/me", headers=tenant.admin.headers)
    assert me.status_code == 200
    body = me.json()
    assert body["email"] == "admin@acme.example"
    assert body["role"] == "tenant_admin"
    assert body["tenant_id"] == tenant.id
    assert [m["tenant_name"] for m in body["memberships"]] == ["acme"]


async def test_wrong_password_is_401_and_audited(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    response = await client.post(
        "/api/v1/auth/login", json={"email": "admin@acme.example", "password": "nope-nope-nope"}
    )
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized", "detail": "invalid email or password"}
    unknown = await client.post(
        "/api/v1/auth/login", json={"email": "ghost@acme.example", "password": "whatever-pw"}
    )
    assert unknown.json()["detail"] == "invalid email or password"  # no account enumeration
    log = await client.get(
        "/api/v1/audit-log", params={"action": "auth.login_failed"}, headers=tenant.admin.headers
    )
    # The tenant's admins see the attack on their user; the unknown email is a platform entry.
    [entry] = log.json()["items"]
    # An account's failures name it by id, so erasing the person leaves no address behind.
    assert entry["actor_user_id"] == tenant.admin.user_id
    assert entry["details"] == {"method": "password"}
    assert entry["ip"] == "10.9.8.7"
    async with runtime.session_factory() as session:
        ghost = await session.scalar(
            select(AuditEntry).where(
                AuditEntry.details["email"].as_string() == "ghost@acme.example"
            )
        )
    assert ghost is not None
    assert ghost.tenant_id is None


async def test_refresh_rotates_and_reuse_revokes_the_family(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    first = tenant.admin.refresh_token
    rotated = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first
    new_headers = {"Authorization": f"Bearer {second['access_token']}"}
    assert (await client.get("/api/v1/auth/me", headers=new_headers)).status_code == 200

    replay = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert replay.status_code == 401
    assert "reused" in replay.json()["detail"]
    # The whole family is gone: the newest refresh token and every access token with it.
    after = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert after.status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=new_headers)).status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=tenant.admin.headers)).status_code == 401
    # ... and the revocation was written down even though the request failed.
    fresh = await login(client, "admin@acme.example")
    log = await client.get(
        "/api/v1/audit-log", params={"action": "auth.refresh_reused"}, headers=fresh.headers
    )
    assert log.json()["total"] == 1


async def test_logout_ends_the_session(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    out = await client.post("/api/v1/auth/logout", headers=tenant.admin.headers)
    assert out.status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=tenant.admin.headers)).status_code == 401
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tenant.admin.refresh_token}
    )
    assert refreshed.status_code == 401


async def test_unknown_refresh_token_is_401(client: httpx.AsyncClient, runtime: Runtime) -> None:
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": "apr_nothing"})
    assert response.status_code == 401


def _forge(runtime: Runtime, caller_token: str, **changes: object) -> dict[str, object]:
    claims = jwt.decode(caller_token, options={"verify_signature": False})
    claims.update(changes)
    return claims


@pytest.mark.parametrize(
    "case",
    ["tampered", "expired", "alg_none", "wrong_audience", "wrong_issuer", "wrong_key", "garbage"],
)
async def test_bad_access_tokens_are_refused(
    client: httpx.AsyncClient, runtime: Runtime, case: str
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    token = tenant.admin.token
    key = runtime.settings.signing_key
    if case == "tampered":
        header, _payload, signature = token.split(".")
        forged = jwt.encode(
            _forge(runtime, token, tid="00000000-0000-0000-0000-000000000001"), "k" * 32
        )
        token = f"{header}.{forged.split('.')[1]}.{signature}"
    elif case == "expired":
        past = utcnow() - timedelta(hours=2)
        token = jwt.encode(
            _forge(runtime, token, iat=past, exp=past + timedelta(minutes=15)), key, "HS256"
        )
    elif case == "alg_none":
        token = jwt.encode(_forge(runtime, token), None, algorithm="none")  # type: ignore[arg-type]
    elif case == "wrong_audience":
        token = jwt.encode(_forge(runtime, token, aud="someone-else"), key, "HS256")
    elif case == "wrong_issuer":
        token = jwt.encode(_forge(runtime, token, iss="evil"), key, "HS256")
    elif case == "wrong_key":
        token = jwt.encode(_forge(runtime, token), "not-the-signing-key-at-all-0123456789", "HS256")
    else:
        token = "not.a.jwt"
    response = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, case
    assert response.json()["error"] == "Unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_missing_credentials_say_how_to_authenticate(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/auth/me")
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["detail"]


async def test_validation_errors_name_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/login", json={"email": "not-an-email"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "ValidationError"
    assert "body.email" in body["detail"]
    assert "body.password" in body["detail"]
