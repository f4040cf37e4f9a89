"""Execution rules: create once per idempotency key, list, read, cancel, read events."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.agents.repository import agent_repository
from apiary.agents.service import definition
from apiary.audit.service import audit_service
from apiary.auth.context import AuthContext
from apiary.billing.entitlements import check_execution
from apiary.db import new_id
from apiary.errors import Conflict
from apiary.executions.event_types import StateChanged
from apiary.executions.models import Execution, ExecutionEvent, ExecutionState, Subtask
from apiary.executions.repository import execution_repository
from apiary.executions.schemas import ExecutionCreate
from apiary.kit.schemas import PageParams
from apiary.usage.models import LedgerEntry
from apiary.usage.repository import usage_repository


class ExecutionService:
    async def create(
        self,
        session: AsyncSession,
        auth: AuthContext,
        body: ExecutionCreate,
        *,
        idempotency_key: str | None,
    ) -> tuple[Execution, bool]:
        """The new execution and True; or, for a key seen before, the first one and False."""
        if idempotency_key is not None:
            found = await execution_repository.by_idempotency_key(
                session, auth.scope, idempotency_key
            )
            if found is not None:
                return found, False
        agent = await agent_repository.get(session, auth.scope, body.agent_id)
        # The swarm runs options.max_agents, else the agent's max_subagents (swarm/lifecycle.py).
        sub_agents = body.options.max_agents or agent.max_subagents or 1
        await check_execution(session, auth.scope, sub_agents=sub_agents)
        execution = Execution(
            id=new_id(),
            agent_id=agent.id,
            agent_version=agent.version,
            agent=definition(agent),
            task=body.task,
            inputs=body.inputs,
            options=body.options.model_dump(exclude_none=True),
            thread_id=body.thread_id,
            idempotency_key=idempotency_key,
            state=ExecutionState.QUEUED.value,
            role=auth.role.value,
            user_id=auth.actor.user_id,
            api_key_id=auth.actor.api_key_id,
            figures={},
        )
        execution_repository.add(session, auth.scope, execution)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError:
            # The same key, raced by a concurrent request: answer with the winner's.
            if idempotency_key is None:
                raise
            found = await execution_repository.by_idempotency_key(
                session, auth.scope, idempotency_key
            )
            if found is None:
                raise Conflict("this execution conflicts with another request") from None
            return found, False
        queued = StateChanged(state=ExecutionState.QUEUED)
        execution_repository.add(
            session,
            auth.scope,
            ExecutionEvent(
                execution_id=execution.id,
                seq=1,
                type=queued.type.value,
                data=queued.wire(),
            ),
        )
        await session.flush()
        await audit_service.record_by(
            session,
            auth,
            "execution.created",
            target_type="execution",
            target_id=execution.id,
            # The task and inputs are the tenant's data: the log says what ran, not on what.
            details={
                "agent_id": str(agent.id),
                "agent_version": agent.version,
                "sub_agents": sub_agents,
            },
        )
        return execution, True

    async def list(
        self,
        session: AsyncSession,
        auth: AuthContext,
        page: PageParams,
        *,
        agent_id: uuid.UUID | None,
        state: str | None,
        created_from: dt.datetime | None = None,
        created_to: dt.datetime | None = None,
    ) -> tuple[Sequence[Execution], int]:
        return await execution_repository.page(
            session,
            auth.scope,
            page,
            agent_id=agent_id,
            state=state,
            created_from=created_from,
            created_to=created_to,
        )

    async def get(
        self, session: AsyncSession, auth: AuthContext, execution_id: uuid.UUID
    ) -> tuple[Execution, Sequence[Subtask]]:
        execution = await execution_repository.get(session, auth.scope, execution_id)
        subtasks = await execution_repository.subtasks(session, auth.scope, execution_id)
        return execution, subtasks

    async def subtasks_of(
        self, session: AsyncSession, auth: AuthContext, execution_ids: Sequence[uuid.UUID]
    ) -> Mapping[uuid.UUID, Sequence[Subtask]]:
        """The subtasks of several executions at once (the GraphQL API's batched read);
        another tenant's executions simply have none."""
        return await execution_repository.subtasks_of(session, auth.scope, execution_ids)

    async def cancel(
        self, session: AsyncSession, auth: AuthContext, execution_id: uuid.UUID
    ) -> Execution:
        execution = await execution_repository.get(session, auth.scope, execution_id)
        if ExecutionState(execution.state).finished:
            raise Conflict(f"execution {execution_id} already ended ({execution.state})")
        if not execution.cancel_requested:
            await audit_service.record_by(
                session,
                auth,
                "execution.cancelled",
                target_type="execution",
                target_id=execution.id,
                details={"state": execution.state},
            )
        execution.cancel_requested = True
        await session.flush()
        return execution

    async def events(
        self, session: AsyncSession, auth: AuthContext, execution_id: uuid.UUID, *, after: int
    ) -> tuple[ExecutionState, Sequence[ExecutionEvent]]:
        """The execution's state and its events after sequence number `after`."""
        state = await execution_repository.state_of(session, auth.scope, execution_id)
        rows = await execution_repository.events_after(session, auth.scope, execution_id, after)
        return state, rows

    async def ledger(
        self, session: AsyncSession, auth: AuthContext, execution_id: uuid.UUID, page: PageParams
    ) -> tuple[Sequence[LedgerEntry], int]:
        """The execution's model calls; another tenant's execution is not found."""
        await execution_repository.get(session, auth.scope, execution_id)
        return await usage_repository.execution_entries(session, auth.scope, execution_id, page)


execution_service = ExecutionService()
