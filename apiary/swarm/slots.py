"""The swarm's per-tenant bound: how many of a tenant's sub-agents may run at once.

Embedded (no Redis) one process runs every execution, and an `asyncio.Semaphore` per tenant
is the bound. With Redis (production: API replicas and Celery workers) the bound holds
across every process. Each running sub-agent holds a lease: a member of its tenant's sorted
set in Redis, scored by the time the lease lapses. A script takes leases only while the set
(less its lapsed members) is under the bound. A process renews the leases it holds every
third of a lease's life, so one that dies, even by SIGKILL, frees its slots when its leases
lapse instead of holding them for ever.

Round trips are shared: the sub-agents that start in one turn of the event loop take their
leases in one call, and those that end within 20 ms give theirs back in one (at once when
one of this process's sub-agents waits), so a fan-out of 100 costs a handful, not 200. A
sub-agent refused because the tenant is at its bound asks again after a short pause, or at
once when a sub-agent of this process ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import uuid
from collections import defaultdict
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

log = logging.getLogger("apiary.swarm.slots")

LEASE_S = 30.0  # a lease lapses this long after its last renewal
RETRY_S = 0.1  # a refused sub-agent asks again after this (or when one of ours ends)
GIVE_BACK_S = 0.02  # ended sub-agents' leases wait this long to go back together

# KEYS[1]: the tenant's leases. ARGV[1]: the bound, ARGV[2]: a lease's life in ms, ARGV[3]:
# how many members are given back, then those, then the members asked for. Removes the ones
# given back and the lapsed ones, adds those asked for while there is room, and returns how
# many it added (the first ones asked for). The clock is Redis's, shared by every process.
_EXCHANGE = """
local freed = tonumber(ARGV[3])
for i = 4, 3 + freed do redis.call('ZREM', KEYS[1], ARGV[i]) end
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local room = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
local taken = 0
for i = 4 + freed, #ARGV do
  if taken >= room then break end
  redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[i])
  taken = taken + 1
end
if taken > 0 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2) end
return taken
"""

# KEYS[1]: the tenant's leases. ARGV[1]: a lease's life in ms, ARGV[2..]: members still held.
_RENEW = """
local now = redis.call('TIME')
local until_ms = now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 0
"""


class Slots(Protocol):
    """One tenant's bound, entered by each sub-agent for as long as it runs."""

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> object: ...


