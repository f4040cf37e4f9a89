"""Platform-wide counts for the metrics scrape: the operator's view, across tenants.

These are the only unscoped reads outside the runner's: they return counts by state and
per-tenant budgets, never a tenant's content, and only `GET /metrics` (token or loopback)
calls them. Each is bounded by an index or by the work in flight, not by history.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.executions.models import FINISHED, Execution, Subtask, SubtaskStatus
from apiary.knowledge.models import KnowledgeDocument
from apiary.limits.models import TenantLimits
from apiary.tenants.models import Tenant
from apiary.usage.models import LedgerEntry


@dataclass(frozen=True, slots=True)
class TenantBudget:
    tenant_id: uuid.UUID
    tenant: str  # the tenant's name, the label an operator reads
    budget_usd: float
    soft_limit_ratio: float


class PlatformRepository:
    async def executions_by_state(self, session: AsyncSession) -> dict[str, int]:
        # GROUP BY on the indexed state column: an index-only scan on PostgreSQL.
        rows = await session.execute(
            select(Execution.state, func.count()).group_by(Execution.state)
        )
        return {str(state): int(count) for state, count in rows.all()}

    async def subagents_running(self, session: AsyncSession) -> int:
        # Through the unfinished executions (indexed state), then their subtasks (indexed
        # execution_id): bounded by the work in flight, not by the subtasks table.
        statement = (
            select(func.count())
            .select_from(Subtask)
            .join(Execution, Execution.id == Subtask.execution_id)
            .where(
                Execution.state.not_in([state.value for state in FINISHED]),
                Subtask.status == SubtaskStatus.RUNNING.value,
            )
        )
        return int(await session.scalar(statement) or 0)

    async def documents_by_status(self, session: AsyncSession) -> dict[str, int]:
        rows = await session.execute(
            select(KnowledgeDocument.status, func.count()).group_by(KnowledgeDocument.status)
        )
        return {str(status): int(count) for status, count in rows.all()}

    async def budgets(self, session: AsyncSession) -> list[TenantBudget]:
        """Every tenant with a monthly budget (the bounded set the budget ratio is kept for)."""
        rows = await session.execute(
            select(
                TenantLimits.tenant_id,
                Tenant.name,
                TenantLimits.monthly_budget_usd,
                TenantLimits.soft_limit_ratio,
            )
            .join(Tenant, Tenant.id == TenantLimits.tenant_id)
            .where(TenantLimits.monthly_budget_usd > 0)  # NULL (no budget) is not > 0
        )
        return [
            TenantBudget(tenant_id, str(name), float(budget or 0.0), float(soft))
            for tenant_id, name, budget, soft in rows.all()
        ]

    async def spent_since(
        self, session: AsyncSession, tenant_ids: list[uuid.UUID], since: datetime
    ) -> dict[uuid.UUID, float]:
        """Month-to-date spend from the ledger, for tenants whose spend counter is gone."""
        if not tenant_ids:
            return {}
        rows = await session.execute(
            select(LedgerEntry.tenant_id, func.coalesce(func.sum(LedgerEntry.cost_usd), 0.0))
            .where(LedgerEntry.tenant_id.in_(tenant_ids), LedgerEntry.created_at >= since)
            .group_by(LedgerEntry.tenant_id)
        )
        return {tenant_id: float(spent or 0.0) for tenant_id, spent in rows.all()}

    async def ping(self, session: AsyncSession) -> None:
        await session.execute(select(1))


platform_repository = PlatformRepository()
