"""Two `apiary serve` replicas over one PostgreSQL and one Redis: credentials, budgets,
rate limits and the response cache are the same whichever replica a request reaches."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.topology.conftest import new_key, new_tenant
from tests.topology.harness import Topology

pytestmark = pytest.mark.services

KEY_CACHE_S = 5.0  # README / docs/security.md: verified keys are cached in process 5 s


async def test_sign_in_on_a_works_on_b_and_keys_travel_between_replicas(
    cluster: Topology,
) -> None:
    tenant = await new_tenant(cluster, "replicas")  # signed in on A
    async with cluster.http("api-a") as a, cluster.http("api-b") as b:
        me = await b.get("/api/v1/auth/me", headers=tenant.headers)
        assert me.status_code == 200, me.text

        key_id, secret = await new_key(cluster, tenant, on="api-b")
        bearer = {"Authorization": f"Bearer {secret}"}
        assert (await a.get("/api/v1/agents", headers=bearer)).status_code == 200  # at once
        assert (await b.get("/api/v1/agents", headers=bearer)).status_code == 200  # cached on B

        revoked = await a.delete(f"/api/v1/api-keys/{key_id}", headers=tenant.headers)
        assert revoked.status_code == 200, revoked.text
        assert (await a.get("/api/v1/agents", headers=bearer)).status_code == 401  # A: at once
        started = time.monotonic()
        while (await b.get("/api/v1/agents", headers=bearer)).status_code != 401:
            assert time.monotonic() - started < KEY_CACHE_S + 1, "B still accepts a revoked key"
            await asyncio.sleep(0.1)
