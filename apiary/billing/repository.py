"""All SQL of billing: plans, what a tenant uses against them, metering, invoices.

Tenant-owned rows go through the tenant scope; plans, the invoice counter and the
platform-wide revenue figures are the platform's own and are reached only by super-admin
services and the closing job."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.authz.scope import TenantScope
from apiary.billing.models import Credit, Invoice, InvoiceCounter, InvoiceLine, Plan, PlanChange
from apiary.executions.models import FINISHED, Execution
from apiary.kit.repository import paginate
from apiary.kit.schemas import PageParams
from apiary.knowledge.models import KnowledgeBase, KnowledgeDocument
from apiary.tenants.models import Tenant
from apiary.usage.repository import usage_repository
from apiary.users.models import Membership

_FINISHED = tuple(sorted({s.value for s in FINISHED}))


@dataclass(frozen=True, slots=True)
class Usage:
    """What a tenant holds now, against its plan's standing entitlements."""

    seats: int
    running_executions: int
    knowledge_bases: int
    storage_bytes: int


@dataclass(frozen=True, slots=True)
class Metering:
    """One tenant's figures over a window, summed by the database."""

    provider_cost_usd: Decimal
    calls: int
    prompt_tokens: int
    completion_tokens: int
    executions: int
    storage_bytes: int


@dataclass(frozen=True, slots=True)
class TenantRevenue:
    tenant_id: uuid.UUID
    tenant_name: str
    invoices: int
    revenue_usd: Decimal
    provider_cost_usd: Decimal
    calls: int


def _insert(session: AsyncSession, table: object) -> object:
    dialect = session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)  # type: ignore[arg-type]


def _count(statement: object) -> object:
    return select(func.count()).select_from(statement.subquery())  # type: ignore[attr-defined]


