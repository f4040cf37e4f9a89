"""What every resolver receives: the caller, the request's database session, the runtime,
and the request's DataLoaders.

The caller is authenticated as REST authenticates (`apiary.auth.dependencies.authenticate`),
from the Authorization header or, on a WebSocket, from the `connection_init` payload; each
resolver then asks `authorize` for the permission its REST twin declares, which runs the
very check REST's `authorize(Permission.X)` dependency runs.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from apiary.agents.service import agent_service
from apiary.auth.context import AuthContext
from apiary.auth.dependencies import authorize as rest_authorize
from apiary.authz.permissions import Permission
from apiary.db import session_scope
from apiary.errors import Unauthorized
from apiary.executions.service import execution_service

if TYPE_CHECKING:
    from apiary.agents.models import Agent
    from apiary.executions.models import Subtask
    from apiary.runtime import Runtime

Check = Callable[[AuthContext], Awaitable[AuthContext]]


@functools.cache
def _check(permission: Permission) -> Check:
    # The coroutine behind REST's `authorize(permission)`: the same refusals, word for word.
    return cast(Check, rest_authorize(permission).dependency)


@dataclass
class Loaders:
    """Batched reads for one request: a page of executions asks once for all their
    subtasks and once for all their agents, however many executions it holds."""

    subtasks: DataLoader[uuid.UUID, list[Subtask]]
    agents: DataLoader[uuid.UUID, Agent | None]


class GraphQLContext(BaseContext):
    def __init__(
        self,
        runtime: Runtime,
        *,
        session: AsyncSession | None,
        auth: AuthContext | None,
        ip: str | None,
    ) -> None:
        super().__init__()
        self.runtime = runtime
        self.auth = auth
        self.ip = ip
        self._session = session
        # Resolvers of one query run concurrently; an AsyncSession takes one at a time.
        self._lock = asyncio.Lock()
        self.loaders = _loaders(self)

    async def authorize(self, permission: Permission) -> AuthContext:
        """The caller, if it holds `permission`; else the error REST would answer."""
        if self.auth is None:
            raise Unauthorized(
                "send 'Authorization: Bearer <access token or API key>' (on a WebSocket, "
                'the connection_init payload {"authorization": "Bearer ..."})'
            )
        return await _check(permission)(self.auth)

    @asynccontextmanager
    async def db(self) -> AsyncIterator[AsyncSession]:
        """The request's session (one at a time); on a WebSocket, which has none, a short
        unit of work of its own, so a long subscription holds no connection."""
        if self._session is None:
            async with session_scope(self.runtime.session_factory) as session:
                yield session
            return
        async with self._lock:
            yield self._session

    async def after_commit(
        self, job: Callable[[uuid.UUID], Awaitable[object]], arg: uuid.UUID
    ) -> None:
        """Run `job(arg)` after a mutation's commit (a run is enqueued only for an
        execution the database holds): after the response, as REST's background tasks, or
        at once on a WebSocket, which has none."""
        if self._session is None or self.background_tasks is None:  # a WebSocket's never run
            await job(arg)
        else:
            self.background_tasks.add_task(job, arg)

    @asynccontextmanager
    async def mutation(self) -> AsyncIterator[AsyncSession]:
        """A mutation's own unit of work, as a REST request has: committed when it
        succeeds, rolled back when it fails, whatever the request's other mutations do.
        (Not a savepoint in the request's session: on SQLite a transaction that reads and
        then writes fails at once when another connection wrote in between, where a write
        begun on its own waits its turn.)"""
        async with session_scope(self.runtime.session_factory) as session:
            yield session


def _loaders(context: GraphQLContext) -> Loaders:
    async def subtasks(ids: list[uuid.UUID]) -> list[list[Subtask]]:
        auth = await context.authorize(Permission.EXECUTIONS_READ)
        async with context.db() as session:
            found = await execution_service.subtasks_of(session, auth, ids)
        return [list(found.get(execution_id, ())) for execution_id in ids]

    async def agents(ids: list[uuid.UUID]) -> list[Agent | None]:
        auth = await context.authorize(Permission.AGENTS_READ)
        async with context.db() as session:
            found = await agent_service.get_many(session, auth, ids)
        return [found.get(agent_id) for agent_id in ids]

    return Loaders(subtasks=DataLoader(load_fn=subtasks), agents=DataLoader(load_fn=agents))
