"""Queries for agents and their versions, all through the tenant scope."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from apiary.agents.models import Agent, AgentVersion
from apiary.authz.scope import TenantScope
from apiary.errors import NotFound
from apiary.kit.repository import paginate
from apiary.kit.schemas import PageParams


class AgentRepository:
    async def page(
        self, session: AsyncSession, scope: TenantScope, page: PageParams
    ) -> tuple[Sequence[Agent], int]:
        return await paginate(session, scope.select(Agent), page, Agent.name, Agent.id)

    async def get(self, session: AsyncSession, scope: TenantScope, agent_id: uuid.UUID) -> Agent:
        return await scope.get(session, Agent, agent_id)

    async def by_ids(
        self, session: AsyncSession, scope: TenantScope, agent_ids: Sequence[uuid.UUID]
    ) -> Sequence[Agent]:
        if not agent_ids:
            return []
        return (
            await session.scalars(scope.select(Agent).where(Agent.id.in_(set(agent_ids))))
        ).all()

    async def by_name(self, session: AsyncSession, scope: TenantScope, name: str) -> Agent | None:
        return await session.scalar(scope.select(Agent).where(Agent.name == name))

    async def versions(
        self, session: AsyncSession, scope: TenantScope, agent_id: uuid.UUID, page: PageParams
    ) -> tuple[Sequence[AgentVersion], int]:
        statement = scope.select(AgentVersion).where(AgentVersion.agent_id == agent_id)
        return await paginate(session, statement, page, AgentVersion.version.desc())

    async def version(
        self, session: AsyncSession, scope: TenantScope, agent_id: uuid.UUID, version: int
    ) -> AgentVersion:
        row = await session.scalar(
            scope.select(AgentVersion).where(
                AgentVersion.agent_id == agent_id, AgentVersion.version == version
            )
        )
        if row is None:
            raise NotFound(f"agent {agent_id} has no version {version}")
        return row

    def add(self, session: AsyncSession, scope: TenantScope, row: Agent | AgentVersion) -> None:
        scope.add(session, row)

    async def delete(self, session: AsyncSession, agent: Agent) -> None:
        await session.delete(agent)


agent_repository = AgentRepository()
