"""Routes under /api/v1/limits: the tenant's budget and rate limits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.authz.permissions import Permission
from apiary.limits.schemas import Limits, LimitsUpdate
from apiary.limits.service import limits_service
from apiary.runtime import RuntimeDep

router = APIRouter(prefix="/limits", tags=["limits"])


@router.get("", summary="The tenant's monthly budget and rate limits")
async def get_limits(
    auth: Annotated[AuthContext, authorize(Permission.USAGE_READ)], session: DbSession
) -> Limits:
    return await limits_service.get(session, auth)


@router.patch("", summary="Change the budget or rate limits (null removes a limit)")
async def update_limits(
    auth: Annotated[AuthContext, authorize(Permission.BUDGETS_WRITE)],
    session: DbSession,
    runtime: RuntimeDep,
    body: LimitsUpdate,
) -> Limits:
    limits = await limits_service.update(session, auth, body)
    # Committed before the cache is dropped: a call reading the limits in between would
    # otherwise cache the old ones again for another few seconds.
    await session.commit()
    runtime.limits.forget(auth.scope.tenant_id)
    return limits
