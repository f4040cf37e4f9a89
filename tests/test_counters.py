"""The counter stores' atomic `take` and `add`, on the in-process store and on the test
Redis (when `make test` provides one): the rate limits and budgets rest on them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator

import pytest

from apiary.kit.redis import connect
from apiary.kv import Change, Check, CounterStore, MemoryCounterStore, Outcome
from apiary.kv.redis_store import RedisCounterStore
from tests.conftest import TEST_REDIS

STORES = [
    "memory",
    pytest.param("redis", marks=pytest.mark.skipif(not TEST_REDIS, reason="no test Redis")),
]


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CounterStore]:
    counters: CounterStore
    client = None
    if request.param == "redis":
        assert TEST_REDIS is not None
        client = connect(TEST_REDIS)
        counters = RedisCounterStore(client, namespace=f"test-{uuid.uuid4().hex}")
    else:
        counters = MemoryCounterStore()
    yield counters
    await counters.close()
    if client is not None:
        await client.aclose()


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
    # The counter that had to exist comes back with its total: the budget warning's figure.
    assert await store.take(checks, existing="spend") == Outcome(total=5)
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


async def test_changes_made_soon_are_seen_by_the_next_take(store: CounterStore) -> None:
    """Settling does not wait for its round trip, but a take made after it (the next call
    of the same tenant on this replica) must count it: 90 settled leaves no room for 20."""
    store.add_soon([Change("spend", 90, 60)])
    outcome = await store.take([Check("spend", 20, 100, 60)])
    assert outcome == Outcome(refused=0, value=90)
    store.add_soon([Change("spend", -80, 60), Change("missing", 5, 60, existing=True)])
    assert await store.take([Check("spend", 20, 100, 60)], existing="spend") == Outcome(total=30)
    assert await store.get("missing") == (0, 0)


async def test_a_store_that_cannot_be_reached(caplog: pytest.LogCaptureFixture) -> None:
    """Redis away: a take fails with redis-py's own ConnectionError (which the API answers
    with 503 and Retry-After), and settlements nobody waits for are logged as lost."""
    import redis.exceptions

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = connect(f"redis://127.0.0.1:{port}/0")
    store = RedisCounterStore(client)
    try:
        store.add_soon([Change("spend", 5, 60)])
        with pytest.raises(redis.exceptions.ConnectionError):
            await store.take([Check("requests", 1, 10, 60)])
        assert "counter changes lost: 1 settlement(s) not applied" in caplog.text
    finally:
        await store.close()
        await client.aclose()


async def test_counters_past_a_double_s_printed_digits_stay_exact(store: CounterStore) -> None:
    """A budget of a billion dollars is 10**15 micro-dollars: totals come back digit for
    digit (Lua prints such numbers as 1e+15 unless told otherwise)."""
    big = 10**15 + 7
    spend = [Check("spend", big, 2 * big, 60)]
    assert await store.set_if_absent("spend", 3, ttl_s=60)
    assert await store.take(spend, existing="spend") == Outcome(total=big + 3)
    assert await store.take(spend) == Outcome(refused=0, value=big + 3)
    assert await store.add([Change("spend", big, 60)]) == [2 * big + 3]


async def test_forgetting_a_deleted_tenant_takes_its_counters_and_no_others(
    store: CounterStore,
) -> None:
    """A tenant being deleted: every counter naming it or one of its keys goes, however
    the key is built; another tenant's stay, counts and windows intact."""
    doomed, key, other = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    await store.add(
        [
            Change(f"rl:req:t:{doomed}:1", 1, 60),
            Change(f"spend:{doomed}:202612", 500, 60),
            Change(f"rl:req:k:{key}:1", 1, 60),
            Change(f"rl:req:t:{other}:1", 3, 60),
        ]
    )
    assert await store.forget_containing([doomed, key]) == 3
    assert await store.get(f"spend:{doomed}:202612") == (0, 0)
    assert await store.get(f"rl:req:k:{key}:1") == (0, 0)
    assert (await store.get(f"rl:req:t:{other}:1"))[0] == 3
    assert await store.forget_containing([doomed, key]) == 0


