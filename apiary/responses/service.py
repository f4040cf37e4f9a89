"""Stored responses: saving an answer, continuing a conversation from one, reading,
listing the input of and deleting one, and the retention sweep.

A response is saved through the writer (apiary/responses/writer.py), which stores it in
batches behind the request and serves it from its queue meanwhile. An expired row is never
served, whether or not the sweep has deleted it yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.auth.context import AuthContext
from apiary.db import session_scope, utcnow
from apiary.errors import BadRequest, NotFound
from apiary.gateway.responses_wire import Item, row_id
from apiary.responses.models import StoredResponse
from apiary.responses.repository import response_repository

if TYPE_CHECKING:
    from apiary.config import Settings
    from apiary.responses.writer import ResponseWriter

log = logging.getLogger("apiary.responses")

SWEEP_BATCH = 1000


class PreviousResponseNotFound(BadRequest):
    """`previous_response_id` names no stored response of this tenant."""


class ResponseDeps(Protocol):
    settings: Settings  # the retention
    session_factory: async_sessionmaker[AsyncSession]
    stored_responses: ResponseWriter  # answers written behind the request


class ResponseService:
    async def conversation(
        self, deps: ResponseDeps, auth: AuthContext, identifier: str
    ) -> list[Item]:
        """The items a request continuing `identifier` follows: that response's own
        conversation, then its output."""
        writer = deps.stored_responses
        key = row_id(identifier)
        found = None
        if key is not None:
            found = await self._find(deps, auth, key)
            if found is None and not writer.is_pending(key):
                # Saved on another replica a moment ago, it may still be in that one's
                # queue: look once more after its next write.
                await asyncio.sleep(writer.interval_s * 1.5)
                found = await self._find(deps, auth, key)
        if found is None:
            raise PreviousResponseNotFound(
                "previous_response_id: no stored response of this tenant has that id (never "
                "stored, stored with store: false, deleted or expired)"
            )
        context, document = found
        return [*context, *document.get("output", [])]

    async def _find(
        self, deps: ResponseDeps, auth: AuthContext, key: uuid.UUID
    ) -> tuple[list[Item], dict[str, Any]] | None:
        now = utcnow()
        queued = deps.stored_responses.pending(auth.scope, key, now=now)
        if queued is not None:
            return queued["context"], queued["document"]
        async with deps.session_factory() as session:
            row = await response_repository.get(session, auth.scope, key, now=now)
        return None if row is None else (row.context, row.document)

    def save(
        self,
        deps: ResponseDeps,
        auth: AuthContext,
        *,
        key: uuid.UUID,
        document: dict[str, Any],
        context: list[Item],
    ) -> None:
        """Queue the response for the writer (apiary/responses/writer.py)."""
        now = utcnow()
        previous = document.get("previous_response_id")
        days = deps.settings.responses.retention_days
        values = {
            "id": key,
            "created_at": now,
            "expires_at": now + timedelta(days=days),
            "model": str(document.get("model", ""))[:200],
            "status": str(document.get("status", "")),
            "previous_response_id": row_id(previous) if previous else None,
            "document": document,
            "context": context,
        }
        deps.stored_responses.save(auth.scope, values)

    async def get(
        self, session: AsyncSession, deps: ResponseDeps, auth: AuthContext, identifier: str
    ) -> StoredResponse:
        key = row_id(identifier)
        row = None
        if key is not None:
            if deps.stored_responses.is_pending(key):
                await deps.stored_responses.flush()  # rare: read where the rest is
            row = await response_repository.get(session, auth.scope, key, now=utcnow())
        if row is None:
            raise NotFound(f"response {identifier!r} not found")
        return row

    async def delete(
        self, session: AsyncSession, deps: ResponseDeps, auth: AuthContext, identifier: str
    ) -> None:
        row = await self.get(session, deps, auth, identifier)
        await response_repository.delete(session, row)

    async def input_items(
        self,
        session: AsyncSession,
        deps: ResponseDeps,
        auth: AuthContext,
        identifier: str,
        *,
        order: str,
        after: str | None,
        limit: int,
    ) -> tuple[list[Item], bool]:
        """A page of the items the response answered (earlier turns' included) and
        whether more follow; `order` desc lists the newest first, as OpenAI does."""
        row = await self.get(session, deps, auth, identifier)
        items = list(row.context if order == "asc" else reversed(row.context))
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:
                raise BadRequest(f"after: item {after!r} is not an input item of {identifier}")
            items = items[ids.index(after) + 1 :]
        return items[:limit], len(items) > limit

    async def sweep(self, factory: async_sessionmaker[AsyncSession], *, now: datetime) -> int:
        """Delete every expired response, a batch per transaction; returns how many."""
        total = 0
        while True:
            async with session_scope(factory) as session:
                deleted = await response_repository.delete_expired(
                    session, now=now, batch=SWEEP_BATCH
                )
            total += deleted
            if deleted < SWEEP_BATCH:
                return total


response_service = ResponseService()


class RetentionSweeper:
    """Runs the sweep every `interval_s` in an API process. Several replicas sweeping at
    once only delete the same expired rows twice over: nothing breaks."""

    def __init__(self, factory: async_sessionmaker[AsyncSession], *, interval_s: float) -> None:
        self._factory = factory
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="responses-retention")

    async def _run(self) -> None:
        while True:
            try:
                deleted = await response_service.sweep(self._factory, now=utcnow())
                if deleted:
                    log.info("deleted %d expired stored responses", deleted)
            except Exception:  # the database away for a while: try again next time
                log.warning("the stored-responses sweep failed", exc_info=True)
            await asyncio.sleep(self._interval_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
