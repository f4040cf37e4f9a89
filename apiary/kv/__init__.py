"""Counters with expiry for rate limits and throttles: in-process embedded, Redis in production."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript


class Check(NamedTuple):  # a tuple: several are built per gateway call, a dataclass costs more
    """One counter a call must fit under: it adds `amount` (0: it only looks), and the
    counter may not pass `limit`. Fits when `value + amount <= limit`, or, for a look,
    when `value < limit`."""

    key: str
    amount: int
    limit: int
    ttl_s: int


class Change(NamedTuple):
    """Add `amount` to `key`, starting a `ttl_s` window if it is new; with `existing`, only
    if the key is there (a spend counter the store lost must be started from the ledger
    again, not from this one change)."""

    key: str
    amount: int
    ttl_s: int
    existing: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """What `take` did: everything added (`refused` None), or nothing, because the check at
    index `refused` did not fit (`value` is that counter's), or because the counter that
    had to exist did not (`missing`)."""

    refused: int | None = None
    value: int = 0
    missing: bool = False


TAKEN = Outcome()


def _fits(value: int, check: Check) -> bool:
    return value + check.amount <= check.limit if check.amount > 0 else value < check.limit


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

    async def take(self, checks: Sequence[Check], *, existing: str | None = None) -> Outcome:
        """All of `checks` or none, atomically: if every counter fits, add every amount
        (starting each new key's window); else add nothing. With `existing` (one of the
        checks' keys), that key must already be there: when it is not, nothing is added
        and `missing` is set."""
        ...

    async def add(self, changes: Sequence[Change]) -> list[int | None]:
        """Make the changes together; each key's total, in order (None: an `existing`
        change whose key was not there, so nothing was added)."""
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
        return self._add(key, amount, ttl_s, time.monotonic())

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

    async def take(self, checks: Sequence[Check], *, existing: str | None = None) -> Outcome:
        now = time.monotonic()
        counts = self._counts
        if existing is not None and counts.get(existing, (0, 0.0))[1] <= now:
            return Outcome(missing=True)
        for index, check in enumerate(checks):
            count, expires = counts.get(check.key, (0, 0.0))
            value = count if expires > now else 0
            if not _fits(value, check):
                return Outcome(refused=index, value=value)
        for check in checks:
            if check.amount:
                self._add(check.key, check.amount, check.ttl_s, now)
        return TAKEN

    async def add(self, changes: Sequence[Change]) -> list[int | None]:
        now = time.monotonic()
        counts = self._counts
        return [
            None
            if change.existing and counts.get(change.key, (0, 0.0))[1] <= now
            else self._add(change.key, change.amount, change.ttl_s, now)
            for change in changes
        ]

    def _add(self, key: str, amount: int, ttl_s: int, now: float) -> int:
        self._ops += 1
        if self._ops % 1024 == 0:
            self._sweep(now)
        count, expires = self._counts.get(key, (0, 0.0))
        if expires <= now:
            count, expires = 0, now + ttl_s
        self._counts[key] = (count + amount, expires)
        return count + amount

    async def delete(self, key: str) -> None:
        self._counts.pop(key, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._counts.clear()


# `take` in one round trip, atomic because Redis runs a script without interleaving.
# KEYS: the counters; ARGV[1]: the index of the key that must exist (0: none), then each
# check's amount, limit and ttl. Returns {0, 0} when all was added, {index, value} for the
# first check that did not fit, {-1, 0} when the key that must exist does not.
_TAKE = """
local existing = tonumber(ARGV[1])
if existing > 0 and redis.call('EXISTS', KEYS[existing]) == 0 then
  return {-1, 0}
end
for i = 1, #KEYS do
  local amount, limit = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local value = tonumber(redis.call('GET', KEYS[i]) or '0')
  if (amount > 0 and value + amount > limit) or (amount <= 0 and value >= limit) then
    return {i, value}
  end
end
for i = 1, #KEYS do
  local amount = tonumber(ARGV[3 * i - 1])
  if amount ~= 0 then
    redis.call('INCRBY', KEYS[i], amount)
    redis.call('EXPIRE', KEYS[i], ARGV[3 * i + 1], 'NX')
  end
end
return {0, 0}
"""


# `add` in one round trip. ARGV: each change's amount, ttl and 1 if its key must exist.
# Returns each total, or false (nil in the reply) for a key that had to exist and did not.
_ADD = """
local totals = {}
for i = 1, #KEYS do
  if ARGV[3 * i] == '1' and redis.call('EXISTS', KEYS[i]) == 0 then
    totals[i] = false
  else
    totals[i] = redis.call('INCRBY', KEYS[i], ARGV[3 * i - 2])
    redis.call('EXPIRE', KEYS[i], ARGV[3 * i - 1], 'NX')
  end
end
return totals
"""


class RedisCounterStore:
    """Counters shared by every replica, so a throttle holds across the whole deployment."""

    def __init__(self, url: str, *, namespace: str = "apiary") -> None:
        from redis.asyncio import Redis  # only when configured: it costs 20 MiB

        self._redis: Redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._ns = namespace
        self._take: AsyncScript = self._redis.register_script(_TAKE)
        self._add: AsyncScript = self._redis.register_script(_ADD)
        # `add`s waiting for the next round trip, and the task making them (see `add`)
        self._adding: list[tuple[Sequence[Change], asyncio.Future[list[int | None]]]] = []
        self._adder: asyncio.Task[None] | None = None

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

    async def take(self, checks: Sequence[Check], *, existing: str | None = None) -> Outcome:
        keys = [self._key(check.key) for check in checks]
        args: list[int] = [0]
        for index, check in enumerate(checks, start=1):
            args += (check.amount, check.limit, check.ttl_s)
            if check.key == existing:
                args[0] = index
        if existing is not None and not args[0]:
            raise ValueError(f"{existing!r} is not one of the checks' keys")
        refused, value = await self._take(keys=keys, args=args)
        if refused == -1:
            return Outcome(missing=True)
        return Outcome(refused=int(refused) - 1, value=int(value)) if refused else TAKEN

    async def add(self, changes: Sequence[Change]) -> list[int | None]:
        """Concurrent calls share a round trip (every gateway call settles through here):
        the changes that arrive while one script call is on its way go together in the
        next, and each caller gets its own totals when its batch has been applied. A caller
        cancelled meanwhile does not take its changes back."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[int | None]] = loop.create_future()
        if self._adder is None or self._adder.done() or self._adder.get_loop() is not loop:
            self._adding = []  # (what a stopped loop left behind went with it)
            self._adder = loop.create_task(self._add_batches())
        self._adding.append((changes, done))
        return await done

    async def _add_batches(self) -> None:
        await asyncio.sleep(0)  # the calls made in this turn of the loop join the first batch
        while self._adding:
            batch, self._adding = self._adding, []
            keys: list[str] = []
            args: list[int] = []
            for changes, _ in batch:
                for change in changes:
                    keys.append(self._key(change.key))
                    args += (change.amount, change.ttl_s, int(change.existing))
            try:
                totals = await self._add(keys=keys, args=args)
            except Exception as error:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                continue
            start = 0
            for changes, done in batch:
                mine = totals[start : start + len(changes)]
                start += len(changes)
                if not done.done():
                    done.set_result([None if total is None else int(total) for total in mine])

    async def delete(self, key: str) -> None:
        await self._redis.delete(self._key(key))

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


def create_counter_store(redis_url: str | None) -> CounterStore:
    return RedisCounterStore(redis_url) if redis_url else MemoryCounterStore()
