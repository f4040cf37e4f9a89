"""Upkeep of the ledger: raw rows past their tenant's retention go, the rollups stay.

Each tenant's raw rows are kept `plans.ledger_retention_days` (the plan's) or
`usage.ledger_retention_days` (90 by default). On PostgreSQL, a monthly partition every row
of which is past the longest retention any tenant has is dropped whole (instant, and the
space is freed); rows of tenants with a shorter retention are deleted in batches. SQLite
deletes in batches, each in its own short transaction so the gateway's writes interleave.

What reads the ledger after retention reads the rollups: usage reports, and invoices'
metering (apiary/billing/repository.py). The audit log never reads the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field

from sqlalchemy import delete, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.billing.models import Plan
from apiary.db import session_scope, utcnow
from apiary.tenants.models import Tenant
from apiary.usage import partitions
from apiary.usage.models import LedgerEntry

log = logging.getLogger("apiary.ledger")

DELETE_BATCH = 10_000


@dataclass(slots=True)
class Pruned:
    partitions: list[str] = field(default_factory=list)  # dropped whole (PostgreSQL)
    rows: int = 0  # deleted row by row


async def retention_days(session: AsyncSession, *, default: int) -> dict[uuid.UUID, int]:
    """Each tenant's raw-ledger retention, in days: its plan's, or `default`."""
    rows = await session.execute(
        select(Tenant.id, Plan.ledger_retention_days).outerjoin(Plan, Plan.key == Tenant.plan)
    )
    return {tenant: days or default for tenant, days in rows}


async def timescaledb_present(session: AsyncSession) -> bool:
    """Whether the TimescaleDB extension is installed in the database (logged at start-up;
    see docs/usage.md for what would use it)."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    found = await session.scalar(text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"))
    return found is not None


async def prune(
    factory: async_sessionmaker[AsyncSession],
    *,
    default_days: int,
    now: dt.datetime | None = None,
    batch: int = DELETE_BATCH,
) -> Pruned:
    now = now or utcnow()
    done = Pruned()
    async with session_scope(factory) as session:
        days = await retention_days(session, default=default_days)
        connection = await session.connection()
        parted = await partitions.is_partitioned(connection)
        if parted:
            await partitions.ensure_ahead(connection, now)
            longest = max([default_days, *days.values()])
            done.partitions = await partitions.drop_before(
                connection, now - dt.timedelta(days=longest)
            )
    e = LedgerEntry
    for tenant, keep in sorted(days.items()):
        cutoff = now - dt.timedelta(days=keep)
        while True:
            async with session_scope(factory) as session:
                doomed = (
                    select(e.id, e.created_at)
                    .where(e.tenant_id == tenant, e.created_at < cutoff)
                    .limit(batch)
                )
                result = await session.execute(
                    delete(e)
                    .where(tuple_(e.id, e.created_at).in_(doomed))
                    .execution_options(synchronize_session=False)
                )
            deleted = int(getattr(result, "rowcount", 0) or 0)
            done.rows += deleted
            if deleted < batch:
                break
    if done.rows:
        log.info("%d raw ledger rows deleted past retention", done.rows)
    return done


class LedgerMaintainer:
    """Runs `prune` (and the partitions' creation ahead) every `interval_s` in an API
    process. Replicas doing it at once drop or delete the same rows twice over: harmless."""

    def __init__(
        self, factory: async_sessionmaker[AsyncSession], *, default_days: int, interval_s: float
    ) -> None:
        self._factory = factory
        self._default_days = default_days
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-maintenance")

    async def _run(self) -> None:
        try:
            async with self._factory() as session:
                if await timescaledb_present(session):
                    log.info(
                        "TimescaleDB is installed; the ledger keeps its own monthly "
                        "partitions and rollups (see docs/usage.md)"
                    )
        except Exception:
            log.warning("could not check for TimescaleDB", exc_info=True)
        while True:
            # A first sweep one interval after start-up, not at once: partitions are also
            # made on write, and a fleet restarting together need not all sweep at boot.
            await asyncio.sleep(self._interval_s)
            try:
                await prune(self._factory, default_days=self._default_days)
            except Exception:  # the database away for a while: try again next time
                log.warning("the ledger's retention sweep failed", exc_info=True)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
