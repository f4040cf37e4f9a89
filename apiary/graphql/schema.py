"""The GraphQL schema: queries, mutations and the execution-events subscription.

Each resolver is what the REST route of the same data does, in the same words: authorize
the permission the route declares, call the service the route calls, show the schema the
route shows. Nothing here builds SQL; every read and write goes through the services and so
through the tenant scope, and another tenant's id is "not found" here as there.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncGenerator, Iterable
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.schema import StreamResult
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from apiary.agents.schemas import AgentCreate, AgentUpdate
from apiary.agents.service import agent_service
from apiary.api_keys.service import api_key_service
from apiary.audit.service import audit_service
from apiary.authz.permissions import Permission
from apiary.errors import Unprocessable
from apiary.executions.models import ExecutionState
from apiary.executions.schemas import ExecutionCreate
from apiary.executions.service import execution_service
from apiary.graphql import fields, types
from apiary.graphql.errors import ShapeErrors, log_unexpected, shaped
from apiary.graphql.inputs import (
    AgentCreateInput,
    AgentUpdateInput,
    ExecutionCreateInput,
    KnowledgeBaseCreateInput,
    checked,
)
from apiary.graphql.limits import MAX_DEPTH, MAX_TOKENS, CostLimit
from apiary.graphql.pagination import Connection, connection, page_params
from apiary.kit.schemas import INT32_MAX
from apiary.knowledge.schemas import KnowledgeBaseCreate
from apiary.knowledge.service import knowledge_service
from apiary.usage.schemas import UsageBucket, UsageDimension
from apiary.usage.service import resolve_window, usage_service
from apiary.users.service import member_service

Info = types.Info
First = types.First
After = types.After
ExecutionStateEnum = types.ExecutionStateEnum
IDEMPOTENCY_KEY_MAX = 200  # as REST's Idempotency-Key header

From = Annotated[
    dt.datetime | None,
    strawberry.argument(
        name="from",
        description="Start of the range, included (ISO-8601 with a timezone); default: the "
        "start of the month `to` closes",
    ),
]
To = Annotated[
    dt.datetime | None,
    strawberry.argument(description="End of the range, excluded; default: next month's start"),
]


@strawberry.type
class Query:
    # Nullable at the top, so one field refused (a permission, a missing id) leaves the
    # query's other fields their data.
    @fields.field("The tenant's agents, by name")
    async def agents(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[types.Agent] | None:
        auth = await info.context.authorize(Permission.AGENTS_READ)
        page = page_params(first, after)
        async with info.context.db() as session:
            rows, total = await agent_service.list(session, auth, page)
        return connection(rows, total, page, types.Agent.from_row)

    @strawberry.field
    async def agent(self, info: Info, id: uuid.UUID) -> types.Agent | None:
        auth = await info.context.authorize(Permission.AGENTS_READ)
        async with info.context.db() as session:
            return types.Agent.from_row(await agent_service.get(session, auth, id))

    @fields.field("The tenant's executions, newest first")
    async def executions(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        agent_id: uuid.UUID | None = None,
        state: ExecutionStateEnum | None = None,  # type: ignore[valid-type]
        created_from: dt.datetime | None = None,
        created_to: dt.datetime | None = None,
    ) -> Connection[types.Execution] | None:
        auth = await info.context.authorize(Permission.EXECUTIONS_READ)
        page = page_params(first, after)
        for name, moment in (("createdFrom", created_from), ("createdTo", created_to)):
            if moment is not None and moment.utcoffset() is None:
                raise Unprocessable(f"{name}: give a timezone, e.g. 2026-01-01T00:00:00Z")
        async with info.context.db() as session:
            rows, total = await execution_service.list(
                session,
                auth,
                page,
                agent_id=agent_id,
                state=None if state is None else ExecutionState(state).value,
                created_from=created_from,
                created_to=created_to,
            )
        return connection(rows, total, page, types.Execution.from_row)

    @strawberry.field
    async def execution(self, info: Info, id: uuid.UUID) -> types.Execution | None:
        auth = await info.context.authorize(Permission.EXECUTIONS_READ)
        async with info.context.db() as session:
            execution, _ = await execution_service.get(session, auth, id)
        return types.Execution.from_row(execution)

    @fields.field("The tenant's knowledge bases")
    async def knowledge_bases(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[types.KnowledgeBase] | None:
        auth = await info.context.authorize(Permission.KNOWLEDGE_READ)
        page = page_params(first, after)
        async with info.context.db() as session:
            rows, total = await knowledge_service.list(session, auth, page)
        return connection(rows, total, page, types.KnowledgeBase.from_row)

    @strawberry.field
    async def knowledge_base(self, info: Info, id: uuid.UUID) -> types.KnowledgeBase | None:
        auth = await info.context.authorize(Permission.KNOWLEDGE_READ)
        async with info.context.db() as session:
            return types.KnowledgeBase.from_row(await knowledge_service.get(session, auth, id))

    @strawberry.field
    async def document(
        self, info: Info, knowledge_base_id: uuid.UUID, id: uuid.UUID
    ) -> types.Document | None:
        auth = await info.context.authorize(Permission.KNOWLEDGE_READ)
        async with info.context.db() as session:
            row = await knowledge_service.get_document(session, auth, knowledge_base_id, id)
        return types.Document.from_row(row)

    @fields.field("Totals of the tenant's model calls, and savings vs a baseline")
    async def usage_summary(
        self,
        info: Info,
        from_: From = None,
        to: To = None,
        baseline: Annotated[
            str | None,
            strawberry.argument(description="A model to compare with: provider/model or a name"),
        ] = None,
    ) -> types.UsageSummary | None:
        auth = await info.context.authorize(Permission.USAGE_READ)
        if baseline is not None and not 1 <= len(baseline) <= 300:
            raise Unprocessable("baseline: must be 1 to 300 characters")
        window = resolve_window(from_, to)
        async with info.context.db() as session:
            summary = await usage_service.summary(
                session,
                auth.scope,
                window,
                baseline=baseline,
                overrides=info.context.runtime.settings.prices,
            )
        return types.UsageSummary.of(summary)

    @fields.field("The tenant's usage grouped by day, model, provider, ...")
    async def usage_series(
        self,
        info: Info,
        from_: From = None,
        to: To = None,
        group_by: types.UsageDimensionEnum = UsageDimension.DAY,  # type: ignore[valid-type]
        bucket: types.UsageBucketEnum | None = None,  # type: ignore[valid-type]
    ) -> types.UsageSeries | None:
        auth = await info.context.authorize(Permission.USAGE_READ)
        window = resolve_window(from_, to)
        async with info.context.db() as session:
            series = await usage_service.series(
                session,
                auth.scope,
                window,
                group_by=UsageDimension(group_by),
                bucket=None if bucket is None else UsageBucket(bucket),
            )
        return types.UsageSeries.of(series)

    @fields.field("The tenant's members")
    async def members(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[types.Member] | None:
        auth = await info.context.authorize(Permission.MEMBERS_READ)
        page = page_params(first, after)
        async with info.context.db() as session:
            items, total = await member_service.list(session, auth, page)
        return connection(items, total, page, types.Member.of)

    @strawberry.field
    async def member(self, info: Info, id: uuid.UUID) -> types.Member | None:
        auth = await info.context.authorize(Permission.MEMBERS_READ)
        async with info.context.db() as session:
            return types.Member.of(await member_service.get(session, auth, id))

    @fields.field("The tenant's API keys: metadata, never their secrets")
    async def api_keys(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[types.ApiKey] | None:
        auth = await info.context.authorize(Permission.API_KEYS_READ)
        page = page_params(first, after)
        async with info.context.db() as session:
            rows, total = await api_key_service.list(session, auth, page)
        return connection(rows, total, page, types.ApiKey.from_row)

    @strawberry.field
    async def api_key(self, info: Info, id: uuid.UUID) -> types.ApiKey | None:
        auth = await info.context.authorize(Permission.API_KEYS_READ)
        async with info.context.db() as session:
            return types.ApiKey.from_row(await api_key_service.get(session, auth, id))

    @fields.field("The tenant's audit log, newest first")
    async def audit_log(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        action: Annotated[
            str | None, strawberry.argument(description="e.g. api_key.created")
        ] = None,
    ) -> Connection[types.AuditEntry] | None:
        auth = await info.context.authorize(Permission.AUDIT_READ)
        if action is not None and len(action) > 60:
            raise Unprocessable("action: must be at most 60 characters")
        page = page_params(first, after)
        async with info.context.db() as session:
            rows, total = await audit_service.list(session, auth.scope, page, action=action)
        return connection(rows, total, page, types.AuditEntry.from_row)


@strawberry.type
class CreateExecutionPayload:
    execution: types.Execution
    created: bool = strawberry.field(
        description="False when the idempotency key started an execution before: this is it"
    )


@strawberry.type
class Mutation:
    # Nullable, as the queries: each mutation commits on its own, so one refused leaves the
    # others' results in `data` (a client must see what did happen).
    @strawberry.mutation
    async def create_agent(self, info: Info, input: AgentCreateInput) -> types.Agent | None:
        auth = await info.context.authorize(Permission.AGENTS_WRITE)
        body = checked(AgentCreate, input)
        async with info.context.mutation() as session:
            agent = await agent_service.create(session, info.context.runtime, auth, body)
            return types.Agent.from_row(agent)

    @fields.mutation("Change an agent: a change makes a new version")
    async def update_agent(
        self, info: Info, id: uuid.UUID, input: AgentUpdateInput
    ) -> types.Agent | None:
        auth = await info.context.authorize(Permission.AGENTS_WRITE)
        body = checked(AgentUpdate, input)
        async with info.context.mutation() as session:
            agent = await agent_service.update(session, info.context.runtime, auth, id, body)
            return types.Agent.from_row(agent)

    @fields.mutation("Start an execution; the same idempotencyKey again returns the first")
    async def create_execution(
        self,
        info: Info,
        input: ExecutionCreateInput,
        idempotency_key: str | None = None,
    ) -> CreateExecutionPayload | None:
        auth = await info.context.authorize(Permission.EXECUTIONS_RUN)
        if idempotency_key is not None and len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
            raise Unprocessable(f"idempotencyKey: must be at most {IDEMPOTENCY_KEY_MAX} characters")
        body = checked(ExecutionCreate, input)
        async with info.context.mutation() as session:
            execution, created = await execution_service.create(
                session, auth, body, idempotency_key=idempotency_key
            )
            payload = CreateExecutionPayload(
                execution=types.Execution.from_row(execution), created=created
            )
        if created:
            await info.context.after_commit(info.context.runtime.runner.enqueue, execution.id)
        return payload

    @fields.mutation("Cancel an execution: running sub-agents stop promptly")
    async def cancel_execution(self, info: Info, id: uuid.UUID) -> types.Execution | None:
        from apiary.executions.bus import cancel_channel

        auth = await info.context.authorize(Permission.EXECUTIONS_RUN)
        async with info.context.mutation() as session:
            execution = await execution_service.cancel(session, auth, id)
            shown = types.Execution.from_row(execution)
        notifier = info.context.runtime.notifier

        async def stop(execution_id: uuid.UUID) -> None:  # the running sub-agents, at once
            await notifier.notify(cancel_channel(execution_id))

        await info.context.after_commit(stop, id)
        return shown

    @strawberry.mutation
    async def create_knowledge_base(
        self, info: Info, input: KnowledgeBaseCreateInput
    ) -> types.KnowledgeBase | None:
        auth = await info.context.authorize(Permission.KNOWLEDGE_WRITE)
        body = checked(KnowledgeBaseCreate, input)
        async with info.context.mutation() as session:
            base = await knowledge_service.create(
                session, info.context.runtime.providers, auth, body
            )
            return types.KnowledgeBase.from_row(base)


@strawberry.type
class Subscription:
    @fields.subscription(
        "An execution's events live, after sequence number `after` (resume "
        "with the last one you saw); ends after `done`"
    )
    async def execution_events(
        self, info: Info, execution_id: uuid.UUID, after: int = 0
    ) -> AsyncGenerator[types.ExecutionEvent, None]:
        from apiary.executions.endpoints import event_stream

        if not 0 <= after <= INT32_MAX:
            raise Unprocessable(f"after: must be between 0 and {INT32_MAX}")
        auth = await info.context.authorize(Permission.EXECUTIONS_READ)
        async with info.context.db() as session:
            await execution_service.get(session, auth, execution_id)  # not found: no stream
        async for batch in event_stream(info.context.runtime, auth, execution_id, after):
            for event in batch or ():
                yield types.ExecutionEvent.from_body(event.body)


class ApiarySchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # A client's mistake or a domain refusal is an answer, not an incident: only
        # unexpected errors are logged, with their traceback (which the client never sees).
        log_unexpected(errors)

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> StreamResult:
        """What a WebSocket runs (a subscription's events, or a query sent there): each
        result's errors shaped as over HTTP, where `ShapeErrors` does it."""
        results = await super().stream(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            operation_extensions,
            allowed_operation_types,
        )
        return _shaped(results)


async def _shaped(results: StreamResult) -> StreamResult:
    async for result in results:
        if isinstance(result, ExecutionResult) and result.errors:
            result.errors = [shaped(error) for error in result.errors]
        yield result


# The depth rule built once: the same rule on every request lets ValidationCache reuse
# a document's validation (a dashboard sends the same few documents again and again).
_DEPTH_RULES = QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules


class DepthLimit(AddValidationRules):
    def __init__(self) -> None:
        super().__init__(list(_DEPTH_RULES))


def build_schema() -> strawberry.Schema:
    extensions: list[Any] = [
        # Parsing a huge document costs before any limit below can look at it.
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        DepthLimit,
        lambda: ParserCache(maxsize=256),
        lambda: ValidationCache(maxsize=256),
        CostLimit,
        ShapeErrors,
    ]
    return ApiarySchema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions
    )


schema = build_schema()
