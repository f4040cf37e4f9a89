"""The GraphQL object types: what REST's schemas show, read from the same rows.

Each type is built from the REST schema of the same name (`X.from_row`), so a field shows
the value REST shows; fields that reach further (an execution's subtasks and agent, an
agent's versions) are resolvers that authorize and go through the services.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, cast

import orjson
import strawberry
from strawberry.scalars import JSON

from apiary.agents import schemas as agent_schemas
from apiary.agents.models import Agent as AgentRow
from apiary.agents.service import agent_service
from apiary.api_keys import schemas as api_key_schemas
from apiary.audit import schemas as audit_schemas
from apiary.authz.permissions import Permission, Role
from apiary.errors import Unprocessable
from apiary.executions import schemas as execution_schemas
from apiary.executions.models import Execution as ExecutionRow
from apiary.executions.models import ExecutionEvent as ExecutionEventRow
from apiary.executions.models import ExecutionState
from apiary.executions.repository import EVENTS_PAGE
from apiary.executions.service import execution_service
from apiary.graphql import fields
from apiary.graphql.context import GraphQLContext
from apiary.graphql.pagination import Connection, connection, page_params
from apiary.kit.schemas import INT32_MAX
from apiary.knowledge import schemas as knowledge_schemas
from apiary.knowledge.service import knowledge_service
from apiary.swarm.tools import unique_sources
from apiary.usage import schemas as usage_schemas
from apiary.users import schemas as member_schemas

Info = strawberry.Info[GraphQLContext, None]

RoleEnum = strawberry.enum(Role, name="Role")
UsageDimensionEnum = strawberry.enum(usage_schemas.UsageDimension, name="UsageDimension")
UsageBucketEnum = strawberry.enum(usage_schemas.UsageBucket, name="UsageBucket")
ExecutionStateEnum = strawberry.enum(ExecutionState, name="ExecutionState")

First = Annotated[
    int | None, strawberry.argument(description="Items in the page: 1 to 200, 50 by default")
]
After = Annotated[str | None, strawberry.argument(description="The endCursor of the previous page")]


@strawberry.type
class AgentDefinition:
    """An agent's fields at one version: what an execution runs with."""

    id: uuid.UUID
    name: str
    version: int
    description: str
    system_prompt: str
    model: str
    temperature: float
    tools: list[str]
    knowledge_base_ids: list[uuid.UUID]
    max_subagents: int
    max_cost_usd: float | None
    timeout_s: int

    @classmethod
    def of(cls, stored: Any) -> AgentDefinition:
        return cls(**agent_schemas.AgentDefinition.model_validate(stored).model_dump())


@strawberry.type
class AgentVersion:
    id: uuid.UUID
    agent_id: uuid.UUID
    version: int
    definition: AgentDefinition
    created_at: dt.datetime

    @classmethod
    def from_row(cls, row: object) -> AgentVersion:
        shown = agent_schemas.AgentVersion.model_validate(row)
        return cls(
            id=shown.id,
            agent_id=shown.agent_id,
            version=shown.version,
            definition=AgentDefinition(**shown.definition.model_dump()),
            created_at=shown.created_at,
        )


@strawberry.type
class Agent:
    id: uuid.UUID
    name: str
    version: int
    description: str
    system_prompt: str
    model: str
    temperature: float
    tools: list[str]
    knowledge_base_ids: list[uuid.UUID]
    max_subagents: int
    max_cost_usd: float | None
    timeout_s: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def from_row(cls, row: AgentRow) -> Agent:
        return cls(**agent_schemas.Agent.model_validate(row).model_dump())

    @fields.field("The agent's versions, newest first")
    async def versions(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[AgentVersion]:
        context = info.context
        auth = await context.authorize(Permission.AGENTS_READ)
        page = page_params(first, after)
        async with context.db() as session:
            rows, total = await agent_service.versions(session, auth, self.id, page)
        return connection(rows, total, page, AgentVersion.from_row)


@strawberry.type
class Subtask:
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
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: object) -> Subtask:
        return cls(**execution_schemas.Subtask.model_validate(row).model_dump())


@strawberry.type(description="A knowledge-base passage a sub-agent was given")
class Source:
    document_id: uuid.UUID
    filename: str
    page: int | None
    section: str | None
    char_start: int
    char_end: int


