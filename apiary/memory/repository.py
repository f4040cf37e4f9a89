"""Queries for thread turns and summaries, all through the tenant scope."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.authz.scope import TenantScope
from apiary.memory.models import ThreadSummary, ThreadTurn


class MemoryRepository:
    async def turns(
        self,
        session: AsyncSession,
        scope: TenantScope,
        *,
        agent_id: uuid.UUID,
        thread_id: str,
        skip: int = 0,
    ) -> Sequence[ThreadTurn]:
        """The thread's turns, oldest first, after the `skip` oldest."""
        statement = (
            scope.select(ThreadTurn)
            .where(ThreadTurn.agent_id == agent_id, ThreadTurn.thread_id == thread_id)
            .order_by(ThreadTurn.created_at, ThreadTurn.id)
            .offset(skip)
        )
        return (await session.scalars(statement)).all()

    async def summary(
        self, session: AsyncSession, scope: TenantScope, *, agent_id: uuid.UUID, thread_id: str
    ) -> ThreadSummary | None:
        return await session.scalar(
            scope.select(ThreadSummary).where(
                ThreadSummary.agent_id == agent_id, ThreadSummary.thread_id == thread_id
            )
        )

    async def has_turn(
        self, session: AsyncSession, scope: TenantScope, execution_id: uuid.UUID
    ) -> bool:
        found = await session.scalar(
            scope.select(ThreadTurn).where(ThreadTurn.execution_id == execution_id)
        )
        return found is not None

    async def rows_after(
        self,
        session: AsyncSession,
        model: type[ThreadTurn] | type[ThreadSummary],
        after: uuid.UUID | None,
        limit: int,
    ) -> Sequence[ThreadTurn | ThreadSummary]:
        """Every tenant's turns (or summaries) in id order, `limit` at a time: for
        `apiary encryption reencrypt`, which rewrites each within its own tenant's key."""
        statement = select(model).order_by(model.id).limit(limit)
        if after is not None:
            statement = statement.where(model.id > after)
        rows = (await session.scalars(statement)).all()
        return cast("Sequence[ThreadTurn | ThreadSummary]", rows)

    def add(
        self, session: AsyncSession, scope: TenantScope, row: ThreadTurn | ThreadSummary
    ) -> None:
        scope.add(session, row)


memory_repository = MemoryRepository()
