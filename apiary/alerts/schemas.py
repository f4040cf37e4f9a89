from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from apiary.kit.schemas import PlainLine, Schema, UpdateSchema

ChannelKind = Literal["webhook", "email"]
TenantAlertKind = Literal[
    "budget.threshold", "entitlement.limit_reached", "invoice.issued", "payment.failed"
]
DeliveryStatus = Literal["pending", "delivered", "failed"]


class AlertChannel(Schema):
    id: uuid.UUID
    kind: ChannelKind
    target: str = Field(description="The webhook's URL, or the e-mail address")
    description: str
    events: list[TenantAlertKind] = Field(description="The alert kinds it receives; empty: all")
    enabled: bool
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation, until when the previous secret still signs (a second "
        "v1= signature)"
    )
    created_at: datetime
    updated_at: datetime


class AlertChannelCreate(Schema):
    kind: ChannelKind
    target: PlainLine = Field(
        min_length=1,
        max_length=2048,
        description="webhook: an http(s) URL on a public address; email: an address",
    )
    description: PlainLine = Field(default="", max_length=200)
    events: list[TenantAlertKind] = Field(
        default_factory=list, max_length=10, description="Alert kinds to receive; empty: all"
    )
    enabled: bool = True


class AlertChannelCreated(AlertChannel):
    secret: str | None = Field(
        description="A webhook's signing secret: shown this once (and after each rotation), "
        "never again; null for e-mail"
    )


class AlertChannelUpdate(UpdateSchema):
    target: PlainLine | None = Field(default=None, min_length=1, max_length=2048)
    description: PlainLine | None = Field(default=None, max_length=200)
    events: list[TenantAlertKind] | None = Field(default=None, max_length=10)
    enabled: bool | None = None


class DeliveryAttempt(Schema):
    number: int
    created_at: datetime
    status_code: int | None = Field(description="The HTTP status, or the SMTP reply code")
    error: str | None
    duration_ms: float


class AlertDelivery(Schema):
    id: uuid.UUID
    alert_id: uuid.UUID = Field(description="The event's id, sent as the body's `id`")
    kind: str = Field(description="The alert's kind, e.g. budget.threshold")
    subject: str = Field(description="What it is about: a threshold, an entitlement, …")
    period: str
    channel_id: uuid.UUID | None = Field(description="Null once the channel is deleted")
    channel_kind: ChannelKind
    target: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    replay_of: uuid.UUID | None


class AlertDeliveryDetail(AlertDelivery):
    data: dict[str, Any] = Field(description="The alert's data, as the webhook body carries it")
    attempt_log: list[DeliveryAttempt]
