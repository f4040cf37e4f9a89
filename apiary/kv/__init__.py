"""Counters with expiry for rate limits and throttles: in-process embedded, Redis in production."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis


class CounterStore(Protocol):
    async def incr(self, key: str, *, ttl_s: int, amount: int = 1) -> int:
        """Add `amount` to `key`, starting a `ttl_s` window if it is new; return the total."""
        ...

    async def set_if_absent(self, key: str, value: int, *, ttl_s: int) -> bool:
        """Start `key` at `value` unless it exists; True when this call set it."""
        ...

    async def decr(self, key: str) -> None:
        """Take one off `key` (not below zero), keeping its window."""
        ...

    async def get(self, key: str) -> tuple[int, int]:
        """Return (count, seconds until the window ends); (0, 0) for an unknown key."""
        ...

    async def delete(self, key: str) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class MemoryCounterStore:
    """One process's counters; expired windows are dropped lazily and by a periodic sweep.

    No lock: each method runs to its end without awaiting, so on one event loop no other
    coroutine can interleave with it."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}
        self._ops = 0

    def _sweep(self, now: float) -> None:
        self._counts = {k: v for k, v in self._counts.items() if v[1] > now}

    async def incr(self, key: str, *, ttl_s: int, amount: int = 1) -> int:
        now = time.monotonic()
        self._ops += 1
        if self._ops % 1024 == 0:
            self._sweep(now)
        count, expires = self._counts.get(key, (0, 0.0))
        if expires <= now:
            count, expires = 0, now + ttl_s
        self._counts[key] = (count + amount, expires)
        return count + amount

    async def set_if_absent(self, key: str, value: int, *, ttl_s: int) -> bool:
        now = time.monotonic()
        found = self._counts.get(key)
        if found is not None and found[1] > now:
            return False
        self._counts[key] = (value, now + ttl_s)
        return True

    async def decr(self, key: str) -> None:
        count, expires = self._counts.get(key, (0, 0.0))
        if count > 1 and expires > time.monotonic():
            self._counts[key] = (count - 1, expires)
        else:
            self._counts.pop(key, None)

    async def get(self, key: str) -> tuple[int, int]:
        count, expires = self._counts.get(key, (0, 0.0))
        remaining = expires - time.monotonic()
        return (count, int(remaining) + 1) if remaining > 0 else (0, 0)

    async def delete(self, key: str) -> None:
        self._counts.pop(key, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._counts.clear()


class RedisCounterStore:
    """Counters shared by every replica, so a throttle holds across the whole deployment."""

    def __init__(self, url: str, *, namespace: str = "apiary") -> None:
        from redis.asyncio import Redis  # only when configured: it costs 20 MiB

        self._redis: Redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._ns = namespace

    def _key(self, key: str) -> str:
        return f"{self._ns}:{key}"

    async def incr(self, key: str, *, ttl_s: int, amount: int = 1) -> int:
        name = self._key(key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(name, amount)
            pipe.expire(name, ttl_s, nx=True)
            count, _ = await pipe.execute()
        return int(count)

    async def set_if_absent(self, key: str, value: int, *, ttl_s: int) -> bool:
        return bool(await self._redis.set(self._key(key), value, ex=ttl_s, nx=True))

    async def decr(self, key: str) -> None:
        name = self._key(key)
        if await self._redis.decr(name) <= 0:
            await self._redis.delete(name)

    async def get(self, key: str) -> tuple[int, int]:
        name = self._key(key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(name)
            pipe.ttl(name)
            raw, ttl = await pipe.execute()
        if raw is None:
            return (0, 0)
        return (int(raw), max(int(ttl), 1))

    async def delete(self, key: str) -> None:
        await self._redis.delete(self._key(key))

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


def create_counter_store(redis_url: str | None) -> CounterStore:
    return RedisCounterStore(redis_url) if redis_url else MemoryCounterStore()
