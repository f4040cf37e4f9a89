from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from apiary.kit.schemas import PlainLine, Schema, Text, UpdateSchema

AgentName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][\w .-]*$"
    ),
]


class AgentFields(Schema):
    description: Text = Field(default="", max_length=2000)
    system_prompt: Text = Field(default="", max_length=20_000)
    model: PlainLine = Field(
        default="default", min_length=1, max_length=200, description="A gateway model or route"
    )
    temperature: float = Field(default=0.2, ge=0, le=2)
    tools: list[PlainLine] = Field(default_factory=list, max_length=20)
    knowledge_base_ids: list[uuid.UUID] = Field(
        default_factory=list,
        max_length=20,
        description="The tenant's knowledge bases the `knowledge_search` tool searches",
    )
    max_subagents: int = Field(default=5, ge=1, le=100)
    max_cost_usd: float | None = Field(default=None, gt=0)
    timeout_s: int = Field(default=300, ge=1, le=86_400)


class AgentCreate(AgentFields):
    name: AgentName


class AgentUpdate(UpdateSchema):
    nullable = frozenset({"max_cost_usd"})  # null: no cost cap

    name: AgentName | None = None
    description: Text | None = Field(default=None, max_length=2000)
    system_prompt: Text | None = Field(default=None, max_length=20_000)
    model: PlainLine | None = Field(default=None, min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    tools: list[PlainLine] | None = Field(default=None, max_length=20)
    knowledge_base_ids: list[uuid.UUID] | None = Field(default=None, max_length=20)
    max_subagents: int | None = Field(default=None, ge=1, le=100)
    max_cost_usd: float | None = Field(default=None, gt=0)
    timeout_s: int | None = Field(default=None, ge=1, le=86_400)


class Agent(AgentFields):
    id: uuid.UUID
    name: str
    version: int
    created_at: datetime
    updated_at: datetime


class AgentDefinition(AgentFields):
    """What an execution runs with: the agent's fields at one version, as stored on the
    execution and in the agent's version history."""

    # Read back from stored JSON: a field a later version dropped must not make an old
    # execution unreadable.
    model_config = ConfigDict(from_attributes=True, extra="ignore")

    id: uuid.UUID
    name: str
    version: int


class AgentVersion(Schema):
    id: uuid.UUID
    agent_id: uuid.UUID
    version: int
    definition: AgentDefinition
    created_at: datetime


class AgentTool(Schema):
    """A tool an agent may be given (`tools` in an agent takes these names)."""

    name: str
    description: str
