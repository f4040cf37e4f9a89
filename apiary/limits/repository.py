"""Queries for limits and month-to-date spend, through the tenant scope."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.authz.scope import TenantScope
from apiary.billing.models import Plan
from apiary.limits.models import TenantLimits
from apiary.tenants.models import Tenant
from apiary.usage.models import LedgerEntry


class LimitsRepository:
    async def get(self, session: AsyncSession, scope: TenantScope) -> TenantLimits | None:
        return await session.scalar(scope.select(TenantLimits))

    async def plan(self, session: AsyncSession, scope: TenantScope) -> Plan | None:
        """The tenant's plan: its rates and included spend bound the tenant's own limits."""
        return await session.scalar(
            select(Plan).join(Tenant, Tenant.plan == Plan.key).where(Tenant.id == scope.tenant_id)
        )

    def add(self, session: AsyncSession, scope: TenantScope, limits: TenantLimits) -> None:
        scope.add(session, limits)

    async def spent_since(
        self, session: AsyncSession, scope: TenantScope, since: datetime
    ) -> float:
        statement = (
            scope.select(LedgerEntry)
            .where(LedgerEntry.created_at >= since)
            .with_only_columns(func.coalesce(func.sum(LedgerEntry.cost_usd), 0.0))
        )
        return float(await session.scalar(statement) or 0.0)


limits_repository = LimitsRepository()
