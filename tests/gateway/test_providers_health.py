"""GET /api/v1/providers/health: each provider's circuit breaker, read-only, for every role."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageParam

from apiary.authz.permissions import Role
from tests.factories import make_member, make_super_admin
from tests.fakes import Fail
from tests.gateway.conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.both_databases

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {provider["name"]: provider for provider in body["providers"]}


async def test_a_failing_provider_shows_an_open_breaker(make_gateway: GatewayFactory) -> None:
    gateway: Gateway = await make_gateway(provider_overrides={"oai": {"max_retries": 0}})
    http = gateway.http()
    headers = {"Authorization": f"Bearer {gateway.key}"}
    before = await http.get("/api/v1/providers/health", headers=headers)
    assert before.status_code == 200, before.text
    providers = by_name(before.json())
    assert list(providers) == ["oai", "claude", "azure-east", "kimi", "lab"]
    assert providers["oai"]["breaker"] == "closed"
    assert providers["oai"]["kind"] == "openai"
    assert "gpt-4o-mini" in providers["oai"]["models"]
    assert "base_url" not in providers["oai"]
    assert "api_key" not in providers["oai"]

    gateway.upstream.set_default("openai", Fail(500))
    client = gateway.client()
    for _ in range(5):  # each call fails over to claude; oai's breaker counts the failures
        await client.chat.completions.create(model="default", messages=HELLO)

    after = by_name((await http.get("/api/v1/providers/health", headers=headers)).json())
    assert after["oai"]["breaker"] == "open"
    assert after["oai"]["consecutive_failures"] == 5
    assert 0 < after["oai"]["retry_in_s"] <= 30
    assert after["claude"]["breaker"] == "closed"
    assert after["claude"]["retry_in_s"] is None


async def test_every_role_may_read_it(make_gateway: GatewayFactory) -> None:
    gateway: Gateway = await make_gateway()
    http = gateway.http()
    viewer = await make_member(http, gateway.tenant, Role.VIEWER)
    # The super admin signed in to the platform, with no tenant, sees it on its overview too.
    platform = await make_super_admin(gateway.runtime, http)
    for caller in (viewer, platform):
        response = await http.get("/api/v1/providers/health", headers=caller.headers)
        assert response.status_code == 200, response.text
        assert len(response.json()["providers"]) == 5
    anonymous = await http.get("/api/v1/providers/health")
    assert anonymous.status_code == 401
