"""Wake-ups between processes: "execution X has new events", "execution X was cancelled".

A notification carries no data; listeners re-read the database, which stays the one record
of what happened. Embedded, notifications are asyncio events in this process; with Redis,
they go through pub/sub so a worker's events reach every API replica's listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis


class Listener:
    """Set whenever its channel is notified; `wait` returns False on timeout."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)
        woke = self._event.is_set()
        self._event.clear()
        return woke


class Notifier(Protocol):
    async def notify(self, channel: str) -> None: ...

    def listen(self, channel: str) -> contextlib.AbstractAsyncContextManager[Listener]: ...

    async def close(self) -> None: ...


class LocalNotifier:
    def __init__(self) -> None:
        self._listeners: defaultdict[str, set[Listener]] = defaultdict(set)

    async def notify(self, channel: str) -> None:
        for listener in list(self._listeners.get(channel, ())):
            listener.wake()

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[Listener]:
        listener = Listener()
        self._listeners[channel].add(listener)
        try:
            yield listener
        finally:
            self._listeners[channel].discard(listener)
            if not self._listeners[channel]:
                del self._listeners[channel]

    async def close(self) -> None:
        self._listeners.clear()


class RedisNotifier:
    """Pub/sub on Redis; local listeners are also woken directly (no round trip needed)."""

    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis  # only when configured: it costs 20 MiB

        self._redis: Redis = Redis.from_url(url)
        self._local = LocalNotifier()

    async def notify(self, channel: str) -> None:
        await self._local.notify(channel)
        await self._redis.publish(f"apiary:{channel}", b"1")

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[Listener]:
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(f"apiary:{channel}")
        async with self._local.listen(channel) as listener:

            async def pump() -> None:
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        listener.wake()

            task = asyncio.create_task(pump())
            try:
                yield listener
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                with contextlib.suppress(Exception):
                    await pubsub.unsubscribe()
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        await self._local.close()
        await self._redis.aclose()


def create_notifier(redis_url: str | None) -> Notifier:
    return RedisNotifier(redis_url) if redis_url else LocalNotifier()


def events_channel(execution_id: object) -> str:
    return f"execution:{execution_id}:events"


def cancel_channel(execution_id: object) -> str:
    return f"execution:{execution_id}:cancel"
