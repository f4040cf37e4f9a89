"""The event recorder: one gapless, unique sequence number per event of an execution."""

from __future__ import annotations

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


async def test_a_write_that_was_not_counted_does_not_stop_the_next(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(runtime, client, "events")
    scope = TenantScope(uuid.UUID(tenant.id))
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
    recorder = await EventRecorder.resume(runtime, scope, execution_id)
    assert await recorder.emit("state", state="running") == 1
    # A recorder whose count is behind the table: what a run is left with when a write
    # commits while its task is being cancelled. Its next event still gets a number.
    behind = EventRecorder(runtime, scope, execution_id, last_seq=0)
    assert await behind.emit("state", state="cancelled") == 2
    assert await behind.emit("done") == 3
    async with runtime.session_factory() as session:
        rows = await execution_repository.events_after(session, scope, execution_id, 0)
    assert [(row.seq, row.type) for row in rows] == [(1, "state"), (2, "state"), (3, "done")]
