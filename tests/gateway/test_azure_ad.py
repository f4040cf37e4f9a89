"""Azure AD (Microsoft Entra) tokens for `azure_ad: true`, through the real azure-identity
against a local fake Entra token endpoint served over HTTPS with a self-signed certificate."""

from __future__ import annotations

import logging
import secrets
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam

from tests.fakes.tls import self_signed_certificate
from tests.gateway.conftest import Gateway, GatewayFactory

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
TENANT = "00000000-0000-0000-0000-0000000000aa"
CLIENT_ID = "11111111-1111-1111-1111-1111111111bb"
SECRET = "fake-entra-client-secret-do-not-log"
SCOPE = "https://cognitiveservices.azure.com/.default"


@dataclass
class FakeEntra:
    """The Microsoft identity platform's v2.0 token endpoint, client-credentials grant only.

    That is all azure-identity's async client-secret path asks of it: it posts straight to
    `{authority}/{tenant}/oauth2/v2.0/token`, with no instance or OpenID discovery (any other
    request is recorded and answered 404, and the tests check there are none)."""

    secret: str = SECRET
    base_url: str = ""
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    issued: list[str] = field(default_factory=list)
    grants: set[str] = field(default_factory=set)  # every issued token is added here

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    async def _unknown(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        return web.json_response({"error": "not_found"}, status=404)

    async def _token(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        form = await request.post()
        if (
            request.match_info["tenant"] != TENANT
            or form.get("grant_type") != "client_credentials"
            or form.get("client_id") != CLIENT_ID
            or form.get("scope") != SCOPE
        ):
            return web.json_response(
                {"error": "invalid_request", "error_description": "AADSTS900144: bad request"},
                status=400,
            )
        if form.get("client_secret") != self.secret:
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                },
                status=401,
            )
        token = "entra-" + secrets.token_urlsafe(24)
        self.issued.append(token)
        self.grants.add(token)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3599, "access_token": token}
        )

    @property
    def token_calls(self) -> int:
        return sum(1 for _, path in self.requests if path.endswith("/oauth2/v2.0/token"))


@pytest.fixture
async def entra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeEntra]:
    cert, key = self_signed_certificate(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    fake = FakeEntra()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "localhost", 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.base_url = f"https://localhost:{port}"
    # DefaultAzureCredential's EnvironmentCredential reads these; nothing else is stubbed.
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", fake.base_url)
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    try:
        yield fake
    finally:
        await runner.cleanup()


async def _azure_ad_gateway(make_gateway: GatewayFactory) -> Gateway:
    gateway: Gateway = await make_gateway(
        provider_overrides={"azure-east": {"azure_ad": True, "api_key": None}}
    )
    return gateway


async def test_azure_ad_sends_the_entra_token_and_reuses_it(
    make_gateway: GatewayFactory, entra: FakeEntra
) -> None:
    gateway = await _azure_ad_gateway(make_gateway)
    # The fake Azure upstream only accepts the token the fake Entra endpoint issues.
    gateway.upstream.api_keys.clear()
    entra.grants = gateway.upstream.api_keys
    client = gateway.client()

    first = await client.chat.completions.create(model="azure-east/gpt-4o", messages=HELLO)
    second = await client.chat.completions.create(model="azure-east/gpt-4o", messages=HELLO)

    assert first.choices[0].message.content == "echo: hello"
    assert second.choices[0].message.content == "echo: hello"
    [token] = entra.issued
    # One token request, nothing else: the second call reused azure-identity's cached token.
    assert entra.requests == [("POST", f"/{TENANT}/oauth2/v2.0/token")]
    calls = [r for r in gateway.upstream.requests if r.family == "azure"]
    assert len(calls) == 2
    for call in calls:
        assert call.headers["authorization"] == f"Bearer {token}"
        assert "api-key" not in call.headers


async def test_azure_ad_with_a_bad_secret_is_a_clear_auth_error(
    make_gateway: GatewayFactory,
    entra: FakeEntra,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entra.secret = "the-real-secret"  # the configured AZURE_CLIENT_SECRET is now wrong
    gateway = await _azure_ad_gateway(make_gateway)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(openai.APIStatusError) as caught:
        await gateway.client().chat.completions.create(model="azure-east/gpt-4o", messages=HELLO)

    assert caught.value.status_code == 502
    assert entra.token_calls >= 1
    assert not entra.issued
    assert not [r for r in gateway.upstream.requests if r.family == "azure"]
    [entry] = await gateway.ledger()
    assert entry.error is not None
    assert "Azure AD" in entry.error
    assert "AADSTS7000215" in entry.error
    assert SECRET not in entry.error
    assert SECRET not in str(caught.value.body)
    assert SECRET not in caplog.text
