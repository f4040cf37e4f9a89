"""Queries for executions, subtasks and events. Request paths go through the tenant scope;
the runner's start-up scan (`unfinished_ids`) is the one system-wide query, by design."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, Update, bindparam, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.authz.scope import TenantScope
from apiary.db import Write
from apiary.errors import NotFound
from apiary.executions.models import (
    FINISHED,
    Execution,
    ExecutionEvent,
    ExecutionState,
    Subtask,
    SubtaskStatus,
)
from apiary.kit.repository import paginate
from apiary.kit.schemas import PageParams

EVENTS_PAGE = 500  # events read at a time


class ExecutionRepository:
    async def page(
        self,
        session: AsyncSession,
        scope: TenantScope,
        page: PageParams,
        *,
        agent_id: uuid.UUID | None = None,
        state: str | None = None,
        created_from: dt.datetime | None = None,
        created_to: dt.datetime | None = None,
    ) -> tuple[Sequence[Execution], int]:
        statement = scope.select(Execution)
        if agent_id is not None:
            statement = statement.where(Execution.agent_id == agent_id)
        if state is not None:
            statement = statement.where(Execution.state == state)
        if created_from is not None:
            statement = statement.where(Execution.created_at >= created_from)
        if created_to is not None:
            statement = statement.where(Execution.created_at < created_to)
        return await paginate(session, statement, page, Execution.created_at.desc(), Execution.id)

    async def get(
        self, session: AsyncSession, scope: TenantScope, execution_id: uuid.UUID
    ) -> Execution:
        return await scope.get(session, Execution, execution_id)

    async def state_of(
        self, session: AsyncSession, scope: TenantScope, execution_id: uuid.UUID
    ) -> ExecutionState:
        """Only the state (an event stream asks on every wake-up; the row is large)."""
        state = await session.scalar(
            scope.select(Execution)
            .with_only_columns(Execution.state)
            .where(Execution.id == execution_id)
        )
        if state is None:
            raise NotFound(f"execution {execution_id} not found")
        return ExecutionState(state)

    async def cancel_requested(
        self, session: AsyncSession, scope: TenantScope, execution_id: uuid.UUID
    ) -> bool:
        """Whether a cancel was asked for (a running execution looks every second)."""
        return bool(
            await session.scalar(
                scope.select(Execution)
                .with_only_columns(Execution.cancel_requested)
                .where(Execution.id == execution_id)
            )
        )

    async def by_idempotency_key(
        self, session: AsyncSession, scope: TenantScope, key: str
    ) -> Execution | None:
        return await session.scalar(scope.select(Execution).where(Execution.idempotency_key == key))

    def add(self, session: AsyncSession, scope: TenantScope, row: Any) -> None:
        scope.add(session, row)

    async def subtasks(
        self, session: AsyncSession, scope: TenantScope, execution_id: uuid.UUID
    ) -> Sequence[Subtask]:
        statement = (
            scope.select(Subtask)
            .where(Subtask.execution_id == execution_id)
            .order_by(Subtask.index)
        )
        return (await session.scalars(statement)).all()

    async def subtasks_of(
        self, session: AsyncSession, scope: TenantScope, execution_ids: Sequence[uuid.UUID]
    ) -> Mapping[uuid.UUID, Sequence[Subtask]]:
        """The subtasks of several executions in one statement, by execution, in order."""
        found: dict[uuid.UUID, list[Subtask]] = {}
        if not execution_ids:
            return {}
        statement = (
            scope.select(Subtask)
            .where(Subtask.execution_id.in_(set(execution_ids)))
            .order_by(Subtask.execution_id, Subtask.index)
        )
        for subtask in await session.scalars(statement):
            found.setdefault(subtask.execution_id, []).append(subtask)
        return found

    async def subtask_figures(
        self, session: AsyncSession, scope: TenantScope, execution_id: uuid.UUID
    ) -> Sequence[SubtaskFigures]:
        """The columns an execution's figures come from, without loading the rows."""
        statement = (
            scope.select(Subtask)
            .with_only_columns(
                Subtask.status,
                Subtask.started_at,
                Subtask.finished_at,
                Subtask.prompt_tokens,
                Subtask.completion_tokens,
                Subtask.cost_usd,
            )
            .where(Subtask.execution_id == execution_id)
            .order_by(Subtask.index)
        )
        return [SubtaskFigures(*row) for row in await session.execute(statement)]

    def close_subtasks_write(
        self, scope: TenantScope, execution_id: uuid.UUID, *, finished_at: datetime
    ) -> Write:
        """At an execution's end: its running subtasks become cancelled (finished now), its
        pending ones skipped. One statement, for the group commit."""
        return Write(
            _close_subtasks(),
            {
                "scope_tenant_id": scope.tenant_id,
                "key_execution_id": execution_id,
                "running": SubtaskStatus.RUNNING.value,
                "pending": SubtaskStatus.PENDING.value,
                "cancelled": SubtaskStatus.CANCELLED.value,
                "skipped": SubtaskStatus.SKIPPED.value,
                "finished_at": finished_at,
            },
        )

    def execution_write(
        self, scope: TenantScope, execution_id: uuid.UUID, values: dict[str, Any]
    ) -> Write:
        return scope.update_row(Execution, {"id": execution_id}, **values)

    def new_subtask_write(
        self, scope: TenantScope, execution_id: uuid.UUID, index: int, prompt: str
    ) -> Write:
        return scope.insert_row(Subtask, execution_id=execution_id, index=index, prompt=prompt)

    def subtask_write(
        self, scope: TenantScope, execution_id: uuid.UUID, index: int, values: dict[str, Any]
    ) -> Write:
        """One subtask's columns, without loading it, for the group commit."""
        return scope.update_row(Subtask, {"execution_id": execution_id, "index": index}, **values)

    def event_write(
        self,
        scope: TenantScope,
        execution_id: uuid.UUID,
        seq: int,
        type: str,
        data: dict[str, Any],
        *,
        created_at: datetime,
    ) -> Write:
        return scope.insert_row(
            ExecutionEvent,
            execution_id=execution_id,
            seq=seq,
            type=type,
            data=data,
            created_at=created_at,
        )

    async def events_after(
        self,
        session: AsyncSession,
        scope: TenantScope,
        execution_id: uuid.UUID,
        after: int,
        limit: int = EVENTS_PAGE,
    ) -> Sequence[ExecutionEvent]:
        statement = (
            scope.select(ExecutionEvent)
            .where(ExecutionEvent.execution_id == execution_id, ExecutionEvent.seq > after)
            .order_by(ExecutionEvent.seq)
            .limit(limit)
        )
        return (await session.scalars(statement)).all()

    async def last_seq(
        self, session: AsyncSession, scope: TenantScope, execution_id: uuid.UUID
    ) -> int:
        value = await session.scalar(
            select(func.max(ExecutionEvent.seq)).where(
                ExecutionEvent.tenant_id == scope.tenant_id,
                ExecutionEvent.execution_id == execution_id,
            )
        )
        return int(value or 0)

    async def claim_lease(
        self,
        session: AsyncSession,
        scope: TenantScope,
        execution_id: uuid.UUID,
        *,
        owner: str,
        now: datetime,
        until: datetime,
    ) -> datetime | None:
        """Take a free or lapsed lease (None), or say until when another run holds it."""
        taken = await session.execute(
            scope.update(Execution)
            .where(
                Execution.id == execution_id,
                or_(Execution.lease_until.is_(None), Execution.lease_until < now),
            )
            .values(lease_owner=owner, lease_until=until)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(taken) == 1:
            return None
        held: datetime | None = await session.scalar(
            scope.select(Execution)
            .with_only_columns(Execution.lease_until)
            .where(Execution.id == execution_id)
        )
        return held or now

    async def renew_lease(
        self,
        session: AsyncSession,
        scope: TenantScope,
        execution_id: uuid.UUID,
        *,
        owner: str,
        until: datetime,
    ) -> bool:
        renewed = await session.execute(
            scope.update(Execution)
            .where(Execution.id == execution_id, Execution.lease_owner == owner)
            .values(lease_until=until)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(renewed) == 1

    async def release_lease(
        self, session: AsyncSession, scope: TenantScope, execution_id: uuid.UUID, *, owner: str
    ) -> None:
        await session.execute(
            scope.update(Execution)
            .where(Execution.id == execution_id, Execution.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
            .execution_options(synchronize_session=False)
        )

    async def unfinished_ids(self, session: AsyncSession) -> Sequence[uuid.UUID]:
        """Every execution not yet in a final state, across tenants (for the runner)."""
        statement = (
            select(Execution.id)
            .where(Execution.state.not_in([s.value for s in FINISHED]))
            .order_by(Execution.created_at)
        )
        return (await session.scalars(statement)).all()

    async def idle_unfinished(self, session: AsyncSession, idle_since: datetime) -> list[uuid.UUID]:
        """Unfinished executions no run holds and none has held since `idle_since` (a
        lease that lapsed before it; or none, and no change of state after it), for the
        requeue sweep, across tenants. A run that ended without
        finishing releases its lease, so its execution is one at once: its message is
        then back in the queue or held for a retry."""
        statement = (
            select(Execution.id)
            .where(
                Execution.state.not_in([s.value for s in FINISHED]),
                func.coalesce(Execution.lease_until, Execution.updated_at) < idle_since,
            )
            .order_by(Execution.created_at)
        )
        return list((await session.scalars(statement)).all())

    async def tenant_and_state(
        self, session: AsyncSession, execution_id: uuid.UUID
    ) -> tuple[uuid.UUID, ExecutionState] | None:
        """The tenant an execution belongs to and its state, for a worker given only its id."""
        row = (
            await session.execute(
                select(Execution.tenant_id, Execution.state).where(Execution.id == execution_id)
            )
        ).first()
        return None if row is None else (row[0], ExecutionState(row[1]))


@dataclass(frozen=True, slots=True)
class SubtaskFigures:
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@functools.cache
def _close_subtasks() -> Update:
    table: Table = Subtask.__table__  # type: ignore[assignment]
    running = table.c.status == bindparam("running")
    return (
        update(table)
        .where(
            table.c.tenant_id == bindparam("scope_tenant_id"),
            table.c.execution_id == bindparam("key_execution_id"),
            or_(running, table.c.status == bindparam("pending")),
        )
        .values(
            status=case((running, bindparam("cancelled")), else_=bindparam("skipped")),
            finished_at=case((running, bindparam("finished_at")), else_=table.c.finished_at),
        )
    )


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


execution_repository = ExecutionRepository()
