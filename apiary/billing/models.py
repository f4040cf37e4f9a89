"""Plans, plan changes, invoices and their lines, and the invoice number sequence.

Money is exact: plan prices and provider cost in USD as `Numeric` (Decimal), invoice
amounts as integers of the invoice currency's minor units (cents). Never floats.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Integer, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from apiary.authz.scope import TenantOwned
from apiary.db import Base, IdMixin, utcnow

USD = Numeric(14, 2)
COST = Numeric(18, 6)  # provider cost: the ledger prices calls in fractions of a cent


class Plan(IdMixin, Base):
    """A plan and its entitlements; a null entitlement is unlimited."""

    __tablename__ = "plans"

    key: Mapped[str] = mapped_column(String(40), unique=True)  # what tenants.plan refers to
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    monthly_fee_usd: Mapped[Decimal] = mapped_column(USD)
    included_spend_usd: Mapped[Decimal | None] = mapped_column(USD)
    included_tokens: Mapped[int | None] = mapped_column(BigInteger)
    overage: Mapped[bool] = mapped_column(default=True)  # false: the allowance is a hard cap
    markup_pct: Mapped[Decimal] = mapped_column(Numeric(7, 2), default=Decimal(0))
    seats: Mapped[int | None] = mapped_column(Integer)
    max_subagents: Mapped[int | None] = mapped_column(Integer)
    concurrent_executions: Mapped[int | None] = mapped_column(Integer)
    knowledge_bases: Mapped[int | None] = mapped_column(Integer)
    storage_bytes: Mapped[int | None] = mapped_column(BigInteger)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer)
    semantic_cache: Mapped[bool] = mapped_column(default=False)
    oidc: Mapped[bool] = mapped_column(default=False)
    audit_export: Mapped[bool] = mapped_column(default=False)
    # The Stripe price (price_...) a tenant's Stripe subscription is put on; none: no
    # subscription (the plan is billed by Apiary's invoices alone).
    stripe_price_id: Mapped[str | None] = mapped_column(String(255))
    # Deleting a plan no tenant uses archives it: the start-up loader then does not bring a
    # shipped default back, and no tenant can be moved onto it.
    archived: Mapped[bool] = mapped_column(default=False)
    # Days the ledger's raw rows are kept (rollups and invoices are kept for good); none:
    # the configured default (usage.ledger_retention_days, 90).
    ledger_retention_days: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PlanChange(IdMixin, TenantOwned, Base):
    """A tenant moving from one plan to another: what proration reads."""

    __tablename__ = "plan_changes"

    from_plan: Mapped[str | None] = mapped_column(String(40))
    to_plan: Mapped[str] = mapped_column(String(40))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Invoice(IdMixin, TenantOwned, Base):
    """A closed billing period (one calendar month, UTC) of one tenant and its invoice.

    The unique (tenant, period) is what makes closing idempotent: a second closer's insert
    conflicts and it leaves the first one's invoice alone."""

    __tablename__ = "invoices"
    __table_args__ = (UniqueConstraint("tenant_id", "period", name="uq_invoices_tenant_period"),)

    period: Mapped[str] = mapped_column(String(7))  # YYYY-MM
    number: Mapped[str] = mapped_column(String(40), unique=True)
    plan: Mapped[str] = mapped_column(String(40))  # the plan at the period's end
    currency: Mapped[str] = mapped_column(String(3))
    usd_rate: Mapped[Decimal] = mapped_column(Numeric(14, 6))  # 1 USD in `currency`
    tax_rate: Mapped[Decimal] = mapped_column(Numeric(6, 4))
    subtotal_minor: Mapped[int] = mapped_column(BigInteger)
    tax_minor: Mapped[int] = mapped_column(BigInteger)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    # The period's metering, kept with its invoice.
    provider_cost_usd: Mapped[Decimal] = mapped_column(COST)
    billed_usd: Mapped[Decimal] = mapped_column(COST)  # the total before tax, in USD
    calls: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    executions: Mapped[int] = mapped_column(BigInteger)
    storage_bytes: Mapped[int] = mapped_column(BigInteger)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Payment through Stripe (apiary/billing/payments.py): not_applicable (invoice only),
    # pending_sync (not in Stripe yet), open, paid, failed or void.
    payment_status: Mapped[str] = mapped_column(String(20), default="not_applicable")
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    # `created` (Unix seconds) of the Stripe event that set payment_status: an older event
    # delivered late does not override a newer one.
    payment_event_at: Mapped[int | None] = mapped_column(BigInteger)
    payment_error: Mapped[str | None] = mapped_column(String(500))  # why the last sync failed


class InvoiceLine(IdMixin, TenantOwned, Base):
    __tablename__ = "invoice_lines"

    invoice_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("invoices.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))  # plan_fee | overage | credit | tax
    description: Mapped[str] = mapped_column(String(300))
    amount_minor: Mapped[int] = mapped_column(BigInteger)


class Credit(IdMixin, TenantOwned, Base):
    """An amount the platform owes a tenant, taken off its next invoice (USD)."""

    __tablename__ = "billing_credits"

    amount_usd: Mapped[Decimal] = mapped_column(USD)
    reason: Mapped[str] = mapped_column(String(300))
    invoice_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("invoices.id", ondelete="SET NULL")
    )


class InvoiceCounter(Base):
    """The deployment's invoice numbers: one row, its `last` bumped in the closing
    transaction (a row lock), so a rolled-back close gives its number back: no gaps."""

    __tablename__ = "invoice_counters"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    last: Mapped[int] = mapped_column(BigInteger, default=0)


class StripeCustomer(IdMixin, TenantOwned, Base):
    """A tenant's Stripe customer and subscription (one per tenant: the unique tenant makes
    two replicas creating it at once keep one)."""

    __tablename__ = "stripe_customers"
    __table_args__ = (UniqueConstraint("tenant_id", name="uq_stripe_customers_tenant"),)

    customer_id: Mapped[str] = mapped_column(String(255), unique=True)
    subscription_id: Mapped[str | None] = mapped_column(String(255))
    subscription_price_id: Mapped[str | None] = mapped_column(String(255))
    subscription_status: Mapped[str | None] = mapped_column(String(40))
    # `created` of the last subscription event applied (out-of-order deliveries).
    subscription_event_at: Mapped[int | None] = mapped_column(BigInteger)


class StripeEvent(Base):
    """A Stripe webhook event applied: its id is the primary key, so a redelivery, or the
    same event delivered to two replicas at once, is applied once."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    created: Mapped[int] = mapped_column(BigInteger)  # the event's, Unix seconds
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
