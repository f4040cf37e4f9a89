"""The swarm's per-tenant bound on the test Redis: one bound for every process, leases that
lapse when their process dies, nothing taken by a sub-agent cancelled while it waited."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from apiary.swarm.slots import RedisSlots
from tests.conftest import TEST_REDIS

pytestmark = pytest.mark.services


Pools = Callable[..., RedisSlots]


@pytest.fixture
async def pools() -> AsyncIterator[Pools]:
    """Makes a process's pool of slots on the test Redis; closes them all at the end."""
    made: list[RedisSlots] = []

    def make(limit: int, **options: float) -> RedisSlots:
        assert TEST_REDIS is not None
        made.append(RedisSlots(TEST_REDIS, limit=limit, **options))
        return made[-1]

    yield make
    for pool in made:
        await pool.close()


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
from apiary.swarm.slots import RedisSlots
async def main():
    pool = RedisSlots({TEST_REDIS!r}, limit=1, lease_s=1.0)
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
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2.0), pool.of(tenant):
                pass
        process.kill()  # SIGKILL: it gives nothing back
        await process.wait()
        killed = time.monotonic()
        async with asyncio.timeout(5.0), pool.of(tenant):
            waited = time.monotonic() - killed
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert waited <= 1.5  # its last lease lapsed within a lease's life


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
