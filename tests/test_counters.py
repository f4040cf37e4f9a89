"""The counter stores' atomic `take` and `add`, on the in-process store and on the test
Redis (when `make test` provides one): the rate limits and budgets rest on them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from apiary.kv import Change, Check, CounterStore, MemoryCounterStore, Outcome, RedisCounterStore
from tests.conftest import TEST_REDIS

STORES = [
    "memory",
    pytest.param("redis", marks=pytest.mark.skipif(not TEST_REDIS, reason="no test Redis")),
]


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CounterStore]:
    counters: CounterStore
    if request.param == "redis":
        assert TEST_REDIS is not None
        counters = RedisCounterStore(TEST_REDIS, namespace=f"test-{uuid.uuid4().hex}")
    else:
        counters = MemoryCounterStore()
    yield counters
    await counters.close()


async def test_a_call_that_fits_adds_to_every_counter(store: CounterStore) -> None:
    checks = [Check("requests", 1, 2, 60), Check("tokens", 0, 100, 60), Check("spend", 30, 100, 60)]
    assert await store.take(checks) == Outcome()
    assert (await store.get("requests"))[0] == 1
    assert (await store.get("tokens"))[0] == 0  # a look adds nothing
    assert (await store.get("spend"))[0] == 30
    assert 0 < (await store.get("requests"))[1] <= 60  # a window was started


async def test_a_refused_call_adds_nothing_anywhere(store: CounterStore) -> None:
    await store.add([Change("spend", 90, 60)])
    checks = [Check("requests", 1, 5, 60), Check("spend", 20, 100, 60)]
    assert await store.take(checks) == Outcome(refused=1, value=90)
    assert (await store.get("requests"))[0] == 0  # the window that fitted was not charged
    assert (await store.get("spend"))[0] == 90


async def test_limits_are_inclusive_and_a_look_refuses_at_the_limit(store: CounterStore) -> None:
    assert await store.take([Check("requests", 1, 1, 60)]) == Outcome()
    assert await store.take([Check("requests", 1, 1, 60)]) == Outcome(refused=0, value=1)
    await store.add([Change("tokens", 99, 60)])
    assert await store.take([Check("tokens", 0, 100, 60)]) == Outcome()
    await store.add([Change("tokens", 1, 60)])
    assert await store.take([Check("tokens", 0, 100, 60)]) == Outcome(refused=0, value=100)


async def test_a_counter_that_must_exist(store: CounterStore) -> None:
    checks = [Check("requests", 1, 10, 60), Check("spend", 5, 100, 60)]
    assert await store.take(checks, existing="spend") == Outcome(missing=True)
    assert (await store.get("requests"))[0] == 0
    assert await store.set_if_absent("spend", 0, ttl_s=60)
    assert await store.take(checks, existing="spend") == Outcome()
    assert (await store.get("spend"))[0] == 5


async def test_concurrent_takes_never_pass_the_limit(store: CounterStore) -> None:
    """On Redis, 25 connections racing; in memory, `take` never awaits, so this holds by
    construction there and the test checks the arithmetic."""
    outcomes = await asyncio.gather(*[store.take([Check("spend", 10, 100, 60)]) for _ in range(25)])
    assert sum(outcome.refused is None for outcome in outcomes) == 10
    assert (await store.get("spend"))[0] == 100


async def test_add_returns_the_totals_and_can_take_back(store: CounterStore) -> None:
    assert await store.add([Change("tokens", 7, 60), Change("spend", 50, 60)]) == [7, 50]
    assert await store.add([Change("spend", -20, 60)]) == [30]


async def test_a_change_to_an_existing_counter_only(store: CounterStore) -> None:
    """Settling a call must not start a spend counter the store lost: the next admission
    starts it from the ledger instead."""
    assert await store.add([Change("tokens", 5, 60), Change("spend", -4, 60, existing=True)]) == [
        5,
        None,
    ]
    assert await store.get("spend") == (0, 0)
    assert await store.set_if_absent("spend", 90, ttl_s=60)
    assert await store.add([Change("spend", -4, 60, existing=True)]) == [86]


async def test_concurrent_adds_each_get_their_own_totals(store: CounterStore) -> None:
    """Redis applies concurrent `add`s in shared round trips: each caller must still get
    the totals of its own changes, in order."""
    results = await asyncio.gather(
        *[store.add([Change("calls", 1, 60), Change(f"own-{n}", n, 60)]) for n in range(20)]
    )
    assert sorted(total or 0 for total, _ in results) == list(range(1, 21))
    assert [own for _, own in results] == list(range(20))
    assert (await store.get("calls"))[0] == 20
