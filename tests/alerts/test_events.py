"""Each alert kind from where it happens: e-mail to a real SMTP server when a budget
threshold is crossed, an entitlement refusal, an invoice issued by closing a month, a
provider's breaker opening (the platform's channels), and the payments code's hook."""

from __future__ import annotations

import asyncio
import uuid
from email.message import Message

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy import select

from apiary.alerts.models import Alert
from apiary.alerts.service import alert_service, payment_failed
from apiary.db import session_scope
from apiary.gateway.config import PriceConfig
from apiary.runtime import Runtime
from tests.alerts.conftest import Mailbox, Receiver, add_channel, alert_settings, verify_signature
from tests.billing.helpers import at, created_on
from tests.factories import make_super_admin, make_tenant
from tests.fakes import Fail
from tests.gateway.conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.both_databases

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello budget"}]


def body_of(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


async def test_a_budget_threshold_reaches_a_person_by_email(
    make_gateway: GatewayFactory, smtp_server: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp_server
    gateway: Gateway = await make_gateway(
        # Ten cents a token: a call costs about fifty cents.
        prices={"lab/mystery-7b": PriceConfig(input=100_000, output=100_000)},
        settings_update={
            "alerts": alert_settings(
                smtp_host="127.0.0.1",
                smtp_port=port,
                smtp_starttls=False,
                smtp_from="Apiary <alerts@apiary.test>",
            )
        },
    )
    admin = gateway.tenant.admin
    async with gateway.http() as http:
        await add_channel(
            http, admin, kind="email", target="Ops@Acme.example", events=["budget.threshold"]
        )
        limits = await http.patch(
            "/api/v1/limits", headers=admin.headers, json={"monthly_budget_usd": 10}
        )
    assert limits.status_code == 200, limits.text
    client = gateway.client()
    spent = 0.0
    while spent < 5.0:
        await client.chat.completions.create(model="lab/mystery-7b", messages=HELLO, max_tokens=8)
        spent = sum(entry.cost_usd or 0 for entry in await gateway.ledger())
    ((envelope, message),) = await mailbox.wait_for(1)
    assert envelope.rcpt_tos == ["ops@acme.example"]
    assert message["To"] == "ops@acme.example"
    assert message["From"] == "Apiary <alerts@apiary.test>"
    assert message["Subject"] == f"[Apiary] {gateway.tenant.name}: 50% of the monthly budget used"
    text = body_of(message)
    assert f"Tenant {gateway.tenant.name} has used 50% of its monthly budget" in text
    assert "of $10.00" in text
    await asyncio.sleep(0.3)
    assert len(mailbox.messages) == 1


async def test_an_entitlement_refusal_sends_one_alert(
    client: httpx.AsyncClient, runtime: Runtime, receiver: Receiver
) -> None:
    tenant = await make_tenant(runtime, client, "smallco", plan="free")  # 3 seats
    channel = await add_channel(
        client,
        tenant.admin,
        kind="webhook",
        target=receiver.url,
        events=["entitlement.limit_reached"],
    )
    statuses = []
    for n in range(4):
        response = await client.post(
            "/api/v1/members",
            headers=tenant.admin.headers,
            json={"email": f"person-{n}@smallco.example", "role": "viewer"},
        )
        statuses.append(response.status_code)
    assert statuses == [201, 201, 402, 402]
    (request,) = await receiver.wait_for(1)
    await runtime.alerts.emitter.join()
    await asyncio.sleep(0.5)
    assert len(receiver.requests) == 1
    event = request.event
    assert event["kind"] == "entitlement.limit_reached"
    assert event["tenant"]["name"] == "smallco"
    assert event["data"]["entitlement"] == "seats"
    assert event["data"]["plan"] == "Free"
    assert "the Free plan allows 3 members" in event["data"]["detail"]
    assert verify_signature(channel["secret"], request)


async def test_closing_a_month_tells_each_tenant_its_invoice_once(
    client: httpx.AsyncClient, runtime: Runtime, receiver: Receiver
) -> None:
    root = await make_super_admin(runtime, client)
    acme = await make_tenant(runtime, client, "acme", plan="team")
    await created_on(runtime, acme.id, at("2026-10-01T00:00:00"))
    channel = await add_channel(
        client, acme.admin, kind="webhook", target=receiver.url, events=["invoice.issued"]
    )
    for _ in range(2):  # closing again issues nothing new, and tells nothing new
        closed = await client.post(
            "/api/v1/admin/billing/close", headers=root.headers, json={"period": "2026-11"}
        )
        assert closed.status_code == 200, closed.text
    (request,) = await receiver.wait_for(1)
    await asyncio.sleep(0.5)
    assert len(receiver.requests) == 1
    event = request.event
    assert event["kind"] == "invoice.issued"
    assert event["tenant"]["name"] == "acme"
    invoices = await client.get("/api/v1/billing/invoices", headers=acme.admin.headers)
    (invoice,) = invoices.json()["items"]
    assert event["data"]["number"] == invoice["number"]
    assert event["data"]["invoice_id"] == invoice["id"]
    assert event["data"]["period"] == "2026-11"
    assert event["data"]["total"] == "49.00 USD"
    assert verify_signature(channel["secret"], request)


async def test_an_open_breaker_reaches_the_platforms_channels(
    make_gateway: GatewayFactory, receiver: Receiver, smtp_server: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp_server
    platform_secret = "whsec_platform-" + uuid.uuid4().hex
    gateway: Gateway = await make_gateway(
        provider_overrides={"oai": {"max_retries": 0}},
        settings_update={
            "alerts": alert_settings(
                platform_webhook_url=receiver.url,
                platform_webhook_secret=platform_secret,
                platform_emails=["oncall@apiary.test"],
                smtp_host="127.0.0.1",
                smtp_port=port,
                smtp_starttls=False,
            )
        },
    )
    gateway.upstream.set_default("openai", Fail(500))
    client = gateway.client()
    for _ in range(8):  # each call falls back to claude; oai's breaker opens at the fifth
        await client.chat.completions.create(model="default", messages=HELLO)
    (request,) = await receiver.wait_for(1)
    ((envelope, message),) = await mailbox.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(receiver.requests) == 1
    event = request.event
    assert event["kind"] == "provider.breaker_open"
    assert event["tenant"] is None
    assert event["data"] == {"provider": "oai", "consecutive_failures": 5, "cooldown_s": 30.0}
    assert verify_signature(platform_secret, request)
    assert envelope.rcpt_tos == ["oncall@apiary.test"]
    assert message["Subject"] == "[Apiary] provider oai: circuit breaker open"
    assert "opened after 5 failures in a row" in body_of(message)


async def test_a_failed_payment_is_told_once_per_payment(
    client: httpx.AsyncClient, runtime: Runtime, receiver: Receiver
) -> None:
    """The hook the payments integration calls, inside its own transaction."""
    acme = await make_tenant(runtime, client, "acme")
    await add_channel(client, acme.admin, kind="webhook", target=receiver.url)
    failure = payment_failed(
        uuid.UUID(acme.id),
        payment_id="pi_123",
        reason="card declined",
        amount="49.00 USD",
        invoice_number="INV-000001",
    )
    for _ in range(2):
        async with session_scope(runtime.session_factory) as session:
            await alert_service.notify(session, failure)
    (request,) = await receiver.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(receiver.requests) == 1
    assert request.event["kind"] == "payment.failed"
    assert request.event["data"]["reason"] == "card declined"
    async with runtime.session_factory() as session:
        kinds = (await session.scalars(select(Alert.kind))).all()
    assert kinds == ["payment.failed"]
