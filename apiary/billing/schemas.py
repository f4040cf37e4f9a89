"""Billing's API shapes: plans (`Plan`, `PlanCreate`, `PlanUpdate`), a tenant's plan and
usage, invoices, the closing job's outcome and the platform's revenue report.

Money is a decimal string in JSON ("249.00"), never a float; invoice amounts are integers
of the currency's minor units (cents) beside it."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import Field, StringConstraints

from apiary.kit.schemas import INT32_MAX, PlainLine, Schema, UpdateSchema

PlanKey = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$", min_length=1, max_length=40)
]
Period = Annotated[str, StringConstraints(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]
StripePriceId = Annotated[
    str, StringConstraints(pattern=r"^price_[A-Za-z0-9_]{1,250}$", max_length=255)
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Money = Annotated[Decimal, Field(ge=0, le=Decimal("999999999999.99"), decimal_places=2)]
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
# Up to 2**53: exact in JSON readers (and in the spec, whose bounds are floats).
BigCount = Annotated[int, Field(ge=0, le=2**53)]
RetentionDays = Annotated[int, Field(ge=1, le=36_500)]

ENTITLEMENTS = (
    "seats",
    "max_subagents",
    "concurrent_executions",
    "knowledge_bases",
    "storage_bytes",
    "requests_per_minute",
    "tokens_per_minute",
)


class Plan(Schema):
    key: str
    name: str
    description: str
    monthly_fee_usd: Decimal
    included_spend_usd: Decimal | None = Field(description="Provider cost covered by the fee")
    included_tokens: int | None = Field(description="Tokens covered by the fee")
    overage: bool = Field(
        description="True: use beyond the allowance is billed (provider cost plus markup); "
        "false: the allowance is a hard cap (calls beyond it are refused with 402)"
    )
    markup_pct: Decimal
    seats: int | None
    max_subagents: int | None
    concurrent_executions: int | None
    knowledge_bases: int | None
    storage_bytes: int | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    semantic_cache: bool
    oidc: bool
    audit_export: bool
    stripe_price_id: str | None = Field(
        description="The Stripe price of the tenant's Stripe subscription; null: none"
    )
    ledger_retention_days: int | None = Field(
        default=None,
        description="Days the ledger's raw rows are kept (reports and invoices read rollups, "
        "kept for good); null: the platform's default (usage.ledger_retention_days, 90)",
    )
    archived: bool
    updated_at: datetime


class _PlanFields(Schema):
    name: PlainLine = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=2000)
    monthly_fee_usd: Money
    included_spend_usd: Money | None = None
    included_tokens: BigCount | None = None
    overage: bool = True
    markup_pct: Annotated[Decimal, Field(ge=0, le=1000, decimal_places=2)] = Decimal(0)
    seats: Count | None = Field(default=None, description="null: unlimited (all entitlements)")
    max_subagents: Count | None = None
    concurrent_executions: Count | None = None
    knowledge_bases: Count | None = None
    storage_bytes: BigCount | None = None
    requests_per_minute: Count | None = None
    tokens_per_minute: Count | None = None
    semantic_cache: bool = False
    oidc: bool = False
    audit_export: bool = False
    stripe_price_id: StripePriceId | None = None
    ledger_retention_days: RetentionDays | None = Field(
        default=None, description="Days raw ledger rows are kept; null: the default (90)"
    )


class PlanCreate(_PlanFields):
    key: PlanKey = Field(description="What tenants refer to; lowercase, never changes")


class PlanUpdate(UpdateSchema):
    nullable = frozenset(
        {
            "included_spend_usd",
            "included_tokens",
            "stripe_price_id",
            "ledger_retention_days",
            *ENTITLEMENTS,
        }
    )

    name: PlainLine | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=2000)
    monthly_fee_usd: Money | None = None
    included_spend_usd: Money | None = None
    included_tokens: BigCount | None = None
    overage: bool | None = None
    markup_pct: Annotated[Decimal, Field(ge=0, le=1000, decimal_places=2)] | None = None
    seats: Count | None = None
    max_subagents: Count | None = None
    concurrent_executions: Count | None = None
    knowledge_bases: Count | None = None
    storage_bytes: BigCount | None = None
    requests_per_minute: Count | None = None
    tokens_per_minute: Count | None = None
    semantic_cache: bool | None = None
    oidc: bool | None = None
    audit_export: bool | None = None
    stripe_price_id: StripePriceId | None = None
    ledger_retention_days: RetentionDays | None = None


class EntitlementUsage(Schema):
    entitlement: str
    limit: int | None = Field(description="null: unlimited")
    used: int | None = Field(description="What the tenant holds now; null for rates")


class Metering(Schema):
    period: str
    provider_cost_usd: Decimal
    billed_usd: Decimal = Field(description="Plan fee (prorated) plus overage, before tax")
    calls: int
    prompt_tokens: int
    completion_tokens: int
    executions: int
    storage_bytes: int


class TenantPlan(Schema):
    plan: Plan
    currency: str
    entitlements: list[EntitlementUsage]
    features: dict[str, bool]
    period: Metering = Field(description="The current month so far")


class BillingSettingsUpdate(UpdateSchema):
    currency: Currency | None = Field(
        default=None, description="ISO 4217 code of one of the deployment's configured rates"
    )


class BillingSettings(Schema):
    currency: str
    currencies: list[str] = Field(description="The currencies this deployment bills in")


class InvoiceLine(Schema):
    position: int
    kind: str = Field(description="plan_fee | overage | credit | tax")
    description: str
    amount_minor: int


class Invoice(Schema):
    id: uuid.UUID
    number: str
    period: str
    plan: str
    currency: str
    usd_rate: Decimal
    tax_rate: Decimal
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    provider_cost_usd: Decimal
    billed_usd: Decimal
    calls: int
    prompt_tokens: int
    completion_tokens: int
    executions: int
    storage_bytes: int
    issued_at: datetime
    payment_status: str = Field(
        description="not_applicable (invoice only: no payment through Stripe) | pending_sync "
        "(to be sent to Stripe) | open | paid | failed | void"
    )
    stripe_invoice_id: str | None = Field(description="The invoice's id in Stripe")


class InvoiceDetail(Invoice):
    lines: list[InvoiceLine]


class CloseRequest(Schema):
    period: Period


class PaymentSync(Schema):
    """One run of sending Apiary's invoices and plans to Stripe."""

    invoices_synced: int
    invoices_pending: int = Field(
        description="Invoices still to send (Stripe failed or was away): the next close or "
        "`apiary billing sync` sends them"
    )
    subscriptions_synced: int
    errors: list[str] = Field(description="What Stripe answered, per failed item")