async def test_batches_in_flight_together_each_get_their_own_replies(
    store: CounterStore,
) -> None:
    """Operations queued over several turns of the loop go as several batches, the later
    ones sent before the earlier ones are answered: every caller still gets its own."""
    calls: list[asyncio.Future[list[int | None]]] = []
    for turn in range(10):
        for n in range(5):
            calls.append(asyncio.ensure_future(store.add([Change(f"own-{turn}-{n}", n + 1, 60)])))
        await asyncio.sleep(0)
    takes = [asyncio.ensure_future(store.take([Check("one", 1, 25, 60)])) for _ in range(40)]
    assert [await call for call in calls] == [[n + 1] for _ in range(10) for n in range(5)]
    outcomes = await asyncio.gather(*takes)
    assert sum(outcome.refused is None for outcome in outcomes) == 25
    assert [o.value for o in outcomes if o.refused is not None] == [25] * 15


@pytest.mark.skipif(not TEST_REDIS, reason="no test Redis")
async def test_the_store_recovers_when_redis_drops_it_and_forgets_the_script() -> None:
    """What a Redis restart does to a replica: its connections cut and the scripts it
    loaded gone. A call sent at that moment, on the lane just used, may fail (the API
    answers 503 then); the next ones work again, on a new connection that loads the
    script again."""
    import redis.asyncio
    import redis.exceptions

    assert TEST_REDIS is not None
    namespace = f"test-{uuid.uuid4().hex}"
    client = connect(TEST_REDIS)
    store = RedisCounterStore(client, namespace=namespace)
    admin = redis.asyncio.Redis.from_url(TEST_REDIS)
    try:
        assert await store.take([Check("calls", 1, 10, 60)]) == Outcome()
        await admin.script_flush()  # alone (an operator's flush): no call fails
        assert await store.take([Check("calls", 1, 10, 60)]) == Outcome()
        await admin.script_flush()
        lanes = [c for c in await admin.client_list() if c["name"] == f"{namespace}-counters"]
        assert len(lanes) == 1  # the store's own connection, named for CLIENT LIST
        await admin.client_kill_filter(_id=lanes[0]["id"])
        with contextlib.suppress(redis.exceptions.ConnectionError):
            await store.take([Check("calls", 1, 10, 60)])
        assert await store.take([Check("calls", 1, 10, 60)]) == Outcome()
        assert 3 <= (await store.get("calls"))[0] <= 4
    finally:
        await store.close()
        await client.aclose()
        await admin.aclose()


@pytest.mark.skipif(not TEST_REDIS, reason="no test Redis")
async def test_after_a_pause_a_cut_connection_fails_no_call_and_loses_no_settlement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis restarted while a replica was quiet (its lane cut, the script gone): the next
    batch finds the lane dead by a PING first and goes on a new one, so neither the call
    that comes first nor a settlement riding alone is lost."""
    import redis.asyncio

    from apiary.kv import redis_store

    monkeypatch.setattr(redis_store, "LANE_QUIET_S", 0.05)  # the pause, made short
    assert TEST_REDIS is not None
    namespace = f"test-{uuid.uuid4().hex}"
    client = connect(TEST_REDIS)
    store = RedisCounterStore(client, namespace=namespace)
    admin = redis.asyncio.Redis.from_url(TEST_REDIS)

    async def cut_after_a_pause() -> None:
        await admin.script_flush()
        lanes = [c for c in await admin.client_list() if c["name"] == f"{namespace}-counters"]
        assert len(lanes) == 1
        await admin.client_kill_filter(_id=lanes[0]["id"])
        await asyncio.sleep(0.1)

    try:
        assert await store.take([Check("calls", 1, 10, 60)]) == Outcome()
        await cut_after_a_pause()
        assert await store.take([Check("calls", 1, 10, 60)]) == Outcome()  # not an error
        await cut_after_a_pause()
        store.add_soon([Change("spend", 7, 60)])  # a settlement nobody waits for
        await asyncio.sleep(0.1)  # sent within SETTLE_WITHIN_S
        assert (await store.get("spend"))[0] == 7
        assert (await store.get("calls"))[0] == 2
    finally:
        await store.close()
        await client.aclose()
        await admin.aclose()
