"""The production memory store: threads in Redis, shared by every API replica and worker.

Each thread has three keys, all made by `thread_keys`:

- `…:turns`, a list of JSON turns (execution id, task, answer, time), oldest first;
- `…:summary`, a hash: `text`, and `turns`, how many of the oldest turns it covers;
- `…:executions`, the set of execution ids already recorded, so that an execution resumed
  after a crash and finishing twice adds its turn once.

With `APIARY_SWARM__MEMORY_TTL_S` set, a thread that gets no new turn or summary for that
many seconds expires, its three keys together; by default threads never expire. Deleting
an agent deletes its threads (`forget_agent`), as the database's cascade does.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

import orjson

from apiary.authz.scope import TenantScope
from apiary.memory.store import Summary, Thread, Turn

if TYPE_CHECKING:
    from redis.asyncio import Redis

# Check and append in one step: Redis runs a script atomically, so two workers recording
# the same execution at once cannot both pass the membership test.
# KEYS: a ThreadKeys (turns, summary, executions); ARGV: execution id, turn, idle TTL or 0.
_APPEND = """
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then
    return 0
end
redis.call('RPUSH', KEYS[1], ARGV[2])
if tonumber(ARGV[3]) > 0 then
    for _, key in ipairs(KEYS) do
        redis.call('EXPIRE', key, ARGV[3])
    end
end
return 1
"""


class ThreadKeys(NamedTuple):
    turns: str
    summary: str
    executions: str


def thread_keys(scope: TenantScope, *, agent_id: uuid.UUID, thread_id: str) -> ThreadKeys:
    """The only place a memory key is made. The tenant comes from the scope, so another
    tenant's thread with the same agent and thread ids is another key."""
    # The braces are a Redis Cluster hash tag: a thread's keys share a slot, as the append
    # script needs. The UUIDs have a fixed form and the thread id comes last, before a
    # fixed suffix, so two threads never share a key whatever their ids contain.
    base = f"apiary:memory:{{{scope.tenant_id}:{agent_id}:{thread_id}}}"
    return ThreadKeys(f"{base}:turns", f"{base}:summary", f"{base}:executions")


def _text(value: bytes | str) -> str:  # redis-py's types allow either
    return value.decode() if isinstance(value, bytes) else value


def _turn(raw: bytes | str) -> Turn:
    fields = orjson.loads(raw)
    return Turn(
        execution_id=uuid.UUID(fields["execution_id"]),
        task=fields["task"],
        answer=fields["answer"],
        created_at=datetime.fromisoformat(fields["created_at"]),
    )


class RedisMemoryStore:
    def __init__(self, redis: Redis, *, idle_ttl_s: int | None = None) -> None:
        self._redis = redis  # shared by the process (apiary.kit.redis), which closes it
        self._append = self._redis.register_script(_APPEND)
        self._idle_ttl_s = idle_ttl_s or 0  # 0: no expiry

    async def thread(self, scope: TenantScope, *, agent_id: uuid.UUID, thread_id: str) -> Thread:
        keys = thread_keys(scope, agent_id=agent_id, thread_id=thread_id)
        fields = await self._redis.hgetall(keys.summary)
        summary = Summary(_text(fields[b"text"]), int(fields[b"turns"])) if fields else None
        # Two reads, no transaction: the list only grows (or expires whole), so the turns
        # after those the summary covers are the same whenever they are read.
        raw = await self._redis.lrange(keys.turns, summary.turns if summary else 0, -1)
        return Thread(summary=summary, turns=[_turn(item) for item in raw])

    async def append(
        self, scope: TenantScope, *, agent_id: uuid.UUID, thread_id: str, turn: Turn
    ) -> bool:
        keys = thread_keys(scope, agent_id=agent_id, thread_id=thread_id)
        added = await self._append(
            keys=list(keys), args=[str(turn.execution_id), orjson.dumps(turn), self._idle_ttl_s]
        )
        return bool(added)

    async def save_summary(
        self, scope: TenantScope, *, agent_id: uuid.UUID, thread_id: str, summary: Summary
    ) -> None:
        keys = thread_keys(scope, agent_id=agent_id, thread_id=thread_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.summary, mapping={"text": summary.text, "turns": summary.turns})
            if self._idle_ttl_s:
                for key in keys:
                    pipe.expire(key, self._idle_ttl_s)
            await pipe.execute()

    async def forget_agent(self, scope: TenantScope, agent_id: uuid.UUID) -> None:
        # "*" as the thread id: the patterns matching each kind of key of all its threads.
        for pattern in thread_keys(scope, agent_id=agent_id, thread_id="*"):
            keys = [key async for key in self._redis.scan_iter(match=pattern, count=1000)]
            if keys:
                await self._redis.unlink(*keys)

    async def close(self) -> None:
        return None  # the shared client is the process's to close
