"""Routes under /api/v1/agents: create, list, get, update (a new version), delete, versions."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Response, status

from apiary.agents.schemas import Agent, AgentCreate, AgentTool, AgentUpdate, AgentVersion
from apiary.agents.service import agent_service
from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.authz.permissions import Permission
from apiary.errors import documented
from apiary.kit.schemas import Page, Paging, page_of
from apiary.runtime import RuntimeDep
from apiary.swarm.tools import REGISTRY

router = APIRouter(prefix="/agents", tags=["agents"])

Reader = Annotated[AuthContext, authorize(Permission.AGENTS_READ)]
Writer = Annotated[AuthContext, authorize(Permission.AGENTS_WRITE)]


@router.get("", summary="List agents")
async def list_agents(auth: Reader, session: DbSession, page: Paging) -> Page[Agent]:
    rows, total = await agent_service.list(session, auth, page)
    return page_of(Agent, rows, total, page)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create an agent",
    responses=documented(409),
)
async def create_agent(
    auth: Writer, session: DbSession, runtime: RuntimeDep, body: AgentCreate
) -> Agent:
    return Agent.model_validate(await agent_service.create(session, runtime, auth, body))


@router.get("/tools", summary="The tools an agent may be given")
async def list_tools(auth: Reader) -> list[AgentTool]:
    # Declared before /{agent_id}, which would otherwise take "tools" for an id.
    return [
        AgentTool(name=tool.name, description=tool.description)
        for tool in sorted(REGISTRY.values(), key=lambda tool: tool.name)
    ]


@router.get("/{agent_id}", summary="Get an agent")
async def get_agent(auth: Reader, session: DbSession, agent_id: uuid.UUID) -> Agent:
    return Agent.model_validate(await agent_service.get(session, auth, agent_id))


@router.patch(
    "/{agent_id}", summary="Change an agent (creates a new version)", responses=documented(409)
)
async def update_agent(
    auth: Writer, session: DbSession, runtime: RuntimeDep, agent_id: uuid.UUID, body: AgentUpdate
) -> Agent:
    return Agent.model_validate(await agent_service.update(session, runtime, auth, agent_id, body))


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an agent")
async def delete_agent(
    auth: Writer, session: DbSession, runtime: RuntimeDep, agent_id: uuid.UUID
) -> Response:
    await agent_service.delete(session, runtime, auth, agent_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{agent_id}/versions", summary="An agent's versions, newest first")
async def list_versions(
    auth: Reader, session: DbSession, agent_id: uuid.UUID, page: Paging
) -> Page[AgentVersion]:
    rows, total = await agent_service.versions(session, auth, agent_id, page)
    return page_of(AgentVersion, rows, total, page)