@strawberry.type(description="One event of an execution, as its SSE and WebSocket streams send it")
class ExecutionEvent:
    seq: int
    type: str
    data: JSON
    created_at: dt.datetime

    @classmethod
    def from_row(cls, row: ExecutionEventRow) -> ExecutionEvent:
        return cls(seq=row.seq, type=row.type, data=cast(JSON, row.data), created_at=row.created_at)

    @classmethod
    def from_body(cls, body: bytes) -> ExecutionEvent:
        """An event as the live stream carries it (`executions.events.encode`)."""
        event = orjson.loads(body)
        return cls(
            seq=event["seq"],
            type=event["type"],
            data=event["data"],
            created_at=dt.datetime.fromisoformat(event["created_at"]),
        )


@strawberry.type(description="One model call, as the usage ledger records it")
class LedgerRow:
    id: uuid.UUID
    created_at: dt.datetime
    kind: str
    requested_model: str
    route: str | None
    provider: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    cache_hit: bool
    latency_ms: float
    fallback_path: list[str]
    status: str
    error: str | None

    @classmethod
    def from_row(cls, row: object) -> LedgerRow:
        return cls(**usage_schemas.LedgerRow.model_validate(row).model_dump())


@strawberry.type
class Execution:
    id: uuid.UUID
    agent_id: uuid.UUID | None
    agent_version: int
    task: str
    thread_id: str | None
    options: JSON
    state: ExecutionStateEnum  # type: ignore[valid-type]
    cancel_requested: bool
    answer: str | None
    error: str | None
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    figures: JSON = strawberry.field(
        description="Time, tokens and cost per phase, and the sub-agents' counts"
    )
    inputs: JSON
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    stored_definition: strawberry.Private[dict[str, Any]]

    @classmethod
    def from_row(cls, row: ExecutionRow) -> Execution:
        shown = execution_schemas.Execution.model_validate(row)
        as_json = shown.model_dump(mode="json", include={"options", "figures"})
        return cls(
            **shown.model_dump(exclude={"options", "figures", "state"}),
            state=ExecutionState(shown.state),
            options=as_json["options"],
            figures=as_json["figures"],
            inputs=cast(JSON, row.inputs),
            stored_definition=row.agent,
        )

    @fields.field("The agent's definition the execution runs with")
    def definition(self) -> AgentDefinition:
        return AgentDefinition.of(self.stored_definition)

    @fields.field("The agent as it is now (null once deleted)")
    async def agent(self, info: Info) -> Agent | None:
        if self.agent_id is None:
            return None
        row = await info.context.loaders.agents.load(self.agent_id)
        return None if row is None else Agent.from_row(row)

    @fields.field("The sub-agents' subtasks, in order")
    async def subtasks(self, info: Info) -> list[Subtask]:
        rows = await info.context.loaders.subtasks.load(self.id)
        return [Subtask.from_row(row) for row in rows]

    @fields.field("The knowledge-base passages the sub-agents searched up")
    async def sources(self, info: Info) -> list[Source]:
        rows = await info.context.loaders.subtasks.load(self.id)
        found = unique_sources(source for row in rows for source in row.sources or [])
        return [
            Source(**execution_schemas.Source.model_validate(source).model_dump())
            for source in found
        ]

    @fields.field("Events after sequence number `after`, oldest first")
    async def events(
        self, info: Info, after: int = 0, first: int = EVENTS_PAGE
    ) -> list[ExecutionEvent]:
        if not 0 <= after <= INT32_MAX:
            raise Unprocessable(f"after: must be between 0 and {INT32_MAX}")
        if not 1 <= first <= EVENTS_PAGE:
            raise Unprocessable(f"first: must be between 1 and {EVENTS_PAGE}")
        context = info.context
        auth = await context.authorize(Permission.EXECUTIONS_READ)
        async with context.db() as session:
            _, rows = await execution_service.events(session, auth, self.id, after=after)
        return [ExecutionEvent.from_row(row) for row in rows[:first]]

    @fields.field("The execution's model calls, oldest first")
    async def ledger(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[LedgerRow]:
        context = info.context
        auth = await context.authorize(Permission.EXECUTIONS_READ)
        page = page_params(first, after)
        async with context.db() as session:
            rows, total = await execution_service.ledger(session, auth, self.id, page)
        return connection(rows, total, page, LedgerRow.from_row)


@strawberry.type
class Document:
    id: uuid.UUID
    knowledge_base_id: uuid.UUID
    filename: str
    content_type: str
    size_bytes: int
    status: str
    error: str | None
    chunk_count: int
    chunks_done: int
    created_at: dt.datetime

    @classmethod
    def from_row(cls, row: object) -> Document:
        return cls(**knowledge_schemas.Document.model_validate(row).model_dump())


@strawberry.type
class KnowledgeBase:
    id: uuid.UUID
    name: str
    description: str
    embedding_model: str
    chunk_size: int
    chunk_overlap: int
    created_by: uuid.UUID | None
    created_at: dt.datetime

    @classmethod
    def from_row(cls, row: object) -> KnowledgeBase:
        return cls(**knowledge_schemas.KnowledgeBase.model_validate(row).model_dump())

    @fields.field("The documents with their ingestion status")
    async def documents(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[Document]:
        context = info.context
        auth = await context.authorize(Permission.KNOWLEDGE_READ)
        page = page_params(first, after)
        async with context.db() as session:
            rows, total = await knowledge_service.list_documents(session, auth, self.id, page)
        return connection(rows, total, page, Document.from_row)


@strawberry.type
class Member:
    id: uuid.UUID = strawberry.field(description="The membership's id")
    user_id: uuid.UUID
    email: str
    name: str
    role: RoleEnum  # type: ignore[valid-type]
    created_at: dt.datetime

    @classmethod
    def of(cls, member: member_schemas.Member) -> Member:
        return cls(**member.model_dump())


@strawberry.type(description="An API key's metadata: its secret is never shown again")
class ApiKey:
    id: uuid.UUID
    name: str
    prefix: str
    role: RoleEnum  # type: ignore[valid-type]
    created_by: uuid.UUID | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: object) -> ApiKey:
        return cls(**api_key_schemas.ApiKey.model_validate(row).model_dump())


@strawberry.type
class AuditEntry:
    seq: int
    tenant_id: uuid.UUID | None
    actor_user_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None
    action: str
    target_type: str | None
    target_id: str | None
    ip: str | None
    details: JSON
    created_at: dt.datetime
    hash: str

    @classmethod
    def from_row(cls, row: object) -> AuditEntry:
        return cls(**audit_schemas.AuditEntry.model_validate(row).model_dump())


@strawberry.type
class BaselineComparison:
    model: str
    compared_calls: int
    excluded_calls: int
    cost_usd: float
    actual_cost_usd: float
    savings_usd: float
    cache_savings_usd: float
    routing_savings_usd: float


@strawberry.type(description="Totals of the tenant's model calls in [from, to)")
class UsageSummary:
    from_: dt.datetime = strawberry.field(name="from")
    to: dt.datetime
    calls: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    unpriced_calls: int
    cache_hits: int
    cache_hit_rate: float
    saved_by_cache_usd: float
    baseline: BaselineComparison | None

    @classmethod
    def of(cls, summary: usage_schemas.UsageSummary) -> UsageSummary:
        fields = summary.model_dump(exclude={"baseline"})
        baseline = summary.baseline
        return cls(
            **fields,
            baseline=None if baseline is None else BaselineComparison(**baseline.model_dump()),
        )


@strawberry.type
class UsageSeriesRow:
    key: str | None
    day: dt.date | None
    calls: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    unpriced_calls: int
    cache_hits: int
    cache_hit_rate: float
    saved_by_cache_usd: float


@strawberry.type(description="The tenant's usage in [from, to), grouped")
class UsageSeries:
    from_: dt.datetime = strawberry.field(name="from")
    to: dt.datetime
    group_by: UsageDimensionEnum  # type: ignore[valid-type]
    bucket: UsageBucketEnum | None  # type: ignore[valid-type]
    rows: list[UsageSeriesRow]

    @classmethod
    def of(cls, series: usage_schemas.UsageSeries) -> UsageSeries:
        return cls(
            from_=series.from_,
            to=series.to,
            group_by=series.group_by,
            bucket=series.bucket,
            rows=[UsageSeriesRow(**row.model_dump()) for row in series.rows],
        )
