"""The browser's session: the refresh token in an httpOnly cookie, refresh and sign-out with
it under a CSRF check, while API clients keep their refresh tokens in the body."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from apiary.runtime import Runtime
from tests.factories import PASSWORD, make_tenant

pytestmark = pytest.mark.both_databases

# What the dashboard's pages send: its own origin, and the header no other site can add.
BROWSER = {"Origin": "http://apiary.test", "X-Apiary-CSRF": "1"}


async def _browser_sign_in(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/login",
        headers=BROWSER,
        json={"email": email, "password": PASSWORD, "refresh_cookie": True},
    )


def _set_cookie(response: httpx.Response) -> str:
    cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    assert len(cookies) == 1, cookies
    return cookies[0]


async def test_a_browser_sign_in_keeps_the_refresh_token_out_of_reach_of_scripts(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    response = await _browser_sign_in(client, tenant.admin.email or "")
    assert response.status_code == 200, response.text
    assert response.json()["refresh_token"] is None  # nothing a script could keep
    cookie = _set_cookie(response)
    assert cookie.startswith("apiary_refresh=apr_")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/api/v1/auth"} <= attributes
    assert "secure" not in attributes  # plain HTTP here: a Secure cookie would be dropped
    me = await client.get(
        "/api/v1/auth/me",
        headers={"Authorization": f"Bearer {response.json()['access_token']}"},
    )
    assert me.status_code == 200


async def test_the_cookie_is_secure_when_served_over_tls(app: FastAPI, runtime: Runtime) -> None:
    transport = httpx.ASGITransport(app=app, client=("10.9.8.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://apiary.test") as https:
        tenant = await make_tenant(runtime, https, "acme")
        response = await https.post(
            "/api/v1/auth/login",
            headers={**BROWSER, "Origin": "https://apiary.test"},
            json={"email": tenant.admin.email, "password": PASSWORD, "refresh_cookie": True},
        )
    assert response.status_code == 200, response.text
    assert "secure" in {part.strip().lower() for part in _set_cookie(response).split(";")}


async def test_a_reload_restores_the_session_with_the_cookie_which_rotates(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    await _browser_sign_in(client, tenant.admin.email or "")
    first = client.cookies.get("apiary_refresh")
    restored = await client.post("/api/v1/auth/refresh", headers=BROWSER)
    assert restored.status_code == 200, restored.text
    assert restored.json()["refresh_token"] is None
    assert restored.json()["tenant_id"] == tenant.id
    second = client.cookies.get("apiary_refresh")
    assert second
    assert second != first
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {restored.json()['access_token']}"}
    )
    assert me.json()["email"] == tenant.admin.email
    # A copied cookie used after the rotation is a replay: the whole session ends.
    client.cookies.set("apiary_refresh", first or "", domain="apiary.test", path="/api/v1/auth")
    replayed = await client.post("/api/v1/auth/refresh", headers=BROWSER)
    assert replayed.status_code == 401
    assert "reused" in replayed.json()["detail"]
    assert "max-age=0" in _set_cookie(replayed).lower()  # the dead cookie is dropped
    assert client.cookies.get("apiary_refresh") is None
    client.cookies.set("apiary_refresh", second, domain="apiary.test", path="/api/v1/auth")
    assert (await client.post("/api/v1/auth/refresh", headers=BROWSER)).status_code == 401


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Origin": "http://apiary.test"}, "X-Apiary-CSRF"),
        ({**BROWSER, "Origin": "https://evil.example"}, "Origin"),
        ({**BROWSER, "Origin": "null"}, "Origin"),
        ({**BROWSER, "Sec-Fetch-Site": "cross-site"}, "cross-site"),
        ({**BROWSER, "Sec-Fetch-Site": "same-site"}, "same-site"),
    ],
)
async def test_cookie_requests_another_site_could_send_are_refused(
    client: httpx.AsyncClient, runtime: Runtime, headers: dict[str, str], reason: str
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    signed_in = await _browser_sign_in(client, tenant.admin.email or "")
    cookie = client.cookies.get("apiary_refresh")
    refused = await client.post("/api/v1/auth/refresh", headers=headers)
    assert refused.status_code == 403
    assert refused.json()["error"] == "Forbidden"
    assert reason in refused.json()["detail"]
    bearer = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    logout = await client.post("/api/v1/auth/logout", headers={**headers, **bearer})
    assert logout.status_code == 403
    # Nor may another site sign a visitor in to an account of its choosing (login CSRF).
    login = await client.post(
        "/api/v1/auth/login",
        headers=headers,
        json={"email": tenant.admin.email, "password": PASSWORD, "refresh_cookie": True},
    )
    assert login.status_code == 403
    # The refused requests changed nothing: the cookie still works from the dashboard.
    assert client.cookies.get("apiary_refresh") == cookie
    assert (await client.post("/api/v1/auth/refresh", headers=BROWSER)).status_code == 200


async def test_sign_out_ends_the_cookies_session_and_clears_the_cookie(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    signed_in = await _browser_sign_in(client, tenant.admin.email or "")
    cookie = client.cookies.get("apiary_refresh") or ""
    bearer = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    out = await client.post("/api/v1/auth/logout", headers={**BROWSER, **bearer})
    assert out.status_code == 204
    assert "max-age=0" in _set_cookie(out).lower()
    assert client.cookies.get("apiary_refresh") is None
    client.cookies.set("apiary_refresh", cookie, domain="apiary.test", path="/api/v1/auth")
    again = await client.post("/api/v1/auth/refresh", headers=BROWSER)
    assert again.status_code == 401
    assert "session ended" in again.json()["detail"]


async def test_a_refresh_without_a_token_or_cookie_says_what_is_missing(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/v1/auth/refresh", headers=BROWSER)
    assert response.status_code == 401
    assert "no refresh token" in response.json()["detail"]


async def test_api_clients_keep_the_refresh_token_in_the_body(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    pair = await client.post(
        "/api/v1/auth/login", json={"email": tenant.admin.email, "password": PASSWORD}
    )
    assert pair.status_code == 200
    assert pair.json()["refresh_token"].startswith("apr_")
    assert "set-cookie" not in pair.headers
    # No CSRF header needed: a token in the body is one another site cannot know.
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": pair.json()["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"].startswith("apr_")
    assert "set-cookie" not in refreshed.headers
    out = await client.post(
        "/api/v1/auth/logout",
        headers={"Authorization": f"Bearer {refreshed.json()['access_token']}"},
        json={"refresh_token": refreshed.json()["refresh_token"]},
    )
    assert out.status_code == 204
    gone = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": refreshed.json()["refresh_token"]}
    )
    assert gone.status_code == 401
