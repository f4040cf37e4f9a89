"""Fixtures for swarm tests: a gateway app on the fake upstream, an agent, and helpers to
start an execution and wait for it to end."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from apiary.gateway.config import RouteConfig
from tests.gateway.conftest import Gateway, GatewayFactory, make_gateway

__all__ = ["make_gateway"]

FINAL = {"succeeded", "failed", "cancelled", "budget_exceeded", "timed_out"}
# One provider only, so a scripted failure is not hidden by the gateway's fallback.
ROUTES = {"default": RouteConfig(models=["oai/gpt-4o-mini"])}
PRICES = {"oai/gpt-4o-mini": {"input": 1000.0, "output": 1000.0}}  # $0.001 per token


@dataclass
class Swarm:
    gateway: Gateway
    http: httpx.AsyncClient
    headers: dict[str, str]
    agent_id: str

    async def start(self, task: str = "Plan a trip", **body: Any) -> dict[str, Any]:
        headers = dict(self.headers)
        if key := body.pop("idempotency_key", None):
            headers["Idempotency-Key"] = key
        response = await self.http.post(
            "/api/v1/executions",
            headers=headers,
            json={"agent_id": self.agent_id, "task": task, **body},
        )
        assert response.status_code in (200, 202), response.text
        document: dict[str, Any] = response.json()
        return document

    async def get(self, execution_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/api/v1/executions/{execution_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    async def wait(self, execution_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            execution = await self.get(execution_id)
            if execution["state"] in FINAL:
                return execution
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"still {execution['state']} after {timeout_s} s")
            await asyncio.sleep(0.05)


async def build_swarm(make_gateway: GatewayFactory, **agent: Any) -> Swarm:
    gateway: Gateway = await make_gateway(routes=ROUTES, prices=PRICES)
    http = gateway.http()
    headers = {"Authorization": f"Bearer {gateway.key}"}
    created = await http.post(
        "/api/v1/agents",
        headers=headers,
        json={"name": "planner", "model": "default", "max_subagents": 10, **agent},
    )
    assert created.status_code == 201, created.text
    return Swarm(gateway, http, headers, created.json()["id"])


@pytest.fixture
async def swarm(make_gateway: GatewayFactory) -> Swarm:
    return await build_swarm(make_gateway)
