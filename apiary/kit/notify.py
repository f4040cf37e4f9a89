"""Wake-ups between processes: "execution X has new events", "document Y moved on",
"execution X was cancelled". Channels are named by their domains (`executions.bus`,
`knowledge.events`); this module only carries them.

A notification may carry a message (an execution's new events, encoded): listeners use it
instead of reading the database, which stays the one record of what happened; they go
back to it whenever a message is missing. Embedded, notifications are asyncio events in
this process; with Redis, they go through pub/sub so a worker's events reach every API
replica's listeners.
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


MAX_HELD_MESSAGES = 1000  # a listener that falls this far behind re-reads the database


class Listener:
    """Set whenever its channel is notified; `wait` returns False on timeout. Keeps the
    notifications' messages until `take`."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._messages: list[bytes] = []
        self._incomplete = False  # a wake-up came without its message, or one was dropped

    def wake(self, message: bytes | None = None) -> None:
        if message is None or len(self._messages) >= MAX_HELD_MESSAGES:
            self._incomplete = True
            self._messages.clear()
        elif not self._incomplete:
            self._messages.append(message)
        self._event.set()

    def take(self) -> list[bytes] | None:
        """The messages since the last call, in arrival order; None if any is missing (a
        bare wake-up, or too many held), so the caller must read the record instead."""
        messages, self._messages = self._messages, []
        if self._incomplete:
            self._incomplete = False
            return None
        return messages

    async def wait(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)
        woke = self._event.is_set()
        self._event.clear()
        return woke


class Notifier(Protocol):
    async def notify(self, channel: str, message: bytes | None = None) -> None: ...

    def listen(self, channel: str) -> contextlib.AbstractAsyncContextManager[Listener]: ...

    async def close(self) -> None: ...


class LocalNotifier:
    def __init__(self) -> None:
        self._listeners: defaultdict[str, set[Listener]] = defaultdict(set)

    async def notify(self, channel: str, message: bytes | None = None) -> None:
        for listener in list(self._listeners.get(channel, ())):
            listener.wake(message)

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

    def wake_all(self) -> None:
        """Wake every listener without a message: what they missed must be read again."""
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                listener.wake()

    async def close(self) -> None:
        self._listeners.clear()


class RedisNotifier:
    """Pub/sub on Redis, over one subscription connection per process: each listener joins
    its channel's local listeners, and the process is subscribed to a channel while it has
    any. (A connection per listener capped an API replica at redis-py's 100 connections:
    the next SSE watcher's stream was cut, and every running execution held one on its
    worker.) Local listeners are also woken directly (no round trip needed), so they
    receive a message twice: what it carries must be safe to apply twice."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis  # shared by the process (apiary.kit.redis), which closes it
        self._local = LocalNotifier()
        self._pubsub = self._redis.pubsub()
        self._listening: dict[str, int] = {}  # subscribed channel -> its local listeners
        self._changing = asyncio.Lock()  # SUBSCRIBE and UNSUBSCRIBE leave in count order
        self._reader: asyncio.Task[None] | None = None

    async def notify(self, channel: str, message: bytes | None = None) -> None:
        await self._local.notify(channel, message)
        await self._redis.publish(f"apiary:{channel}", message or b"")

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[Listener]:
        name = f"apiary:{channel}"
        async with self._local.listen(channel) as listener:
            async with self._changing:
                if name not in self._listening:
                    await self._pubsub.subscribe(name)
                self._listening[name] = self._listening.get(name, 0) + 1
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read())
            try:
                yield listener
            finally:
                async with self._changing:
                    self._listening[name] -= 1
                    if not self._listening[name]:
                        del self._listening[name]
                        with contextlib.suppress(Exception):  # Redis away: nothing to undo
                            await self._pubsub.unsubscribe(name)

    async def _read(self) -> None:
        """Hand each message to its channel's local listeners, while there are any. When
        the connection drops, every listener is woken without a message (so it reads the
        database) and redis-py, reconnecting, subscribes to the channels again."""
        while self._listening:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
            except Exception:
                self._local.wake_all()
                await asyncio.sleep(0.5)
                continue
            if message is not None and message.get("type") == "message":
                channel = bytes(message["channel"]).decode().removeprefix("apiary:")
                await self._local.notify(channel, message.get("data") or None)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        await self._local.close()
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