class CloseResult(Schema):
    period: str
    issued: list[str] = Field(description="Numbers of the invoices this close issued")
    already_closed: int = Field(description="Tenants whose period another close had closed")
    payments: PaymentSync | None = Field(
        default=None, description="Sending invoices to Stripe after the close; null: invoice only"
    )


class PaymentAccount(Schema):
    """How the tenant pays: invoice only, or through Stripe with its customer there."""

    mode: str = Field(description="invoice_only | stripe")
    customer_id: str | None
    subscription_id: str | None
    subscription_status: str | None = Field(description="Stripe's: active, past_due, canceled…")
    invoices_pending_sync: int
    invoices_open: int
    invoices_failed: int


class WebhookReceipt(Schema):
    received: bool
    duplicate: bool = Field(description="This event id was applied before; nothing changed")
    applied: bool = Field(description="The event changed something here")


class CreditCreate(Schema):
    amount_usd: Annotated[Decimal, Field(gt=0, le=Decimal("999999999.99"), decimal_places=2)]
    reason: PlainLine = Field(min_length=1, max_length=300)


class Credit(Schema):
    id: uuid.UUID
    amount_usd: Decimal
    reason: str
    invoice_id: uuid.UUID | None
    created_at: datetime


class TenantRevenue(Schema):
    tenant_id: uuid.UUID
    tenant_name: str
    invoices: int
    revenue_usd: Decimal = Field(description="Billed before tax")
    provider_cost_usd: Decimal
    gross_margin: Decimal | None = Field(description="(revenue - cost) / revenue; null: none")
    calls: int
    cost_per_request_usd: Decimal | None


class Revenue(Schema):
    from_period: str
    to_period: str
    tenants: list[TenantRevenue]
    total: TenantRevenue = Field(description="All tenants (tenant_id is the nil UUID)")
