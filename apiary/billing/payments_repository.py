"""All SQL of payments through Stripe: a tenant's Stripe customer, invoices to send, the
webhook events applied.

Tenant-owned rows go through the tenant scope. Two reads are the platform's own: which
tenant a Stripe customer id belongs to (how a webhook finds its tenant, before it has a
scope) and which invoices of every tenant are still to send (the sync job's work list)."""

from __future__ import annotations

import contextlib
import uuid

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.authz.scope import TenantScope
from apiary.billing.models import Invoice, Plan, StripeCustomer, StripeEvent
from apiary.billing.repository import _insert
from apiary.db import utcnow
from apiary.tenants.models import Tenant


class PaymentsRepository:
    async def customer(self, session: AsyncSession, scope: TenantScope) -> StripeCustomer | None:
        return await session.scalar(scope.select(StripeCustomer))

    async def save_customer(
        self, session: AsyncSession, scope: TenantScope, customer_id: str
    ) -> StripeCustomer:
        """Keep `customer_id` as the tenant's, unless it has one already (another replica
        won): the one kept is returned."""
        statement = (
            _insert(session, StripeCustomer.__table__)
            .values(  # type: ignore[attr-defined]
                id=uuid.uuid4(),
                created_at=utcnow(),
                tenant_id=scope.tenant_id,
                customer_id=customer_id,
            )
            .on_conflict_do_nothing(index_elements=["tenant_id"])
        )
        await session.execute(statement)
        row = await self.customer(session, scope)
        assert row is not None
        return row

    async def tenant_of_customer(self, session: AsyncSession, customer_id: str) -> uuid.UUID | None:
        statement = select(StripeCustomer.tenant_id).where(
            StripeCustomer.customer_id == customer_id
        )
        return await session.scalar(statement)

    async def invoices_to_send(self, session: AsyncSession) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """(tenant, invoice) of every invoice waiting to go to Stripe, oldest first."""
        statement = (
            select(Invoice.tenant_id, Invoice.id)
            .where(Invoice.payment_status == "pending_sync")
            .order_by(Invoice.issued_at, Invoice.id)
        )
        return [(row[0], row[1]) for row in (await session.execute(statement)).all()]

    async def subscriptions_to_sync(
        self, session: AsyncSession
    ) -> list[tuple[uuid.UUID, str, str]]:
        """(tenant, tenant name, price) of tenants whose plan names a Stripe price their
        Stripe subscription is not on yet."""
        statement = (
            select(Tenant.id, Tenant.name, Plan.stripe_price_id)
            .join(Plan, Plan.key == Tenant.plan)
            .outerjoin(StripeCustomer, StripeCustomer.tenant_id == Tenant.id)
            .where(
                Plan.stripe_price_id.is_not(None),
                or_(
                    StripeCustomer.subscription_price_id.is_(None),
                    StripeCustomer.subscription_price_id != Plan.stripe_price_id,
                ),
            )
            .order_by(Tenant.id)
        )
        return [(row[0], row[1], str(row[2])) for row in (await session.execute(statement)).all()]

    async def invoice_for_stripe(
        self,
        session: AsyncSession,
        scope: TenantScope,
        *,
        stripe_invoice_id: str,
        apiary_invoice_id: str | None,
    ) -> Invoice | None:
        """The tenant's invoice a Stripe invoice mirrors: by the Stripe id, or by the Apiary
        id in its metadata (an event may come before the sync has stored the Stripe id)."""
        criteria = [Invoice.stripe_invoice_id == stripe_invoice_id]
        if apiary_invoice_id is not None:
            with contextlib.suppress(ValueError):  # not an id of ours: by the Stripe id only
                criteria.append(Invoice.id == uuid.UUID(apiary_invoice_id))
        return await session.scalar(scope.select(Invoice).where(or_(*criteria)))

    async def count_by_status(self, session: AsyncSession, scope: TenantScope) -> dict[str, int]:
        statement = (
            scope.select(Invoice)
            .with_only_columns(Invoice.payment_status, func.count())
            .group_by(Invoice.payment_status)
        )
        return {row[0]: int(row[1]) for row in (await session.execute(statement)).all()}

    async def record_event(
        self, session: AsyncSession, *, event_id: str, event_type: str, created: int
    ) -> bool:
        """Mark the event applied in the caller's transaction; False if it was before. On
        PostgreSQL a concurrent delivery of the same event waits here for the other's
        commit, then finds it taken."""
        statement = (
            _insert(session, StripeEvent.__table__)
            .values(id=event_id, type=event_type, created=created, received_at=utcnow())  # type: ignore[attr-defined]
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(StripeEvent.__table__.c.id)
        )
        return await session.scalar(statement) is not None


payments_repository = PaymentsRepository()
