"""Billing rules: plans for the super admin, a tenant's plan and usage, metering, closing a
month into an invoice, and the platform's revenue.

Closing (`close_period`) runs one transaction per tenant: the invoice row is claimed first
(the unique tenant and period: a second closer, on any replica, finds it taken and moves
on), then the number is taken from the deployment's counter in the same transaction, so a
close that fails gives its number back and numbers have no gaps.

A plan change mid-month is prorated by UTC days: the fee and the included allowance of
each plan count for the days it was the tenant's (the day of the change belongs to the new
plan); overage follows the plan at the end of the month.
"""

from __future__ import annotations

import builtins
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.alerts.events import AlertEvent, AlertKind
from apiary.alerts.service import alert_service
from apiary.audit.service import audit_service
from apiary.auth.context import Actor, AuthContext
from apiary.authz.scope import TenantScope
from apiary.billing import schemas
from apiary.billing.entitlements import Feature, has_feature
from apiary.billing.models import Credit, Invoice, InvoiceLine, Plan, PlanChange
from apiary.billing.money import format_minor, minor_units
from apiary.billing.payments import PaymentStatus, payment_service
from apiary.billing.repository import Metering, billing_repository
from apiary.config import BillingSettings
from apiary.db import session_scope, utcnow
from apiary.errors import Conflict, NotFound, Unprocessable
from apiary.kit.schemas import PageParams
from apiary.tenants.models import Tenant

CENT = Decimal("0.01")
MICRO = Decimal("0.000001")


def period_bounds(period: str) -> tuple[dt.datetime, dt.datetime]:
    year, month = (int(part) for part in period.split("-"))
    start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC)
    return start, end