class BillingRepository:
    # Plans (the platform's, no tenant scope).

    async def plans(self, session: AsyncSession, *, archived: bool) -> Sequence[Plan]:
        statement = select(Plan).order_by(Plan.monthly_fee_usd, Plan.key)
        if not archived:
            statement = statement.where(Plan.archived.is_(False))
        return (await session.scalars(statement)).all()

    async def plan(self, session: AsyncSession, key: str) -> Plan | None:
        return await session.scalar(select(Plan).where(Plan.key == key))

    async def tenants_on(self, session: AsyncSession, key: str) -> Sequence[Tenant]:
        return (
            await session.scalars(select(Tenant).where(Tenant.plan == key).order_by(Tenant.name))
        ).all()

    async def plan_of(self, session: AsyncSession, tenant_id: uuid.UUID) -> Plan:
        statement = select(Plan).join(Tenant, Tenant.plan == Plan.key).where(Tenant.id == tenant_id)
        plan = await session.scalar(statement)
        assert plan is not None, "tenants.plan is a foreign key to plans.key"
        return plan

    async def tenant(self, session: AsyncSession, tenant_id: uuid.UUID) -> Tenant | None:
        return await session.get(Tenant, tenant_id)

    async def lock_tenant(self, session: AsyncSession, tenant_id: uuid.UUID) -> None:
        """Serialize entitlement checks of one tenant until the transaction ends: a row
        lock on PostgreSQL; on SQLite a no-op write, which takes the database's one write
        lock now (before the count that follows), not at the insert after it."""
        if session.get_bind().dialect.name == "postgresql":
            # FOR NO KEY UPDATE: checks of one tenant wait for each other, while inserts of
            # its rows (their foreign keys take FOR KEY SHARE on it) do not wait for them.
            locked = select(Tenant.id).where(Tenant.id == tenant_id)
            await session.execute(locked.with_for_update(key_share=True))
        else:
            await session.execute(
                update(Tenant).where(Tenant.id == tenant_id).values(plan=Tenant.plan)
            )

    # What a tenant uses now.

    async def seats(self, session: AsyncSession, scope: TenantScope) -> int:
        return int(await session.scalar(_count(scope.select(Membership))) or 0)  # type: ignore[call-overload]

    async def running_executions(self, session: AsyncSession, scope: TenantScope) -> int:
        statement = scope.select(Execution).where(Execution.state.not_in(_FINISHED))
        return int(await session.scalar(_count(statement)) or 0)  # type: ignore[call-overload]

    async def knowledge_bases(self, session: AsyncSession, scope: TenantScope) -> int:
        return int(await session.scalar(_count(scope.select(KnowledgeBase))) or 0)  # type: ignore[call-overload]

    async def storage_bytes(self, session: AsyncSession, scope: TenantScope) -> int:
        statement = scope.select(KnowledgeDocument).with_only_columns(
            func.coalesce(func.sum(KnowledgeDocument.size_bytes), 0)
        )
        return int(await session.scalar(statement) or 0)

    async def usage(self, session: AsyncSession, scope: TenantScope) -> Usage:
        return Usage(
            seats=await self.seats(session, scope),
            running_executions=await self.running_executions(session, scope),
            knowledge_bases=await self.knowledge_bases(session, scope),
            storage_bytes=await self.storage_bytes(session, scope),
        )

    # Metering.

    async def metering(
        self, session: AsyncSession, scope: TenantScope, *, start: dt.datetime, end: dt.datetime
    ) -> Metering:
        # From the ledger's rollups (whole days and hours; raw rows only for a period
        # boundary inside an hour), which are kept for good: an invoice reissued or a period
        # closed late never depends on raw rows that retention has dropped.
        totals = await usage_repository.totals(session, scope, start=start, end=end)
        cost, calls = totals.cost_usd, totals.calls
        prompt, completion = totals.prompt_tokens, totals.completion_tokens
        executions = scope.select(Execution).where(
            Execution.created_at >= start, Execution.created_at < end
        )
        return Metering(
            # The ledger keeps cost as a float per call: summed by the database, then made
            # exact at a micro-dollar, the ledger's own precision.
            provider_cost_usd=Decimal(str(float(cost or 0))).quantize(Decimal("0.000001")),
            calls=int(calls),
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            executions=int(await session.scalar(_count(executions)) or 0),  # type: ignore[call-overload]
            storage_bytes=await self.storage_bytes(session, scope),
        )

    async def plan_changes(
        self, session: AsyncSession, scope: TenantScope, *, before: dt.datetime
    ) -> Sequence[PlanChange]:
        statement = (
            scope.select(PlanChange)
            .where(PlanChange.changed_at < before)
            .order_by(PlanChange.changed_at, PlanChange.id)
        )
        return (await session.scalars(statement)).all()

    def add_plan_change(
        self, session: AsyncSession, scope: TenantScope, change: PlanChange
    ) -> None:
        scope.add(session, change)

    async def tenant_ids(
        self, session: AsyncSession, *, created_before: dt.datetime
    ) -> list[uuid.UUID]:
        statement = select(Tenant.id).where(Tenant.created_at < created_before).order_by(Tenant.id)
        return list((await session.scalars(statement)).all())

    # Invoices.

    async def claim_period(
        self, session: AsyncSession, scope: TenantScope, values: dict[str, object]
    ) -> uuid.UUID | None:
        """Insert the period's invoice row, or nothing if another closer has (the unique
        tenant and period; on PostgreSQL a concurrent insert waits for the other's commit
        and then does nothing). Its id when this transaction won."""
        row = {**values, "tenant_id": scope.tenant_id}
        statement = (
            _insert(session, Invoice.__table__)
            .values(row)  # type: ignore[attr-defined]
            .on_conflict_do_nothing(index_elements=["tenant_id", "period"])
            .returning(Invoice.__table__.c.id)
        )
        return await session.scalar(statement)  # type: ignore[no-any-return]

    async def next_invoice_number(self, session: AsyncSession, counter: str) -> int:
        """The next number of the deployment's sequence, taken in the caller's transaction
        (a row lock until it ends): a close that rolls back gives it back."""
        await session.execute(
            _insert(session, InvoiceCounter.__table__)
            .values(name=counter, last=0)  # type: ignore[attr-defined]
            .on_conflict_do_nothing(index_elements=["name"])
        )
        statement = (
            update(InvoiceCounter)
            .where(InvoiceCounter.name == counter)
            .values(last=InvoiceCounter.last + 1)
            .returning(InvoiceCounter.last)
        )
        return int((await session.execute(statement)).scalar_one())

    async def invoice(
        self, session: AsyncSession, scope: TenantScope, invoice_id: uuid.UUID
    ) -> Invoice:
        return await scope.get(session, Invoice, invoice_id)

    async def invoice_by_period(
        self, session: AsyncSession, scope: TenantScope, period: str
    ) -> Invoice | None:
        return await session.scalar(scope.select(Invoice).where(Invoice.period == period))

    async def invoices(
        self, session: AsyncSession, scope: TenantScope, page: PageParams
    ) -> tuple[Sequence[Invoice], int]:
        return await paginate(session, scope.select(Invoice), page, Invoice.created_at, Invoice.id)

    async def lines(
        self, session: AsyncSession, scope: TenantScope, invoice_id: uuid.UUID
    ) -> Sequence[InvoiceLine]:
        statement = (
            scope.select(InvoiceLine)
            .where(InvoiceLine.invoice_id == invoice_id)
            .order_by(InvoiceLine.position)
        )
        return (await session.scalars(statement)).all()

    def add(self, session: AsyncSession, scope: TenantScope, row: InvoiceLine | Credit) -> None:
        scope.add(session, row)

    async def open_credits(self, session: AsyncSession, scope: TenantScope) -> Sequence[Credit]:
        statement = (
            scope.select(Credit).where(Credit.invoice_id.is_(None)).order_by(Credit.created_at)
        )
        return (await session.scalars(statement)).all()

    async def revenue_by_tenant(
        self, session: AsyncSession, *, start: str, end: str
    ) -> list[TenantRevenue]:
        """Per tenant, over invoices of periods in [start, end] (YYYY-MM): the billed total
        before tax in USD, the provider cost and the calls (the platform's own view)."""
        statement = (
            select(
                Tenant.id,
                Tenant.name,
                func.count(Invoice.id),
                func.coalesce(func.sum(Invoice.billed_usd), 0),
                func.coalesce(func.sum(Invoice.provider_cost_usd), 0),
                func.coalesce(func.sum(Invoice.calls), 0),
            )
            .join(Invoice, Invoice.tenant_id == Tenant.id)
            .where(Invoice.period >= start, Invoice.period <= end)
            .group_by(Tenant.id, Tenant.name)
            .order_by(Tenant.name)
        )
        return [
            TenantRevenue(
                tenant_id=row[0],
                tenant_name=row[1],
                invoices=int(row[2]),
                revenue_usd=Decimal(row[3]),
                provider_cost_usd=Decimal(row[4]),
                calls=int(row[5]),
            )
            for row in (await session.execute(statement)).all()
        ]


billing_repository = BillingRepository()
