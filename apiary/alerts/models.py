"""Alert channels (a tenant's webhook URLs and e-mail recipients), alerts, and the delivery
log: one delivery per alert and channel, one attempt row per try."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from apiary.authz.scope import TenantOwned
from apiary.db import Base, IdMixin, utcnow


class AlertChannel(IdMixin, TenantOwned, Base):
    __tablename__ = "alert_channels"

    kind: Mapped[str] = mapped_column(String(10))  # webhook | email
    target: Mapped[str] = mapped_column(String(2048))  # the URL, or the e-mail address
    description: Mapped[str] = mapped_column(String(200), default="")
    events: Mapped[list[str]] = mapped_column(JSON)  # alert kinds it receives; empty: all
    enabled: Mapped[bool] = mapped_column(default=True)
    # The webhook's signing secret. Kept readable (each delivery is signed with it), never
    # shown after it is made; the previous one still signs for a day after a rotation.
    secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Alert(IdMixin, Base):
    """One alert, written once: `dedupe_key` is unique, so two replicas (or two workers)
    raising the same threshold at the same moment write one row, and the loser sends
    nothing."""

    __tablename__ = "alerts"

    # Null for the platform's alerts (a provider's breaker), which no tenant owns.
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(200))
    period: Mapped[str] = mapped_column(String(40))
    dedupe_key: Mapped[str] = mapped_column(String(400), unique=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class AlertDelivery(IdMixin, Base):
    """An alert on its way to one channel: pending until delivered or given up."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (Index("ix_alert_deliveries_due", "status", "next_attempt_at"),)

    alert_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("alerts.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    # Null for the platform's channels (configured, not stored), and once a tenant's
    # channel is deleted: its log stays, its pending deliveries are given up.
    channel_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("alert_channels.id", ondelete="SET NULL"), index=True
    )
    channel_kind: Mapped[str] = mapped_column(String(10))  # webhook | email
    target: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(10), default="pending")  # delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    # A process sending it holds it until then; one that died lets it go again.
    claimed_until: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None]
    replay_of: Mapped[uuid.UUID | None]


class AlertDeliveryAttempt(IdMixin, Base):
    """One try of a delivery: what the receiver answered and how long it took."""

    __tablename__ = "alert_delivery_attempts"

    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("alert_deliveries.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)  # HTTP, or the SMTP reply code
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[float]
