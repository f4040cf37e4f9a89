"""Routes under /api/v1/tenants: super admins manage the platform's tenants."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, status

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.authz.permissions import Permission
from apiary.errors import documented
from apiary.kit.schemas import Page, Paging, page_of
from apiary.runtime import RuntimeDep
from apiary.tenants.schemas import Tenant, TenantCreate, TenantCreated, TenantUpdate
from apiary.tenants.service import tenant_service

router = APIRouter(prefix="/tenants", tags=["tenants"])

SuperAdmin = Annotated[AuthContext, authorize(Permission.TENANTS_MANAGE)]


@router.get("", summary="List tenants")
async def list_tenants(auth: SuperAdmin, session: DbSession, page: Paging) -> Page[Tenant]:
    rows, total = await tenant_service.list(session, page)
    return page_of(Tenant, rows, total, page)


@router.post(
    "", status_code=status.HTTP_201_CREATED, summary="Create a tenant", responses=documented(409)
)
async def create_tenant(auth: SuperAdmin, session: DbSession, body: TenantCreate) -> TenantCreated:
    return await tenant_service.create(session, auth, body)


@router.get("/{tenant_id}", summary="Get a tenant")
async def get_tenant(auth: SuperAdmin, session: DbSession, tenant_id: uuid.UUID) -> Tenant:
    return Tenant.model_validate(await tenant_service.get(session, tenant_id))


@router.patch(
    "/{tenant_id}",
    summary="Rename, change plan, link OIDC, suspend or resume",
    responses=documented(409, 422),
)
async def update_tenant(
    auth: SuperAdmin,
    session: DbSession,
    runtime: RuntimeDep,
    tenant_id: uuid.UUID,
    body: TenantUpdate,
) -> Tenant:
    tenant = await tenant_service.update(session, auth, tenant_id, body)
    runtime.limits.forget(tenant_id)  # a new plan's rates, on this replica at once
    return Tenant.model_validate(tenant)
