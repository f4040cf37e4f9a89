"""The swarm's per-tenant bound: how many of a tenant's sub-agents may run at once.

Embedded (no Redis) one process runs every execution, and an `asyncio.Semaphore` per tenant
is the bound. With Redis (production: API replicas and Celery workers) the bound holds
across every process. Each running sub-agent holds a lease: a member of its tenant's sorted
set in Redis, scored by the time the lease lapses. A process renews the leases it holds every
third of a lease's life, so one that dies, even by SIGKILL, frees its slots when its leases
lapse instead of holding them for ever.

A sub-agent that finds the tenant at its bound waits in the tenant's queue, also in Redis,
scored by when it first asked: room goes to the oldest waiters of every process, so a
process whose own sub-agents end and start again cannot keep the slots from another's.
Waiters ask again every `RETRY_S` (at once when one of their process's sub-agents ends);
one that stops asking (its process died) loses its place after `STALE_S`.

Round trips are shared: the sub-agents that start in one turn of the event loop ask in one
script call, and those that end within 20 ms give their leases back in one (at once when one
of this process's sub-agents waits), so a fan-out of 100 costs a handful, not 200. Redis's
clock is the one every process uses. A failed round trip is tried again: waiting
sub-agents keep waiting (the execution's deadline bounds them) rather than fail.
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
RETRY_S = 0.1  # a waiting sub-agent asks again after this (or when one of ours ends)
STALE_S = 2.0  # a waiter not heard from for this long loses its place in the queue
GIVE_BACK_S = 0.02  # ended sub-agents' leases wait this long to go back together
FAILED_RETRY_S = 0.5  # after a failed round trip


class SlotsClosed(RuntimeError):
    """The process is stopping: no more slots are handed out."""


# KEYS: the tenant's leases (score: when each lapses), its queue (score: when each waiter
# first asked) and when each waiter last asked. ARGV: the bound, a lease's life and the
# staleness limit in ms, how many members are given back, those members, then the members
# asking. Gives back, drops lapsed leases and stale waiters, queues the askers (a waiter
# keeps its first place), and leases the room there is to the oldest waiters, returning the
# askers among them.
_EXCHANGE = """
local bound, lease, stale = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local freed = tonumber(ARGV[4])
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
for i = 5, 4 + freed do
  for k = 1, 3 do redis.call('ZREM', KEYS[k], ARGV[i]) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_ms - stale)) do
  redis.call('ZREM', KEYS[2], gone)
  redis.call('ZREM', KEYS[3], gone)
end
local asking = {}
for i = 5 + freed, #ARGV do
  redis.call('ZADD', KEYS[2], 'NX', now_ms, ARGV[i])
  redis.call('ZADD', KEYS[3], now_ms, ARGV[i])
  asking[ARGV[i]] = true
end
local granted = {}
local room = bound - redis.call('ZCARD', KEYS[1])
if room > 0 then
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, room - 1)) do
    if asking[member] then
      redis.call('ZADD', KEYS[1], now_ms + lease, member)
      redis.call('ZREM', KEYS[2], member)
      redis.call('ZREM', KEYS[3], member)
      granted[#granted + 1] = member
    end
  end
end
for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], lease * 2) end
return granted
"""

# KEYS[1]: the tenant's leases. ARGV[1]: a lease's life in ms, ARGV[2..]: members still held.
# Returns how many it renewed: a lease that lapsed meanwhile is not brought back.
_RENEW = """
local now = redis.call('TIME')
local until_ms = now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', until_ms, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return renewed
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


_Waiter = tuple[asyncio.Future[str], str]  # a waiting sub-agent, and the member it asks as


