"""Alerts told by signed webhooks to a real HTTP receiver: budget thresholds crossed by real
/v1 calls, retries, the delivery log, replays, refused URLs, and one alert per threshold
however many replicas raise it."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy import func, select

from apiary.alerts.events import AlertEvent, AlertKind
from apiary.alerts.models import Alert, AlertDelivery
from apiary.alerts.service import alert_service
from apiary.authz.permissions import Role
from apiary.config import AlertSettings
from apiary.db import session_scope
from apiary.gateway.config import PriceConfig
from apiary.runtime import Runtime
from tests.alerts.conftest import Receiver, add_channel, alert_settings, verify_signature
from tests.factories import Caller, make_member, make_tenant
from tests.gateway.conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.both_databases

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello budget"}]
# One dollar per token: each call costs a few dollars, its reservation about twenty.
DOLLAR_A_TOKEN = {"lab/mystery-7b": PriceConfig(input=1_000_000, output=1_000_000)}


async def set_budget(gateway: Gateway, caller: Caller, usd: float) -> None:
    async with gateway.http() as http:
        response = await http.patch(
            "/api/v1/limits", headers=caller.headers, json={"monthly_budget_usd": usd}
        )
    assert response.status_code == 200, response.text


async def deliveries(
    http: httpx.AsyncClient, caller: Caller, **params: Any
) -> list[dict[str, Any]]:
    response = await http.get("/api/v1/alerts/deliveries", headers=caller.headers, params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def settled(http: httpx.AsyncClient, caller: Caller, delivery_id: str) -> dict[str, Any]:
    """The delivery once it is no longer pending."""
    deadline = time.monotonic() + 20
    while True:
        response = await http.get(
            f"/api/v1/alerts/deliveries/{delivery_id}", headers=caller.headers
        )
        assert response.status_code == 200, response.text
        if response.json()["status"] != "pending":
            detail: dict[str, Any] = response.json()
            return detail
        assert time.monotonic() < deadline, response.json()
        await asyncio.sleep(0.05)


async def test_each_budget_threshold_reaches_the_webhook_once(
    make_gateway: GatewayFactory, receiver: Receiver
) -> None:
    gateway: Gateway = await make_gateway(
        prices=DOLLAR_A_TOKEN, settings_update={"alerts": alert_settings()}
    )
    admin = gateway.tenant.admin
    async with gateway.http() as http:
        channel = await add_channel(http, admin, kind="webhook", target=receiver.url)
    secret = channel["secret"]
    assert secret.startswith("whsec_")
    await set_budget(gateway, admin, 100)
    client = gateway.client()
    refusals: list[int] = []
    for _ in range(60):
        try:
            await client.chat.completions.create(
                model="lab/mystery-7b", messages=HELLO, max_tokens=8
            )
        except openai.APIStatusError as error:
            refusals.append(error.status_code)
            if len(refusals) == 3:  # refused again and again: still one alert at 100 %
                break
    assert refusals == [402, 402, 402]
    spent = sum(entry.cost_usd or 0 for entry in await gateway.ledger())

    received = await receiver.wait_for(3)
    await asyncio.sleep(0.5)  # room for a duplicate to arrive, if one were sent
    assert len(receiver.requests) == 3
    events = sorted((r.event for r in received), key=lambda e: e["data"]["threshold"])
    assert [e["data"]["threshold"] for e in events] == [50, 80, 100]
    assert {e["kind"] for e in events} == {"budget.threshold"}
    assert all(
        e["tenant"] == {"id": gateway.tenant.id, "name": gateway.tenant.name} for e in events
    )
    assert events[0]["data"]["budget_usd"] == 100
    assert 50 <= events[0]["data"]["spent_usd"] < 80
    assert 80 <= events[1]["data"]["spent_usd"] <= 100
    assert events[2]["data"]["refused"] is True
    assert events[2]["data"]["spent_usd"] == pytest.approx(spent, abs=0.01)
    month = time.strftime("%Y-%m", time.gmtime())
    assert {e["data"]["period"] for e in events} == {month}
    for request in received:
        assert verify_signature(secret, request), request.headers
        assert request.headers["Apiary-Webhook-Id"] == request.event["id"]
        assert not verify_signature("whsec_someone-else", request)
    # The log shows the three, delivered at the first attempt (each recorded once its
    # answer is back, just after the receiver has it).
    deadline = time.monotonic() + 20
    async with gateway.http() as http:
        while True:
            log = await deliveries(http, admin, kind="budget.threshold")
            if all(d["status"] != "pending" for d in log) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    assert [d["status"] for d in log] == ["delivered"] * 3
    assert {d["subject"] for d in log} == {"50", "80", "100"}


async def test_a_failing_receiver_gets_it_on_the_third_attempt_and_each_is_logged(
    client: httpx.AsyncClient, runtime: Runtime, receiver: Receiver
) -> None:
    admin = (await make_tenant(runtime, client, "acme")).admin
    receiver.script = [(500, {}), (500, {})]
    channel = await add_channel(client, admin, kind="webhook", target=receiver.url)
    sent = await client.post(f"/api/v1/alerts/channels/{channel['id']}/test", headers=admin.headers)
    assert sent.status_code == 202, sent.text
    detail = await settled(client, admin, sent.json()["id"])
    assert detail["status"] == "delivered"
    assert detail["attempts"] == 3
    assert [a["status_code"] for a in detail["attempt_log"]] == [500, 500, 200]
    assert detail["attempt_log"][0]["error"] == "HTTP 500: no"
    assert all(a["duration_ms"] > 0 for a in detail["attempt_log"])
    assert channel["secret"] not in str(detail)
    requests = await receiver.wait_for(3)
    assert len({r.headers["Apiary-Webhook-Id"] for r in requests}) == 1  # one event, retried
    assert [r.headers["Apiary-Delivery-Attempt"] for r in requests] == ["1", "2", "3"]
    assert requests[0].event["kind"] == "alert.test"
    assert requests[0].event["tenant"]["name"] == "acme"
    assert all(verify_signature(channel["secret"], r) for r in requests)


async def test_retry_after_is_honoured_and_delivery_gives_up_after_max_attempts(
    client: httpx.AsyncClient, runtime: Runtime, receiver: Receiver
) -> None:
    assert runtime.settings.alerts.max_attempts == 3
    admin = (await make_tenant(runtime, client, "acme")).admin
    receiver.script = [(429, {"Retry-After": "1"}), (503, {}), (503, {}), (200, {})]
    channel = await add_channel(client, admin, kind="webhook", target=receiver.url)
    sent = await client.post(f"/api/v1/alerts/channels/{channel['id']}/test", headers=admin.headers)
    detail = await settled(client, admin, sent.json()["id"])
    assert detail["status"] == "failed"
    assert [a["status_code"] for a in detail["attempt_log"]] == [429, 503, 503]
    requests = receiver.requests
    assert len(requests) == 3
    assert requests[1].at - requests[0].at >= 0.95  # waited for Retry-After: 1
    failed = await deliveries(client, admin, status="failed")
    assert [d["id"] for d in failed] == [detail["id"]]


async def test_replay_sends_the_same_event_again(
    client: httpx.AsyncClient, runtime: Runtime, receiver: Receiver
) -> None:
    admin = (await make_tenant(runtime, client, "acme")).admin
    channel = await add_channel(client, admin, kind="webhook", target=receiver.url)
    sent = await client.post(f"/api/v1/alerts/channels/{channel['id']}/test", headers=admin.headers)
    first = await settled(client, admin, sent.json()["id"])
    replay = await client.post(
        f"/api/v1/alerts/deliveries/{first['id']}/replay", headers=admin.headers
    )
    assert replay.status_code == 202, replay.text
    assert replay.json()["replay_of"] == first["id"]
    again = await settled(client, admin, replay.json()["id"])
    assert again["status"] == "delivered"
    original, replayed = await receiver.wait_for(2)
    assert replayed.event == original.event  # the same event id, kind, data
    assert replayed.headers["Apiary-Delivery-Id"] != original.headers["Apiary-Delivery-Id"]
    assert verify_signature(channel["secret"], replayed)
    assert len(await deliveries(client, admin)) == 2


async def test_a_rotated_secret_signs_and_the_old_one_still_does_for_a_day(
    client: httpx.AsyncClient, runtime: Runtime, receiver: Receiver
) -> None:
    admin = (await make_tenant(runtime, client, "acme")).admin
    channel = await add_channel(client, admin, kind="webhook", target=receiver.url)
    rotated = await client.post(
        f"/api/v1/alerts/channels/{channel['id']}/rotate-secret", headers=admin.headers
    )
    assert rotated.status_code == 200, rotated.text
    listed = await client.get("/api/v1/alerts/channels", headers=admin.headers)
    await client.post(f"/api/v1/alerts/channels/{channel['id']}/test", headers=admin.headers)
    new_secret = rotated.json()["secret"]
    assert new_secret != channel["secret"]
    assert "secret" not in listed.json()["items"][0]
    (request,) = await receiver.wait_for(1)
    assert verify_signature(new_secret, request)
    assert verify_signature(channel["secret"], request)


async def test_two_replicas_raising_the_same_threshold_send_one_alert(
    make_gateway: GatewayFactory, runtime: Runtime, receiver: Receiver
) -> None:
    """Two API processes (two runtimes, each with its own connection pool) raise the same
    threshold at the same moment, several times each: one alert, one webhook."""
    gateway: Gateway = await make_gateway(settings_update={"alerts": alert_settings()})
    async with gateway.http() as http:
        await add_channel(http, gateway.tenant.admin, kind="webhook", target=receiver.url)
    tenant_id = uuid.UUID(gateway.tenant.id)
    threshold = AlertEvent(
        AlertKind.BUDGET_THRESHOLD,
        tenant_id,
        subject="80",
        period="2026-12",
        data={"threshold": 80, "period": "2026-12", "spent_usd": 81.0, "budget_usd": 100},
    )
    started = asyncio.Barrier(8)

    async def raise_it(replica: Runtime) -> uuid.UUID | None:
        async with session_scope(replica.session_factory) as session:
            await started.wait()
            written = await alert_service.notify(session, threshold)
            await asyncio.sleep(0.2)  # the transactions overlap: both inserts are in flight
            return written

    replicas = [runtime, gateway.runtime] * 4
    results = await asyncio.gather(*(raise_it(replica) for replica in replicas))
    assert len([r for r in results if r is not None]) == 1
    # ... and through the emitters of both, as the gateway's settle would.
    for replica in (runtime, gateway.runtime):
        replica.alerts.emit(threshold)
    await asyncio.gather(runtime.alerts.emitter.join(), gateway.runtime.alerts.emitter.join())
    await receiver.wait_for(1)
    await asyncio.sleep(1.0)
    assert len(receiver.requests) == 1
    async with runtime.session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Alert)) == 1
        assert await session.scalar(select(func.count()).select_from(AlertDelivery)) == 1


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("http://127.0.0.1:9/hook", "private, loopback or link-local"),
        ("http://localhost/hook", "private, loopback or link-local"),
        ("http://10.1.2.3/hook", "private, loopback or link-local"),
        ("http://169.254.169.254/latest/meta-data/", "private, loopback or link-local"),
        ("http://[::1]/hook", "private, loopback or link-local"),
        ("http://[::ffff:192.168.0.1]/hook", "private, loopback or link-local"),
        ("ftp://example.com/hook", "must start with http:// or https://"),
        ("hooks.example.com/path", "must start with http:// or https://"),
        ("https://user:pw@example.com/hook", "user name or password"),
    ],
)
async def test_a_webhook_into_a_private_network_is_refused(
    make_gateway: GatewayFactory, target: str, why: str
) -> None:
    gateway: Gateway = await make_gateway(settings_update={"alerts": AlertSettings()})
    async with gateway.http() as http:
        response = await http.post(
            "/api/v1/alerts/channels",
            headers=gateway.tenant.admin.headers,
            json={"kind": "webhook", "target": target},
        )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "Unprocessable"
    assert response.json()["detail"].startswith("target: ")
    assert why in response.json()["detail"]


async def test_bad_channels_are_refused_naming_the_field(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = (await make_tenant(runtime, client, "acme")).admin.headers
    email = await client.post(
        "/api/v1/alerts/channels",
        headers=headers,
        json={"kind": "email", "target": "not an address"},
    )
    kind = await client.post(
        "/api/v1/alerts/channels",
        headers=headers,
        json={"kind": "email", "target": "ops@acme.example", "events": ["nope"]},
    )
    pigeon = await client.post(
        "/api/v1/alerts/channels", headers=headers, json={"kind": "pigeon", "target": "x"}
    )
    assert email.status_code == 422
    assert "not a valid e-mail address" in email.json()["detail"]
    assert kind.status_code == 422
    assert "events" in kind.json()["detail"]
    assert pigeon.status_code == 422
    assert "kind" in pigeon.json()["detail"]


async def test_only_admins_manage_alerts(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    developer = await make_member(client, tenant, Role.DEVELOPER)
    billing = await make_member(client, tenant, Role.BILLING_ADMIN)
    refused = await client.get("/api/v1/alerts/channels", headers=developer.headers)
    allowed = await client.post(
        "/api/v1/alerts/channels",
        headers=billing.headers,
        json={"kind": "email", "target": "finance@acme.example"},
    )
    assert refused.status_code == 403
    assert allowed.status_code == 201, allowed.text
    assert allowed.json()["secret"] is None


async def test_a_deleted_channel_keeps_its_log_and_cannot_be_replayed_to(
    client: httpx.AsyncClient, runtime: Runtime, receiver: Receiver
) -> None:
    admin = (await make_tenant(runtime, client, "acme")).admin
    channel = await add_channel(client, admin, kind="webhook", target=receiver.url)
    sent = await client.post(f"/api/v1/alerts/channels/{channel['id']}/test", headers=admin.headers)
    delivered = await settled(client, admin, sent.json()["id"])
    deleted = await client.delete(f"/api/v1/alerts/channels/{channel['id']}", headers=admin.headers)
    assert deleted.status_code == 204
    (kept,) = await deliveries(client, admin)
    assert kept["id"] == delivered["id"]
    assert kept["channel_id"] is None
    assert kept["status"] == "delivered"
    replay = await client.post(
        f"/api/v1/alerts/deliveries/{kept['id']}/replay", headers=admin.headers
    )
    assert replay.status_code == 409
    assert "deleted" in replay.json()["detail"]
    gone = await client.get(f"/api/v1/alerts/channels/{channel['id']}", headers=admin.headers)
    assert gone.status_code == 404
