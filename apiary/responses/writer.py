"""Stored responses are written behind the request, in batches.

A response is saved on every `/v1/responses` call (`store` defaults to true), and a
transaction per call would cost the gateway more CPU than the rest of the call does on
SQLite (a lone single-row commit there is about half a millisecond). So, as the ledger
does, a call only queues its row here; one task writes what is queued every
`interval_s` as one executemany through the group commit. Until then this process serves
the row from the queue, so a client's next request (`previous_response_id`, `GET`) sees
it at once; another replica sees it after the next write, and a lookup there that misses
waits for one interval and looks again (see `ResponseService.conversation`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DataError, IntegrityError, StatementError

from apiary.authz.scope import TenantScope
from apiary.db import GroupCommit, Write
from apiary.responses.repository import response_repository

log = logging.getLogger("apiary.responses")


_Row = tuple[uuid.UUID, dict[str, Any]]  # the tenant, the row's column values


def _insert(row: _Row) -> Write:
    tenant_id, values = row
    return response_repository.insert(TenantScope(tenant_id), **values)


class ResponseWriter:
    def __init__(
        self, writes: GroupCommit, *, interval_s: float, max_pending: int = 10_000
    ) -> None:
        self._writes = writes
        self.interval_s = interval_s
        self._max_pending = max_pending
        # Row id: (tenant, the row's column values), oldest first.
        self._pending: OrderedDict[uuid.UUID, _Row] = OrderedDict()
        self._lock = asyncio.Lock()  # one write at a time: flush() returns with all stored
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def save(self, scope: TenantScope, values: dict[str, Any]) -> None:
        """Queue one row (StoredResponse's columns, `id` included). Never blocks."""
        if len(self._pending) >= self._max_pending:
            # The database has been away a long time: a bounded queue (a row holds a whole
            # conversation) loses its oldest, which a client can no longer continue.
            dropped, _ = self._pending.popitem(last=False)
            self.dropped += 1
            log.warning("stored response %s dropped: the write queue is full", dropped)
        self._pending[values["id"]] = (scope.tenant_id, values)

    def pending(
        self, scope: TenantScope, key: uuid.UUID, *, now: datetime
    ) -> dict[str, Any] | None:
        """A queued row of this tenant's, unless it has expired already."""
        found = self._pending.get(key)
        if found is None or found[0] != scope.tenant_id or found[1]["expires_at"] <= now:
            return None
        return found[1]

    def is_pending(self, key: uuid.UUID) -> bool:
        return key in self._pending

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="responses-writer")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def flush(self) -> None:
        """Write everything queued before this call."""
        await asyncio.shield(self._flush())

    async def _flush(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            batch = list(self._pending.items())
            try:
                try:
                    await self._writes.run(*(_insert(row) for _, row in batch))
                except (IntegrityError, DataError, StatementError):
                    # One bad row (its tenant deleted meanwhile) must not hold back the rest.
                    await self._one_by_one(batch)
                    return
            except Exception:
                log.warning("stored responses not written; will retry", exc_info=True)
                return
            for key, _ in batch:
                self._pending.pop(key, None)

    async def _one_by_one(self, batch: list[tuple[uuid.UUID, _Row]]) -> None:
        for key, row in batch:
            try:
                await self._writes.run(_insert(row))
            except (IntegrityError, DataError, StatementError) as error:
                self.dropped += 1
                log.error("stored response %s dropped: %s", key, type(error).__name__)
            self._pending.pop(key, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):  # a database already gone loses the queue
            await self.flush()
