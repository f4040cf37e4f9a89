"""The swarm's per-tenant bound on the test Redis: one bound for every process, leases that
lapse when their process dies, nothing taken by a sub-agent cancelled while it waited."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from apiary.kit.redis import connect
from apiary.runtime import Runtime
from apiary.swarm.slots import RedisSlots, SlotsClosed
from tests.conftest import TEST_REDIS

pytestmark = pytest.mark.services


Pools = Callable[..., RedisSlots]


@pytest.fixture
async def pools() -> AsyncIterator[Pools]:
    """Makes a process's pool of slots on the test Redis; closes them all at the end."""
    made: list[RedisSlots] = []
    assert TEST_REDIS is not None
    client = connect(TEST_REDIS)  # one process's client per pool would be closer; one will do

    def make(limit: int, **options: float) -> RedisSlots:
        made.append(RedisSlots(client, limit=limit, **options))
        return made[-1]

    yield make
    for pool in made:
        await pool.close()
    await client.aclose()


async def test_the_bound_holds_across_processes(pools: Pools) -> None:
    tenant = uuid.uuid4()
    first, second = pools(3), pools(3)  # two processes' pools on one Redis
    running, most = 0, 0

    async def subagent(pool: RedisSlots) -> None:
        nonlocal running, most
        async with pool.of(tenant):
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.05)
            running -= 1

    await asyncio.wait_for(
        asyncio.gather(*(subagent(pool) for pool in [first, second] * 6)), timeout=20
    )
    assert most == 3  # the bound was reached, never passed
    other = pools(3).of(uuid.uuid4())  # another tenant has a bound of its own
    async with other, other, other:
        pass


async def test_a_dead_process_frees_its_slots_when_its_leases_lapse(pools: Pools) -> None:
    tenant = uuid.uuid4()
    holder = f"""
import asyncio, sys, uuid
from apiary.kit.redis import connect
from apiary.swarm.slots import RedisSlots, SlotsClosed
async def main():
    pool = RedisSlots(connect({TEST_REDIS!r}), limit=1, lease_s=3.0)
    async with pool.of(uuid.UUID({str(tenant)!r})):
        print("holding", flush=True)
        await asyncio.sleep(3600)
asyncio.run(main())
"""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", holder, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        assert (await process.stdout.readline()).strip() == b"holding"
        pool = pools(1, retry_s=0.05)
        # Alive, it keeps renewing its lease past the lease's life: the slot stays taken.
        # (A 3 s lease: a renewal a moment late on a loaded machine does not lose it.)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(4.5), pool.of(tenant):
                pass
        process.kill()  # SIGKILL: it gives nothing back
        await process.wait()
        killed = time.monotonic()
        async with asyncio.timeout(10.0), pool.of(tenant):
            waited = time.monotonic() - killed
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert waited <= 4.5  # its last lease lapsed within a lease's life (3 s)


async def test_a_sub_agent_cancelled_while_waiting_takes_no_slot(pools: Pools) -> None:
    pool = pools(1, retry_s=0.05)
    slots = pool.of(uuid.uuid4())
    async with slots:
        waiting = asyncio.create_task(slots.__aenter__())
        await asyncio.sleep(0.2)  # refused, asking again every 50 ms
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    async with asyncio.timeout(1.0), slots:  # the one slot is free again
        pass


async def test_a_process_that_stops_gives_its_slots_back_at_once(pools: Pools) -> None:
    tenant = uuid.uuid4()
    stopping = pools(1)
    held = stopping.of(tenant)
    await held.__aenter__()  # a sub-agent still running when its process stops
    await stopping.close()
    async with asyncio.timeout(1.0), pools(1, retry_s=0.05).of(tenant):  # not 30 s later
        pass


async def test_room_goes_to_the_oldest_waiter_of_any_process(pools: Pools) -> None:
    tenant = uuid.uuid4()
    busy, other = pools(2, retry_s=0.05), pools(2, retry_s=0.05)
    stop = asyncio.Event()

    async def churn() -> None:  # one process's sub-agents, ending and starting again
        while not stop.is_set():
            async with busy.of(tenant):
                await asyncio.sleep(0.01)

    churning = [asyncio.create_task(churn()) for _ in range(6)]
    try:
        await asyncio.sleep(0.2)  # the bound is full, and this process has its own waiters
        async with asyncio.timeout(1.0), other.of(tenant):  # yet the other one gets in
            pass
    finally:
        stop.set()
        await asyncio.gather(*churning)


async def test_a_stopping_process_fails_its_waiters_and_hands_out_no_more(pools: Pools) -> None:
    pool = pools(1, retry_s=0.05)
    slots = pool.of(uuid.uuid4())
    await slots.__aenter__()
    waiting = asyncio.create_task(slots.__aenter__())
    await asyncio.sleep(0.1)
    await pool.close()
    with pytest.raises(SlotsClosed):
        await asyncio.wait_for(waiting, 1.0)
    with pytest.raises(SlotsClosed):
        await slots.__aenter__()


async def test_a_sub_agent_waits_out_a_redis_that_does_not_answer() -> None:
    client = connect("redis://127.0.0.1:9/0")  # nothing listens
    gone = RedisSlots(client, limit=5, retry_s=0.05)
    waiting = asyncio.create_task(gone.of(uuid.uuid4()).__aenter__())
    await asyncio.sleep(1.0)
    assert not waiting.done()  # still waiting to be let in, not failed
    waiting.cancel()
    await gone.close()
    await client.aclose()


async def test_the_engine_bounds_a_tenant_in_redis(runtime: Runtime) -> None:
    assert TEST_REDIS is not None
    assert runtime.swarm_slots is not None  # configured with Redis: the bound is shared
    tenant = uuid.uuid4()
    key = f"apiary:swarm:slots:{tenant}:leases"
    redis = Redis.from_url(TEST_REDIS)
    try:
        async with runtime.swarm.tenant_slots(tenant):
            assert await redis.zcard(key) == 1  # a running sub-agent's lease, for all to see
        for _ in range(100):  # given back at once, in the background
            if await redis.zcard(key) == 0:
                break
            await asyncio.sleep(0.02)
        assert await redis.zcard(key) == 0
    finally:
        await redis.aclose()
