"""Reading and changing a tenant's limits (budget admins and tenant admins)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from apiary.audit.service import audit_service
from apiary.auth.context import AuthContext
from apiary.limits.models import TenantLimits
from apiary.limits.repository import limits_repository
from apiary.limits.schemas import Limits, LimitsUpdate

NO_LIMITS = Limits(
    monthly_budget_usd=None,
    soft_limit_ratio=0.8,
    tenant_rpm=None,
    tenant_tpm=None,
    key_rpm=None,
    key_tpm=None,
)


class LimitsService:
    async def get(self, session: AsyncSession, auth: AuthContext) -> Limits:
        row = await limits_repository.get(session, auth.scope)
        return Limits.model_validate(row) if row else NO_LIMITS

    async def update(self, session: AsyncSession, auth: AuthContext, body: LimitsUpdate) -> Limits:
        row = await limits_repository.get(session, auth.scope)
        if row is None:
            row = TenantLimits(soft_limit_ratio=0.8)
            limits_repository.add(session, auth.scope, row)
        changes = body.model_dump(exclude_unset=True)
        for field, value in changes.items():
            if field == "soft_limit_ratio" and value is None:
                value = 0.8
            setattr(row, field, value)
        await session.flush()
        await audit_service.record(
            session,
            action="limits.updated",
            actor=auth.actor,
            tenant_id=auth.tenant_id,
            target_type="tenant",
            target_id=auth.tenant_id,
            details=changes,
        )
        return Limits.model_validate(row)


limits_service = LimitsService()
