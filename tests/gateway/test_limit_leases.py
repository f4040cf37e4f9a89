"""Leases of the shared counters (apiary/limits/enforcer.py): with Redis, a replica takes
a block of request slots and budget for the next calls, so most calls make no round trip,
and gives back what it did not use; near a limit every call is taken exactly."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from apiary.auth.context import Actor, AuthContext
from apiary.authz.permissions import Role
from apiary.errors import TooManyRequests
from apiary.kv import Check, CounterStore, Outcome, redis_store
from apiary.limits.enforcer import Admission, LimitEnforcer
from tests.conftest import TEST_REDIS
from tests.factories import make_api_key
from tests.gateway.conftest import Gateway, minute_to_spare
from tests.gateway.test_cache_and_limits import set_limits

pytestmark = pytest.mark.skipif(not TEST_REDIS, reason="leases are taken from Redis")


class CountingTakes:
    """The runtime's counter store, counting the takes (round trips to admit) made on it."""

    def __init__(self, store: CounterStore) -> None:
        self._store = store
        self.takes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def take(self, checks: Sequence[Check], *, existing: str | None = None) -> Outcome:
        self.takes += 1
        return await self._store.take(checks, existing=existing)


async def _developer(gateway: Gateway) -> AuthContext:
    key = await make_api_key(gateway.runtime, gateway.tenant, Role.DEVELOPER)
    async with gateway.http() as http:
        me = (await http.get("/api/v1/auth/me", headers=key.headers)).json()
    return AuthContext(
        role=Role.DEVELOPER,
        tenant_id=uuid.UUID(me["tenant_id"]),
        actor=Actor(api_key_id=uuid.UUID(me["api_key_id"])),
    )


async def _away_from_a_minute_boundary() -> None:
    """Request windows are minutes: a test counting in one waits out a boundary near."""
    await minute_to_spare(15)


async def test_far_from_its_limits_a_replica_takes_a_lease_for_many_calls(
    gateway: Gateway,
) -> None:
    await set_limits(
        gateway, gateway.tenant.admin, key_rpm=64_000, tenant_tpm=10_000_000, monthly_budget_usd=1e6
    )
    auth = await _developer(gateway)
    await _away_from_a_minute_boundary()
    counting = CountingTakes(gateway.runtime.counters)
    enforcer = LimitEnforcer(counting, gateway.runtime.limits._factory)

    # The month's first call starts its spend counter from the ledger, taking exactly.
    first = await enforcer.admit(auth, estimate_cost_usd=lambda: 0.01)
    await enforcer.settle(first, tokens=100, cost_usd=0.005)
    counting.takes = 0

    for _ in range(64):
        admission = await enforcer.admit(auth, estimate_cost_usd=lambda: 0.01)
        await enforcer.settle(admission, tokens=100, cost_usd=0.005)

    assert counting.takes == 2  # two leases of 32 calls
    enforcer.give_back_leases()


async def test_what_a_lease_did_not_use_goes_back(gateway: Gateway) -> None:
    """After the lease ends, the shared counters hold exactly what the calls used: one
    request slot each and their settled cost, none of the block taken ahead."""
    await set_limits(gateway, gateway.tenant.admin, key_rpm=64_000, monthly_budget_usd=1e6)
    auth = await _developer(gateway)
    await _away_from_a_minute_boundary()
    counters, enforcer = gateway.runtime.counters, gateway.runtime.limits
    minute = int(time.time() // 60)
    month = time.strftime("%Y%m", time.gmtime())
    spend_key = f"spend:{auth.scope.tenant_id}:{month}"
    first = await enforcer.admit(auth, estimate_cost_usd=lambda: 0.01)  # starts the spend
    await enforcer.settle(first, tokens=10, cost_usd=0.002)
    await counters.add([])
    spent_before, _ = await counters.get(spend_key)

    admissions: list[Admission] = [
        await enforcer.admit(auth, estimate_cost_usd=lambda: 0.01) for _ in range(5)
    ]
    assert all(admission.lease is not None for admission in admissions)
    for admission in admissions:
        await enforcer.settle(admission, tokens=10, cost_usd=0.002)
    enforcer.give_back_leases()
    await counters.add([])  # a round trip: what was given back soon has been applied

    requests, _ = await counters.get(f"rl:req:k:{auth.actor.api_key_id}:{minute}")
    spent, _ = await counters.get(spend_key)
    assert requests == 6
    assert spent - spent_before == 5 * 2_000  # micro-dollars: $0.002 a call


async def test_a_tenant_s_counters_deleted_under_a_lease_stay_deleted(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleting a tenant deletes its counters (privacy/service.py). A lease this replica
    still holds ends afterwards (at its expiry, a second later), and a settlement may still
    be waiting for its round trip: neither starts a deleted counter again."""
    await set_limits(gateway, gateway.tenant.admin, key_rpm=64_000, tenant_tpm=10_000_000)
    auth = await _developer(gateway)
    await _away_from_a_minute_boundary()
    counters, enforcer = gateway.runtime.counters, gateway.runtime.limits
    minute = int(time.time() // 60)
    requests = f"rl:req:k:{auth.actor.api_key_id}:{minute}"
    tokens = f"rl:tok:t:{auth.scope.tenant_id}:{minute}"
    admission = await enforcer.admit(auth, estimate_cost_usd=lambda: 0.01)
    assert admission.lease is not None
    await counters.add([])
    assert (await counters.get(requests))[0] > 1  # the lease's block, taken ahead

    # Settlements wait for the next call's round trip, or this long (5 s here, not 10 ms,
    # so the deletion surely comes before it).
    monkeypatch.setattr(redis_store, "SETTLE_WITHIN_S", 5.0)
    await enforcer.settle(admission, tokens=10, cost_usd=0.002)  # queued, not yet sent
    assert await counters.forget_containing([str(auth.scope.tenant_id), str(auth.actor.api_key_id)])
    enforcer.give_back_leases()
    await counters.add([])  # a round trip: anything given back has been applied

    assert await counters.get(requests) == (0, 0)
    assert await counters.get(tokens) == (0, 0)


async def test_two_replicas_on_leases_never_pass_a_request_limit(gateway: Gateway) -> None:
    """6,400 a minute: leases of 32 calls each. Two replicas taking turns admit at most
    the limit, and at least the limit less what each may hold unused (a 64th of it)."""
    limit = 6_400
    await set_limits(gateway, gateway.tenant.admin, key_rpm=limit)
    auth = await _developer(gateway)
    await _away_from_a_minute_boundary()
    factory = gateway.runtime.limits._factory
    replicas = [LimitEnforcer(gateway.runtime.counters, factory) for _ in range(2)]
    admitted = refused = 0
    for turn in range(limit + 200):
        try:
            await replicas[turn % 2].admit(auth, estimate_cost_usd=lambda: 0.0)
            admitted += 1
        except TooManyRequests:
            refused += 1

    assert admitted <= limit
    assert admitted >= limit - 2 * (limit // 64)
    assert refused == limit + 200 - admitted
    for replica in replicas:
        replica.give_back_leases()
