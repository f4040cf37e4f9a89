"""What an alert says: the webhook's JSON body and the e-mail a person reads."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson

from apiary.alerts.events import AlertKind
from apiary.alerts.models import Alert


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str


def webhook_body(alert: Alert, tenant_name: str | None) -> bytes:
    """The JSON every webhook receives: the event's id (the same on every retry and replay,
    so a receiver can drop duplicates), kind, creation time, tenant and data."""
    tenant = (
        {"id": str(alert.tenant_id), "name": tenant_name} if alert.tenant_id is not None else None
    )
    created = alert.created_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return orjson.dumps(
        {
            "id": str(alert.id),
            "kind": alert.kind,
            "created": created,
            "tenant": tenant,
            "data": alert.data,
        }
    )


def _usd(value: Any) -> str:
    return f"${float(value):,.2f}"


def render(alert: Alert, tenant_name: str | None) -> Rendered:
    """The e-mail's subject and plain-text body."""
    data = alert.data
    who = f"Tenant {tenant_name}" if tenant_name else "The platform"
    prefix = f"[Apiary] {tenant_name}: " if tenant_name else "[Apiary] "
    kind = alert.kind
    if kind == AlertKind.BUDGET_THRESHOLD:
        threshold = data.get("threshold")
        subject = f"{prefix}{threshold}% of the monthly budget used"
        text = (
            f"{who} has used {threshold}% of its monthly budget for {data.get('period')}: "
            f"{_usd(data.get('spent_usd', 0))} of {_usd(data.get('budget_usd', 0))}."
        )
        if data.get("refused"):
            text += " Gateway calls that would spend more are now refused (402)."
        text += " Raise the budget in the tenant's limits (PATCH /api/v1/limits) if needed."
    elif kind == AlertKind.ENTITLEMENT_LIMIT_REACHED:
        subject = f"{prefix}plan limit reached: {data.get('entitlement')}"
        text = (
            f"{who} reached a limit of its {data.get('plan')} plan and a request was refused: "
            f"{data.get('detail')}"
        )
    elif kind == AlertKind.INVOICE_ISSUED:
        subject = f"{prefix}invoice {data.get('number')} for {data.get('period')}"
        text = (
            f"{who} has a new invoice, {data.get('number')}, for {data.get('period')}: "
            f"{data.get('total')}. It is at GET /api/v1/billing/invoices/{data.get('invoice_id')}"
            " (PDF and CSV beside it)."
        )
    elif kind == AlertKind.PAYMENT_FAILED:
        subject = f"{prefix}payment failed"
        amount, number = data.get("amount"), data.get("invoice_number")
        text = (
            f"{who}: a payment{f' of {amount}' if amount else ''} failed"
            f"{f' for invoice {number}' if number else ''}: "
            f"{data.get('reason') or 'no reason given'}."
        )
    elif kind == AlertKind.PROVIDER_BREAKER_OPEN:
        subject = f"{prefix}provider {data.get('provider')}: circuit breaker open"
        text = (
            f"The circuit breaker of provider {data.get('provider')} opened after "
            f"{data.get('consecutive_failures')} failures in a row; calls go to the fallback "
            f"models for {data.get('cooldown_s')} s, then one trial call is let through. "
            "GET /api/v1/providers/health shows each provider's state."
        )
    else:
        subject = f"{prefix}test alert"
        text = f"{who}: this is a test alert, sent on request. {data.get('message', '')}".strip()
    footer = f"\n\nEvent {alert.id} ({alert.kind}), {alert.created_at:%Y-%m-%d %H:%M} UTC.\n"
    return Rendered(subject=subject, text=text + footer)
