"""The ledger writer: entries are queued on the request path and inserted in batches.

A request only appends to an in-memory queue (microseconds). One background task drains it
every `flush_interval_s`, or sooner when `batch_size` entries wait, with one multi-row
INSERT per batch. Shutdown flushes what is left. If the database is down, the batch is
kept and retried, up to `max_pending` entries; past that the oldest are dropped and counted
(a ledger gap is better than a gateway that stops answering).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.db import session_scope
from apiary.usage.models import LedgerEntry

log = logging.getLogger("apiary.ledger")


class LedgerWriter:
    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        max_pending: int = 100_000,
    ) -> None:
        self._factory = factory
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._pending: deque[dict[str, Any]] = deque(maxlen=max_pending)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0

    def record(self, entry: dict[str, Any]) -> None:
        """Queue one entry (a dict of LedgerEntry columns). Never blocks, never raises."""
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(entry)
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self._pending:
            batch = [
                self._pending.popleft() for _ in range(min(self._batch_size, len(self._pending)))
            ]
            try:
                async with session_scope(self._factory) as session:
                    await session.execute(insert(LedgerEntry), batch)
            except Exception:
                log.exception("ledger batch of %d entries not written; will retry", len(batch))
                self._pending.extendleft(reversed(batch))
                return
            self.written += len(batch)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
