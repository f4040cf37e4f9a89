"""The event recorder: one gapless, unique sequence number per event of an execution,
announced with the events themselves; and the stream that passes them on."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import orjson
import pytest
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from apiary.auth.context import Actor, AuthContext
from apiary.authz.permissions import Role
from apiary.authz.scope import TenantScope
from apiary.db import utcnow
from apiary.executions.bus import events_channel
from apiary.executions.endpoints import event_stream
from apiary.executions.event_types import (
    Done,
    Resumed,
    StateChanged,
    SubagentFinished,
    SubagentStarted,
)
from apiary.executions.events import EventRecorder, encode, pack, unpack
from apiary.executions.figures import ExecutionFigures
from apiary.executions.models import (
    Execution,
    ExecutionState,
    FinishedExecutionState,
    SubtaskStatus,
)
from apiary.executions.repository import execution_repository
from apiary.runtime import Runtime
from tests.factories import make_tenant

pytestmark = pytest.mark.both_databases


def _started(subtask: int) -> SubagentStarted:
    return SubagentStarted(subtask=subtask, prompt="count")


def _finished(subtask: int) -> SubagentFinished:
    return SubagentFinished(
        subtask=subtask,
        status=SubtaskStatus.SUCCEEDED,
        seconds=0.1,
        cost_usd=0.0,
        spent_usd=0.0,
        error=None,
    )


def _done(state: FinishedExecutionState, *, answer: str | None = None) -> Done:
    return Done(answer=answer, error=None, state=state, cost_usd=0.0, figures=ExecutionFigures())


async def _execution(runtime: Runtime, scope: TenantScope) -> uuid.UUID:
    execution_id = uuid.uuid4()
    async with runtime.session_factory() as session:
        scope.add(
            session,
            Execution(
                id=execution_id,
                agent_id=None,
                agent_version=1,
                agent={},
                task="count events",
                state="running",
                role="developer",
            ),
        )
        await session.commit()
    return execution_id


async def test_an_emit_cancelled_mid_write_keeps_the_numbering(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """Cancelling a run can interrupt an emit while its row is being written (the
    dashboard's cancel test met this). The number is taken before the write is queued and a
    queued write lands even when its caller is cancelled, so the run's next events (its
    final state, `done`) still get the next numbers and the run can finish."""
    tenant = await make_tenant(runtime, client, "events")
    scope = TenantScope(uuid.UUID(tenant.id))
    execution_id = await _execution(runtime, scope)
    recorder = await EventRecorder.resume(runtime, scope, execution_id)
    assert await recorder.emit(StateChanged(state=ExecutionState.RUNNING)) == 1
    interrupted = asyncio.create_task(recorder.emit(_started(0)))
    await asyncio.sleep(0)  # queued, not yet committed
    interrupted.cancel()
    assert await recorder.emit(StateChanged(state=ExecutionState.CANCELLED)) == 3
    assert await recorder.emit(_done(FinishedExecutionState.CANCELLED)) == 4
    async with runtime.session_factory() as session:
        rows = await execution_repository.events_after(session, scope, execution_id, 0)
    assert [(row.seq, row.type) for row in rows] == [
        (1, "state"),
        (2, "subagent_started"),
        (3, "state"),
        (4, "done"),
    ]
    # A run resuming later continues after the last stored number.
    resumed = await EventRecorder.resume(runtime, scope, execution_id)
    assert await resumed.emit(Resumed(attempt=2)) == 5


async def test_a_recorder_behind_the_table_goes_on_after_the_last_number(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """Two runs of one execution overlap when one stalls past its lease and another takes
    over: the stalled one's numbers are taken, and its next event goes after the last."""
    tenant = await make_tenant(runtime, client, "events-behind")
    scope = TenantScope(uuid.UUID(tenant.id))
    execution_id = await _execution(runtime, scope)
    taken_over = await EventRecorder.resume(runtime, scope, execution_id)
    assert await taken_over.emit(Resumed(attempt=2)) == 1
    stalled = EventRecorder(runtime, scope, execution_id, last_seq=0)
    assert await stalled.emit(StateChanged(state=ExecutionState.RUNNING)) == 2
    async with runtime.session_factory() as session:
        rows = await execution_repository.events_after(session, scope, execution_id, 0)
    assert [(row.seq, row.type) for row in rows] == [(1, "resumed"), (2, "state")]


