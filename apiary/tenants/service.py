"""Tenant lifecycle for super admins: create (with a first admin), rename, re-plan, suspend."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from apiary.audit.service import audit_service
from apiary.auth.context import AuthContext
from apiary.auth.key_cache import keys_changed
from apiary.auth.repository import auth_repository
from apiary.authz.permissions import Role
from apiary.authz.scope import TenantScope
from apiary.billing.entitlements import Feature, has_feature
from apiary.billing.errors import FeatureNotInPlan
from apiary.billing.service import plan_service
from apiary.db import utcnow
from apiary.errors import Conflict, NotFound
from apiary.kit.schemas import PageParams
from apiary.tenants.models import Tenant, TenantStatus
from apiary.tenants.repository import tenant_repository
from apiary.tenants.schemas import Tenant as TenantView
from apiary.tenants.schemas import TenantCreate, TenantCreated, TenantUpdate
from apiary.users.schemas import MemberCreate
from apiary.users.service import member_service


class TenantService:
    async def create(
        self, session: AsyncSession, auth: AuthContext, body: TenantCreate
    ) -> TenantCreated:
        await self._name_free(session, body.name)
        if body.oidc_tenant_id:
            await self._oidc_id_free(session, body.oidc_tenant_id)
        plan = await plan_service.offered(session, body.plan)
        if body.oidc_tenant_id and not has_feature(plan, Feature.OIDC):
            raise _no_oidc(plan.name)
        tenant = Tenant(
            name=body.name, plan=plan.key, currency="USD", oidc_tenant_id=body.oidc_tenant_id
        )
        session.add(tenant)
        await session.flush()
        await audit_service.record(
            session,
            action="tenant.created",
            actor=auth.actor,
            tenant_id=tenant.id,
            target_type="tenant",
            target_id=tenant.id,
            details={"name": tenant.name, "plan": tenant.plan},
        )
        admin_id: uuid.UUID | None = None
        temporary: str | None = None
        if body.admin_email:
            created = await member_service.add_to(
                session,
                TenantScope(tenant.id),
                MemberCreate(
                    email=body.admin_email, role=Role.TENANT_ADMIN, password=body.admin_password
                ),
                auth=auth,
            )
            admin_id, temporary = created.user_id, created.temporary_password
        return TenantCreated(
            tenant=TenantView.model_validate(tenant),
            admin_user_id=admin_id,
            admin_temporary_password=temporary,
        )

    async def list(self, session: AsyncSession, page: PageParams) -> tuple[Sequence[Tenant], int]:
        return await tenant_repository.page(session, page)

    async def get(self, session: AsyncSession, tenant_id: uuid.UUID) -> Tenant:
        tenant = await tenant_repository.get(session, tenant_id)
        if tenant is None:
            raise NotFound(f"tenant {tenant_id} not found")
        return tenant

    async def update(
        self, session: AsyncSession, auth: AuthContext, tenant_id: uuid.UUID, body: TenantUpdate
    ) -> Tenant:
        tenant = await self.get(session, tenant_id)
        changes: dict[str, Any] = {}
        if body.name is not None and body.name != tenant.name:
            await self._name_free(session, body.name)
            changes["name"] = [tenant.name, body.name]
            tenant.name = body.name
        if body.plan is not None and body.plan != tenant.plan:
            await plan_service.change_tenant_plan(session, tenant, body.plan, force=body.force)
            changes["plan"] = [tenant.plan, body.plan]
            tenant.plan = body.plan
        if body.oidc_tenant_id is not None and body.oidc_tenant_id != tenant.oidc_tenant_id:
            await self._oidc_id_free(session, body.oidc_tenant_id)
            plan = await plan_service.get(session, tenant.plan)
            if not has_feature(plan, Feature.OIDC):
                raise _no_oidc(plan.name)
            changes["oidc_tenant_id"] = [tenant.oidc_tenant_id, body.oidc_tenant_id]
            tenant.oidc_tenant_id = body.oidc_tenant_id
        if body.status is not None and body.status != tenant.status:
            changes["status"] = [tenant.status, body.status.value]
            tenant.status = body.status
            keys_changed(session)  # a suspended tenant's keys stop now, not in seconds
            if body.status is TenantStatus.SUSPENDED:
                await auth_repository.revoke_sessions(
                    session, reason="tenant_suspended", now=utcnow(), tenant_id=tenant.id
                )
        if changes:
            await session.flush()
            await audit_service.record(
                session,
                action="tenant.updated",
                actor=auth.actor,
                tenant_id=tenant.id,
                target_type="tenant",
                target_id=tenant.id,
                details=changes,
            )
        return tenant

    async def _name_free(self, session: AsyncSession, name: str) -> None:
        if await tenant_repository.by_name(session, name) is not None:
            raise Conflict(f"a tenant named {name!r} already exists")

    async def _oidc_id_free(self, session: AsyncSession, oidc_tenant_id: str) -> None:
        if await tenant_repository.by_oidc_id(session, oidc_tenant_id) is not None:
            raise Conflict(f"OIDC tenant id {oidc_tenant_id!r} is linked to another tenant")


def _no_oidc(plan: str) -> FeatureNotInPlan:
    return FeatureNotInPlan(
        f"oidc: OIDC single sign-on is not in the {plan} plan; put the tenant on a plan "
        "that includes it to link an identity provider"
    )


tenant_service = TenantService()
