"""The counter store on Redis: shared by every replica, so a limit holds across the whole
deployment.

Imported only when `APIARY_REDIS_URL` is set (redis-py costs 20 MiB). Every gateway call
takes (admission) and adds (settlement) through here, so this is on the `/v1` hot path.
The takes and settlements a process makes go in batches, one Lua script call each, over a
connection of the store's own (a *lane*) with several batches in flight: under load a call
costs Redis less than one round trip, and redis-py's per-command machinery (pool, retries,
events) is not paid per call. See docs/benchmarks.md, "Gateway in production mode".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import cast

from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection

from apiary.kit.redis import COMMAND_TIMEOUT_S
from apiary.kv import TAKEN, Change, Check, Outcome

log = logging.getLogger(__name__)


# Every `take` and `add` a process makes while a round trip is on its way go together in
# the next one: this script applies them in order, each `take` all-or-nothing (Redis runs a
# script without interleaving anything else). KEYS: each operation's counters, one
# operation after another. ARGV[1]: the operations as integers separated by spaces (one
# argument: redis-py encodes each argument in Python, and a call has up to sixteen):
#   take: 1, its number of keys n, the index (1..n) of the key that must exist or 0, then
#         per key its amount, limit and ttl;
#   add:  2, n, then per key its amount, ttl and 1 if the key must exist.
# The reply is one string (a nested array costs redis-py's parser far more to read): per
# operation, separated by ";", its integers separated by spaces: a take's "0 total" (the
# total of the key that had to exist, 0 if none) when all was added, "i value" for the
# first check i that did not fit, "-1" when the key that had to exist did not; an add's
# totals, "n" for a key that had to exist and did not.
_APPLY = """
local function int(x) return string.format('%d', x) end  -- tostring gives 1e+15
local args = {}
for word in string.gmatch(ARGV[1], '%S+') do args[#args + 1] = tonumber(word) end
local replies, a, k = {}, 1, 0
while a <= #args do
  local kind, n = args[a], args[a + 1]
  a = a + 2
  if kind == 1 then
    local existing = args[a]
    a = a + 1
    local reply = {0, 0}
    if existing > 0 and redis.call('EXISTS', KEYS[k + existing]) == 0 then
      reply = {-1}
    else
      local values = {}
      for i = 1, n do
        local amount, limit = args[a + 3 * i - 3], args[a + 3 * i - 2]
        local value = tonumber(redis.call('GET', KEYS[k + i]) or '0')
        values[i] = value
        if (amount > 0 and value + amount > limit) or (amount <= 0 and value >= limit) then
          reply = {i, int(value)}
          break
        end
      end
      if reply[1] == 0 then
        for i = 1, n do
          local amount = args[a + 3 * i - 3]
          if amount ~= 0 then
            redis.call('INCRBY', KEYS[k + i], amount)
            redis.call('EXPIRE', KEYS[k + i], args[a + 3 * i - 1], 'NX')
          end
        end
        if existing > 0 then reply[2] = int(values[existing] + args[a + 3 * existing - 3]) end
      end
    end
    replies[#replies + 1] = table.concat(reply, ' ')
  else
    local totals = {}
    for i = 1, n do
      local amount, ttl, must = args[a + 3 * i - 3], args[a + 3 * i - 2], args[a + 3 * i - 1]
      if must == 1 and redis.call('EXISTS', KEYS[k + i]) == 0 then
        totals[i] = 'n'
      else
        totals[i] = int(redis.call('INCRBY', KEYS[k + i], amount))
        redis.call('EXPIRE', KEYS[k + i], ttl, 'NX')
      end
    end
    replies[#replies + 1] = table.concat(totals, ' ')
  end
  a, k = a + 3 * n, k + n
end
return table.concat(replies, ';')
"""

_TAKE, _ADD = 1, 2  # the operations' codes in _APPLY
# How long a settlement may wait for a take to share a round trip with. The counters it
# changes lag by that much on other replicas; a take on this replica always sees it.
SETTLE_WITHIN_S = 0.01
# A lane quiet this long is PINGed before it carries a batch: a Redis restarted meanwhile
# cut its connection, and a batch sent on it would fail with every caller in it (and lose
# the settlements riding with them), where a new lane serves them. Under load a lane is
# never quiet this long, so the check costs a round trip only after a pause in traffic.
LANE_QUIET_S = 1.0
_ROUND_TRIP_TIMEOUT_S = COMMAND_TIMEOUT_S  # the process's Redis policy (apiary.kit.redis)


class RedisCounterStore:
    """Counters shared by every replica, so a limit holds across the whole deployment.

    `take` and `add` queue an operation and wait for its reply; `add_soon` queues one and
    does not wait. A sender task writes what is queued as one batch (one _APPLY call) and
    goes on to the next without waiting for replies; the lane's reader hands them out."""

    shared = True

    def __init__(self, redis: Redis, *, namespace: str = "apiary") -> None:
        self._redis = redis  # shared by the process (apiary.kit.redis), which closes it
        self._ns = namespace
        # The takes and settlements go in batches over a connection of their own (a lane),
        # written to and read from directly: redis-py's command path (the pool, retries,
        # events, a task per timed-out write) cost more CPU than the gateway's own work
        # for a call. Connecting (TLS, AUTH, SELECT from the URL) is still redis-py's.
        # Made with the shared client's settings (address, credentials, connect timeout);
        # its reads are bounded per batch (_ROUND_TRIP_TIMEOUT_S), not per socket read,
        # and it is checked by use, not by a PING before each write.
        self._lane_pool = ConnectionPool(
            connection_class=redis.connection_pool.connection_class,
            **{
                **redis.connection_pool.connection_kwargs,
                "client_name": f"{namespace}-counters",
                "socket_timeout": None,
                "health_check_interval": 0,
            },
        )
        self._lane: _Lane | None = None
        self._sha = hashlib.sha1(_APPLY.encode(), usedforsecurity=False).hexdigest().encode()
        # Operations waiting for the next batch: (keys, words, who waits or None), and the
        # task writing the batches.
        self._pending: list[tuple[list[str], list[int], asyncio.Future[bytes] | None]] = []
        self._waited_for = 0  # how many pending operations have a caller waiting
        self._wake: asyncio.Future[None] | None = None  # set: a caller now waits
        self._sender: asyncio.Task[None] | None = None

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
        words = [_TAKE, len(checks), 0]
        for index, check in enumerate(checks, start=1):
            words += (check.amount, check.limit, check.ttl_s)
            if check.key == existing:
                words[2] = index
        if existing is not None and not words[2]:
            raise ValueError(f"{existing!r} is not one of the checks' keys")
        reply = (await self._submit(keys, words)).split()
        refused = int(reply[0])
        if refused == -1:
            return Outcome(missing=True)
        if refused:
            return Outcome(refused=refused - 1, value=int(reply[1]))
        total = int(reply[1])
        return Outcome(total=total) if total else TAKEN

    async def add(self, changes: Sequence[Change]) -> list[int | None]:
        keys, words = self._add_operation(changes)
        totals = (await self._submit(keys, words)).split()
        return [None if total == b"n" else int(total) for total in totals]

    def add_soon(self, changes: Sequence[Change]) -> None:
        keys, words = self._add_operation(changes)
        self._queue(keys, words, None)

    def _add_operation(self, changes: Sequence[Change]) -> tuple[list[str], list[int]]:
        keys = [self._key(change.key) for change in changes]
        words = [_ADD, len(changes)]
        for change in changes:
            words += (change.amount, change.ttl_s, int(change.existing))
        return keys, words

    def _submit(self, keys: list[str], words: list[int]) -> asyncio.Future[bytes]:
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._queue(keys, words, done)
        return done

    def _queue(self, keys: list[str], words: list[int], done: asyncio.Future[bytes] | None) -> None:
        """Every gateway call takes and settles through here: the operations queued in one
        turn of the loop, or while the sender writes, go together in one batch, in the
        order they came, and each waiting caller gets its own reply. A caller cancelled
        meanwhile does not take its operation back."""
        loop = asyncio.get_running_loop()
        if self._sender is None or self._sender.done() or self._sender.get_loop() is not loop:
            self._pending, self._waited_for = [], 0  # (a stopped loop took them with it)
            self._sender = loop.create_task(self._send())
        self._pending.append((keys, words, done))
        if done is not None:
            self._waited_for += 1
            if self._wake is not None and not self._wake.done():
                self._wake.set_result(None)

    async def _send(self) -> None:
        # A new task first runs in the loop's next turn: every operation queued in this
        # turn is in the first batch.
        loop = asyncio.get_running_loop()
        while self._pending:
            if not self._waited_for:
                # Only settlements, which nobody waits for: they ride with the next call's
                # take (one round trip a call, not two), or go after SETTLE_WITHIN_S.
                self._wake = loop.create_future()
                timer = loop.call_later(SETTLE_WITHIN_S, _wake_up, self._wake)
                await self._wake
                timer.cancel()
                self._wake = None
            batch, self._pending, self._waited_for = self._pending, [], 0
            keys: list[str] = []
            words: list[int] = []
            for op_keys, op_words, _ in batch:
                keys += op_keys
                words += op_words
            tail = [str(len(keys)).encode(), *map(str.encode, keys)]
            tail.append(" ".join(map(str, words)).encode())
            waiters = [done for _, _, done in batch]
            try:
                if self._lane is not None and self._lane.quiet_for() >= LANE_QUIET_S:
                    await self._lane.check()  # breaks it if Redis no longer answers on it
                if self._lane is None or self._lane.broken:
                    self._lane = await _Lane.open(self._lane_pool, self._sha)
                await self._lane.send(tail, waiters)
            except Exception as error:
                _fail(waiters, error)
            # Not waiting for the reply: the next batch may go before it comes back (the
            # lane matches replies to batches by their order, which Redis keeps).

    async def delete(self, key: str) -> None:
        await self._redis.delete(self._key(key))

    async def forget_containing(self, needles: Sequence[str]) -> int:
        # Settlements queued before this go first (sent after the deletion, they would
        # create some of its counters again): a round trip of nothing, answered after every
        # batch queued before it, as the lane keeps their order. Calls still being served
        # for the needles' tenant meanwhile may start a counter again, for its window.
        with contextlib.suppress(Exception):  # the deletion goes on: it does not need them
            await self.add([])
        # One pass over the namespace, however many needles (a tenant's keys can be many).
        removed = 0
        encoded = [needle.encode() for needle in needles]
        async for name in self._redis.scan_iter(match=self._key("*"), count=1000):
            if any(needle in name for needle in encoded):
                removed += int(await self._redis.unlink(name))
        return removed

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        """Send the settlements still waiting for a round trip, then disconnect: a replica
        that stops does not lose what its last calls spent."""
        if self._pending and self._sender is not None and not self._sender.done():
            if self._wake is not None and not self._wake.done():
                self._wake.set_result(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sender), timeout=2)
        if self._lane is not None:
            await self._lane.drain()
            await self._lane.close()
        await self._lane_pool.aclose()


_Waiters = list[asyncio.Future[bytes] | None]  # a batch's callers, None where nobody waits


class _Lane:
    """One connection carrying _APPLY batches, several in flight at once: Redis answers a
    connection's commands in order, so a reader matches each reply to the oldest batch
    still waiting. Any failure breaks the lane (the batches in flight fail, with the
    error, and the next batch opens a new lane), so a reply can never reach the wrong
    batch."""

    def __init__(self, connection: AbstractConnection, sha: bytes) -> None:
        self.connection = connection
        self.broken = False
        self._sha = sha
        self._in_flight: deque[tuple[list[bytes], _Waiters]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._last_sent = time.monotonic()

    @classmethod
    async def open(cls, pool: ConnectionPool, sha: bytes) -> _Lane:
        """Connect, and load the script, so EVALSHA finds it (Redis may have restarted)."""
        connection = pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(_ROUND_TRIP_TIMEOUT_S):
                await connection.connect()
                await connection.send_packed_command(
                    _resp([b"SCRIPT", b"LOAD", _APPLY.encode()]), False
                )
                loaded = await connection.read_response()
        except BaseException as error:
            await connection.disconnect(nowait=True)
            if isinstance(error, TimeoutError):  # redis-py's, which the API answers with 503
                raise _timed_out() from None
            raise
        assert loaded == sha, "Redis named the script differently"
        return cls(connection, sha)

    def quiet_for(self) -> float:
        """Seconds since the last batch was written, 0 while one is in flight."""
        return 0.0 if self._in_flight else time.monotonic() - self._last_sent

    async def check(self) -> None:
        """A PING round trip, with nothing in flight (so no batch's reply is read here);
        the lane is broken if it gets no PONG in time."""
        try:
            async with asyncio.timeout(_ROUND_TRIP_TIMEOUT_S):
                await self.connection.send_packed_command(_resp([b"PING"]), check_health=False)
                answered = await self.connection.read_response()
        except Exception as error:  # a restart's cut connection, or no answer in time
            await self._break(error)
            return
        if answered != b"PONG":
            await self._break(redis_errors.ConnectionError(f"PING answered {answered!r}"))
        self._last_sent = time.monotonic()

    async def send(self, tail: list[bytes], waiters: _Waiters, *, script: bool = False) -> None:
        """Write one batch (EVALSHA, or with `script` EVAL with the script's text, and then
        `tail`: the keys and the argument); its waiters get their replies when the reader
        reads them."""
        head = [b"EVAL", _APPLY.encode()] if script else [b"EVALSHA", self._sha]
        # In flight before the write, and nothing awaited between the two (redis-py writes
        # before its first await): the order of `_in_flight` is the order on the wire.
        self._in_flight.append((tail, waiters))
        self._last_sent = time.monotonic()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())
        try:
            await self.connection.send_packed_command(_resp([*head, *tail]), check_health=False)
        except Exception as error:
            await self._break(error)

    async def _read(self) -> None:
        while self._in_flight:
            try:
                async with asyncio.timeout(_ROUND_TRIP_TIMEOUT_S):
                    reply = await self.connection.read_response()
            except redis_errors.NoScriptError:
                # The script cache was flushed (SCRIPT FLUSH, a failover to a replica that
                # never loaded it): send the batch again with the script's text. Every
                # batch written before this one reaches Redis fails the same way and is
                # sent again after it, so their order holds.
                tail, waiters = self._in_flight.popleft()
                await self.send(tail, waiters, script=True)
                continue
            except TimeoutError:
                await self._break(_timed_out())
                return
            except Exception as failure:
                await self._break(failure)
                return
            _, waiters = self._in_flight.popleft()
            for done, part in zip(waiters, cast(bytes, reply).split(b";"), strict=True):
                if done is not None and not done.done():
                    done.set_result(part)

    async def _break(self, error: BaseException) -> None:
        self.broken = True
        failed = list(self._in_flight)
        self._in_flight.clear()
        for _, waiters in failed:
            _fail(waiters, error)
        await self.connection.disconnect(nowait=True)

    async def drain(self) -> None:
        """Wait (a bounded time) for the batches in flight to be answered."""
        if self._reader is not None and not self._reader.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._reader), _ROUND_TRIP_TIMEOUT_S)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        await self._break(redis_errors.ConnectionError("the counter store was closed"))


def _fail(waiters: _Waiters, error: BaseException) -> None:
    """Hand the error to every caller waiting; log the settlements nobody waited for."""
    unheard = 0
    for done in waiters:
        if done is None:
            unheard += 1
        elif not done.done():
            done.set_exception(error)
    if unheard:
        log.warning(
            "counter changes lost: %d settlement(s) not applied (%s: %s)",
            unheard,
            type(error).__name__,
            error,
        )


def _timed_out() -> redis_errors.TimeoutError:
    return redis_errors.TimeoutError(f"Redis did not answer within {_ROUND_TRIP_TIMEOUT_S:g}s")


def _resp(parts: list[bytes]) -> bytes:
    """One command in Redis's wire protocol (RESP): an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def _wake_up(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)
