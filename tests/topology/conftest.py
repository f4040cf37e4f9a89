"""Fixtures for the production-topology scenarios: one `Topology` (tests/topology/harness.py)
for the whole package, brought back to health before each test, and a fresh tenant per
test signed in the way a person signs in."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.topology.harness import Topology

PASSWORD = "correct-horse-battery"
# Short enough that a killed worker's job is taken up again within the test's budget.
VISIBILITY_S = 8
LEASE_S = 4
# A tenant's running sub-agents, across both workers (above the 15 the kill scenario has
# in flight at once).
TENANT_CONCURRENCY = 16
FINAL = {"succeeded", "failed", "cancelled", "budget_exceeded", "timed_out"}


@pytest.fixture(scope="session")
async def topology(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Topology]:
    workdir: Path = tmp_path_factory.mktemp("topology")
    up = await Topology.up(
        workdir,
        extra_env={
            "APIARY_SWARM__VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
            "APIARY_SWARM__LEASE_S": str(LEASE_S),
            "APIARY_SWARM__TENANT_CONCURRENCY": str(TENANT_CONCURRENCY),
            # An execution whose message Redis lost runs again within seconds.
            "APIARY_SWARM__REQUEUE_AFTER_S": "2",
            "APIARY_SWARM__REQUEUE_INTERVAL_S": "1",
        },
    )
    yield up
    await up.down()


@pytest.fixture
async def cluster(topology: Topology) -> AsyncIterator[Topology]:
    """The topology with everything up and the fake upstream back to its echo."""
    await topology.heal()
    topology.upstream.requests.clear()
    topology.upstream._scripts.clear()
    topology.upstream._defaults.clear()
    topology.upstream.answers.clear()
    delays = dict(topology.upstream.model_delays)
    yield topology
    topology.upstream.model_delays = delays
    await topology.heal()
    deaths, topology.deaths = topology.deaths, []
    assert not deaths, deaths  # a process that died unasked is a bug


@dataclass
class Tenant:
    name: str
    admin_email: str
    token: str  # the admin's access token, from a sign-in on replica A

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def sign_in(http: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    response = await http.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def new_tenant(topology: Topology, prefix: str) -> Tenant:
    """A tenant created by the super admin on replica A, its admin signed in on A."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    email = f"admin@{name}.example"
    async with topology.http("api-a") as http:
        root = await sign_in(http, "admin@apiary.local", topology.super_admin_password)
        created = await http.post(
            "/api/v1/tenants",
            headers={"Authorization": f"Bearer {root}"},
            # The unlimited plan: these scenarios test the topology, not entitlements.
            json={
                "name": name,
                "plan": "enterprise",
                "admin_email": email,
                "admin_password": PASSWORD,
            },
        )
        assert created.status_code == 201, created.text
        return Tenant(name, email, await sign_in(http, email))


async def new_key(
    topology: Topology, tenant: Tenant, *, on: str = "api-a", role: str = "developer"
) -> tuple[str, str]:
    """(key id, secret) created through replica `on`."""
    async with topology.http(on) as http:
        created = await http.post(
            "/api/v1/api-keys", headers=tenant.headers, json={"name": "k", "role": role}
        )
        assert created.status_code == 201, created.text
        return created.json()["id"], created.json()["key"]


async def wait_final(
    http: httpx.AsyncClient, execution_id: str, headers: dict[str, str], timeout_s: float
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    execution: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        response = await http.get(f"/api/v1/executions/{execution_id}", headers=headers)
        if response.status_code == 200:
            execution = response.json()
            if execution["state"] in FINAL:
                return execution
        await asyncio.sleep(0.2)
    raise AssertionError(f"not finished after {timeout_s} s: {execution.get('state')}")
