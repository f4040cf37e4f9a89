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

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.authz.scope import TenantScope
from apiary.db import GroupCommit, Write, session_scope, utcnow
from apiary.executions.bus import events_channel
from apiary.executions.event_types import EventData
from apiary.executions.models import ExecutionEvent
from apiary.executions.repository import execution_repository
from apiary.kit.notify import Notifier
from apiary.kit.sse import EncodedEvent

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


# An event's type and data as stored and sent.
WiredEvent = tuple[str, dict[str, Any]]


def _wired(events: Sequence[EventData]) -> list[WiredEvent]:
    wired = []
    for event in events:
        # Typed callers cannot get here with anything else; an untyped one finds out at once
        # rather than after its row is stored.
        if not isinstance(event, EventData):
            raise TypeError(f"not an execution event: {event!r} (see executions/event_types.py)")
        wired.append((event.type.value, event.wire()))
    return wired


class EventDeps(Protocol):
    session_factory: async_sessionmaker[AsyncSession]
    writes: GroupCommit  # events commit in the group commit's batches
    notifier: Notifier  # committed events are announced to the streams following them


class EventRecorder:
    def __init__(
        self, deps: EventDeps, scope: TenantScope, execution_id: uuid.UUID, *, last_seq: int
    ) -> None:
        self._deps = deps
        self._scope = scope
        self._execution_id = execution_id
        self._seq = last_seq
        self._announcing = False
        self._unannounced: list[EncodedEvent] = []

    @classmethod
    async def resume(
        cls, deps: EventDeps, scope: TenantScope, execution_id: uuid.UUID
    ) -> EventRecorder:
        recorder = cls(deps, scope, execution_id, last_seq=0)
        recorder._seq = await recorder._last_stored()
        return recorder

    async def emit(self, event: EventData, *, alongside: Sequence[Write] = ()) -> int:
        """Store one event (and the `alongside` writes, in the same transaction), then
        announce it."""
        return (await self.emit_all([event], alongside=alongside))[-1]

    async def emit_all(
        self, events: Sequence[EventData], *, alongside: Sequence[Write] = ()
    ) -> list[int]:
        """Store events, numbered in order, and the `alongside` writes in one transaction,
        then announce them: one wait for the commit instead of one per event."""
        if not events:
            if alongside:  # nothing to announce; and nothing at all is no transaction
                await self._deps.writes.run(*alongside)
            return []
        wired = _wired(events)
        created_at = utcnow()
        seqs, stored = self._queue(wired, alongside, created_at)
        return await self._complete(wired, alongside, created_at, seqs, stored)

    def emit_soon(
        self, event: EventData, *, alongside: Sequence[Write] = ()
    ) -> asyncio.Future[None]:
        """`emit`, for a caller with something else to do than wait for the commit (a
        sub-agent sends its model call meanwhile): the event is numbered and queued at
        this call, so it keeps its place before whatever the caller emits next, and is
        announced once stored. The future is done when it is stored (await it for the
        outcome). No task per event: a hundred sub-agents start at once."""
        return self.emit_all_soon([event], alongside=alongside)

    def emit_all_soon(
        self, events: Sequence[EventData], *, alongside: Sequence[Write] = ()
    ) -> asyncio.Future[None]:
        """`emit_all`, the way `emit_soon` does it."""
        wired = _wired(events)
        created_at = utcnow()
        seqs, stored = self._queue(wired, alongside, created_at)
        outcome = asyncio.get_running_loop().create_future()
        outcome.add_done_callback(lambda done: done.cancelled() or done.exception())

        def landed(done: asyncio.Future[None]) -> None:
            if done.cancelled():
                outcome.cancel()
                return
            error = done.exception()
            if isinstance(error, IntegrityError):
                # Stored again after the last number (see `_complete`), in a task: rare.
                retry = asyncio.ensure_future(
                    self._complete(wired, alongside, created_at, seqs, done)
                )
                retry.add_done_callback(lambda ended: _pass_on(ended, outcome))
                return
            if error is None:
                self._announce_soon(
                    [
                        encode(seq, type, data, created_at)
                        for seq, (type, data) in zip(seqs, wired, strict=True)
                    ]
                )
            # The caller may have stopped waiting (a cancelled sub-agent cancels the future
            # it awaited): the event is stored and announced all the same.
            if outcome.done():
                return
            if error is not None:
                outcome.set_exception(error)
            else:
                outcome.set_result(None)

        stored.add_done_callback(landed)
        return outcome

    def _queue(
        self,
        events: Sequence[WiredEvent],
        alongside: Sequence[Write],
        created_at: datetime,
    ) -> tuple[list[int], asyncio.Future[None]]:
        # Numbered as the write is queued, so queue order is seq order.
        first = self._seq + 1
        self._seq += len(events)
        seqs = list(range(first, self._seq + 1))
        rows = [
            execution_repository.event_write(
                self._scope, self._execution_id, seq, type, data, created_at=created_at
            )
            for seq, (type, data) in zip(seqs, events, strict=True)
        ]
        return seqs, self._deps.writes.submit(*alongside, *rows)

    async def _complete(
        self,
        events: Sequence[WiredEvent],
        alongside: Sequence[Write],
        created_at: datetime,
        seqs: list[int],
        stored: asyncio.Future[None],
    ) -> list[int]:
        try:
            await asyncio.shield(stored)  # a cancelled caller's write still lands, in order
        except IntegrityError:
            # The number is taken: another run of this execution numbered events meanwhile
            # (it took over after this one stalled past its lease). Go on after the last.
            self._seq = max(self._seq, await self._last_stored())
            seqs, stored = self._queue(events, alongside, created_at)
            await asyncio.shield(stored)
        await self._announce(
            [
                encode(seq, type, data, created_at)
                for seq, (type, data) in zip(seqs, events, strict=True)
            ]
        )
        return seqs

    async def _last_stored(self) -> int:
        async with session_scope(self._deps.session_factory) as session:
            return await execution_repository.last_seq(session, self._scope, self._execution_id)

    async def _announce(self, events: Sequence[EncodedEvent]) -> None:
        self._unannounced.extend(events)
        if self._announcing:
            return  # the caller sending one now sends this one with the next
        self._announcing = True
        await self._send_announcements()

    def _announce_soon(self, events: Sequence[EncodedEvent]) -> None:
        """`_announce` from a callback: the events go out with the next announcement, sent
        by whoever sends one now or else by a task started here."""
        self._unannounced.extend(events)
        if not self._announcing:
            self._announcing = True
            sending = asyncio.ensure_future(self._send_announcements())
            sending.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _send_announcements(self) -> None:
        try:
            while self._unannounced:
                events = sorted(self._unannounced, key=lambda e: e.seq)
                self._unannounced = []
                try:
                    await self._deps.notifier.notify(
                        events_channel(self._execution_id), pack(events)
                    )
                except Exception as error:  # not this caller's failure: its row is stored
                    log.warning("announcing events of %s failed: %s", self._execution_id, error)
        finally:
            self._announcing = False


def _pass_on(ended: asyncio.Future[list[int]], outcome: asyncio.Future[None]) -> None:
    if outcome.done():
        return
    if ended.cancelled():
        outcome.cancel()
    elif (error := ended.exception()) is not None:
        outcome.set_exception(error)
    else:
        outcome.set_result(None)
