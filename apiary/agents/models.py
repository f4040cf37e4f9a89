from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from apiary.authz.scope import TenantOwned
from apiary.db import Base, IdMixin, utcnow


class Agent(IdMixin, TenantOwned, Base):
    """The current definition of an agent; every change also writes an `AgentVersion`."""

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_agents_tenant_name"),)

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(String(200))
    temperature: Mapped[float] = mapped_column(Float, default=0.2)
    tools: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Ids (as strings) of the tenant's knowledge bases its `knowledge_search` tool searches.
    knowledge_base_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    max_subagents: Mapped[int] = mapped_column(Integer, default=5)
    max_cost_usd: Mapped[float | None] = mapped_column(Float)
    timeout_s: Mapped[int] = mapped_column(Integer, default=300)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentVersion(IdMixin, TenantOwned, Base):
    """A frozen copy of an agent as it was at one version; executions point at these."""

    __tablename__ = "agent_versions"
    __table_args__ = (
        UniqueConstraint("agent_id", "version", name="uq_agent_versions_agent_version"),
    )

    agent_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