async def test_a_stream_reads_the_table_when_an_announcement_is_missing(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """Live events reach a stream in their announcements, not from the table. An event whose
    announcement never came (a lost pub/sub message) is still delivered, in order: the next
    announcement does not follow on from the last event sent, so the stream reads the table."""
    tenant = await make_tenant(runtime, client, "events-gap")
    scope = TenantScope(uuid.UUID(tenant.id))
    execution_id = await _execution(runtime, scope)
    recorder = await EventRecorder.resume(runtime, scope, execution_id)
    await recorder.emit(StateChanged(state=ExecutionState.RUNNING))
    auth = AuthContext(role=Role.VIEWER, tenant_id=scope.tenant_id, actor=Actor())
    stream = event_stream(runtime, auth, execution_id, 0)
    assert [(e.seq, e.type) for e in await anext(stream) or ()] == [(1, "state")]

    await recorder.emit(_started(0))  # announced: comes from the message
    assert [(e.seq, e.type) for e in await anext(stream) or ()] == [(2, "subagent_started")]

    unannounced = execution_repository.event_write(
        scope, execution_id, 3, "tool_call", {"subtask": 0}, created_at=utcnow()
    )
    await runtime.writes.run(unannounced)
    later = await EventRecorder.resume(runtime, scope, execution_id)
    await later.emit(_finished(0))
    batch = await anext(stream) or []
    assert [(e.seq, e.type) for e in batch] == [(3, "tool_call"), (4, "subagent_finished")]
    assert orjson.loads(batch[0].body)["data"] == {"subtask": 0}

    done = _done(FinishedExecutionState.SUCCEEDED, answer="42")
    await later.emit(done)
    final = await anext(stream) or []
    assert [(e.seq, e.type) for e in final] == [(5, "done")]
    assert orjson.loads(final[0].body)["data"] == done.wire()
    assert orjson.loads(final[0].body)["data"]["answer"] == "42"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


def test_packed_events_round_trip_and_a_garbled_message_is_refused() -> None:
    first = encode(1, "state", {"state": "running"}, utcnow())
    second = encode(2, "token", {"text": "line one\nline two", "subtask": 3}, utcnow())
    assert unpack(pack([first, second])) == [first, second]
    assert unpack(b"") == []
    assert unpack(b"1 state 999\n{}") is None  # shorter than it says
    assert unpack(b"not a frame") is None


async def test_emitting_nothing_commits_nothing(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """A sub-agent flushes its streamed text before running tools even when all of it went
    out already: with no events and no writes, that is no transaction at all."""
    tenant = await make_tenant(runtime, client, "events-nothing")
    scope = TenantScope(uuid.UUID(tenant.id))
    recorder = await EventRecorder.resume(runtime, scope, await _execution(runtime, scope))
    before = runtime.writes.transactions
    assert await recorder.emit_all([]) == []
    assert runtime.writes.transactions == before


async def test_an_unknown_or_malformed_event_cannot_be_emitted(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """The engine emits typed events only: an event of no known type, or data of the wrong
    shape, fails before it is numbered or stored (a stream never carries it), and the next
    good event takes the next number."""
    tenant = await make_tenant(runtime, client, "events-typed")
    scope = TenantScope(uuid.UUID(tenant.id))
    execution_id = await _execution(runtime, scope)
    recorder = await EventRecorder.resume(runtime, scope, execution_id)
    before = runtime.writes.transactions
    with pytest.raises(TypeError, match="not an execution event"):
        await recorder.emit(("decomposing", {"state": "decomposing"}))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not an execution event"):
        recorder.emit_soon({"type": "subagent_started", "subtask": 0})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="subtask"):
        SubagentStarted(subtask="first", prompt="count")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="state"):
        StateChanged(state="decomposed")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="subagent"):
        SubagentStarted(subagent=0, prompt="count")  # type: ignore[call-arg]
    assert runtime.writes.transactions == before
    assert await recorder.emit(StateChanged(state=ExecutionState.RUNNING)) == 1
    async with runtime.session_factory() as session:
        rows = await execution_repository.events_after(session, scope, execution_id, 0)
    assert [(row.seq, row.type, row.data) for row in rows] == [(1, "state", {"state": "running"})]


