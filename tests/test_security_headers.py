"""Security headers: a policy per kind of response, HSTS only over TLS (apiary/security_headers.py).
The dashboard's policy is also checked in real Chromium: web/e2e/dashboard.test.mjs runs
every page under it and fails on any refusal the browser reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from ipaddress import ip_network
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from apiary.config import Settings
from apiary.main import create_app

PROXY = "10.20.0.5"


@pytest.fixture
async def web(settings: Settings, tmp_path: Path) -> AsyncIterator[FastAPI]:
    build = tmp_path / "dist"
    build.mkdir()
    (build / "index.html").write_text("<!doctype html><div id=root></div>")
    app = create_app(
        settings.model_copy(
            update={"web_dist": build, "trusted_proxies": [ip_network("10.20.0.0/16")]}
        )
    )
    async with app.router.lifespan_context(app):
        yield app


def _from(app: FastAPI, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://apiary.test")


def _directives(policy: str) -> dict[str, str]:
    return {
        name: value.strip()
        for name, _, value in (part.strip().partition(" ") for part in policy.split(";"))
    }


async def test_every_response_forbids_sniffing_framing_and_referrers(web: FastAPI) -> None:
    async with _from(web) as http:
        for response in (
            await http.get("/healthz"),
            await http.get("/api/v1/auth/me"),  # a 401 error body too
            await http.get("/"),
        ):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert response.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_api_answers_may_load_nothing(web: FastAPI) -> None:
    async with _from(web) as http:
        response = await http.get("/api/v1/auth/me")
    assert response.status_code == 401
    policy = _directives(response.headers["content-security-policy"])
    assert policy["default-src"] == "'none'"


async def test_the_dashboard_runs_only_its_own_scripts(web: FastAPI) -> None:
    async with _from(web) as http:
        response = await http.get("/executions")  # a client-side route: index.html
    assert response.headers["content-type"].startswith("text/html")
    policy = _directives(response.headers["content-security-policy"])
    assert policy["script-src"] == "'self'"  # no inline script, no other origin
    assert policy["style-src"] == "'self'"
    assert policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'self'"
    assert policy["connect-src"].startswith("'self'")


async def test_the_dashboard_may_read_the_oidc_issuers_discovery(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.oidc is not None  # the local issuer of the test suite
    app = create_app(settings.model_copy(update={"web_dist": tmp_path}))
    (tmp_path / "index.html").write_text("<!doctype html>")
    async with app.router.lifespan_context(app), _from(app) as http:
        response = await http.get("/")
    issuer = httpx.URL(settings.oidc.issuer)
    policy = _directives(response.headers["content-security-policy"])
    assert f"{issuer.scheme}://{issuer.netloc.decode()}" in policy["connect-src"].split()


async def test_the_api_docs_may_load_their_cdn_assets(web: FastAPI) -> None:
    async with _from(web) as http:
        response = await http.get("/docs")
    policy = _directives(response.headers["content-security-policy"])
    assert "https://cdn.jsdelivr.net" in policy["script-src"]
    assert policy["frame-ancestors"] == "'none'"


async def test_hsts_only_over_tls_as_a_trusted_proxy_reports_it(web: FastAPI) -> None:
    https = {"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9"}
    async with _from(web, PROXY) as proxied:
        assert "strict-transport-security" not in (await proxied.get("/healthz")).headers
        secure = await proxied.get("/healthz", headers=https)
    assert secure.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    async with _from(web, "198.51.100.7") as stranger:  # not a proxy: its word is ignored
        claimed = await stranger.get("/healthz", headers=https)
    assert "strict-transport-security" not in claimed.headers
