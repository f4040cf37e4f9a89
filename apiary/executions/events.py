"""Execution events: persisted with a per-execution sequence number, then announced.

The row is committed before listeners are woken, so whoever reads after a wake-up finds
it; SSE and WebSocket clients resume from any sequence number because the rows are the
stream. One process runs an execution at a time, so one in-memory counter (seeded from the
database when a run starts or resumes) numbers its events without gaps; should a number
turn out to be taken (a write committed while its caller was being cancelled), the counter
is read from the database again.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError

from apiary.authz.scope import TenantScope
from apiary.db import session_scope
from apiary.executions.bus import events_channel
from apiary.executions.models import ExecutionEvent
from apiary.executions.repository import execution_repository
from apiary.runtime import Runtime


class EventRecorder:
    def __init__(
        self, runtime: Runtime, scope: TenantScope, execution_id: uuid.UUID, *, last_seq: int
    ) -> None:
        self._runtime = runtime
        self._scope = scope
        self._execution_id = execution_id
        self._seq = last_seq
        self._lock = asyncio.Lock()

    @classmethod
    async def resume(
        cls, runtime: Runtime, scope: TenantScope, execution_id: uuid.UUID
    ) -> EventRecorder:
        recorder = cls(runtime, scope, execution_id, last_seq=0)
        recorder._seq = await recorder._last_stored()
        return recorder

    async def emit(self, type: str, **data: Any) -> int:
        async with self._lock:
            try:
                seq = await self._insert(self._seq + 1, type, data)
            except IntegrityError:
                # The number is taken: a write whose caller was cancelled (a run being
                # cancelled or timed out) can commit without being counted. Count again.
                self._seq = await self._last_stored()
                seq = await self._insert(self._seq + 1, type, data)
            self._seq = seq
        await self._runtime.notifier.notify(events_channel(self._execution_id))
        return seq

    async def _insert(self, seq: int, type: str, data: dict[str, Any]) -> int:
        async with session_scope(self._runtime.session_factory) as session:
            execution_repository.add(
                session,
                self._scope,
                ExecutionEvent(execution_id=self._execution_id, seq=seq, type=type, data=data),
            )
        return seq

    async def _last_stored(self) -> int:
        async with session_scope(self._runtime.session_factory) as session:
            return await execution_repository.last_seq(session, self._scope, self._execution_id)