class RedisSlots:
    """Every tenant's leases held by this process, on one Redis."""

    def __init__(
        self, url: str, *, limit: int, lease_s: float = LEASE_S, retry_s: float = RETRY_S
    ) -> None:
        from redis.asyncio import Redis  # only when configured

        self._redis: Redis = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self._exchange_script: AsyncScript = self._redis.register_script(_EXCHANGE)
        self._renew_script: AsyncScript = self._redis.register_script(_RENEW)
        self._limit = limit
        self._lease_ms = int(lease_s * 1000)
        self._retry_s = retry_s
        self._names = (f"{os.getpid()}-{uuid.uuid4().hex[:12]}-{n}" for n in itertools.count())
        self._waiting: dict[str, list[asyncio.Future[str]]] = defaultdict(list)
        self._freed: dict[str, list[str]] = defaultdict(list)
        self._held: dict[str, set[str]] = defaultdict(set)
        self._exchange: asyncio.Task[None] | None = None
        self._again = False  # something arrived while an exchange was on its way
        self._retry: asyncio.TimerHandle | None = None
        self._giving: asyncio.TimerHandle | None = None
        self._renewer: asyncio.Task[None] | None = None

    def of(self, tenant_id: uuid.UUID) -> _TenantSlots:
        return _TenantSlots(self, f"apiary:swarm:slots:{tenant_id}")

    async def take(self, key: str) -> str:
        """A lease on one of `key`'s slots, waiting while the tenant is at its bound."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[key].append(future)
        self._wake()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give_back(key, future.result())  # granted as we were cancelled
            raise

    def give_back(self, key: str, member: str) -> None:
        self._held[key].discard(member)
        self._freed[key].append(member)
        if any(self._waiting.values()):
            self._wake()  # one of ours waits for a slot: now
        elif self._giving is None:
            # Nobody here waits, and other processes ask again only every `retry_s`: the
            # sub-agents ending over the next few milliseconds give theirs back together.
            loop = asyncio.get_running_loop()
            self._giving = loop.call_later(GIVE_BACK_S, self._give_now)

    def _give_now(self) -> None:
        self._giving = None
        self._wake()

    def _wake(self) -> None:
        if self._exchange is not None:
            self._again = True
            return
        for timer in (self._retry, self._giving):
            if timer is not None:
                timer.cancel()
        self._retry = self._giving = None
        self._exchange = asyncio.get_running_loop().create_task(self._exchange_all())
        if self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(self._renew_all())

    async def _exchange_all(self) -> None:
        try:
            while True:
                self._again = False
                await self._exchange_once()
                if not self._again:
                    break
        finally:
            self._exchange = None
        if any(self._waiting.values()):  # refused: the tenant is at its bound
            loop = asyncio.get_running_loop()
            self._retry = loop.call_later(self._retry_s, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self._wake()

    async def _exchange_once(self) -> None:
        """Give back what ended and ask for what is waiting: one script call per tenant."""
        freed, self._freed = self._freed, defaultdict(list)
        asked: dict[str, tuple[list[asyncio.Future[str]], list[str]]] = {}
        for key, futures in self._waiting.items():
            live = [future for future in futures if not future.done()]
            if live:
                asked[key] = (live, [next(self._names) for _ in live])
        self._waiting = defaultdict(list)
        keys = list(freed.keys() | asked.keys())
        try:
            replies = await asyncio.gather(
                *(
                    self._exchange_one(key, freed.get(key, []), asked.get(key, ([], []))[1])
                    for key in keys
                ),
                return_exceptions=True,
            )
        except asyncio.CancelledError:  # closing: nobody is left to wait for these
            for futures, _ in asked.values():
                for future in futures:
                    future.cancel()
            raise
        for key, taken in zip(keys, replies, strict=True):
            futures, members = asked.get(key, ([], []))
            if isinstance(taken, BaseException):
                if freed.get(key):  # their leases lapse on their own
                    log.warning("could not give back swarm slots of %s: %s", key, taken)
                for future in futures:
                    if not future.done():
                        future.set_exception(taken)
                continue
            for future, member in zip(futures[:taken], members[:taken], strict=True):
                if future.done():  # cancelled meanwhile: its lease goes straight back
                    self._freed[key].append(member)
                    self._again = True
                else:
                    self._held[key].add(member)
                    future.set_result(member)
            self._waiting[key].extend(futures[taken:])

    async def _exchange_one(self, key: str, freed: list[str], asked: list[str]) -> int:
        args: list[int | str] = [self._limit, self._lease_ms, len(freed), *freed, *asked]
        return int(await self._exchange_script(keys=[key], args=args))

    async def _renew_all(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            held = {key: list(members) for key, members in self._held.items() if members}
            renewals = (
                self._renew_script(keys=[key], args=[self._lease_ms, *members])
                for key, members in held.items()
            )
            for outcome in await asyncio.gather(*renewals, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    log.warning("could not renew the swarm's slot leases: %s", outcome)

    async def close(self) -> None:
        """Give back every lease this process holds (best effort: they would lapse anyway)."""
        for timer in (self._retry, self._giving):
            if timer is not None:
                timer.cancel()
        for task in (self._renewer, self._exchange):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for key, members in self._held.items():
            self._freed[key].extend(members)
        leases = {key: members for key, members in self._freed.items() if members}
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*(self._exchange_one(k, m, []) for k, m in leases.items()))
        await self._redis.aclose()


class _TenantSlots:
    """`async with` one lease of a tenant's slots."""

    def __init__(self, pool: RedisSlots, key: str) -> None:
        self._pool = pool
        self._key = key
        self._mine: list[str] = []  # leases taken through this object, not yet given back

    async def __aenter__(self) -> None:
        self._mine.append(await self._pool.take(self._key))

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._pool.give_back(self._key, self._mine.pop())
