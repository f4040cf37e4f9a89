"""Execution events: persisted with a per-execution sequence number, then announced.

The row is committed before listeners are woken, so whoever reads after a wake-up finds
it; SSE and WebSocket clients resume from any sequence number because the rows are the
stream. One process runs an execution at a time, so one in-memory counter (seeded from the
database when a run starts or resumes) numbers its events without gaps.

A hundred sub-agents emit at about the same moment, so the rows go through the runtime's
group commit (one transaction for all that arrive together, committed in sequence order),
and announcements are coalesced: while one is being sent, further events only ask for one
more, since a listener re-reads everything after the last sequence number it saw.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError

from apiary.authz.scope import TenantScope
from apiary.db import Write, session_scope
from apiary.executions.bus import events_channel
from apiary.executions.repository import execution_repository
from apiary.runtime import Runtime

log = logging.getLogger("apiary.executions")


class EventRecorder:
    def __init__(
        self, runtime: Runtime, scope: TenantScope, execution_id: uuid.UUID, *, last_seq: int
    ) -> None:
        self._runtime = runtime
        self._scope = scope
        self._execution_id = execution_id
        self._seq = last_seq
        self._announcing = False
        self._unannounced = False

    @classmethod
    async def resume(
        cls, runtime: Runtime, scope: TenantScope, execution_id: uuid.UUID
    ) -> EventRecorder:
        recorder = cls(runtime, scope, execution_id, last_seq=0)
        recorder._seq = await recorder._last_stored()
        return recorder

    async def emit(self, type: str, *, alongside: Sequence[Write] = (), **data: Any) -> int:
        """Store one event (and the `alongside` writes, in the same transaction), then
        announce it."""
        try:
            seq = await self._store(type, alongside, data)
        except IntegrityError:
            # The number is taken: another run of this execution numbered events meanwhile
            # (it took over after this one stalled past its lease). Go on after the last.
            self._seq = max(self._seq, await self._last_stored())
            seq = await self._store(type, alongside, data)
        await self._announce()
        return seq

    async def _store(self, type: str, alongside: Sequence[Write], data: dict[str, Any]) -> int:
        self._seq += 1  # numbered before the write is queued, so queue order is seq order
        seq = self._seq
        event = execution_repository.event_write(self._scope, self._execution_id, seq, type, data)
        await self._runtime.writes.run(*alongside, event)
        return seq

    async def _last_stored(self) -> int:
        async with session_scope(self._runtime.session_factory) as session:
            return await execution_repository.last_seq(session, self._scope, self._execution_id)

    async def _announce(self) -> None:
        self._unannounced = True
        if self._announcing:
            return  # the caller sending one now sends one more after it
        self._announcing = True
        try:
            while self._unannounced:
                self._unannounced = False
                try:
                    await self._runtime.notifier.notify(events_channel(self._execution_id))
                except Exception as error:  # not this caller's failure: its row is stored
                    log.warning("announcing events of %s failed: %s", self._execution_id, error)
        finally:
            self._announcing = False
