"""Agent rules: a model the gateway serves, tools from the registry, a new version per change."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from apiary.agents.models import Agent, AgentVersion
from apiary.agents.repository import agent_repository
from apiary.agents.schemas import AgentCreate, AgentUpdate
from apiary.audit.service import audit_service
from apiary.auth.context import AuthContext
from apiary.db import new_id, utcnow
from apiary.errors import Conflict, Unprocessable
from apiary.gateway.chain import ProviderChain
from apiary.gateway.router import UnknownModel
from apiary.kit.schemas import PageParams
from apiary.knowledge.repository import knowledge_repository
from apiary.memory.store import MemoryDeps
from apiary.swarm.tools import REGISTRY

DEFINITION_FIELDS = (
    "name",
    "description",
    "system_prompt",
    "model",
    "temperature",
    "tools",
    "knowledge_base_ids",
    "max_subagents",
    "max_cost_usd",
    "timeout_s",
)


def definition(agent: Agent) -> dict[str, Any]:
    """What an execution runs with: the agent's fields at its current version."""
    return {field: getattr(agent, field) for field in DEFINITION_FIELDS} | {
        "id": str(agent.id),
        "version": agent.version,
    }


class AgentDeps(MemoryDeps, Protocol):
    providers: ProviderChain  # whether the agent's model is served
    # (and the memory store: a deleted agent's threads are forgotten)


class AgentService:
    def _check(self, deps: AgentDeps, *, model: str | None, tools: list[str] | None) -> None:
        if model is not None:
            try:
                deps.providers.router.decide(model, {"messages": []})
            except UnknownModel:
                raise Unprocessable(
                    f"model: {model!r} is not a gateway model or route; GET /v1/models lists them"
                ) from None
        if tools is not None:
            unknown = sorted(set(tools) - set(REGISTRY))
            if unknown:
                raise Unprocessable(
                    f"tools: unknown tool(s) {', '.join(unknown)}; "
                    f"available: {', '.join(sorted(REGISTRY))}"
                )

    async def _knowledge_bases(
        self, session: AsyncSession, auth: AuthContext, ids: list[uuid.UUID]
    ) -> list[str]:
        """The ids as stored (strings), once each is a knowledge base of the caller's tenant.

        An id of another tenant's knowledge base reads exactly like a missing one."""
        wanted = list(dict.fromkeys(ids))
        found = {base.id for base in await knowledge_repository.bases(session, auth.scope, wanted)}
        missing = [str(kb_id) for kb_id in wanted if kb_id not in found]
        if missing:
            raise Unprocessable(f"knowledge_base_ids: no knowledge base {', '.join(missing)}")
        return [str(kb_id) for kb_id in wanted]

    async def _name_free(
        self, session: AsyncSession, auth: AuthContext, name: str, *, not_id: uuid.UUID | None
    ) -> None:
        found = await agent_repository.by_name(session, auth.scope, name)
        if found is not None and found.id != not_id:
            raise Conflict(f"an agent named {name!r} already exists")

    def _snapshot(self, session: AsyncSession, auth: AuthContext, agent: Agent) -> None:
        agent_repository.add(
            session,
            auth.scope,
            AgentVersion(agent_id=agent.id, version=agent.version, definition=definition(agent)),
        )

    async def create(
        self, session: AsyncSession, deps: AgentDeps, auth: AuthContext, body: AgentCreate
    ) -> Agent:
        self._check(deps, model=body.model, tools=body.tools)
        await self._name_free(session, auth, body.name, not_id=None)
        fields = body.model_dump()
        fields["knowledge_base_ids"] = await self._knowledge_bases(
            session, auth, body.knowledge_base_ids
        )
        agent = Agent(id=new_id(), version=1, updated_at=utcnow(), **fields)
        agent_repository.add(session, auth.scope, agent)
        await session.flush()
        self._snapshot(session, auth, agent)
        await session.flush()
        await audit_service.record_by(
            session,
            auth,
            "agent.created",
            target_type="agent",
            target_id=agent.id,
            details={"name": agent.name, "version": 1},
        )
        return agent

    async def list(
        self, session: AsyncSession, auth: AuthContext, page: PageParams
    ) -> tuple[Sequence[Agent], int]:
        return await agent_repository.page(session, auth.scope, page)

    async def get(self, session: AsyncSession, auth: AuthContext, agent_id: uuid.UUID) -> Agent:
        return await agent_repository.get(session, auth.scope, agent_id)

    async def get_many(
        self, session: AsyncSession, auth: AuthContext, agent_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, Agent]:
        """Several agents by id in one read; ids of another tenant (or deleted) are absent."""
        rows = await agent_repository.by_ids(session, auth.scope, agent_ids)
        return {agent.id: agent for agent in rows}

    async def update(
        self,
        session: AsyncSession,
        deps: AgentDeps,
        auth: AuthContext,
        agent_id: uuid.UUID,
        body: AgentUpdate,
    ) -> Agent:
        agent = await self.get(session, auth, agent_id)
        changes = body.model_dump(exclude_unset=True)
        if "max_cost_usd" not in changes:
            changes = {k: v for k, v in changes.items() if v is not None}
        self._check(deps, model=changes.get("model"), tools=changes.get("tools"))
        if "name" in changes:
            await self._name_free(session, auth, changes["name"], not_id=agent.id)
        if "knowledge_base_ids" in changes:
            ids = changes.pop("knowledge_base_ids")
            if ids is not None:
                changes["knowledge_base_ids"] = await self._knowledge_bases(session, auth, ids)
        changed = {k: v for k, v in changes.items() if getattr(agent, k) != v}
        if not changed:
            return agent
        for field, value in changed.items():
            setattr(agent, field, value)
        agent.version += 1
        agent.updated_at = utcnow()
        await session.flush()
        self._snapshot(session, auth, agent)
        await session.flush()
        await audit_service.record_by(
            session,
            auth,
            "agent.updated",
            target_type="agent",
            target_id=agent.id,
            details={"version": agent.version, "fields": sorted(changed)},  # not the values
        )
        return agent

    async def delete(
        self, session: AsyncSession, deps: AgentDeps, auth: AuthContext, agent_id: uuid.UUID
    ) -> None:
        agent = await self.get(session, auth, agent_id)
        await audit_service.record_by(
            session,
            auth,
            "agent.deleted",
            target_type="agent",
            target_id=agent.id,
            details={"name": agent.name},
        )
        await agent_repository.delete(session, agent)
        # Its conversation threads too: rows cascade, but Redis keys would outlive it.
        await deps.memory.forget_agent(auth.scope, agent_id)

    async def versions(
        self, session: AsyncSession, auth: AuthContext, agent_id: uuid.UUID, page: PageParams
    ) -> tuple[Sequence[AgentVersion], int]:
        await self.get(session, auth, agent_id)
        return await agent_repository.versions(session, auth.scope, agent_id, page)


agent_service = AgentService()
