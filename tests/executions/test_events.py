"""The event recorder: one gapless, unique sequence number per event of an execution."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from apiary.authz.scope import TenantScope
from apiary.executions.events import EventRecorder
from apiary.executions.models import Execution
from apiary.executions.repository import execution_repository
from apiary.runtime import Runtime
from tests.factories import make_tenant

pytestmark = pytest.mark.both_databases


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
    assert await recorder.emit("state", state="running") == 1
    interrupted = asyncio.create_task(recorder.emit("subagent_started", subtask=0))
    await asyncio.sleep(0)  # queued, not yet committed
    interrupted.cancel()
    assert await recorder.emit("state", state="cancelled") == 3
    assert await recorder.emit("done") == 4
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
    assert await resumed.emit("resumed") == 5


async def test_a_recorder_behind_the_table_goes_on_after_the_last_number(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """Two runs of one execution overlap when one stalls past its lease and another takes
    over: the stalled one's numbers are taken, and its next event goes after the last."""
    tenant = await make_tenant(runtime, client, "events-behind")
    scope = TenantScope(uuid.UUID(tenant.id))
    execution_id = await _execution(runtime, scope)
    taken_over = await EventRecorder.resume(runtime, scope, execution_id)
    assert await taken_over.emit("resumed") == 1
    stalled = EventRecorder(runtime, scope, execution_id, last_seq=0)
    assert await stalled.emit("state", state="running") == 2
    async with runtime.session_factory() as session:
        rows = await execution_repository.events_after(session, scope, execution_id, 0)
    assert [(row.seq, row.type) for row in rows] == [(1, "resumed"), (2, "state")]
