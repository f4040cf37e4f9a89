from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from apiary.agents.schemas import AgentDefinition
from apiary.executions.figures import ExecutionFigures
from apiary.kit.schemas import JsonObject, PlainLine, Schema, Text


class ExecutionOptions(Schema):
    max_agents: int | None = Field(default=None, ge=1, le=100)
    budget_usd: float | None = Field(default=None, gt=0)
    deadline_s: float | None = Field(default=None, gt=0, le=86_400)
    mode: Literal["swarm", "single"] = "swarm"


class ExecutionCreate(Schema):
    agent_id: uuid.UUID
    task: Text = Field(min_length=1, max_length=50_000)
    inputs: JsonObject = Field(default_factory=dict)
    thread_id: PlainLine | None = Field(default=None, min_length=1, max_length=200)
    options: ExecutionOptions = Field(default_factory=ExecutionOptions)


class Subtask(Schema):
    index: int
    prompt: str
    status: str
    result: str | None
    error: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    attempts: int
    tool_calls: int
    started_at: datetime | None
    finished_at: datetime | None


class Source(Schema):
    """A knowledge-base passage a sub-agent was given by its `knowledge_search` tool."""

    document_id: uuid.UUID
    filename: str
    page: int | None
    section: str | None
    char_start: int
    char_end: int


class Execution(Schema):
    id: uuid.UUID
    agent_id: uuid.UUID | None
    agent_version: int
    task: str
    thread_id: str | None
    options: dict[str, Any]
    state: str
    cancel_requested: bool
    answer: str | None
    error: str | None
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    figures: ExecutionFigures
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ExecutionDetail(Execution):
    inputs: dict[str, Any]
    agent: AgentDefinition = Field(description="The agent's definition the execution runs with")
    subtasks: list[Subtask]
    sources: list[Source] = Field(
        default_factory=list,
        description="The knowledge-base passages the sub-agents searched up, each once",
    )