class RedisSlots:
    """Every tenant's leases held by this process, on one Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        limit: int,
        lease_s: float = LEASE_S,
        retry_s: float = RETRY_S,
        stale_s: float = STALE_S,
    ) -> None:
        self._redis = redis  # shared by the process (apiary.kit.redis), which closes it
        self._exchange_script: AsyncScript = self._redis.register_script(_EXCHANGE)
        self._renew_script: AsyncScript = self._redis.register_script(_RENEW)
        self._limit = limit
        self._lease_ms = int(lease_s * 1000)
        self._stale_ms = int(stale_s * 1000)
        self._retry_s = retry_s
        self._names = (f"{os.getpid()}-{uuid.uuid4().hex[:12]}-{n}" for n in itertools.count())
        self._waiting: dict[str, list[_Waiter]] = defaultdict(list)
        self._freed: dict[str, list[str]] = defaultdict(list)
        self._held: dict[str, set[str]] = defaultdict(set)
        self._exchange: asyncio.Task[None] | None = None
        self._again = False  # something arrived while an exchange was on its way
        self._failed = False  # the last round trip failed: ask again later, not at once
        self._retry: asyncio.TimerHandle | None = None
        self._giving: asyncio.TimerHandle | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False

    def of(self, tenant_id: uuid.UUID) -> _TenantSlots:
        return _TenantSlots(self, f"apiary:swarm:slots:{tenant_id}")

    async def take(self, key: str) -> str:
        """A lease on one of `key`'s slots, waiting in the tenant's queue while it is full."""
        if self._closed:
            raise SlotsClosed("the swarm's slots are closed: this process is stopping")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[key].append((future, next(self._names)))
        self._wake()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give_back(key, future.result())  # granted as we were cancelled
            raise

    def give_back(self, key: str, member: str) -> None:
        self._held[key].discard(member)
        if self._closed:
            return  # `close` gave back everything held
        self._freed[key].append(member)
        if any(self._waiting.values()):
            self._wake()  # one of ours waits for a slot: now
        elif self._giving is None:
            # Nobody here waits, and other processes ask again only every `retry_s`: the
            # sub-agents ending over the next few milliseconds give theirs back together.
            loop = asyncio.get_running_loop()
            self._giving = loop.call_later(GIVE_BACK_S, self._wake)

    def _wake(self) -> None:
        if self._closed:
            return
        if self._exchange is not None:
            self._again = True
            return
        for timer in (self._retry, self._giving):
            if timer is not None:
                timer.cancel()
        self._retry = self._giving = None
        loop = asyncio.get_running_loop()
        self._exchange = loop.create_task(self._exchange_all())
        if self._renewer is None:
            self._renewer = loop.create_task(self._renew_all())

    async def _exchange_all(self) -> None:
        try:
            while True:
                self._again = self._failed = False
                await self._exchange_once()
                if not self._again or self._failed:
                    break
        finally:
            self._exchange = None
        if not self._closed and (any(self._waiting.values()) or any(self._freed.values())):
            # Refused (the tenant is at its bound), or the round trip failed.
            delay = FAILED_RETRY_S if self._failed else self._retry_s
            self._retry = asyncio.get_running_loop().call_later(delay, self._wake)

    async def _exchange_once(self) -> None:
        """Give back what ended and ask for what waits: one script call per tenant."""
        freed, self._freed = self._freed, defaultdict(list)
        asked: dict[str, list[_Waiter]] = {}
        for key, waiters in self._waiting.items():
            for future, member in waiters:
                if future.done():  # cancelled while it waited: out of the queue too
                    freed[key].append(member)
                else:
                    asked.setdefault(key, []).append((future, member))
        self._waiting = defaultdict(list)
        keys = list(freed.keys() | asked.keys())
        replies = await asyncio.gather(
            *(
                self._exchange_one(key, freed.get(key, []), [m for _, m in asked.get(key, [])])
                for key in keys
            ),
            return_exceptions=True,
        )
        for key, reply in zip(keys, replies, strict=True):
            waiters = asked.get(key, [])
            if isinstance(reply, BaseException):
                if isinstance(reply, asyncio.CancelledError):
                    raise reply
                log.warning("swarm slots of %s: Redis round trip failed: %s", key, reply)
                self._failed = True
                self._freed[key][:0] = freed.get(key, [])  # given back next time
                self._waiting[key][:0] = waiters  # still waiting, in their order
                continue
            for future, member in waiters:
                if member not in reply:
                    continue
                if future.done():  # cancelled meanwhile: its lease goes straight back
                    self._freed[key].append(member)
                    self._again = True
                else:
                    self._held[key].add(member)
                    future.set_result(member)
            self._waiting[key][:0] = [(f, m) for f, m in waiters if m not in reply]

    async def _exchange_one(self, key: str, freed: list[str], asked: list[str]) -> set[str]:
        keys = [f"{key}:leases", f"{key}:queue", f"{key}:asked"]
        args: list[int | str] = [self._limit, self._lease_ms, self._stale_ms, len(freed)]
        granted = await self._exchange_script(keys=keys, args=[*args, *freed, *asked])
        return {member.decode() for member in granted}

    async def _renew_all(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            held = {key: list(members) for key, members in self._held.items() if members}
            renewals = [
                self._renew_script(keys=[f"{key}:leases"], args=[self._lease_ms, *members])
                for key, members in held.items()
            ]
            outcomes = await asyncio.gather(*renewals, return_exceptions=True)
            for (key, members), outcome in zip(held.items(), outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    log.warning("could not renew the swarm's slot leases: %s", outcome)
                elif int(outcome) < len(members):
                    # Lapsed while running (this loop or Redis stalled past a lease's life):
                    # the tenant may run over its bound until these sub-agents end.
                    log.warning(
                        "%d of %d swarm slot leases of %s had lapsed",
                        len(members) - int(outcome),
                        len(members),
                        key,
                    )

    async def close(self) -> None:
        """Stop: waiting sub-agents get `SlotsClosed`, and every lease held goes back."""
        self._closed = True
        for timer in (self._retry, self._giving):
            if timer is not None:
                timer.cancel()
        if self._exchange is not None:  # let it land: it may hold leases just granted
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._exchange), 5.0)
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        closing = SlotsClosed("the swarm's slots are closed: this process is stopping")
        for key, waiters in self._waiting.items():
            for future, member in waiters:
                self._freed[key].append(member)  # out of the queue
                if not future.done():
                    future.set_exception(closing)
        self._waiting.clear()
        for key, members in self._held.items():
            self._freed[key].extend(members)
        self._held.clear()
        leases = {key: members for key, members in self._freed.items() if members}
        self._freed.clear()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*(self._exchange_one(k, m, []) for k, m in leases.items()))


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
