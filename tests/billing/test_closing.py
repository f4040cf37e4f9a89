"""Metering from the ledger, proration of a plan change, and closing a month: idempotent,
one invoice however many closers run at once, numbers without gaps."""

from __future__ import annotations

import asyncio
import random
import uuid
from decimal import Decimal

import httpx
from sqlalchemy import func, select

from apiary.billing.models import Invoice, InvoiceLine, Plan
from apiary.billing.repository import Metering
from apiary.billing.service import Segment, bill, billing_service
from apiary.config import BillingSettings
from apiary.db import create_engine, create_session_factory
from apiary.runtime import Runtime
from apiary.tenants.models import Tenant
from tests.billing.helpers import (
    add_execution,
    add_ledger,
    at,
    created_on,
    ledger_entry,
    plan_changed_on,
)
from tests.factories import make_super_admin, make_tenant

NOVEMBER = "2026-11"


async def test_metering_equals_a_scan_of_the_ledger(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acme = await make_tenant(runtime, client, "acme", plan="team")
    globex = await make_tenant(runtime, client, "globex", plan="team")
    rng = random.Random(20)
    moments = [
        at("2026-10-31T23:59:59.999"),
        at("2026-11-01T00:00:00"),
        at("2026-11-15T12:00:00"),
        at("2026-11-30T23:59:59.999"),
        at("2026-12-01T00:00:00"),
    ]
    entries = [
        ledger_entry(
            rng.choice([acme.id, globex.id]),
            rng.choice(moments),
            cost_usd=rng.choice([None, round(rng.uniform(0, 0.5), 6)]),
            prompt_tokens=rng.randint(0, 5000),
            completion_tokens=rng.randint(0, 2000),
        )
        for _ in range(300)
    ]
    await add_ledger(runtime, entries)
    for moment in (moments[0], moments[1], moments[3], moments[4]):
        await add_execution(runtime, acme.id, moment)
    start, end = at("2026-11-01T00:00:00"), at("2026-12-01T00:00:00")
    mine = [e for e in entries if str(e["tenant_id"]) == acme.id and start <= e["created_at"] < end]
    async with runtime.session_factory() as session:
        tenant = await session.get(Tenant, uuid.UUID(acme.id))
        assert tenant is not None
        metering = await billing_service.metering(session, tenant, NOVEMBER)
    assert metering.calls == len(mine)
    assert metering.prompt_tokens == sum(e["prompt_tokens"] for e in mine)
    assert metering.completion_tokens == sum(e["completion_tokens"] for e in mine)
    expected = sum(Decimal(str(e["cost_usd"])) for e in mine if e["cost_usd"] is not None)
    assert abs(metering.provider_cost_usd - expected) <= Decimal("0.000001")
    assert metering.executions == 2  # November 1st 00:00 and 30th 23:59:59.999


async def test_a_plan_change_mid_month_is_prorated_by_days(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await make_super_admin(runtime, client)
    acme = await make_tenant(runtime, client, "acme", plan="free")
    await created_on(runtime, acme.id, at("2026-10-15T09:00:00"))
    moved = await client.patch(
        f"/api/v1/tenants/{acme.id}", headers=root.headers, json={"plan": "premium"}
    )
    assert moved.status_code == 200, moved.text
    await plan_changed_on(runtime, acme.id, at("2026-11-16T10:00:00"))
    # $100 of provider cost in November.
    await add_ledger(
        runtime,
        [ledger_entry(acme.id, at("2026-11-20T00:00:00"), cost_usd=10.0) for _ in range(10)],
    )
    closed = await client.post(
        "/api/v1/admin/billing/close", headers=root.headers, json={"period": NOVEMBER}
    )
    assert closed.status_code == 200, closed.text
    assert closed.json()["issued"] == ["INV-000001"]
    invoices = await client.get("/api/v1/billing/invoices", headers=acme.admin.headers)
    invoice_id = invoices.json()["items"][0]["id"]
    detail = (
        await client.get(f"/api/v1/billing/invoices/{invoice_id}", headers=acme.admin.headers)
    ).json()
    lines = [(line["kind"], line["description"], line["amount_minor"]) for line in detail["lines"]]
    # Free for November 1-15, Premium from the 16th: 15 of 30 days each. The allowance is
    # prorated too: $2.50 (Free) + $75 (Premium) of the $100 is covered; the other $22.50
    # is billed at Premium's 20 % markup.
    assert lines == [
        ("plan_fee", "Free plan, 15 of 30 days", 0),
        ("plan_fee", "Premium plan, 15 of 30 days", 12450),
        ("overage", "Model usage beyond the allowance: provider cost $22.50 + 20% markup", 2700),
    ]
    assert detail["total_minor"] == 15150
    assert detail["plan"] == "premium"
    assert detail["provider_cost_usd"] == "100.000000"
    assert detail["calls"] == 10


async def test_two_concurrent_closes_yield_one_invoice_each_and_gap_free_numbers(
    client: httpx.AsyncClient, runtime: Runtime, database_url: str
) -> None:
    tenants = [await make_tenant(runtime, client, f"t{i}", plan="team") for i in range(6)]
    for tenant in tenants:
        await created_on(runtime, tenant.id, at("2026-10-01T00:00:00"))
        await add_ledger(
            runtime, [ledger_entry(tenant.id, at("2026-11-03T00:00:00"), cost_usd=1.0)]
        )
    # Another replica: its own engine and connection pool on the same database.
    other_engine = create_engine(database_url)
    try:
        settings = BillingSettings()
        first, second = await asyncio.gather(
            billing_service.close_period(runtime.session_factory, NOVEMBER, settings),
            billing_service.close_period(create_session_factory(other_engine), NOVEMBER, settings),
        )
    finally:
        await other_engine.dispose()
    assert len(first.issued) + len(second.issued) == 6
    assert first.already_closed + second.already_closed == 6
    async with runtime.session_factory() as session:
        numbers = sorted((await session.scalars(select(Invoice.number))).all())
        per_tenant = (
            await session.execute(
                select(Invoice.tenant_id, func.count()).group_by(Invoice.tenant_id)
            )
        ).all()
        lines = await session.scalar(select(func.count()).select_from(InvoiceLine))
    assert numbers == [f"INV-{n:06d}" for n in range(1, 7)]
    assert sorted(count for _, count in per_tenant) == [1] * 6
    assert lines == 6  # one fee line each: $1 is within Team's allowance
    again = await billing_service.close_period(runtime.session_factory, NOVEMBER, settings)
    assert again.issued == []
    assert again.already_closed == 6


async def test_credits_tax_and_the_tenants_currency(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await make_super_admin(runtime, client)
    acme = await make_tenant(runtime, client, "acme", plan="team")
    await created_on(runtime, acme.id, at("2026-10-01T00:00:00"))
    refused = await client.patch(
        "/api/v1/billing/settings", headers=acme.admin.headers, json={"currency": "GBP"}
    )
    assert refused.status_code == 422
    assert "'GBP' is not billed in here" in refused.json()["detail"]
    credit = await client.post(
        f"/api/v1/admin/tenants/{acme.id}/credits",
        headers=root.headers,
        json={"amount_usd": "9.00", "reason": "outage on Nov 3"},
    )
    assert credit.status_code == 201, credit.text
    settings = BillingSettings(
        tax_rate=Decimal("0.2"), usd_rates={"USD": Decimal(1), "EUR": Decimal("0.9")}
    )
    runtime.settings.billing = settings  # the deployment's configuration, as the API reads it
    try:
        euro = await client.patch(
            "/api/v1/billing/settings", headers=acme.admin.headers, json={"currency": "EUR"}
        )
        assert euro.status_code == 200, euro.text
        assert euro.json() == {"currency": "EUR", "currencies": ["EUR", "USD"]}
        result = await billing_service.close_period(runtime.session_factory, NOVEMBER, settings)
    finally:
        runtime.settings.billing = BillingSettings()
    assert result.issued == ["INV-000001"]
    async with runtime.session_factory() as session:
        invoice = await session.scalar(select(Invoice))
        assert invoice is not None
        rows = (await session.scalars(select(InvoiceLine).order_by(InvoiceLine.position))).all()
    # Team's $49 fee and the $9 credit, at 0.9 EUR to the dollar; 20 % tax on the rest.
    assert [(r.kind, r.amount_minor) for r in rows] == [
        ("plan_fee", 4410),
        ("credit", -810),
        ("tax", 720),
    ]
    assert (invoice.currency, invoice.subtotal_minor, invoice.tax_minor, invoice.total_minor) == (
        "EUR",
        3600,
        720,
        4320,
    )
    assert invoice.billed_usd == Decimal("40.000000")


def test_a_token_allowance_covers_its_share_of_the_cost() -> None:
    tokens_plan = Plan(
        key="tokens",
        name="Tokens",
        monthly_fee_usd=Decimal("20.00"),
        included_spend_usd=None,
        included_tokens=1_000_000,
        overage=True,
        markup_pct=Decimal("10"),
    )
    # 4 M tokens cost $40: the 1 M included cover a quarter, $30 is billed plus 10 %.
    figures = Metering(
        provider_cost_usd=Decimal("40"),
        calls=100,
        prompt_tokens=3_000_000,
        completion_tokens=1_000_000,
        executions=0,
        storage_bytes=0,
    )
    computed = bill([Segment(tokens_plan, 30)], figures, month_days=30)
    assert [(line.kind, line.amount_usd) for line in computed.lines] == [
        ("plan_fee", Decimal("20.00")),
        ("overage", Decimal("33.00")),
    ]
    assert computed.covered_usd == Decimal("10")
