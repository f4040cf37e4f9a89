"""All SQL of alerts. A tenant's channels and delivery log go through its scope; the
dispatcher's queries span every tenant (it sends what is due, whoever owns it) and take
ids only."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.alerts.models import Alert, AlertChannel, AlertDelivery, AlertDeliveryAttempt
from apiary.authz.scope import TenantScope
from apiary.kit.repository import paginate
from apiary.kit.schemas import PageParams
from apiary.tenants.models import Tenant


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A claimed delivery with what sending it needs, read before any network call."""

    delivery: AlertDelivery
    alert: Alert
    channel: AlertChannel | None
    tenant_name: str | None


class AlertRepository:
    # A tenant's channels.
    async def channels(
        self, session: AsyncSession, scope: TenantScope, page: PageParams
    ) -> tuple[Sequence[AlertChannel], int]:
        return await paginate(
            session, scope.select(AlertChannel), page, AlertChannel.created_at, AlertChannel.id
        )

    async def channel(
        self, session: AsyncSession, scope: TenantScope, channel_id: uuid.UUID
    ) -> AlertChannel:
        return await scope.get(session, AlertChannel, channel_id)

    def add_channel(
        self, session: AsyncSession, scope: TenantScope, channel: AlertChannel
    ) -> AlertChannel:
        return scope.add(session, channel)

    async def receiving(
        self, session: AsyncSession, scope: TenantScope, kind: str
    ) -> list[AlertChannel]:
        """The tenant's enabled channels that receive `kind` (an empty list of events: all)."""
        rows = await session.scalars(
            scope.select(AlertChannel).where(AlertChannel.enabled.is_(True))
        )
        return [row for row in rows if not row.events or kind in row.events]

    async def tenant_name(self, session: AsyncSession, tenant_id: uuid.UUID) -> str | None:
        return await session.scalar(select(Tenant.name).where(Tenant.id == tenant_id))

    # Alerts.
    async def insert_alert(self, session: AsyncSession, values: dict[str, Any]) -> uuid.UUID | None:
        """Write the alert unless its dedupe key is taken; its id when this one won. On
        PostgreSQL a concurrent insert of the same key waits for the other's commit, then
        does nothing; SQLite writes one transaction at a time."""
        dialect = session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = (
            insert(Alert.__table__)  # type: ignore[arg-type]
            .values(values)
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(Alert.__table__.c.id)
        )
        return await session.scalar(statement)  # type: ignore[no-any-return]

    async def alert(self, session: AsyncSession, alert_id: uuid.UUID) -> Alert | None:
        return await session.get(Alert, alert_id)

    def add_delivery(self, session: AsyncSession, delivery: AlertDelivery) -> AlertDelivery:
        session.add(delivery)
        return delivery

    # A tenant's delivery log.
    async def deliveries(
        self,
        session: AsyncSession,
        scope: TenantScope,
        page: PageParams,
        *,
        status: str | None,
        kind: str | None,
    ) -> tuple[Sequence[tuple[AlertDelivery, Alert]], int]:
        statement = scope.select(AlertDelivery).join(Alert, Alert.id == AlertDelivery.alert_id)
        if status is not None:
            statement = statement.where(AlertDelivery.status == status)
        if kind is not None:
            statement = statement.where(Alert.kind == kind)
        total = await session.scalar(
            select(func.count()).select_from(statement.order_by(None).subquery())
        )
        rows = await session.execute(
            statement.add_columns(Alert)
            .order_by(AlertDelivery.created_at.desc(), AlertDelivery.id.desc())
            .limit(page.limit)
            .offset(page.offset)
        )
        return [(row[0], row[1]) for row in rows], int(total or 0)

    async def delivery(
        self, session: AsyncSession, scope: TenantScope, delivery_id: uuid.UUID
    ) -> tuple[AlertDelivery, Alert]:
        delivery = await scope.get(session, AlertDelivery, delivery_id)
        alert = await session.get(Alert, delivery.alert_id)
        assert alert is not None  # the foreign key cascades
        return delivery, alert

    async def attempts(
        self, session: AsyncSession, scope: TenantScope, delivery_id: uuid.UUID
    ) -> Sequence[AlertDeliveryAttempt]:
        rows = await session.scalars(
            scope.select(AlertDeliveryAttempt)
            .where(AlertDeliveryAttempt.delivery_id == delivery_id)
            .order_by(AlertDeliveryAttempt.number)
        )
        return rows.all()

    async def give_up_pending(
        self, session: AsyncSession, scope: TenantScope, channel_id: uuid.UUID, reason: str
    ) -> None:
        await session.execute(
            scope.update(AlertDelivery)
            .where(AlertDelivery.channel_id == channel_id, AlertDelivery.status == "pending")
            .values(status="failed", next_attempt_at=None, last_error=reason)
        )

    # The dispatcher's: every tenant's due deliveries, by id.
    def _sendable(self, *, email: bool, platform_webhooks: bool) -> list[Any]:
        """What this process can send: e-mail only with an SMTP server configured, the
        platform's webhooks only with their secret (another replica may have them)."""
        criteria: list[Any] = []
        if not email:
            criteria.append(AlertDelivery.channel_kind != "email")
        if not platform_webhooks:
            criteria.append(
                or_(AlertDelivery.channel_kind != "webhook", AlertDelivery.tenant_id.is_not(None))
            )
        return criteria

    async def claim_due(
        self,
        session: AsyncSession,
        *,
        now: datetime,
        until: datetime,
        limit: int,
        email: bool,
        platform_webhooks: bool,
    ) -> list[uuid.UUID]:
        """Claim up to `limit` due deliveries for this process until `until`: one UPDATE
        whose WHERE another process's claim falsifies, so each is sent by one process."""
        claimable = (
            AlertDelivery.status == "pending",
            AlertDelivery.next_attempt_at <= now,
            or_(AlertDelivery.claimed_until.is_(None), AlertDelivery.claimed_until < now),
            *self._sendable(email=email, platform_webhooks=platform_webhooks),
        )
        due = (
            select(AlertDelivery.id)
            .where(*claimable)
            .order_by(AlertDelivery.next_attempt_at)
            .limit(limit)
        )
        candidates = list((await session.scalars(due)).all())
        if not candidates:
            return []
        claimed = await session.scalars(
            update(AlertDelivery)
            .where(AlertDelivery.id.in_(candidates), *claimable)
            .values(claimed_until=until)
            .returning(AlertDelivery.id)
        )
        return list(claimed.all())

    async def next_due(
        self, session: AsyncSession, *, now: datetime, email: bool, platform_webhooks: bool
    ) -> datetime | None:
        return await session.scalar(
            select(func.min(AlertDelivery.next_attempt_at)).where(
                AlertDelivery.status == "pending",
                or_(AlertDelivery.claimed_until.is_(None), AlertDelivery.claimed_until < now),
                *self._sendable(email=email, platform_webhooks=platform_webhooks),
            )
        )

    async def outgoing(self, session: AsyncSession, delivery_id: uuid.UUID) -> Outgoing | None:
        delivery = await session.get(AlertDelivery, delivery_id)
        if delivery is None:
            return None
        alert = await session.get(Alert, delivery.alert_id)
        if alert is None:
            return None
        channel = (
            await session.get(AlertChannel, delivery.channel_id)
            if delivery.channel_id is not None
            else None
        )
        name = (
            await self.tenant_name(session, alert.tenant_id)
            if alert.tenant_id is not None
            else None
        )
        return Outgoing(delivery, alert, channel, name)

    async def record_attempt(
        self,
        session: AsyncSession,
        delivery_id: uuid.UUID,
        *,
        attempt: dict[str, Any],
        outcome: dict[str, Any],
    ) -> bool:
        """The attempt's row and the delivery's new state, if the delivery is still there."""
        updated = await session.execute(
            update(AlertDelivery).where(AlertDelivery.id == delivery_id).values(**outcome)
        )
        if not updated.rowcount:  # type: ignore[attr-defined]
            return False
        session.add(AlertDeliveryAttempt(delivery_id=delivery_id, **attempt))
        return True


alert_repository = AlertRepository()
