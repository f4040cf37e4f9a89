"""One run's claim on an execution, so two deliveries of its job never run it at once.

Celery hands an unacknowledged job to another worker once the broker's visibility timeout
passes, even if the first worker is still running it; the in-process runner resumes
unfinished executions at start-up. Either way a second run may start while the first
lives. The lease is a row lock with an expiry: a run claims it when it starts, renews it
while it runs, and releases it when it stops; another run finding it held gets
`ExecutionBusy` with the time left, and tries again then. A run that dies without
releasing it blocks the execution for at most `swarm.lease_s`.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.authz.scope import TenantScope
from apiary.db import session_scope, utcnow
from apiary.executions.repository import execution_repository


class ExecutionBusy(Exception):
    """Another run holds the execution's lease: try again in `retry_after_s`."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"another run holds this execution for {retry_after_s:.1f} s more")
        self.retry_after_s = retry_after_s


class Lease:
    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        scope: TenantScope,
        execution_id: uuid.UUID,
        *,
        ttl_s: float,
    ) -> None:
        self._session_factory = session_factory
        self._scope = scope
        self._execution_id = execution_id
        self._ttl_s = ttl_s
        self.owner = uuid.uuid4().hex
        self._renew_at = 0.0

    async def claim(self, session: AsyncSession | None = None) -> None:
        """Take the lease, or raise `ExecutionBusy` while another run holds it. With a
        session, in its transaction: taken once the caller commits."""
        now = utcnow()
        async with contextlib.AsyncExitStack() as stack:
            if session is None:
                session = await stack.enter_async_context(session_scope(self._session_factory))
            held_until = await execution_repository.claim_lease(
                session,
                self._scope,
                self._execution_id,
                owner=self.owner,
                now=now,
                until=now + timedelta(seconds=self._ttl_s),
            )
        if held_until is not None:
            raise ExecutionBusy(max((held_until - now).total_seconds(), 0.1))
        self._renew_at = time.monotonic() + self._ttl_s / 3

    async def keep(self) -> bool:
        """Renew the lease when a third of it has passed; False if it was lost meanwhile
        (this run stalled past its expiry and another run took over)."""
        if time.monotonic() < self._renew_at:
            return True
        async with session_scope(self._session_factory) as session:
            kept = await execution_repository.renew_lease(
                session,
                self._scope,
                self._execution_id,
                owner=self.owner,
                until=utcnow() + timedelta(seconds=self._ttl_s),
            )
        self._renew_at = time.monotonic() + self._ttl_s / 3
        return kept

    async def release(self) -> None:
        with contextlib.suppress(Exception):  # it lapses on its own if the database is gone
            async with session_scope(self._session_factory) as session:
                await execution_repository.release_lease(
                    session, self._scope, self._execution_id, owner=self.owner
                )
