"""Payments through Stripe, driven by the official SDK against a local server speaking
Stripe's wire format (tests/fakes/stripe.py): customers, subscriptions and invoices kept in
sync, a Stripe outage during a close, and the webhook (signatures, once per event id,
out-of-order delivery). Without Stripe configured billing stays invoice only."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from apiary.alerts.models import Alert
from apiary.audit.models import AuditEntry
from apiary.billing.models import Invoice, InvoiceLine
from apiary.billing.payments import (
    payment_service,
)
from apiary.billing.service import billing_service
from apiary.config import BillingSettings, StripeSettings
from apiary.db import create_engine, create_session_factory
from apiary.runtime import Runtime
from tests.billing.helpers import add_ledger, at, created_on, ledger_entry
from tests.factories import TenantFixture, make_super_admin, make_tenant
from tests.fakes.stripe import API_KEY, WEBHOOK_SECRET, FakeStripe, sign

# The SDK's httpx client posts its form body as `data=` bytes, which httpx deprecates; the
# SDK's to change, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

NOVEMBER = "2026-11"
WEBHOOK = "/api/v1/billing/stripe/webhook"


def stripe_billing(server: FakeStripe, **billing: Any) -> BillingSettings:
    return BillingSettings(
        stripe=StripeSettings(
            api_key=API_KEY,  # type: ignore[arg-type]
            webhook_secret=WEBHOOK_SECRET,  # type: ignore[arg-type]
            api_base=server.base_url,
            max_network_retries=0,  # an outage is seen at once, not after the SDK's backoff
        ),
        **billing,
    )


@pytest.fixture
def stripe_on(runtime: Runtime, fake_stripe: FakeStripe) -> Iterator[BillingSettings]:
    """The deployment with Stripe configured, as the API reads it."""
    settings = stripe_billing(fake_stripe)
    runtime.settings.billing = settings
    yield settings
    runtime.settings.billing = BillingSettings()


async def failure_alerts(runtime: Runtime) -> list[tuple[uuid.UUID | None, str, str]]:
    """The `payment.failed` alerts raised: (tenant, Stripe invoice id, invoice number)."""
    async with runtime.session_factory() as session:
        alerts = (await session.scalars(select(Alert).where(Alert.kind == "payment.failed"))).all()
    return [(a.tenant_id, a.subject, a.data["invoice_number"]) for a in alerts]


async def team_tenant(runtime: Runtime, client: httpx.AsyncClient, name: str) -> TenantFixture:
    """A Team tenant since October with $30 of provider cost in November ($5 over)."""
    tenant = await make_tenant(runtime, client, name, plan="team")
    await created_on(runtime, tenant.id, at("2026-10-01T00:00:00"))
    await add_ledger(runtime, [ledger_entry(tenant.id, at("2026-11-10T00:00:00"), cost_usd=30.0)])
    return tenant


async def close_november(runtime: Runtime, settings: BillingSettings) -> Any:
    return await billing_service.close_period(runtime.session_factory, NOVEMBER, settings)


async def stripe_invoice_of(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> tuple[dict[str, Any], str]:
    listed = await client.get("/api/v1/billing/invoices", headers=tenant.admin.headers)
    assert listed.status_code == 200, listed.text
    [invoice] = listed.json()["items"]
    return invoice, invoice["stripe_invoice_id"]


async def deliver(
    client: httpx.AsyncClient, payload: bytes, *, signature: str | None = None
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    headers["Stripe-Signature"] = sign(payload) if signature is None else signature
    return await client.post(WEBHOOK, content=payload, headers=headers)


async def payment_status(client: httpx.AsyncClient, tenant: TenantFixture) -> str:
    invoice, _ = await stripe_invoice_of(client, tenant)
    return str(invoice["payment_status"])


# -- keeping Stripe in sync ------------------------------------------------------------------


async def test_a_closed_invoice_appears_in_stripe_with_its_lines_and_totals(
    client: httpx.AsyncClient, runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    root = await make_super_admin(runtime, client)
    acme = await team_tenant(runtime, client, "acme")
    credit = await client.post(
        f"/api/v1/admin/tenants/{acme.id}/credits",
        headers=root.headers,
        json={"amount_usd": "9.00", "reason": "outage on Nov 3"},
    )
    assert credit.status_code == 201, credit.text
    settings = stripe_billing(
        fake_stripe,
        tax_rate=Decimal("0.2"),
        usd_rates={"USD": Decimal(1), "EUR": Decimal("0.9")},
    )
    runtime.settings.billing = settings
    try:
        euro = await client.patch(
            "/api/v1/billing/settings", headers=acme.admin.headers, json={"currency": "EUR"}
        )
        assert euro.status_code == 200, euro.text
        result = await close_november(runtime, settings)
        account = await client.get("/api/v1/billing/payment", headers=acme.admin.headers)
    finally:
        runtime.settings.billing = BillingSettings()
    assert result.issued == ["INV-000001"]
    assert result.payments is not None
    assert (result.payments.invoices_synced, result.payments.invoices_pending) == (1, 0)

    invoice, stripe_id = await stripe_invoice_of(client, acme)
    assert invoice["payment_status"] == "open"
    mirrored = fake_stripe.invoices[stripe_id]
    detail = (
        await client.get(f"/api/v1/billing/invoices/{invoice['id']}", headers=acme.admin.headers)
    ).json()
    assert [(line["amount"], line["description"]) for line in mirrored["lines"]["data"]] == [
        (line["amount_minor"], line["description"]) for line in detail["lines"]
    ]
    # Team's $49 fee, $5 over the allowance plus 30 %, the $9 credit; 20 % tax; in euros.
    assert [line["amount_minor"] for line in detail["lines"]] == [4410, 585, -810, 837]
    assert (mirrored["total"], mirrored["currency"], mirrored["status"]) == (5022, "eur", "open")
    assert mirrored["total"] == invoice["total_minor"]
    assert mirrored["metadata"]["apiary_invoice_id"] == invoice["id"]
    assert mirrored["collection_method"] == "send_invoice"
    customer = fake_stripe.customers[mirrored["customer"]]
    assert customer["metadata"] == {"apiary_tenant_id": acme.id}
    assert account.status_code == 200, account.text
    assert account.json() == {
        "mode": "stripe",
        "customer_id": customer["id"],
        "subscription_id": None,
        "subscription_status": None,
        "invoices_pending_sync": 0,
        "invoices_open": 1,
        "invoices_failed": 0,
    }


async def test_two_concurrent_closes_make_one_customer_and_one_stripe_invoice_per_tenant(
    client: httpx.AsyncClient, runtime: Runtime, database_url: str, fake_stripe: FakeStripe
) -> None:
    tenants = [await team_tenant(runtime, client, f"t{i}") for i in range(4)]
    settings = stripe_billing(fake_stripe)
    other_engine = create_engine(database_url)  # another replica, its own pool
    try:
        first, second = await asyncio.gather(
            close_november(runtime, settings),
            billing_service.close_period(create_session_factory(other_engine), NOVEMBER, settings),
        )
        again = await payment_service.sync(runtime.session_factory, settings.stripe)
    finally:
        await other_engine.dispose()
    assert len(first.issued) + len(second.issued) == 4
    assert again is not None
    assert again.invoices_synced == 0
    owners = sorted(c["metadata"]["apiary_tenant_id"] for c in fake_stripe.customers.values())
    assert owners == sorted(t.id for t in tenants)  # one customer each, however many syncs
    assert len(fake_stripe.invoices) == 4
    assert sorted(i["metadata"]["apiary_number"] for i in fake_stripe.invoices.values()) == [
        f"INV-{n:06d}" for n in range(1, 5)
    ]
    for tenant in tenants:
        invoice, stripe_id = await stripe_invoice_of(client, tenant)
        assert invoice["payment_status"] == "open"
        assert fake_stripe.invoices[stripe_id]["customer"] in fake_stripe.customers
    # Every create carried a key made of Apiary ids.
    assert all(call.idempotency_key for call in fake_stripe.calls("POST", "/v1/"))


async def test_a_stripe_outage_during_close_still_issues_the_invoice_and_a_later_sync_catches_up(
    client: httpx.AsyncClient,
    runtime: Runtime,
    fake_stripe: FakeStripe,
    caplog: pytest.LogCaptureFixture,
) -> None:
    acme = await team_tenant(runtime, client, "acme")
    globex = await team_tenant(runtime, client, "globex")
    settings = stripe_billing(fake_stripe)
    fake_stripe.fail(500)
    with caplog.at_level(logging.INFO):
        result = await close_november(runtime, settings)
    assert sorted(result.issued) == ["INV-000001", "INV-000002"]
    assert result.payments is not None
    assert result.payments.invoices_pending == 2
    assert "HTTP 500" in result.payments.errors[0]
    assert len(fake_stripe.requests) == 1  # Stripe is down: the second is not tried
    assert await payment_status(client, acme) == "pending_sync"
    assert await payment_status(client, globex) == "pending_sync"
    async with runtime.session_factory() as session:
        errors = (await session.scalars(select(Invoice.payment_error))).all()
    assert sum("HTTP 500" in (error or "") for error in errors) == 1
    assert "left pending" in caplog.text
    assert API_KEY not in caplog.text
    assert API_KEY not in str(result.payments.errors)
    assert fake_stripe.invoices == {}

    fake_stripe.recover()
    caught_up = await payment_service.sync(runtime.session_factory, settings.stripe)
    assert caught_up is not None
    assert (caught_up.invoices_synced, caught_up.invoices_pending) == (2, 0)
    for tenant in (acme, globex):
        invoice_view, stripe_id = await stripe_invoice_of(client, tenant)
        assert invoice_view["payment_status"] == "open"
        assert fake_stripe.invoices[stripe_id]["total"] == invoice_view["total_minor"] == 5550
    assert len(fake_stripe.customers) == 2
    assert len(fake_stripe.invoices) == 2


async def test_a_sync_that_died_halfway_is_finished_a_day_later_not_repeated(
    client: httpx.AsyncClient, runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    acme = await team_tenant(runtime, client, "acme")
    settings = stripe_billing(fake_stripe)
    fake_stripe.fail(500, path="/add_lines")  # the invoice is created, its lines refused
    result = await close_november(runtime, settings)
    assert result.payments is not None
    assert result.payments.invoices_pending == 1
    [draft] = fake_stripe.invoices.values()
    assert draft["status"] == "draft"
    invoice, stripe_id = await stripe_invoice_of(client, acme)
    assert (invoice["payment_status"], stripe_id) == ("pending_sync", draft["id"])

    fake_stripe.recover()
    fake_stripe.forget_idempotency_keys()  # a day later: the keys no longer protect
    caught_up = await payment_service.sync(runtime.session_factory, settings.stripe)
    assert caught_up is not None
    assert caught_up.invoices_synced == 1
    assert list(fake_stripe.invoices) == [draft["id"]]
    assert draft["status"] == "open"
    assert draft["total"] == 5550
    assert await payment_status(client, acme) == "open"


async def test_the_sdk_retries_what_stripe_says_to_retry_without_duplicating(
    client: httpx.AsyncClient, runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    acme = await team_tenant(runtime, client, "acme")
    settings = stripe_billing(fake_stripe)
    settings.stripe.max_network_retries = 1
    fake_stripe.fail(503, times=1, should_retry=True, path="/v1/invoices")
    result = await close_november(runtime, settings)
    assert result.payments is not None
    assert (result.payments.invoices_synced, result.payments.invoices_pending) == (1, 0)
    creates = fake_stripe.calls("POST", "/v1/invoices")
    assert creates[0].idempotency_key == creates[1].idempotency_key  # the same request again
    assert len(fake_stripe.invoices) == 1
    assert await payment_status(client, acme) == "open"


async def test_a_plan_with_a_stripe_price_puts_the_tenant_on_a_subscription(
    client: httpx.AsyncClient, runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    root = await make_super_admin(runtime, client)
    for key, price in (("team", "price_team_monthly"), ("premium", "price_premium_monthly")):
        priced = await client.patch(
            f"/api/v1/admin/plans/{key}", headers=root.headers, json={"stripe_price_id": price}
        )
        assert priced.status_code == 200, priced.text
        assert priced.json()["stripe_price_id"] == price
    refused = await client.patch(
        "/api/v1/admin/plans/team", headers=root.headers, json={"stripe_price_id": "team"}
    )
    assert refused.status_code == 422
    acme = await make_tenant(runtime, client, "acme", plan="team")
    settings = stripe_billing(fake_stripe)
    synced = await payment_service.sync(runtime.session_factory, settings.stripe)
    assert synced is not None
    assert synced.subscriptions_synced == 1
    [subscription] = fake_stripe.subscriptions.values()
    assert subscription["items"]["data"][0]["price"]["id"] == "price_team_monthly"
    assert subscription["metadata"] == {"apiary_tenant_id": acme.id}

    moved = await client.patch(
        f"/api/v1/tenants/{acme.id}", headers=root.headers, json={"plan": "premium"}
    )
    assert moved.status_code == 200, moved.text
    await payment_service.sync(runtime.session_factory, settings.stripe)
    assert len(fake_stripe.subscriptions) == 1
    assert subscription["items"]["data"][0]["price"]["id"] == "price_premium_monthly"
    for _ in range(2):  # nothing left to change: Stripe is not called again
        again = await payment_service.sync(runtime.session_factory, settings.stripe)
        assert again is not None
        assert again.subscriptions_synced == 0
    assert len(fake_stripe.calls("POST", f"/v1/subscriptions/{subscription['id']}")) == 1

    runtime.settings.billing = settings
    try:
        now = int(time.time())
        late = fake_stripe.event(
            "customer.subscription.updated", {**subscription, "status": "past_due"}, created=now
        )
        assert (await deliver(client, late)).status_code == 200
        older = fake_stripe.event(
            "customer.subscription.updated", {**subscription, "status": "active"}, created=now - 60
        )
        assert (await deliver(client, older)).json()["applied"] is False
        account = (await client.get("/api/v1/billing/payment", headers=acme.admin.headers)).json()
    finally:
        runtime.settings.billing = BillingSettings()
    assert account["subscription_id"] == subscription["id"]
    assert account["subscription_status"] == "past_due"


# -- the webhook -----------------------------------------------------------------------------


@pytest.fixture
async def sent_invoice(
    client: httpx.AsyncClient, runtime: Runtime, stripe_on: BillingSettings
) -> tuple[TenantFixture, str]:
    """A tenant whose November invoice is open in Stripe; its Stripe id."""
    acme = await team_tenant(runtime, client, "acme")
    await close_november(runtime, stripe_on)
    _, stripe_id = await stripe_invoice_of(client, acme)
    return acme, stripe_id


async def test_a_signed_invoice_paid_event_marks_the_invoice_paid(
    client: httpx.AsyncClient, fake_stripe: FakeStripe, sent_invoice: tuple[TenantFixture, str]
) -> None:
    acme, stripe_id = sent_invoice
    paid = fake_stripe.event("invoice.paid", fake_stripe.set_invoice_status(stripe_id, "paid"))
    answer = await deliver(client, paid)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": True, "duplicate": False, "applied": True}
    assert await payment_status(client, acme) == "paid"


@pytest.mark.parametrize(
    ("signature", "complaint"),
    [
        (None, "the header is missing"),
        ("t=1,v1=deadbeef", "not a valid signature"),
        ("stale", "not a valid signature"),
        ("wrong-secret", "not a valid signature"),
        ("garbage", "not a valid signature"),
    ],
)
async def test_a_webhook_without_a_good_signature_is_refused_logged_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    fake_stripe: FakeStripe,
    sent_invoice: tuple[TenantFixture, str],
    caplog: pytest.LogCaptureFixture,
    signature: str | None,
    complaint: str,
) -> None:
    acme, stripe_id = sent_invoice
    payload = fake_stripe.event("invoice.paid", fake_stripe.set_invoice_status(stripe_id, "paid"))
    headers = {"Content-Type": "application/json"}
    if signature == "stale":  # signed right, 10 minutes ago: a replay
        headers["Stripe-Signature"] = sign(payload, timestamp=int(time.time()) - 600)
    elif signature == "wrong-secret":
        headers["Stripe-Signature"] = sign(payload, secret="whsec_someone_else")
    elif signature is not None:
        headers["Stripe-Signature"] = signature
    with caplog.at_level(logging.WARNING, logger="apiary.billing.payments"):
        answer = await client.post(WEBHOOK, content=payload, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "BadRequest"
    assert answer.json()["detail"].startswith("Stripe-Signature: ")
    assert complaint in answer.json()["detail"]
    assert "stripe webhook refused" in caplog.text
    assert WEBHOOK_SECRET not in caplog.text
    assert WEBHOOK_SECRET not in answer.text
    assert await payment_status(client, acme) == "open"
    async with runtime.session_factory() as session:
        audited = await session.scalar(
            select(func.count()).where(AuditEntry.action.like("invoice.payment_%"))
        )
    assert audited == 0


async def test_the_same_event_delivered_twice_is_applied_once(
    client: httpx.AsyncClient,
    runtime: Runtime,
    fake_stripe: FakeStripe,
    sent_invoice: tuple[TenantFixture, str],
) -> None:
    acme, stripe_id = sent_invoice
    failed = fake_stripe.event("invoice.payment_failed", fake_stripe.invoices[stripe_id])
    first = await deliver(client, failed)
    second = await deliver(client, failed)
    assert first.json() == {"received": True, "duplicate": False, "applied": True}
    assert second.status_code == 200
    assert second.json() == {"received": True, "duplicate": True, "applied": False}
    assert await payment_status(client, acme) == "failed"
    ((tenant_id, subject, number),) = await failure_alerts(runtime)
    assert (tenant_id, subject) == (uuid.UUID(acme.id), stripe_id)
    assert number.startswith("INV-")
    async with runtime.session_factory() as session:
        audited = await session.scalar(
            select(func.count()).where(AuditEntry.action == "invoice.payment_failed")
        )
    assert audited == 1


async def test_an_older_payment_failed_delivered_after_paid_leaves_the_invoice_paid(
    client: httpx.AsyncClient,
    runtime: Runtime,
    fake_stripe: FakeStripe,
    sent_invoice: tuple[TenantFixture, str],
) -> None:
    acme, stripe_id = sent_invoice
    now = int(time.time())
    failed_first = fake_stripe.event(
        "invoice.payment_failed", dict(fake_stripe.invoices[stripe_id]), created=now - 120
    )
    paid = fake_stripe.event(
        "invoice.paid", fake_stripe.set_invoice_status(stripe_id, "paid"), created=now - 60
    )
    assert (await deliver(client, paid)).json()["applied"] is True
    late = await deliver(client, failed_first)  # Stripe retried it; it arrives last
    assert late.status_code == 200
    assert late.json()["applied"] is False
    assert await payment_status(client, acme) == "paid"
    # Paid is final in Stripe: not even a newer failure event takes it back.
    newer = fake_stripe.event(
        "invoice.payment_failed", fake_stripe.invoices[stripe_id], created=now + 60
    )
    assert (await deliver(client, newer)).json()["applied"] is False
    assert await payment_status(client, acme) == "paid"
    assert await failure_alerts(runtime) == []


async def test_two_concurrent_deliveries_of_one_event_apply_it_once(
    client: httpx.AsyncClient,
    runtime: Runtime,
    fake_stripe: FakeStripe,
    sent_invoice: tuple[TenantFixture, str],
) -> None:
    acme, stripe_id = sent_invoice
    failed = fake_stripe.event("invoice.payment_failed", fake_stripe.invoices[stripe_id])
    answers = await asyncio.gather(*(deliver(client, failed) for _ in range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    assert sorted(a.json()["duplicate"] for a in answers) == [False, True, True, True]
    assert len(await failure_alerts(runtime)) == 1
    async with runtime.session_factory() as session:
        audited = await session.scalar(
            select(func.count()).where(AuditEntry.action == "invoice.payment_failed")
        )
    assert audited == 1
    assert await payment_status(client, acme) == "failed"


async def test_an_unknown_event_type_is_acknowledged_and_ignored(
    client: httpx.AsyncClient, fake_stripe: FakeStripe, sent_invoice: tuple[TenantFixture, str]
) -> None:
    acme, stripe_id = sent_invoice
    customer = fake_stripe.customers[fake_stripe.invoices[stripe_id]["customer"]]
    answer = await deliver(client, fake_stripe.event("customer.updated", customer))
    assert answer.status_code == 200
    assert answer.json() == {"received": True, "duplicate": False, "applied": False}
    assert await payment_status(client, acme) == "open"


async def test_without_stripe_billing_is_invoice_only_and_the_webhook_says_so(
    client: httpx.AsyncClient, runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    acme = await team_tenant(runtime, client, "acme")
    result = await close_november(runtime, BillingSettings())
    assert result.issued == ["INV-000001"]
    assert result.payments is None
    assert await payment_status(client, acme) == "not_applicable"
    assert fake_stripe.requests == []
    account = await client.get("/api/v1/billing/payment", headers=acme.admin.headers)
    assert account.json()["mode"] == "invoice_only"
    assert account.json()["customer_id"] is None
    payload = fake_stripe.event("invoice.paid", {"id": "in_1", "object": "invoice"})
    answer = await deliver(client, payload)
    assert answer.status_code == 404
    assert answer.json()["error"] == "NotFound"
    assert "APIARY_BILLING__STRIPE__WEBHOOK_SECRET" in answer.json()["detail"]
    async with runtime.session_factory() as session:
        lines = await session.scalar(select(func.count()).select_from(InvoiceLine))
    assert lines == 2  # the fee and the overage, as before payments existed
