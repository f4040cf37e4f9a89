"""Alert rules: a tenant's channels, raising an alert (once per tenant, kind, subject and
period), its deliveries, replays and test sends.

`notify` is how any domain raises an alert inside its own transaction: the alert and its
deliveries commit with the work that caused them (an invoice and its `invoice.issued`), or
not at all, and the dispatcher sends them after the commit. Where there is no transaction
to join (a gateway call refused, a breaker opening) `apiary.alerts.emitter.emit_soon`
queues the event and a background task calls `notify`. The Stripe integration reports a
failed payment with `notify(session, payment_failed(...))`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from apiary.alerts import schemas
from apiary.alerts.emitter import wake_dispatchers
from apiary.alerts.events import AlertEvent, AlertKind
from apiary.alerts.models import Alert, AlertChannel, AlertDelivery
from apiary.alerts.repository import alert_repository
from apiary.alerts.signing import new_secret
from apiary.alerts.urls import UnsafeUrl, check_url
from apiary.audit.service import audit_service
from apiary.auth.context import AuthContext
from apiary.authz.scope import TenantScope
from apiary.config import AlertSettings
from apiary.db import new_id, utcnow
from apiary.errors import Conflict, Unprocessable
from apiary.kit.schemas import Email, PageParams

ROTATION_GRACE = dt.timedelta(days=1)  # the previous secret still signs this long
_EMAIL: TypeAdapter[str] = TypeAdapter(Email)


@dataclass(frozen=True, slots=True)
class PlatformChannels:
    """Where the platform's alerts go: the super admin's configured webhook and addresses."""

    webhook_url: str | None
    emails: tuple[str, ...]

    @classmethod
    def of(cls, settings: AlertSettings) -> PlatformChannels:
        return cls(settings.platform_webhook_url, tuple(settings.platform_emails))


def payment_failed(
    tenant_id: uuid.UUID,
    *,
    payment_id: str,
    reason: str,
    amount: str | None = None,
    invoice_number: str | None = None,
    period: str | None = None,
) -> AlertEvent:
    """The event of a failed payment (told once per payment id), for the payments code."""
    return AlertEvent(
        AlertKind.PAYMENT_FAILED,
        tenant_id,
        subject=payment_id[:200],
        period=period or f"{utcnow():%Y-%m}",
        data={
            "payment_id": payment_id,
            "reason": reason,
            "amount": amount,
            "invoice_number": invoice_number,
        },
    )


def _wake_after_commit(session: AsyncSession) -> None:
    """Wake this process's dispatcher when the transaction that wrote deliveries commits."""
    sync = session.sync_session
    if sync.info.get("alerts_wake"):
        return
    sync.info["alerts_wake"] = True

    def committed(_: Session) -> None:
        sync.info.pop("alerts_wake", None)
        wake_dispatchers()

    def rolled_back(_: Session) -> None:
        sync.info.pop("alerts_wake", None)

    event.listen(sync, "after_commit", committed, once=True)
    event.listen(sync, "after_soft_rollback", rolled_back, once=True)


def delivery_view(delivery: AlertDelivery, alert: Alert) -> schemas.AlertDelivery:
    return schemas.AlertDelivery(
        id=delivery.id,
        alert_id=alert.id,
        kind=alert.kind,
        subject=alert.subject,
        period=alert.period,
        channel_id=delivery.channel_id,
        channel_kind=delivery.channel_kind,  # type: ignore[arg-type]
        target=delivery.target,
        status=delivery.status,  # type: ignore[arg-type]
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        delivered_at=delivery.delivered_at,
        replay_of=delivery.replay_of,
    )