async def test_an_event_emitted_soon_keeps_its_place_and_is_announced_once_stored(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """A sub-agent sends its model call while its `subagent_started` is being stored. The
    event is numbered when emitted, so what the sub-agent emits next comes after it; it is
    announced (with its number) once committed, and its future says when that is."""
    tenant = await make_tenant(runtime, client, "events-soon")
    scope = TenantScope(uuid.UUID(tenant.id))
    execution_id = await _execution(runtime, scope)
    recorder = await EventRecorder.resume(runtime, scope, execution_id)
    async with runtime.notifier.listen(events_channel(execution_id)) as listener:
        stored = recorder.emit_soon(_started(0))
        assert not stored.done()  # queued, not committed yet
        assert await recorder.emit(_finished(0)) == 2
        assert stored.done()
        assert stored.exception() is None
        # Coalesced while one is being sent; with Redis, also heard twice (local and pub/sub).
        announced: set[tuple[int, str]] = set()
        while len(announced) < 2 and await listener.wait(5.0):
            for message in listener.take() or []:
                announced.update((e.seq, e.type) for e in unpack(message) or ())
    assert sorted(announced) == [
        (1, "subagent_started"),
        (2, "subagent_finished"),
    ]
    async with runtime.session_factory() as session:
        rows = await execution_repository.events_after(session, scope, execution_id, 0)
    assert [(row.seq, row.type) for row in rows] == [
        (1, "subagent_started"),
        (2, "subagent_finished"),
    ]


async def test_an_event_emitted_soon_reports_a_failed_write(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """The writes stored with an event emitted soon can fail (here: a subtask row for an
    execution that does not exist); its future carries the error, nothing is announced."""
    tenant = await make_tenant(runtime, client, "events-soon-fail")
    scope = TenantScope(uuid.UUID(tenant.id))
    execution_id = await _execution(runtime, scope)
    recorder = await EventRecorder.resume(runtime, scope, execution_id)
    orphan = execution_repository.new_subtask_write(scope, uuid.uuid4(), 0, "no such execution")
    async with runtime.notifier.listen(events_channel(execution_id)) as listener:
        stored = recorder.emit_soon(_started(0), alongside=[orphan])
        with pytest.raises(IntegrityError):
            await stored
        await asyncio.sleep(0)
        assert listener.take() == []
    async with runtime.session_factory() as session:
        rows = await execution_repository.events_after(session, scope, execution_id, 0)
    assert rows == []


async def test_an_event_emitted_soon_whose_caller_stopped_waiting_is_still_announced(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """A sub-agent cancelled while it waits for its event to be stored cancels the future
    it awaited; the write lands all the same, is announced, and the recorder does not fail
    trying to report it to nobody (it raised InvalidStateError in the loop before)."""
    tenant = await make_tenant(runtime, client, "events-soon-cancel")
    scope = TenantScope(uuid.UUID(tenant.id))
    execution_id = await _execution(runtime, scope)
    recorder = await EventRecorder.resume(runtime, scope, execution_id)
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        async with runtime.notifier.listen(events_channel(execution_id)) as listener:
            waiting = asyncio.ensure_future(recorder.emit_soon(_started(0)))
            await asyncio.sleep(0)
            waiting.cancel()
            assert await recorder.emit(_finished(0)) == 2
            announced: set[tuple[int, str]] = set()
            while len(announced) < 2 and await listener.wait(5.0):
                for message in listener.take() or []:
                    announced.update((e.seq, e.type) for e in unpack(message) or ())
    finally:
        loop.set_exception_handler(previous)
    assert sorted(announced) == [(1, "subagent_started"), (2, "subagent_finished")]
    assert errors == []
