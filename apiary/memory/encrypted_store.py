"""A memory store that keeps turns and summaries encrypted at rest.

It wraps whichever store the process uses (database or Redis): what is asked, what was
answered and the summaries are sealed with the tenant's data key before the inner store
sees them, and opened when a thread is read. Ids, thread names and times stay readable, as
the stores need them to find and order a thread. Turns written before encryption was on
read as they are.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import TYPE_CHECKING

import orjson

from apiary.db import session_scope
from apiary.memory.models import ThreadSummary, ThreadTurn
from apiary.memory.repository import memory_repository
from apiary.memory.store import MemoryStore, Summary, Thread, Turn

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from apiary.authz.scope import TenantScope
    from apiary.crypto.keyring import Sealer

TASK = "thread_turn.task"
ANSWER = "thread_turn.answer"
SUMMARY = "thread_summary.summary"


class EncryptedMemoryStore:
    def __init__(self, inner: MemoryStore, sealer: Sealer) -> None:
        self.inner = inner
        self._sealer = sealer

    async def thread(self, scope: TenantScope, *, agent_id: uuid.UUID, thread_id: str) -> Thread:
        stored = await self.inner.thread(scope, agent_id=agent_id, thread_id=thread_id)
        tenant_id = scope.tenant_id
        summary = stored.summary
        if summary is not None:
            text = await self._sealer.decrypt_text(tenant_id, summary.text, purpose=SUMMARY)
            summary = Summary(text=text, turns=summary.turns)
        turns = [
            replace(
                turn,
                task=await self._sealer.decrypt_text(tenant_id, turn.task, purpose=TASK),
                answer=await self._sealer.decrypt_text(tenant_id, turn.answer, purpose=ANSWER),
            )
            for turn in stored.turns
        ]
        return Thread(summary=summary, turns=turns)

    async def append(
        self, scope: TenantScope, *, agent_id: uuid.UUID, thread_id: str, turn: Turn
    ) -> bool:
        tenant_id = scope.tenant_id
        sealed = replace(
            turn,
            task=await self._sealer.encrypt_text(tenant_id, turn.task, purpose=TASK),
            answer=await self._sealer.encrypt_text(tenant_id, turn.answer, purpose=ANSWER),
        )
        return await self.inner.append(scope, agent_id=agent_id, thread_id=thread_id, turn=sealed)

    async def save_summary(
        self, scope: TenantScope, *, agent_id: uuid.UUID, thread_id: str, summary: Summary
    ) -> None:
        text = await self._sealer.encrypt_text(scope.tenant_id, summary.text, purpose=SUMMARY)
        await self.inner.save_summary(
            scope, agent_id=agent_id, thread_id=thread_id, summary=Summary(text, summary.turns)
        )

    async def forget_agent(self, scope: TenantScope, agent_id: uuid.UUID) -> None:
        await self.inner.forget_agent(scope, agent_id)

    async def close(self) -> None:
        await self.inner.close()


async def reencrypt_database_threads(
    session_factory: async_sessionmaker[AsyncSession], sealer: Sealer, *, batch: int = 500
) -> int:
    """Encrypt the database store's turns and summaries with their tenant's newest data key
    where they are not already; how many rows were rewritten. Safe to run again."""
    rewritten = 0
    for model in (ThreadTurn, ThreadSummary):
        after: uuid.UUID | None = None
        while True:
            async with session_scope(session_factory) as session:
                rows = await memory_repository.rows_after(session, model, after, batch)
                for row in rows:
                    changed = False
                    for column, purpose in _COLUMNS[model]:
                        value = await sealer.reseal_text(
                            row.tenant_id, getattr(row, column), purpose=purpose
                        )
                        if value is not None:
                            setattr(row, column, value)
                            changed = True
                    rewritten += changed
            if len(rows) < batch:
                break
            after = rows[-1].id
    return rewritten


# Replace one element of a turns list only if it is still what was read (appends only add
# at the end, so an index keeps its element; a thread that expired meanwhile is left gone).
_REPLACE_TURN = """
if redis.call('LINDEX', KEYS[1], ARGV[1]) == ARGV[2] then
    redis.call('LSET', KEYS[1], ARGV[1], ARGV[3])
    return 1
end
return 0
"""


async def reencrypt_redis_threads(redis: Redis, sealer: Sealer) -> int:
    """The same for the Redis store: every thread's turns and summary; how many values
    were rewritten. Idle expiry is left as it was."""
    replace_turn = redis.register_script(_REPLACE_TURN)
    rewritten = 0
    async for raw_key in redis.scan_iter(match="apiary:memory:{*}:turns", count=1000):
        key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
        tenant_id = uuid.UUID(key.split("{", 1)[1].split(":", 1)[0])
        for index, item in enumerate(await redis.lrange(key, 0, -1)):
            fields = orjson.loads(item)
            changed = False
            for name, purpose in (("task", TASK), ("answer", ANSWER)):
                value = await sealer.reseal_text(tenant_id, fields[name], purpose=purpose)
                if value is not None:
                    fields[name] = value
                    changed = True
            if changed:
                rewritten += await replace_turn(
                    keys=[key], args=[index, item, orjson.dumps(fields)]
                )
        summary_key = key.removesuffix(":turns") + ":summary"
        text = await redis.hget(summary_key, "text")
        if text is not None:
            stored = text.decode() if isinstance(text, bytes) else text
            value = await sealer.reseal_text(tenant_id, stored, purpose=SUMMARY)
            if value is not None:
                await redis.hset(summary_key, "text", value)
                rewritten += 1
    return rewritten


_COLUMNS: dict[type[ThreadTurn] | type[ThreadSummary], tuple[tuple[str, str], ...]] = {
    ThreadTurn: (("task", TASK), ("answer", ANSWER)),
    ThreadSummary: (("summary", SUMMARY),),
}
