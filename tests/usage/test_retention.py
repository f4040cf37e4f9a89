"""Retention of the raw ledger: rows past their tenant's plan's retention go (whole
partitions on PostgreSQL, batches of rows on SQLite); rollups, usage reports and invoices'
metering of those months stay as they were."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy import func, select, update

from apiary.authz.scope import TenantScope
from apiary.billing.models import Plan
from apiary.billing.repository import billing_repository
from apiary.db import session_scope
from apiary.runtime import Runtime
from apiary.tenants.models import Tenant
from apiary.usage import partitions
from apiary.usage.ledger import store_entries
from apiary.usage.models import LedgerEntry
from apiary.usage.repository import usage_repository
from apiary.usage.retention import prune
from tests.factories import TenantFixture
from tests.usage.test_usage_api import ledger_row

pytestmark = pytest.mark.both_databases

NOW = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)
AGES = (200, 60, 10)  # days before NOW: May, October, November
YEAR = (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC))


async def _tenant(runtime: Runtime, plan: str) -> uuid.UUID:
    async with session_scope(runtime.session_factory) as session:
        row = Tenant(name=f"retention-{uuid.uuid4().hex[:6]}", plan=plan)
        session.add(row)
    return row.id


def _rows(tenant: uuid.UUID, per_age: int) -> list[dict[str, Any]]:
    fixture = cast(TenantFixture, SimpleNamespace(id=str(tenant)))  # ledger_row reads .id
    return [
        ledger_row(fixture, NOW - dt.timedelta(days=age, seconds=i))
        for age in AGES
        for i in range(per_age)
    ]


async def _raw_ages(runtime: Runtime, tenant: uuid.UUID) -> dict[int, int]:
    async with runtime.session_factory() as session:
        rows = await session.execute(
            select(LedgerEntry.created_at, func.count())
            .where(LedgerEntry.tenant_id == tenant)
            .group_by(LedgerEntry.created_at)
        )
        found: dict[int, int] = {}
        for at, count in rows:
            age = (NOW - at.replace(tzinfo=dt.UTC)).days
            found[age] = found.get(age, 0) + count
        return found


async def test_raw_rows_past_the_plan_s_retention_go_and_reports_and_invoices_stay(
    runtime: Runtime,
) -> None:
    async with session_scope(runtime.session_factory) as session:
        free = await session.scalar(select(Plan).where(Plan.key == "free"))
        assert free is not None
        session.add(
            Plan(
                key="short-memory",
                name="Short memory",
                monthly_fee_usd=Decimal(0),
                ledger_retention_days=30,
            )
        )
    short = await _tenant(runtime, "short-memory")  # keeps 30 days of raw rows
    default = await _tenant(runtime, "free")  # the default: 90
    async with session_scope(runtime.session_factory) as session:
        await store_entries(session, _rows(short, 25) + _rows(default, 25))

    async def figures() -> list[tuple[int, int, Decimal]]:
        found = []
        async with runtime.session_factory() as session:
            for tenant in (short, default):
                scope = TenantScope(tenant)
                totals = await usage_repository.totals(session, scope, start=YEAR[0], end=YEAR[1])
                may = await billing_repository.metering(
                    session,
                    scope,
                    start=dt.datetime(2026, 5, 1, tzinfo=dt.UTC),
                    end=dt.datetime(2026, 6, 1, tzinfo=dt.UTC),
                )
                found.append((totals.calls, may.calls, may.provider_cost_usd))
        return found

    before = await figures()
    assert [(calls, may) for calls, may, _ in before] == [(75, 25), (75, 25)]

    # Batches of 10: each tenant's old rows take several transactions.
    pruned = await prune(runtime.session_factory, default_days=90, now=NOW, batch=10)

    assert await _raw_ages(runtime, short) == {10: 25}
    assert await _raw_ages(runtime, default) == {60: 25, 10: 25}
    assert await figures() == before  # from the rollups, kept
    async with runtime.session_factory() as session:
        connection = await session.connection()
        if await partitions.is_partitioned(connection):
            # May is past every tenant's retention: its partition went whole, and only
            # the short-memory tenant's October rows were deleted row by row.
            months = await partitions.existing(connection)
            assert dt.date(2026, 5, 1) not in months
            assert {dt.date(2026, 10, 1), dt.date(2026, 11, 1)} <= set(months)
            assert dt.date(2027, 2, 1) in months  # and the coming months made ahead
            assert "ledger_entries_2026_05" in pruned.partitions
            assert pruned.rows == 25
        else:
            assert pruned.partitions == []
            assert pruned.rows == 25 + 25 + 25

    # A second sweep finds nothing more to do.
    again = await prune(runtime.session_factory, default_days=90, now=NOW, batch=10)
    assert again.rows == 0
    assert again.partitions == []

    # A plan's retention changed later applies at the next sweep.
    async with session_scope(runtime.session_factory) as session:
        await session.execute(
            update(Plan).where(Plan.key == "short-memory").values(ledger_retention_days=5)
        )
    await prune(runtime.session_factory, default_days=90, now=NOW)
    assert await _raw_ages(runtime, short) == {}
