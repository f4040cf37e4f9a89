"""Recording when each API key was last used, off the request path.

Writing `last_used_at` inside the request would make every call with a key a write
transaction held for the whole upstream call (a row lock on PostgreSQL, the database
write lock on SQLite). Instead the time is noted in memory and written in one batch
every few seconds; the column is a coarse "last seen", not an audit record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.api_keys.models import ApiKey
from apiary.db import session_scope

log = logging.getLogger("apiary.api_keys")


class LastUsedRecorder:
    def __init__(
        self, factory: async_sessionmaker[AsyncSession], *, interval_s: float = 5.0
    ) -> None:
        self._factory = factory
        self._interval = interval_s
        self._pending: dict[uuid.UUID, datetime] = {}
        self._task: asyncio.Task[None] | None = None
        # One write at a time: a caller's `flush` (a test, a request to see the time) waits
        # for the one the timer started, so what was noted before it is written when it
        # returns. (`close` cancels the timer's write instead, and writes its batch again.)
        self._writing = asyncio.Lock()

    def note(self, key_id: uuid.UUID, when: datetime) -> None:
        self._pending[key_id] = when

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="api-key-last-used")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        async with self._writing:
            await self._write()

    async def _write(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        statement = (
            update(ApiKey)
            .where(ApiKey.id == bindparam("key_id"))
            .values(last_used_at=bindparam("used_at"))
        )
        try:
            async with session_scope(self._factory) as session:
                connection = await session.connection()
                await connection.execute(
                    statement, [{"key_id": k, "used_at": t} for k, t in batch.items()]
                )
        except Exception:
            log.exception("could not record API key use for %d keys; will retry", len(batch))
            self._restore(batch)
        except asyncio.CancelledError:  # `close` stopped the timer mid-write: it writes them
            self._restore(batch)
            raise

    def _restore(self, batch: dict[uuid.UUID, datetime]) -> None:
        for key_id, when in batch.items():
            self._pending.setdefault(key_id, when)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(TimeoutError):  # a shutdown does not wait on a held row
            async with asyncio.timeout(5):
                await self.flush()
