from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from apiary.authz.scope import TenantOwned
from apiary.db import Base, IdMixin, utcnow


class ThreadTurn(IdMixin, TenantOwned, Base):
    """One finished execution in a thread: what was asked and what was answered."""

    __tablename__ = "thread_turns"
    __table_args__ = (
        Index("ix_thread_turns_thread", "tenant_id", "agent_id", "thread_id", "created_at"),
        UniqueConstraint("execution_id", name="uq_thread_turns_execution_id"),
    )

    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    thread_id: Mapped[str] = mapped_column(String(200))
    execution_id: Mapped[uuid.UUID]
    task: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)


class ThreadSummary(IdMixin, TenantOwned, Base):
    """The summary of a thread's older turns, once they no longer fit the token limit."""

    __tablename__ = "thread_summaries"
    __table_args__ = (
        UniqueConstraint("tenant_id", "agent_id", "thread_id", name="uq_thread_summaries_thread"),
    )

    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    thread_id: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(Text)
    turns: Mapped[int] = mapped_column(Integer)  # how many of the oldest turns it covers
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
