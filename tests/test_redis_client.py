"""The process's Redis client (`apiary.kit.redis`), on the test Redis: what a Redis
restart does to the connections it pooled."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from apiary.kit.redis import connect
from tests.conftest import TEST_REDIS

pytestmark = pytest.mark.skipif(not TEST_REDIS, reason="no test Redis")


async def test_connections_redis_closed_are_replaced_not_failed() -> None:
    """A restart closes every pooled connection of every replica. The next commands get
    new ones: none fails (a budget's first call after a restart was answered 503 when the
    pool handed out a closed connection)."""
    import redis.asyncio

    assert TEST_REDIS is not None
    client = connect(TEST_REDIS)
    admin = redis.asyncio.Redis.from_url(TEST_REDIS)
    key = f"test-{uuid.uuid4().hex}"
    try:
        ids = await asyncio.gather(*(client.client_id() for _ in range(8)))  # at once:
        assert len(set(ids)) == 8  # eight connections, now idle in the pool
        for client_id in ids:
            await admin.client_kill_filter(_id=str(client_id))
        await asyncio.sleep(0.1)  # Redis has closed them

        counts = await asyncio.gather(*(client.incr(key) for _ in range(8)))
        assert sorted(counts) == list(range(1, 9))
        assert not set(ids) & {int(c["id"]) for c in await admin.client_list()}  # all new
    finally:
        await admin.delete(key)
        await client.aclose()
        await admin.aclose()
