"""Routes under /api/v1/executions: start (202, idempotent), list, read, cancel, and the
live event stream as SSE and over a WebSocket, both resumable from a sequence number."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import (
    APIRouter,
    BackgroundTasks,
    Header,
    Query,
    Response,
    WebSocket,
    WebSocketDisconnect,
    status,
)
from pydantic import AwareDatetime

from apiary.agents.schemas import AgentDefinition
from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authenticate, authorize
from apiary.auth.forwarded import client_ip
from apiary.authz.permissions import Permission
from apiary.db import session_scope
from apiary.errors import ApiaryError, Forbidden, documented
from apiary.executions.bus import cancel_channel, events_channel
from apiary.executions.event_types import ExecutionEvent, ExecutionEventType
from apiary.executions.events import encode_row, unpack
from apiary.executions.models import ExecutionState
from apiary.executions.repository import EVENTS_PAGE, execution_repository
from apiary.executions.schemas import (
    Execution,
    ExecutionCreate,
    ExecutionDetail,
    Source,
    Subtask,
)
from apiary.executions.service import execution_service
from apiary.kit.follow import Read, follow
from apiary.kit.schemas import Page, Paging, page_of
from apiary.kit.sse import (
    After,
    EncodedEvent,
    EventStreamResponse,
    event_stream_response,
    resume_point,
)
from apiary.runtime import Runtime, RuntimeDep
from apiary.swarm.tools import unique_sources
from apiary.usage.schemas import LedgerRow

router = APIRouter(prefix="/executions", tags=["executions"])

Reader = Annotated[AuthContext, authorize(Permission.EXECUTIONS_READ)]
Launcher = Annotated[AuthContext, authorize(Permission.EXECUTIONS_RUN)]  # may start and cancel


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start an execution (202); a repeated Idempotency-Key returns the first (200)",
    responses={
        200: {"model": Execution, "description": "The execution this Idempotency-Key started"},
        **documented(402, 404, 409),
    },
)
async def create_execution(
    auth: Launcher,
    session: DbSession,
    runtime: RuntimeDep,
    body: ExecutionCreate,
    response: Response,
    background: BackgroundTasks,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Execution:
    execution, created = await execution_service.create(
        session, auth, body, idempotency_key=idempotency_key
    )
    if created:
        # Background tasks run after the response, so after the request's commit.
        background.add_task(runtime.runner.enqueue, execution.id)
    else:
        response.status_code = status.HTTP_200_OK
    return Execution.model_validate(execution)


@router.get("", summary="List executions, newest first")
async def list_executions(
    auth: Reader,
    session: DbSession,
    page: Paging,
    agent_id: uuid.UUID | None = None,
    state: ExecutionState | None = None,
    created_from: Annotated[
        AwareDatetime | None, Query(description="Created at or after (ISO-8601 with a timezone)")
    ] = None,
    created_to: Annotated[
        AwareDatetime | None, Query(description="Created before (ISO-8601 with a timezone)")
    ] = None,
) -> Page[Execution]:
    rows, total = await execution_service.list(
        session,
        auth,
        page,
        agent_id=agent_id,
        state=state.value if state else None,
        created_from=created_from,
        created_to=created_to,
    )
    return page_of(Execution, rows, total, page)


@router.get("/{execution_id}", summary="An execution with its subtasks and figures")
async def get_execution(
    auth: Reader, session: DbSession, execution_id: uuid.UUID
) -> ExecutionDetail:
    execution, subtasks = await execution_service.get(session, auth, execution_id)
    base = Execution.model_validate(execution).model_dump()
    return ExecutionDetail(
        **base,
        inputs=execution.inputs,
        agent=AgentDefinition.model_validate(execution.agent),
        subtasks=[Subtask.model_validate(s) for s in subtasks],
        sources=[
            Source.model_validate(source)
            for source in unique_sources(source for s in subtasks for source in s.sources or [])
        ],
    )


@router.get("/{execution_id}/ledger", summary="The execution's model calls, oldest first")
async def execution_ledger(
    auth: Reader, session: DbSession, execution_id: uuid.UUID, page: Paging
) -> Page[LedgerRow]:
    rows, total = await execution_service.ledger(session, auth, execution_id, page)
    return page_of(LedgerRow, rows, total, page)


@router.post(
    "/{execution_id}/cancel",
    summary="Cancel: running sub-agents stop promptly",
    responses=documented(409),
)
async def cancel_execution(
    auth: Launcher,
    session: DbSession,
    runtime: RuntimeDep,
    execution_id: uuid.UUID,
    background: BackgroundTasks,
) -> Execution:
    execution = await execution_service.cancel(session, auth, execution_id)
    background.add_task(runtime.notifier.notify, cancel_channel(execution_id))
    return Execution.model_validate(execution)


def event_stream(
    runtime: Runtime, auth: AuthContext, execution_id: uuid.UUID, after: int
) -> AsyncIterator[list[EncodedEvent] | None]:
    """Events after `after`, live, until `done` (or the run's end); None marks an idle
    interval. The SSE, WebSocket and GraphQL subscription streams all follow this one. The
    notifications carry the events (`executions.events.pack`)."""

    async def read(after: int) -> Read:
        async with session_scope(runtime.session_factory) as session:
            state, rows = await execution_service.events(session, auth, execution_id, after=after)
        return Read([encode_row(row) for row in rows], state.finished, len(rows) == EVENTS_PAGE)

    return follow(
        runtime.notifier,
        events_channel(execution_id),
        read,
        after,
        carried=unpack,
        is_last=lambda event: event.type == ExecutionEventType.DONE,
        # The final state is saved just before its last events: wait briefly for them, but
        # never for ever for a run that ended without them.
        settle_waits=4,
    )


@router.get(
    "/{execution_id}/events",
    summary="Live events as Server-Sent Events; resume with Last-Event-ID or ?after=",
    response_class=EventStreamResponse,
    responses={200: {"model": ExecutionEvent, "description": "each `data:` is one event"}},
)
async def execution_events(
    auth: Reader,
    session: DbSession,
    runtime: RuntimeDep,
    execution_id: uuid.UUID,
    after: After = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventStreamResponse:
    await execution_repository.get(session, auth.scope, execution_id)  # 404 before streaming
    start = resume_point(after, last_event_id)
    return event_stream_response(event_stream(runtime, auth, execution_id, start))


@router.websocket("/{execution_id}/ws")
async def execution_socket(
    websocket: WebSocket,
    execution_id: uuid.UUID,
    token: str | None = None,
    after: After = None,
) -> None:
    """The same events over a WebSocket; authenticate with ?token= or an Authorization
    header. Each message is one event as JSON (the `ExecutionEvent` schema); the socket
    closes after `done`."""
    runtime: Runtime = websocket.app.state.runtime
    header = websocket.headers.get("authorization", "")
    credentials = token or (header[7:].strip() if header.lower().startswith("bearer ") else "")
    ip = client_ip(websocket)
    try:
        if not credentials:
            raise Forbidden("send ?token= or 'Authorization: Bearer ...'")
        auth = await authenticate(credentials, ip, runtime)
        if not auth.can(Permission.EXECUTIONS_READ):
            raise Forbidden("this role may not read executions")
        async with session_scope(runtime.session_factory) as session:
            await execution_repository.get(session, auth.scope, execution_id)
    except ApiaryError as error:
        # Accepted, then closed with the code: a close before the accept is refused at the
        # handshake with a bare HTTP 403, and a browser's WebSocket cannot tell a 404 from a
        # missing token then.
        await websocket.accept()
        await websocket.close(code=4000 + error.status_code, reason=error.detail[:120])
        return
    await websocket.accept()
    try:
        async for batch in event_stream(runtime, auth, execution_id, after or 0):
            for event in batch or ():
                await websocket.send_text(event.body.decode())
        await websocket.close()
    except (WebSocketDisconnect, asyncio.CancelledError):
        return
