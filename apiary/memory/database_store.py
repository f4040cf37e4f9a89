"""The embedded memory store: threads as rows of `thread_turns` and `thread_summaries`.

Used when no Redis is configured. Each call is its own short transaction, so a turn is
visible to the next execution as soon as the one that produced it has finished.
"""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.authz.scope import TenantScope
from apiary.db import session_scope, utcnow
from apiary.memory.models import ThreadSummary, ThreadTurn
from apiary.memory.repository import memory_repository
from apiary.memory.store import Summary, Thread, Turn


class DatabaseMemoryStore:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = session_factory

    async def thread(self, scope: TenantScope, *, agent_id: uuid.UUID, thread_id: str) -> Thread:
        async with session_scope(self._sessions) as session:
            row = await memory_repository.summary(
                session, scope, agent_id=agent_id, thread_id=thread_id
            )
            summary = Summary(text=row.summary, turns=row.turns) if row else None
            rows = await memory_repository.turns(
                session,
                scope,
                agent_id=agent_id,
                thread_id=thread_id,
                skip=summary.turns if summary else 0,
            )
        turns = [Turn(r.execution_id, r.task, r.answer, r.created_at) for r in rows]
        return Thread(summary=summary, turns=turns)

    async def append(
        self, scope: TenantScope, *, agent_id: uuid.UUID, thread_id: str, turn: Turn
    ) -> bool:
        try:
            async with session_scope(self._sessions) as session:
                if await memory_repository.has_turn(session, scope, turn.execution_id):
                    return False
                row = ThreadTurn(
                    agent_id=agent_id,
                    thread_id=thread_id,
                    execution_id=turn.execution_id,
                    task=turn.task,
                    answer=turn.answer,
                    created_at=turn.created_at,
                )
                memory_repository.add(session, scope, row)
        except IntegrityError:
            # The unique execution id: the same turn committed by another process between
            # our check and our insert (or its agent deleted meanwhile). Nothing to add.
            return False
        return True

    async def save_summary(
        self, scope: TenantScope, *, agent_id: uuid.UUID, thread_id: str, summary: Summary
    ) -> None:
        async with session_scope(self._sessions) as session:
            row = await memory_repository.summary(
                session, scope, agent_id=agent_id, thread_id=thread_id
            )
            if row is None:
                row = ThreadSummary(agent_id=agent_id, thread_id=thread_id)
                memory_repository.add(session, scope, row)
            row.summary = summary.text
            row.turns = summary.turns
            row.updated_at = utcnow()

    async def forget_agent(self, scope: TenantScope, agent_id: uuid.UUID) -> None:
        return None  # the agent's rows go with it (ON DELETE CASCADE), in its transaction

    async def close(self) -> None:
        return None  # the runtime owns the database engine
