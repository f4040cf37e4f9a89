"""Behind a reverse proxy: X-Forwarded-For and -Proto are believed only from the peers in
APIARY_TRUSTED_PROXIES, for the sign-in throttle, the audit log's address and generated URLs;
from anyone else they are ignored, so a client cannot pick its own address."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from ipaddress import ip_network

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from apiary.audit.models import AuditEntry
from apiary.auth.forwarded import TrustedProxies
from apiary.config import ConfigError, Settings, load_settings
from apiary.main import create_app
from apiary.runtime import Runtime
from tests.factories import PASSWORD, make_tenant

pytestmark = pytest.mark.both_databases

PROXY = "10.20.0.5"  # the ingress, inside the trusted 10.20.0.0/16
OUTSIDER = "198.51.100.23"  # a client reaching Apiary directly


@pytest.fixture
async def behind_proxy(settings: Settings) -> AsyncIterator[FastAPI]:
    own = create_app(
        settings.model_copy(
            update={"trusted_proxies": [ip_network("10.20.0.0/16"), ip_network("fd00::/8")]}
        )
    )
    async with own.router.lifespan_context(own):
        yield own


def _from(app: FastAPI, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://apiary.test")


async def _failed_sign_in_ips(runtime: Runtime) -> list[str | None]:
    async with runtime.session_factory() as session:
        entries = await session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action == "auth.login_failed")
            .order_by(AuditEntry.seq)
        )
        return [entry.ip for entry in entries]


async def _wrong(http: httpx.AsyncClient, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    response = await http.post(
        "/api/v1/auth/login",
        headers=headers,
        json={"email": "admin@acme.example", "password": "wrong-wrong"},
    )
    return response.status_code


async def test_the_audit_log_records_the_address_a_trusted_proxy_names(
    behind_proxy: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_tenant(runtime, client, "acme")
    async with _from(behind_proxy, PROXY) as proxy:
        # What the client wrote itself comes first; the proxy appended the address it saw.
        assert await _wrong(proxy, "6.6.6.6, 203.0.113.9") == 401
    async with _from(behind_proxy, OUTSIDER) as outsider:
        assert await _wrong(outsider, "203.0.113.77") == 401  # spoofed: ignored
    async with _from(behind_proxy, "fd00::7") as proxy6:
        assert await _wrong(proxy6, "[2001:db8::1]:5555") == 401
    assert await _failed_sign_in_ips(runtime) == ["203.0.113.9", OUTSIDER, "2001:db8::1"]


async def test_a_spoofed_header_does_not_escape_the_throttle(
    behind_proxy: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_tenant(runtime, client, "acme")
    limit = runtime.settings.login_max_failures
    async with _from(behind_proxy, OUTSIDER) as outsider:
        # A new made-up address on every guess: all of them count against the real peer.
        for n in range(limit):
            assert await _wrong(outsider, f"192.0.2.{n}") == 401
        assert await _wrong(outsider, "192.0.2.200") == 429
    async with _from(behind_proxy, PROXY) as proxy:
        # Through the proxy, each client is its own: the attacker behind it waits ...
        for _ in range(limit):
            assert await _wrong(proxy, "203.0.113.9") == 401
        assert await _wrong(proxy, "1.2.3.4, 203.0.113.9") == 429  # left part is the client's
        # ... and the holder, behind the same proxy, signs in.
        holder = await proxy.post(
            "/api/v1/auth/login",
            headers={"X-Forwarded-For": "203.0.113.10"},
            json={"email": "admin@acme.example", "password": PASSWORD},
        )
        assert holder.status_code == 200, holder.text


async def test_generated_urls_follow_the_proxys_scheme(
    behind_proxy: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    headers = {"X-Forwarded-Proto": "https", **tenant.admin.headers}
    async with _from(behind_proxy, PROXY) as proxy:
        redirect = await proxy.get("/api/v1/members/", headers=headers)
    assert redirect.status_code == 307
    assert redirect.headers["location"] == "https://apiary.test/api/v1/members"
    async with _from(behind_proxy, OUTSIDER) as outsider:
        spoofed = await outsider.get("/api/v1/members/", headers=headers)
        assert spoofed.headers["location"] == "http://apiary.test/api/v1/members"
        followed = await outsider.get(spoofed.headers["location"], headers=headers)
    assert followed.json()["total"] == 1


def test_without_trusted_proxies_no_header_is_believed() -> None:
    scope = {
        "type": "http",
        "client": (PROXY, 1),
        "scheme": "http",
        "headers": [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-proto", b"https")],
    }
    TrustedProxies([]).resolve(scope)
    assert (scope["client"], scope["scheme"]) == ((PROXY, 1), "http")
    TrustedProxies([ip_network("10.20.0.0/16")]).resolve(scope)
    assert (scope["client"], scope["scheme"]) == (("203.0.113.9", 0), "https")
    socket = {**scope, "type": "websocket", "client": (PROXY, 1), "scheme": "ws"}
    TrustedProxies([ip_network("10.20.0.0/16")]).resolve(socket)
    assert (socket["client"], socket["scheme"]) == (("203.0.113.9", 0), "wss")
    # Garbage in the header: the last hop a trusted proxy vouched for stands.
    junk = {
        **scope,
        "client": (PROXY, 1),
        "headers": [(b"x-forwarded-for", b"nonsense, 10.20.0.9")],
    }
    TrustedProxies([ip_network("10.20.0.0/16")]).resolve(junk)
    assert junk["client"] == ("10.20.0.9", 0)


def test_trusted_proxies_are_read_from_a_comma_separated_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [name for name in os.environ if name.startswith("APIARY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("APIARY_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1,fd00::/8")
    assert [str(n) for n in load_settings().trusted_proxies] == [
        "10.0.0.0/8",
        "192.168.1.1/32",
        "fd00::/8",
    ]
    monkeypatch.setenv("APIARY_TRUSTED_PROXIES", "10.0.0.0/33")
    with pytest.raises(ConfigError, match="APIARY_TRUSTED_PROXIES"):
        load_settings()