def period_of(moment: dt.datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def last_period(now: dt.datetime | None = None) -> str:
    now = now or utcnow()
    first = now.replace(day=1)
    return period_of(first - dt.timedelta(days=1))


@dataclass(frozen=True, slots=True)
class Segment:
    """Days of the period a plan was the tenant's."""

    plan: Plan
    days: int


@dataclass(frozen=True, slots=True)
class Line:
    kind: str
    description: str
    amount_usd: Decimal


@dataclass(frozen=True, slots=True)
class Bill:
    lines: list[Line]
    provider_cost_usd: Decimal
    covered_usd: Decimal


def _share(value: Decimal, days: int, month_days: int) -> Decimal:
    return value * days / month_days


def bill(segments: Sequence[Segment], metering: Metering, *, month_days: int) -> Bill:
    """The fee and overage lines (USD, before credits and tax) of one tenant's month."""
    lines: list[Line] = []
    covered_spend = Decimal(0)
    covered_tokens = Decimal(0)
    uses_tokens = False
    for segment in segments:
        plan = segment.plan
        fee = _share(plan.monthly_fee_usd, segment.days, month_days).quantize(CENT, ROUND_HALF_UP)
        portion = "" if segment.days == month_days else f", {segment.days} of {month_days} days"
        lines.append(Line("plan_fee", f"{plan.name} plan{portion}", fee))
        if plan.included_spend_usd is not None:
            covered_spend += _share(plan.included_spend_usd, segment.days, month_days)
        if plan.included_tokens is not None:
            uses_tokens = True
            covered_tokens += _share(Decimal(plan.included_tokens), segment.days, month_days)
    cost = metering.provider_cost_usd
    covered = covered_spend
    tokens = metering.prompt_tokens + metering.completion_tokens
    if uses_tokens and tokens:
        covered += cost * min(Decimal(1), covered_tokens / tokens)
    covered = min(cost, covered)
    final = segments[-1].plan
    over = cost - covered
    if over > 0 and final.overage:
        markup = final.markup_pct / 100
        amount = (over * (1 + markup)).quantize(CENT, ROUND_HALF_UP)
        lines.append(
            Line(
                "overage",
                f"Model usage beyond the allowance: provider cost ${over.quantize(CENT)}"
                + (f" + {final.markup_pct.normalize():f}% markup" if markup else ""),
                amount,
            )
        )
    return Bill(lines=lines, provider_cost_usd=cost, covered_usd=covered)


class PlanService:
    """The super admin's plans."""

    async def list(self, session: AsyncSession, *, archived: bool) -> Sequence[Plan]:
        return await billing_repository.plans(session, archived=archived)

    async def get(self, session: AsyncSession, key: str) -> Plan:
        plan = await billing_repository.plan(session, key)
        if plan is None:
            raise NotFound(f"plan {key!r} not found")
        return plan

    async def offered(self, session: AsyncSession, key: str) -> Plan:
        """A plan a tenant may be put on: one that exists and is not archived."""
        plan = await billing_repository.plan(session, key)
        if plan is None or plan.archived:
            plans = await billing_repository.plans(session, archived=False)
            raise Unprocessable(
                f"plan: {key!r} is not a plan; one of: {', '.join(p.key for p in plans)}"
            )
        return plan

    async def create(
        self, session: AsyncSession, auth: AuthContext, body: schemas.PlanCreate
    ) -> Plan:
        if await billing_repository.plan(session, body.key) is not None:
            raise Conflict(f"a plan with key {body.key!r} already exists (archived ones too)")
        _cap_is_spend(body.model_dump())
        plan = Plan(**body.model_dump(), archived=False)
        session.add(plan)
        await session.flush()
        await self._audit(session, auth, "plan.created", plan, body.model_dump(mode="json"))
        return plan

    async def update(
        self,
        session: AsyncSession,
        auth: AuthContext,
        key: str,
        body: schemas.PlanUpdate,
        *,
        force: bool,
    ) -> Plan:
        plan = await self.get(session, key)
        changes = body.model_dump(exclude_unset=True)
        if changes.get("monthly_fee_usd", plan.monthly_fee_usd) is None:
            raise Unprocessable("monthly_fee_usd may not be null")
        _cap_is_spend({name: changes.get(name, getattr(plan, name)) for name in _CAP_FIELDS})
        over = await self._tenants_over(session, plan, changes)
        if over and not force:
            raise Conflict(
                f"this change leaves {len(over)} tenant(s) of the {plan.name} plan over it: "
                + "; ".join(over)
                + ". Nothing was changed. Send ?force=true to apply it anyway: those tenants "
                "keep what they have, and adding more is refused until they are under it"
            )
        before = {name: _jsonable(getattr(plan, name)) for name in changes}
        for name, value in changes.items():
            setattr(plan, name, value)
        plan.updated_at = utcnow()
        await session.flush()
        await self._audit(
            session,
            auth,
            "plan.updated",
            plan,
            {
                name: [before[name], _jsonable(value)]
                for name, value in changes.items()
                if before[name] != _jsonable(value)
            }
            | ({"forced_over": over} if over else {}),
        )
        return plan

    async def archive(self, session: AsyncSession, auth: AuthContext, key: str) -> None:
        plan = await self.get(session, key)
        tenants = await billing_repository.tenants_on(session, key)
        if tenants:
            names = ", ".join(t.name for t in tenants[:10])
            raise Conflict(
                f"plan {key!r} is in use by {len(tenants)} tenant(s) ({names}); move them to "
                "another plan first"
            )
        plan.archived = True
        await session.flush()
        await self._audit(session, auth, "plan.archived", plan, {})

    async def _tenants_over(
        self, session: AsyncSession, plan: Plan, changes: dict[str, Any]
    ) -> builtins.list[str]:
        """What each tenant on the plan holds beyond the plan as changed."""
        standing = [
            name
            for name in ("seats", "knowledge_bases", "storage_bytes")
            if name in changes and changes[name] is not None
        ]
        if not standing:
            return []
        over = []
        for tenant in await billing_repository.tenants_on(session, plan.key):
            usage = await billing_repository.usage(session, TenantScope(tenant.id))
            excess = [
                f"{name} {getattr(usage, name)} > {changes[name]}"
                for name in standing
                if getattr(usage, name) > changes[name]
            ]
            if excess:
                over.append(f"{tenant.name} ({', '.join(excess)})")
        return over

    async def _audit(
        self,
        session: AsyncSession,
        auth: AuthContext,
        action: str,
        plan: Plan,
        details: dict[str, Any],
    ) -> None:
        await audit_service.record(
            session,
            action=action,
            actor=auth.actor,
            tenant_id=None,
            target_type="plan",
            target_id=plan.key,
            details=details,
        )

    async def change_tenant_plan(
        self, session: AsyncSession, tenant: Tenant, key: str, *, force: bool
    ) -> None:
        """Move a tenant onto plan `key` (the tenants service calls this, and records it)."""
        plan = await self.offered(session, key)
        usage = await billing_repository.usage(session, TenantScope(tenant.id))
        excess = [
            f"{name} {getattr(usage, name)} > {getattr(plan, name)}"
            for name in ("seats", "knowledge_bases", "storage_bytes")
            if getattr(plan, name) is not None and getattr(usage, name) > getattr(plan, name)
        ]
        if excess and not force:
            raise Conflict(
                f"tenant {tenant.name!r} holds more than the {plan.name} plan allows ("
                + ", ".join(excess)
                + "); reduce it first, or send force: true to move it anyway (it keeps what "
                "it has; adding more is refused)"
            )
        billing_repository.add_plan_change(
            session, TenantScope(tenant.id), PlanChange(from_plan=tenant.plan, to_plan=key)
        )


_CAP_FIELDS = ("overage", "included_spend_usd", "included_tokens")


def _cap_is_spend(fields: dict[str, Any]) -> None:
    # Without overage the allowance is enforced as a monthly budget, which counts dollars.
    if not fields["overage"] and fields["included_tokens"] is not None:
        raise Unprocessable(
            "included_tokens: a plan without overage caps spend, not tokens; set "
            "included_spend_usd instead, or allow overage"
        )


def _jsonable(value: object) -> object:
    return str(value) if isinstance(value, Decimal) else value


class BillingService:
    """A tenant's plan, usage and invoices; closing periods; the platform's revenue."""

    async def tenant_plan(
        self, session: AsyncSession, auth: AuthContext, *, now: dt.datetime | None = None
    ) -> schemas.TenantPlan:
        scope = auth.scope
        tenant = await billing_repository.tenant(session, scope.tenant_id)
        assert tenant is not None
        plan = await billing_repository.plan_of(session, scope.tenant_id)
        usage = await billing_repository.usage(session, scope)
        held = {
            "seats": usage.seats,
            "concurrent_executions": usage.running_executions,
            "knowledge_bases": usage.knowledge_bases,
            "storage_bytes": usage.storage_bytes,
        }
        period = period_of(now or utcnow())
        return schemas.TenantPlan(
            plan=schemas.Plan.model_validate(plan),
            currency=tenant.currency,
            entitlements=[
                schemas.EntitlementUsage(
                    entitlement=name, limit=getattr(plan, name), used=held.get(name)
                )
                for name in schemas.ENTITLEMENTS
            ],
            features={feature.value: has_feature(plan, feature) for feature in Feature},
            period=await self.metering(session, tenant, period),
        )

    async def metering(
        self, session: AsyncSession, tenant: Tenant, period: str
    ) -> schemas.Metering:
        """The period's figures from the ledger, and what it bills so far (before tax)."""
        start, end = period_bounds(period)
        scope = TenantScope(tenant.id)
        figures = await billing_repository.metering(session, scope, start=start, end=end)
        segments = await self.segments(session, tenant, period)
        computed = bill(segments, figures, month_days=(end - start).days)
        return schemas.Metering(
            period=period,
            provider_cost_usd=figures.provider_cost_usd,
            billed_usd=sum((line.amount_usd for line in computed.lines), Decimal(0)),
            calls=figures.calls,
            prompt_tokens=figures.prompt_tokens,
            completion_tokens=figures.completion_tokens,
            executions=figures.executions,
            storage_bytes=figures.storage_bytes,
        )

    async def segments(self, session: AsyncSession, tenant: Tenant, period: str) -> list[Segment]:
        """The plans of the tenant's month, each with its days (from its creation, if it
        was created during the month)."""
        start, end = period_bounds(period)
        scope = TenantScope(tenant.id)
        changes = await billing_repository.plan_changes(session, scope, before=end)
        before = [c for c in changes if c.changed_at < start]
        during = [c for c in changes if c.changed_at >= start]
        if before:
            current = before[-1].to_plan
        elif during and during[0].from_plan is not None:
            current = during[0].from_plan
        else:
            current = tenant.plan if not during else during[0].to_plan
        first_day = max(start.date(), tenant.created_at.astimezone(dt.UTC).date())
        cuts: list[tuple[dt.date, str]] = [(first_day, current)]
        for change in during:
            day = max(first_day, change.changed_at.astimezone(dt.UTC).date())
            if cuts[-1][0] == day:
                cuts[-1] = (day, change.to_plan)
            else:
                cuts.append((day, change.to_plan))
        last_day = end.date()
        plans: dict[str, Plan] = {}
        segments = []
        for index, (day, key) in enumerate(cuts):
            until = cuts[index + 1][0] if index + 1 < len(cuts) else last_day
            if key not in plans:
                found = await billing_repository.plan(session, key)
                if found is None:
                    raise NotFound(f"plan {key!r} of tenant {tenant.name!r} not found")
                plans[key] = found
            if (until - day).days > 0:
                segments.append(Segment(plans[key], (until - day).days))
        if not segments:  # created on the month's last instant: nothing to charge but the plan
            segments.append(Segment(plans[cuts[-1][1]], 0))
        return segments

    async def close_period(
        self,
        factory: async_sessionmaker[AsyncSession],
        period: str,
        settings: BillingSettings,
        *,
        now: dt.datetime | None = None,
    ) -> schemas.CloseResult:
        """Issue the period's invoice of every tenant that existed in it; safe to run
        again and from several replicas at once (each tenant's period is closed once)."""
        _, end = period_bounds(period)
        if end > (now or utcnow()):
            raise Unprocessable(f"period: {period} has not ended yet; only ended months close")
        async with factory() as session:
            tenant_ids = await billing_repository.tenant_ids(session, created_before=end)
        issued: list[str] = []
        already = 0
        for tenant_id in tenant_ids:
            async with session_scope(factory) as session:
                number = await self._close_one(session, tenant_id, period, settings)
            if number is None:
                already += 1
            else:
                issued.append(number)
        # After every tenant's transaction has committed: Stripe is never called while the
        # invoice counter is locked. What Stripe does not take now stays pending for the
        # next close or `apiary billing sync` (invoices of earlier closes too).
        payments = await payment_service.sync(factory, settings.stripe)
        return schemas.CloseResult(
            period=period, issued=issued, already_closed=already, payments=payments
        )

    async def _close_one(
        self, session: AsyncSession, tenant_id: uuid.UUID, period: str, settings: BillingSettings
    ) -> str | None:
        scope = TenantScope(tenant_id)
        tenant = await billing_repository.tenant(session, tenant_id)
        if tenant is None:
            return None
        start, end = period_bounds(period)
        currency = tenant.currency if tenant.currency in settings.usd_rates else "USD"
        rate = settings.usd_rates.get(currency, Decimal(1))
        invoice_id = await billing_repository.claim_period(
            session,
            scope,
            {
                "id": uuid.uuid4(),
                "created_at": utcnow(),
                "issued_at": utcnow(),
                "period": period,
                "number": f"~{uuid.uuid4().hex}",  # numbered below, once this run won the claim
                "plan": tenant.plan,
                "currency": currency,
                "usd_rate": rate,
                "tax_rate": settings.tax_rate,
                "subtotal_minor": 0,
                "tax_minor": 0,
                "total_minor": 0,
                "provider_cost_usd": Decimal(0),
                "billed_usd": Decimal(0),
                "calls": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "executions": 0,
                "storage_bytes": 0,
                "payment_status": PaymentStatus.NOT_APPLICABLE.value,
            },
        )
        if invoice_id is None:
            return None  # closed by another run
        figures = await billing_repository.metering(session, scope, start=start, end=end)
        computed = bill(
            await self.segments(session, tenant, period), figures, month_days=(end - start).days
        )
        lines = list(computed.lines)
        subtotal_usd = sum((line.amount_usd for line in lines), Decimal(0))
        for credit in await billing_repository.open_credits(session, scope):
            if subtotal_usd <= 0:
                break
            used = min(credit.amount_usd, subtotal_usd)
            lines.append(Line("credit", f"Credit: {credit.reason}", -used))
            subtotal_usd -= used
            credit.invoice_id = invoice_id
        amounts = [minor_units(line.amount_usd * rate, currency) for line in lines]
        subtotal = sum(amounts)
        tax = int((subtotal * settings.tax_rate).quantize(Decimal(1), ROUND_HALF_UP))
        if settings.tax_rate:
            lines.append(Line("tax", f"Tax at {settings.tax_rate * 100:.2f}%", Decimal(0)))
            amounts.append(tax)
        for position, (line, amount) in enumerate(zip(lines, amounts, strict=True), start=1):
            billing_repository.add(
                session,
                scope,
                InvoiceLine(
                    invoice_id=invoice_id,
                    position=position,
                    kind=line.kind,
                    description=line.description[:300],
                    amount_minor=amount,
                ),
            )
        invoice = await billing_repository.invoice(session, scope, invoice_id)
        number = await billing_repository.next_invoice_number(session, "invoices")
        invoice.number = f"{settings.invoice_prefix}-{number:06d}"
        invoice.subtotal_minor = subtotal
        invoice.tax_minor = tax
        invoice.total_minor = subtotal + tax
        invoice.provider_cost_usd = figures.provider_cost_usd
        invoice.billed_usd = subtotal_usd.quantize(MICRO)
        invoice.calls = figures.calls
        invoice.prompt_tokens = figures.prompt_tokens
        invoice.completion_tokens = figures.completion_tokens
        invoice.executions = figures.executions
        invoice.storage_bytes = figures.storage_bytes
        # Through Stripe when it is configured and there is something to collect.
        due = settings.stripe.enabled and invoice.total_minor > 0
        invoice.payment_status = (
            PaymentStatus.PENDING_SYNC if due else PaymentStatus.NOT_APPLICABLE
        ).value
        await session.flush()
        await audit_service.record(
            session,
            action="invoice.issued",
            actor=_SYSTEM,
            tenant_id=tenant_id,
            target_type="invoice",
            target_id=invoice_id,
            details={
                "number": invoice.number,
                "period": period,
                "total_minor": invoice.total_minor,
            },
        )
        # In this transaction: the alert exists exactly when the invoice does.
        await alert_service.notify(
            session,
            AlertEvent(
                AlertKind.INVOICE_ISSUED,
                tenant_id,
                subject="invoice",
                period=period,
                data={
                    "invoice_id": str(invoice_id),
                    "number": invoice.number,
                    "period": period,
                    "currency": currency,
                    "total_minor": invoice.total_minor,
                    "total": format_minor(invoice.total_minor, currency),
                },
            ),
        )
        return invoice.number

    async def tenant_name(self, session: AsyncSession, auth: AuthContext) -> str:
        tenant = await billing_repository.tenant(session, auth.scope.tenant_id)
        assert tenant is not None
        return tenant.name

    async def invoices(
        self, session: AsyncSession, auth: AuthContext, page: PageParams
    ) -> tuple[Sequence[Invoice], int]:
        return await billing_repository.invoices(session, auth.scope, page)

    async def invoice(
        self, session: AsyncSession, auth: AuthContext, invoice_id: uuid.UUID
    ) -> tuple[Invoice, Sequence[InvoiceLine]]:
        invoice = await billing_repository.invoice(session, auth.scope, invoice_id)
        return invoice, await billing_repository.lines(session, auth.scope, invoice.id)

    async def settings(
        self, session: AsyncSession, auth: AuthContext, billing: BillingSettings
    ) -> schemas.BillingSettings:
        tenant = await billing_repository.tenant(session, auth.scope.tenant_id)
        assert tenant is not None
        return schemas.BillingSettings(
            currency=tenant.currency, currencies=sorted(billing.usd_rates)
        )

    async def update_settings(
        self,
        session: AsyncSession,
        auth: AuthContext,
        body: schemas.BillingSettingsUpdate,
        billing: BillingSettings,
    ) -> schemas.BillingSettings:
        tenant = await billing_repository.tenant(session, auth.scope.tenant_id)
        assert tenant is not None
        if body.currency is not None and body.currency != tenant.currency:
            if body.currency not in billing.usd_rates:
                raise Unprocessable(
                    f"currency: {body.currency!r} is not billed in here; one of: "
                    + ", ".join(sorted(billing.usd_rates))
                )
            await audit_service.record(
                session,
                action="billing.currency_changed",
                actor=auth.actor,
                tenant_id=tenant.id,
                target_type="tenant",
                target_id=tenant.id,
                details={"currency": [tenant.currency, body.currency]},
            )
            tenant.currency = body.currency
            await session.flush()
        return await self.settings(session, auth, billing)

    async def add_credit(
        self,
        session: AsyncSession,
        auth: AuthContext,
        tenant_id: uuid.UUID,
        body: schemas.CreditCreate,
    ) -> Credit:
        if await billing_repository.tenant(session, tenant_id) is None:
            raise NotFound(f"tenant {tenant_id} not found")
        credit = Credit(amount_usd=body.amount_usd, reason=body.reason)
        billing_repository.add(session, TenantScope(tenant_id), credit)
        await session.flush()
        await audit_service.record(
            session,
            action="billing.credit_added",
            actor=auth.actor,
            tenant_id=tenant_id,
            target_type="credit",
            target_id=credit.id,
            details={"amount_usd": str(body.amount_usd), "reason": body.reason},
        )
        return credit

    async def revenue(self, session: AsyncSession, *, start: str, end: str) -> schemas.Revenue:
        rows = await billing_repository.revenue_by_tenant(session, start=start, end=end)
        views = [
            _revenue(
                r.tenant_id, r.tenant_name, r.invoices, r.revenue_usd, r.provider_cost_usd, r.calls
            )
            for r in rows
        ]
        total = _revenue(
            uuid.UUID(int=0),
            "all tenants",
            sum(r.invoices for r in rows),
            sum((r.revenue_usd for r in rows), Decimal(0)),
            sum((r.provider_cost_usd for r in rows), Decimal(0)),
            sum(r.calls for r in rows),
        )
        return schemas.Revenue(from_period=start, to_period=end, tenants=views, total=total)


def _revenue(
    tenant_id: uuid.UUID, name: str, invoices: int, revenue: Decimal, cost: Decimal, calls: int
) -> schemas.TenantRevenue:
    return schemas.TenantRevenue(
        tenant_id=tenant_id,
        tenant_name=name,
        invoices=invoices,
        revenue_usd=revenue.quantize(CENT),
        provider_cost_usd=cost.quantize(MICRO),
        gross_margin=((revenue - cost) / revenue).quantize(Decimal("0.0001")) if revenue else None,
        calls=calls,
        cost_per_request_usd=(cost / calls).quantize(MICRO) if calls else None,
    )


_SYSTEM = Actor(ip="billing")  # the closing job: no person, no key

plan_service = PlanService()
billing_service = BillingService()
