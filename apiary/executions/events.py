"""Execution events: persisted with a per-execution sequence number, then announced.

The row is committed before listeners are woken, so whoever reads after a wake-up finds
it; SSE and WebSocket clients resume from any sequence number because the rows are the
stream. One process runs an execution at a time, so one in-memory counter (seeded from the
database when a run starts or resumes) numbers its events in order; a number whose write
failed stays unused, which readers take in their stride (they ask for "after N").

The announcement carries the events themselves, encoded once (`pack`): a listener passes
them on without reading the database, and reads it only when what it received does not
follow on from the last number it sent (a lost message, a listener that fell behind).

A hundred sub-agents emit at about the same moment, so the rows go through the runtime's
group commit (one transaction for all that arrive together, committed in sequence order),
and announcements are coalesced: while one is being sent, the events stored meanwhile wait
and go out together in the next.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError

from apiary.authz.scope import TenantScope
from apiary.db import Write, session_scope, utcnow
from apiary.executions.bus import events_channel
from apiary.executions.models import ExecutionEvent
from apiary.executions.repository import execution_repository
from apiary.kit.sse import EncodedEvent
from apiary.runtime import Runtime

log = logging.getLogger("apiary.executions")


def encode(seq: int, type: str, data: dict[str, Any], created_at: datetime) -> EncodedEvent:
    """An event as the API shows it (the `ExecutionEvent` schema), encoded once."""
    body = orjson.dumps(
        {"seq": seq, "type": type, "data": data, "created_at": created_at},
        option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS,
    )
    return EncodedEvent(seq, type, body)


def encode_row(row: ExecutionEvent) -> EncodedEvent:
    return encode(row.seq, row.type, row.data, row.created_at)


def pack(events: Sequence[EncodedEvent]) -> bytes:
    """Events as one notification message: per event `<seq> <type> <length>\n<json>`."""
    return b"".join(
        b"%d %s %d\n%s" % (event.seq, event.type.encode(), len(event.body), event.body)
        for event in events
    )


def unpack(message: bytes) -> list[EncodedEvent] | None:
    """The events of a `pack`ed message; None if it is not one."""
    events = []
    position = 0
    try:
        while position < len(message):
            end = message.index(b"\n", position)
            seq, type, size = message[position:end].split(b" ")
            position = end + 1 + int(size)
            if position > len(message):
                return None
            events.append(EncodedEvent(int(seq), type.decode(), message[end + 1 : position]))
    except ValueError:
        return None
    return events


class EventRecorder:
    def __init__(
        self, runtime: Runtime, scope: TenantScope, execution_id: uuid.UUID, *, last_seq: int
    ) -> None:
        self._runtime = runtime
        self._scope = scope
        self._execution_id = execution_id
        self._seq = last_seq
        self._announcing = False
        self._unannounced: list[EncodedEvent] = []

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
        return (await self.emit_all([(type, data)], alongside=alongside))[-1]

    async def emit_all(
        self, events: Sequence[tuple[str, dict[str, Any]]], *, alongside: Sequence[Write] = ()
    ) -> list[int]:
        """Store events, numbered in order, and the `alongside` writes in one transaction,
        then announce them: one wait for the commit instead of one per event."""
        if not events:
            if alongside:  # nothing to announce; and nothing at all is no transaction
                await self._runtime.writes.run(*alongside)
            return []
        created_at = utcnow()
        try:
            seqs = await self._store(events, alongside, created_at)
        except IntegrityError:
            # The number is taken: another run of this execution numbered events meanwhile
            # (it took over after this one stalled past its lease). Go on after the last.
            self._seq = max(self._seq, await self._last_stored())
            seqs = await self._store(events, alongside, created_at)
        await self._announce(
            [
                encode(seq, type, data, created_at)
                for seq, (type, data) in zip(seqs, events, strict=True)
            ]
        )
        return seqs

    async def _store(
        self,
        events: Sequence[tuple[str, dict[str, Any]]],
        alongside: Sequence[Write],
        created_at: datetime,
    ) -> list[int]:
        # Numbered before the write is queued, so queue order is seq order.
        first = self._seq + 1
        self._seq += len(events)
        seqs = list(range(first, self._seq + 1))
        rows = [
            execution_repository.event_write(
                self._scope, self._execution_id, seq, type, data, created_at=created_at
            )
            for seq, (type, data) in zip(seqs, events, strict=True)
        ]
        await self._runtime.writes.run(*alongside, *rows)
        return seqs

    async def _last_stored(self) -> int:
        async with session_scope(self._runtime.session_factory) as session:
            return await execution_repository.last_seq(session, self._scope, self._execution_id)

    async def _announce(self, events: Sequence[EncodedEvent]) -> None:
        self._unannounced.extend(events)
        if self._announcing:
            return  # the caller sending one now sends this one with the next
        self._announcing = True
        try:
            while self._unannounced:
                events = sorted(self._unannounced, key=lambda e: e.seq)
                self._unannounced = []
                try:
                    await self._runtime.notifier.notify(
                        events_channel(self._execution_id), pack(events)
                    )
                except Exception as error:  # not this caller's failure: its row is stored
                    log.warning("announcing events of %s failed: %s", self._execution_id, error)
        finally:
            self._announcing = False
