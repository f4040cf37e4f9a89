"""What an alert is about, before it is written: the kinds, and one raised event.

Kept free of database and HTTP imports: the gateway's limits and breakers import it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class AlertKind(StrEnum):
    BUDGET_THRESHOLD = "budget.threshold"
    ENTITLEMENT_LIMIT_REACHED = "entitlement.limit_reached"
    INVOICE_ISSUED = "invoice.issued"
    PAYMENT_FAILED = "payment.failed"
    PROVIDER_BREAKER_OPEN = "provider.breaker_open"  # platform-wide: the super admin's
    TEST = "alert.test"  # sent on request to one channel, never deduplicated


# What a tenant's channel may subscribe to (the platform's kinds go to the platform's).
TENANT_KINDS = (
    AlertKind.BUDGET_THRESHOLD,
    AlertKind.ENTITLEMENT_LIMIT_REACHED,
    AlertKind.INVOICE_ISSUED,
    AlertKind.PAYMENT_FAILED,
)
BUDGET_THRESHOLDS = (50, 80, 100)  # percent of the monthly budget


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One alert raised. `subject` and `period` make it unique with the tenant and kind:
    the same (tenant, kind, subject, period) is told once, whoever raises it how often."""

    kind: AlertKind
    tenant_id: uuid.UUID | None  # None: the platform's (the super admin's channels)
    subject: str  # what it is about: a threshold, an entitlement, an invoice, a provider
    period: str  # when: a month (2026-12), an invoice's period, an hour
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def dedupe_key(self) -> str:
        owner = str(self.tenant_id) if self.tenant_id is not None else "platform"
        return f"{owner}|{self.kind.value}|{self.subject}|{self.period}"[:400]
