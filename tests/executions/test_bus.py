"""The Redis notifier that carries "new events" and "cancel" between processes: one
subscription connection per process however many listen, and listeners that hear about a
dropped connection instead of waiting in silence."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from apiary.kit.notify import Listener, RedisNotifier
from apiary.kit.redis import connect
from tests.conftest import TEST_REDIS

pytestmark = pytest.mark.skipif(not TEST_REDIS, reason="needs the test Redis")


@pytest.fixture
async def notifiers() -> AsyncIterator[tuple[RedisNotifier, RedisNotifier]]:
    """Two processes' notifiers: an API replica's and a worker's."""
    assert TEST_REDIS is not None
    clients = connect(TEST_REDIS), connect(TEST_REDIS)  # each process has its own
    api, worker = RedisNotifier(clients[0]), RedisNotifier(clients[1])
    yield api, worker
    await api.close()
    await worker.close()
    for client in clients:
        await client.aclose()


async def _subscription_connections() -> int:
    import redis.asyncio

    assert TEST_REDIS is not None
    admin = redis.asyncio.Redis.from_url(TEST_REDIS)
    try:
        return sum("P" in client["flags"] for client in await admin.client_list())
    finally:
        await admin.aclose()


async def test_many_listeners_share_one_connection_and_each_hears_its_own(
    notifiers: tuple[RedisNotifier, RedisNotifier],
) -> None:
    """150 SSE watchers on one replica (past redis-py's 100-connection pool, where the
    101st stream used to be cut): one subscription connection, every message delivered to
    its own channel's listener only."""
    api, worker = notifiers
    before = await _subscription_connections()
    channels = [f"execution:{uuid.uuid4()}:events" for _ in range(150)]
    async with contextlib.AsyncExitStack() as stack:
        listeners: list[Listener] = [
            await stack.enter_async_context(api.listen(channel)) for channel in channels
        ]
        # a second listener on one channel shares the subscription
        twin = await stack.enter_async_context(api.listen(channels[0]))
        assert await _subscription_connections() == before + 1
        for index, channel in enumerate(channels):
            await worker.notify(channel, f"event {index}".encode())
        for index, listener in enumerate(listeners):
            assert await listener.wait(5.0)
            assert listener.take() == [f"event {index}".encode()]
        assert await twin.wait(5.0)
        assert twin.take() == [b"event 0"]
    assert await _subscription_connections() <= before + 1


async def test_a_dropped_connection_wakes_listeners_and_messages_flow_again(
    notifiers: tuple[RedisNotifier, RedisNotifier],
) -> None:
    """Redis restarting: a listener is woken with nothing to take (so the SSE stream reads
    the database for what it missed), and once redis-py has reconnected and subscribed
    again, the next message arrives."""
    import redis.asyncio

    assert TEST_REDIS is not None
    api, worker = notifiers
    channel = f"execution:{uuid.uuid4()}:cancel"
    async with api.listen(channel) as listener:
        admin = redis.asyncio.Redis.from_url(TEST_REDIS)
        try:
            await admin.client_kill_filter(_type="pubsub")
        finally:
            await admin.aclose()
        assert await listener.wait(5.0)
        assert listener.take() is None  # "something was missed: read the record"
        for _ in range(50):  # until the subscription is back
            await worker.notify(channel, b"cancel")
            if await listener.wait(0.2) and listener.take():
                break
        else:
            pytest.fail("no message reached the listener after the reconnect")
        await asyncio.sleep(0)
