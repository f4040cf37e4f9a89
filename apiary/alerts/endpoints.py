"""Routes under /api/v1/alerts: a tenant's channels (webhooks, e-mail), test sends, and the
delivery log with replays. Tenant admins and billing admins."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from apiary.alerts.schemas import (
    AlertChannel,
    AlertChannelCreate,
    AlertChannelCreated,
    AlertChannelUpdate,
    AlertDelivery,
    AlertDeliveryDetail,
    DeliveryStatus,
)
from apiary.alerts.service import alert_service
from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.authz.permissions import Permission
from apiary.errors import documented
from apiary.kit.schemas import Page, Paging, page_of
from apiary.runtime import RuntimeDep

router = APIRouter(prefix="/alerts", tags=["alerts"])

Manager = Annotated[AuthContext, authorize(Permission.ALERTS_MANAGE)]


@router.get("/channels", summary="The tenant's alert channels (never their secrets)")
async def list_channels(auth: Manager, session: DbSession, page: Paging) -> Page[AlertChannel]:
    rows, total = await alert_service.channels(session, auth, page)
    return page_of(AlertChannel, rows, total, page)


@router.post(
    "/channels",
    status_code=status.HTTP_201_CREATED,
    summary="Add a webhook (its signing secret is shown once) or an e-mail recipient",
)
async def create_channel(
    auth: Manager, session: DbSession, runtime: RuntimeDep, body: AlertChannelCreate
) -> AlertChannelCreated:
    return await alert_service.create_channel(session, auth, body, runtime.settings.alerts)


@router.get("/channels/{channel_id}", summary="One alert channel")
async def get_channel(auth: Manager, session: DbSession, channel_id: uuid.UUID) -> AlertChannel:
    return AlertChannel.model_validate(await alert_service.channel(session, auth, channel_id))


@router.patch("/channels/{channel_id}", summary="Change a channel's target, events or state")
async def update_channel(
    auth: Manager,
    session: DbSession,
    runtime: RuntimeDep,
    channel_id: uuid.UUID,
    body: AlertChannelUpdate,
) -> AlertChannel:
    channel = await alert_service.update_channel(
        session, auth, channel_id, body, runtime.settings.alerts
    )
    return AlertChannel.model_validate(channel)


@router.delete(
    "/channels/{channel_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a channel (its pending deliveries are given up; the log stays)",
)
async def delete_channel(auth: Manager, session: DbSession, channel_id: uuid.UUID) -> Response:
    await alert_service.delete_channel(session, auth, channel_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/channels/{channel_id}/rotate-secret",
    summary="A new signing secret, shown once; the old one also signs for a day",
    responses=documented(409),
)
async def rotate_secret(
    auth: Manager, session: DbSession, channel_id: uuid.UUID
) -> AlertChannelCreated:
    return await alert_service.rotate_secret(session, auth, channel_id)


@router.post(
    "/channels/{channel_id}/test",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a test alert to this channel now",
)
async def send_test(auth: Manager, session: DbSession, channel_id: uuid.UUID) -> AlertDelivery:
    return await alert_service.send_test(session, auth, channel_id)


@router.get("/deliveries", summary="The delivery log, newest first")
async def list_deliveries(
    auth: Manager,
    session: DbSession,
    page: Paging,
    delivery_status: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    kind: Annotated[str | None, Query(max_length=40, description="e.g. budget.threshold")] = None,
) -> Page[AlertDelivery]:
    items, total = await alert_service.deliveries(
        session, auth, page, status=delivery_status, kind=kind
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/deliveries/{delivery_id}", summary="One delivery, its alert and every attempt")
async def get_delivery(
    auth: Manager, session: DbSession, delivery_id: uuid.UUID
) -> AlertDeliveryDetail:
    return await alert_service.delivery(session, auth, delivery_id)


@router.post(
    "/deliveries/{delivery_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a delivery's alert again to its channel (same event id)",
    responses=documented(409),
)
async def replay_delivery(
    auth: Manager, session: DbSession, delivery_id: uuid.UUID
) -> AlertDelivery:
    return await alert_service.replay(session, auth, delivery_id)
