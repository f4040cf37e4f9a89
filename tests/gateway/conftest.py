"""Fixtures for the gateway: an app whose providers all point at the fake upstream, a
tenant with an API key, and the official openai SDK as the client of /v1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import openai
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from apiary.authz.permissions import Role
from apiary.config import CacheSettings, Settings
from apiary.gateway.config import ProviderConfig, RouteConfig
from apiary.main import create_app
from apiary.runtime import Runtime
from apiary.usage.models import LedgerEntry
from tests.factories import TenantFixture, make_api_key, make_tenant
from tests.fakes import DEFAULT_API_KEY, FakeUpstream

# The bundled model beside the fake providers (`make_gateway(local=True)`), really run.
LOCAL = ProviderConfig(name="local", kind="local", models=["smollm2"], max_concurrency=1)


def providers(upstream: FakeUpstream, **overrides: Any) -> list[ProviderConfig]:
    base = upstream.base_url
    configs: dict[str, dict[str, Any]] = {
        "oai": {
            "kind": "openai",
            "base_url": f"{base}/v1",
            "models": ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"],
        },
        "claude": {"kind": "anthropic", "base_url": base, "models": ["claude-sonnet-4"]},
        "azure-east": {"kind": "azure_openai", "base_url": base, "models": ["gpt-4o"]},
        "kimi": {
            "kind": "moonshot",
            "base_url": f"{base}/v1",
            "models": ["kimi-k2.6", "kimi-k2.5"],
        },
        "lab": {"kind": "openai_compatible", "base_url": f"{base}/v1", "models": ["mystery-7b"]},
    }
    result = []
    for name, config in configs.items():
        merged = {"name": name, "api_key": DEFAULT_API_KEY, **config, **overrides.get(name, {})}
        result.append(ProviderConfig.model_validate(merged))
    return result


@dataclass
class Gateway:
    app: FastAPI
    runtime: Runtime
    upstream: FakeUpstream
    tenant: TenantFixture
    key: str

    def client(self, key: str | None = None, **kw: Any) -> openai.AsyncOpenAI:
        transport = httpx2.ASGITransport(app=self.app)
        return openai.AsyncOpenAI(
            base_url="http://apiary.test/v1",
            api_key=key or self.key,
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=transport, base_url="http://apiary.test"),
            **kw,
        )

    def http(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://apiary.test")

    async def ledger(self) -> list[LedgerEntry]:
        await self.runtime.ledger.flush()
        async with self.runtime.session_factory() as session:
            rows = await session.scalars(select(LedgerEntry).order_by(LedgerEntry.created_at))
            return list(rows)


GatewayFactory = Callable[..., Any]


@pytest.fixture
async def make_gateway(
    settings: Settings,
    runtime: Runtime,
    client: httpx.AsyncClient,
    fake_upstream: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[GatewayFactory]:
    """Build a gateway app: `await make_gateway(routes=..., provider_overrides=...)`;
    `local=True` adds the bundled model as provider `local`; `settings_update` replaces
    other settings (e.g. `{"alerts": AlertSettings(...)}`)."""
    opened: list[FastAPI] = []
    contexts: list[Any] = []

    async def build(
        routes: dict[str, RouteConfig] | None = None,
        provider_overrides: dict[str, dict[str, Any]] | None = None,
        prices: dict[str, Any] | None = None,
        cache: dict[str, Any] | None = None,
        local: bool = False,
        settings_update: dict[str, Any] | None = None,
    ) -> Gateway:
        configured = settings.model_copy(
            update={
                # Its own data dir: Qdrant's local mode lets one client hold a folder, and
                # the session's app may already hold the shared one (same database URL).
                "data_dir": tmp_path_factory.mktemp("gateway-data"),
                "providers": providers(fake_upstream, **(provider_overrides or {}))
                + ([LOCAL] if local else []),
                "routes": routes
                or {"default": RouteConfig(models=["oai/gpt-4o-mini", "claude/claude-sonnet-4"])},
                "prices": prices or {},
                "cache": CacheSettings(**(cache or {})),
                **(settings_update or {}),
            }
        )
        app = create_app(configured)
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        contexts.append(context)
        opened.append(app)
        tenant = await make_tenant(runtime, client, f"gw-{len(opened)}")
        key = await make_api_key(runtime, tenant, Role.DEVELOPER)
        return Gateway(app, app.state.runtime, fake_upstream, tenant, key.token)

    yield build
    for context in reversed(contexts):
        await context.__aexit__(None, None, None)


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    built: Gateway = await make_gateway()
    return built


async def minute_to_spare(seconds: float = 5.0) -> None:
    """Request-rate windows are wall-clock minutes: a test counting calls against a rate
    limit starts with at least `seconds` of the minute left, else in the next one."""
    left = 60 - time.time() % 60
    if left < seconds:
        await asyncio.sleep(left + 0.05)