class AlertService:
    # Raising alerts.
    async def notify(
        self,
        session: AsyncSession,
        alert: AlertEvent,
        *,
        platform: PlatformChannels | None = None,
    ) -> uuid.UUID | None:
        """Write the alert and one pending delivery per channel that receives it, in the
        caller's transaction; None when the same alert was raised before (by anyone)."""
        now = utcnow()
        alert_id = await alert_repository.insert_alert(
            session,
            {
                "id": new_id(),
                "created_at": now,
                "tenant_id": alert.tenant_id,
                "kind": alert.kind.value,
                "subject": alert.subject[:200],
                "period": alert.period[:40],
                "dedupe_key": alert.dedupe_key,
                "data": alert.data,
            },
        )
        if alert_id is None:
            return None
        targets: list[tuple[uuid.UUID | None, str, str]] = []
        if alert.tenant_id is not None:
            channels = await alert_repository.receiving(
                session, TenantScope(alert.tenant_id), alert.kind.value
            )
            targets = [(channel.id, channel.kind, channel.target) for channel in channels]
        elif platform is not None:
            if platform.webhook_url:
                targets.append((None, "webhook", platform.webhook_url))
            targets += [(None, "email", address) for address in platform.emails]
        for channel_id, kind, target in targets:
            self._deliver(session, alert_id, alert.tenant_id, channel_id, kind, target, now)
        if targets:
            await session.flush()
            _wake_after_commit(session)
        return alert_id

    def _deliver(
        self,
        session: AsyncSession,
        alert_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        channel_id: uuid.UUID | None,
        kind: str,
        target: str,
        now: dt.datetime,
        *,
        replay_of: uuid.UUID | None = None,
    ) -> AlertDelivery:
        return alert_repository.add_delivery(
            session,
            AlertDelivery(
                alert_id=alert_id,
                tenant_id=tenant_id,
                channel_id=channel_id,
                channel_kind=kind,
                target=target,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                replay_of=replay_of,
            ),
        )

    # A tenant's channels.
    async def channels(
        self, session: AsyncSession, auth: AuthContext, page: PageParams
    ) -> tuple[Sequence[AlertChannel], int]:
        return await alert_repository.channels(session, auth.scope, page)

    async def channel(
        self, session: AsyncSession, auth: AuthContext, channel_id: uuid.UUID
    ) -> AlertChannel:
        return await alert_repository.channel(session, auth.scope, channel_id)

    async def _target(self, kind: str, target: str, settings: AlertSettings) -> str:
        if kind == "email":
            try:
                return _EMAIL.validate_python(target)
            except ValidationError:
                raise Unprocessable(f"target: {target!r} is not a valid e-mail address") from None
        try:
            await check_url(target, allow_private=settings.allow_private_urls)
        except UnsafeUrl as error:
            raise Unprocessable(f"target: {error}") from None
        return target

    async def create_channel(
        self,
        session: AsyncSession,
        auth: AuthContext,
        body: schemas.AlertChannelCreate,
        settings: AlertSettings,
    ) -> schemas.AlertChannelCreated:
        target = await self._target(body.kind, body.target, settings)
        secret = new_secret() if body.kind == "webhook" else None
        channel = alert_repository.add_channel(
            session,
            auth.scope,
            AlertChannel(
                kind=body.kind,
                target=target,
                description=body.description,
                events=sorted(set(body.events)),
                enabled=body.enabled,
                secret=secret,
            ),
        )
        await session.flush()
        await self._audit(session, auth, "alert_channel.created", channel, {"kind": body.kind})
        return schemas.AlertChannelCreated(
            **schemas.AlertChannel.model_validate(channel).model_dump(), secret=secret
        )

    async def update_channel(
        self,
        session: AsyncSession,
        auth: AuthContext,
        channel_id: uuid.UUID,
        body: schemas.AlertChannelUpdate,
        settings: AlertSettings,
    ) -> AlertChannel:
        channel = await alert_repository.channel(session, auth.scope, channel_id)
        changes = body.model_dump(exclude_unset=True)
        if "target" in changes:
            changes["target"] = await self._target(channel.kind, changes["target"], settings)
        if "events" in changes:
            changes["events"] = sorted(set(changes["events"]))
        for name, value in changes.items():
            setattr(channel, name, value)
        channel.updated_at = utcnow()
        await session.flush()
        await self._audit(
            session, auth, "alert_channel.updated", channel, {"changed": sorted(changes)}
        )
        return channel

    async def delete_channel(
        self, session: AsyncSession, auth: AuthContext, channel_id: uuid.UUID
    ) -> None:
        channel = await alert_repository.channel(session, auth.scope, channel_id)
        await alert_repository.give_up_pending(
            session, auth.scope, channel.id, "the channel was deleted"
        )
        await self._audit(session, auth, "alert_channel.deleted", channel, {})
        await session.delete(channel)
        await session.flush()

    async def rotate_secret(
        self, session: AsyncSession, auth: AuthContext, channel_id: uuid.UUID
    ) -> schemas.AlertChannelCreated:
        channel = await alert_repository.channel(session, auth.scope, channel_id)
        if channel.kind != "webhook":
            raise Conflict("only a webhook channel has a signing secret")
        secret = new_secret()
        channel.previous_secret = channel.secret
        channel.previous_secret_expires_at = utcnow() + ROTATION_GRACE
        channel.secret = secret
        channel.updated_at = utcnow()
        await session.flush()
        await self._audit(session, auth, "alert_channel.secret_rotated", channel, {})
        return schemas.AlertChannelCreated(
            **schemas.AlertChannel.model_validate(channel).model_dump(), secret=secret
        )

    async def send_test(
        self, session: AsyncSession, auth: AuthContext, channel_id: uuid.UUID
    ) -> schemas.AlertDelivery:
        """A test alert to one channel, now (even a disabled one: it was asked for)."""
        channel = await alert_repository.channel(session, auth.scope, channel_id)
        tenant_id = auth.scope.tenant_id
        test = AlertEvent(
            AlertKind.TEST,
            tenant_id,
            subject=str(uuid.uuid4()),  # never deduplicated
            period=f"{utcnow():%Y-%m}",
            data={"message": "Sent from Apiary to check this channel receives alerts."},
        )
        alert_id = await alert_repository.insert_alert(
            session,
            {
                "id": new_id(),
                "created_at": utcnow(),
                "tenant_id": tenant_id,
                "kind": test.kind.value,
                "subject": test.subject,
                "period": test.period,
                "dedupe_key": test.dedupe_key,
                "data": test.data,
            },
        )
        assert alert_id is not None
        delivery = self._deliver(
            session, alert_id, tenant_id, channel.id, channel.kind, channel.target, utcnow()
        )
        await session.flush()
        _wake_after_commit(session)
        _, alert = await alert_repository.delivery(session, auth.scope, delivery.id)
        return delivery_view(delivery, alert)

    # The delivery log.
    async def deliveries(
        self,
        session: AsyncSession,
        auth: AuthContext,
        page: PageParams,
        *,
        status: str | None,
        kind: str | None,
    ) -> tuple[list[schemas.AlertDelivery], int]:
        rows, total = await alert_repository.deliveries(
            session, auth.scope, page, status=status, kind=kind
        )
        return [delivery_view(delivery, alert) for delivery, alert in rows], total

    async def delivery(
        self, session: AsyncSession, auth: AuthContext, delivery_id: uuid.UUID
    ) -> schemas.AlertDeliveryDetail:
        delivery, alert = await alert_repository.delivery(session, auth.scope, delivery_id)
        attempts = await alert_repository.attempts(session, auth.scope, delivery.id)
        return schemas.AlertDeliveryDetail(
            **delivery_view(delivery, alert).model_dump(),
            data=alert.data,
            attempt_log=[schemas.DeliveryAttempt.model_validate(a) for a in attempts],
        )

    async def replay(
        self, session: AsyncSession, auth: AuthContext, delivery_id: uuid.UUID
    ) -> schemas.AlertDelivery:
        """Send the delivery's alert again to its channel (as the channel is now): a new
        delivery with the same event id, so a receiver that has it can tell."""
        original, alert = await alert_repository.delivery(session, auth.scope, delivery_id)
        if original.channel_id is None:
            raise Conflict("the channel of this delivery was deleted; nothing to replay it to")
        channel = await alert_repository.channel(session, auth.scope, original.channel_id)
        delivery = self._deliver(
            session,
            alert.id,
            alert.tenant_id,
            channel.id,
            channel.kind,
            channel.target,
            utcnow(),
            replay_of=original.id,
        )
        await session.flush()
        _wake_after_commit(session)
        await audit_service.record(
            session,
            action="alert_delivery.replayed",
            actor=auth.actor,
            tenant_id=auth.scope.tenant_id,
            target_type="alert_delivery",
            target_id=original.id,
            details={"replay": str(delivery.id), "kind": alert.kind},
        )
        return delivery_view(delivery, alert)

    async def _audit(
        self,
        session: AsyncSession,
        auth: AuthContext,
        action: str,
        channel: AlertChannel,
        details: dict[str, object],
    ) -> None:
        # Never the secret; the target is the tenant's own (and shown to its admins).
        await audit_service.record_by(
            session,
            auth,
            action,
            target_type="alert_channel",
            target_id=channel.id,
            details=details,
        )


alert_service = AlertService()
