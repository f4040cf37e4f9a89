from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from apiary.authz.scope import TenantOwned
from apiary.db import Base, IdMixin, utcnow


class ExecutionState(StrEnum):
    QUEUED = "queued"
    DECOMPOSING = "decomposing"
    RUNNING = "running"
    SYNTHESIZING = "synthesizing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"
    TIMED_OUT = "timed_out"

    @property
    def finished(self) -> bool:
        return self in FINISHED


class FinishedExecutionState(StrEnum):
    """The final states: a run ends in one of them and never leaves it. In the API's schema
    (the `done` event's state), so the dashboard reads the rule rather than restating it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"
    TIMED_OUT = "timed_out"


FINISHED = frozenset(ExecutionState(state.value) for state in FinishedExecutionState)


class SubtaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # never started: the budget, deadline or a cancel came first
    CANCELLED = "cancelled"


class Execution(IdMixin, TenantOwned, Base):
    __tablename__ = "executions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_executions_tenant_idem"),
        Index("ix_executions_tenant_created", "tenant_id", "created_at"),
    )

    agent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"), index=True
    )
    agent_version: Mapped[int] = mapped_column(Integer)
    agent: Mapped[dict[str, Any]] = mapped_column(JSON)  # the definition it ran with
    task: Mapped[str] = mapped_column(Text)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    thread_id: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20), default=ExecutionState.QUEUED, index=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    answer: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    # Who started it: workers act as this principal when they call the gateway.
    role: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[uuid.UUID | None]
    api_key_id: Mapped[uuid.UUID | None]
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    figures: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # runs started (resumes count)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The run working on it holds a lease it renews; another delivery of the same job (a
    # broker redelivers after its visibility timeout) waits until the lease lapses.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]


class Subtask(IdMixin, TenantOwned, Base):
    __tablename__ = "subtasks"
    __table_args__ = (UniqueConstraint("execution_id", "index", name="uq_subtasks_exec_index"),)

    execution_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), index=True
    )
    index: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default=SubtaskStatus.PENDING)
    result: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    tool_calls: Mapped[int] = mapped_column(Integer, default=0)
    # Citations of the knowledge-base passages its `knowledge_search` calls returned.
    sources: Mapped[list[Any]] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ExecutionEvent(IdMixin, TenantOwned, Base):
    """One thing that happened in an execution, numbered 1, 2, 3... within it."""

    __tablename__ = "execution_events"
    __table_args__ = (UniqueConstraint("execution_id", "seq", name="uq_execution_events_seq"),)

    execution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
