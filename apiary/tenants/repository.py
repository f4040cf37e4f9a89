"""Queries for tenants. Tenants are the scope itself, so only super admins reach these."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.kit.repository import paginate
from apiary.kit.schemas import PageParams
from apiary.tenants.models import Tenant


class TenantRepository:
    async def get(self, session: AsyncSession, tenant_id: uuid.UUID) -> Tenant | None:
        return await session.get(Tenant, tenant_id)

    async def by_name(self, session: AsyncSession, name: str) -> Tenant | None:
        return await session.scalar(select(Tenant).where(Tenant.name == name))

    async def by_ref(self, session: AsyncSession, ref: str) -> Tenant | None:
        """A tenant by id or by exact name, as a person names it at sign-in or in the CLI."""
        try:
            return await self.get(session, uuid.UUID(ref))
        except ValueError:
            return await self.by_name(session, ref)

    async def by_oidc_id(self, session: AsyncSession, oidc_tenant_id: str) -> Tenant | None:
        return await session.scalar(select(Tenant).where(Tenant.oidc_tenant_id == oidc_tenant_id))

    async def page(self, session: AsyncSession, page: PageParams) -> tuple[Sequence[Tenant], int]:
        return await paginate(session, select(Tenant), page, Tenant.created_at, Tenant.id)


tenant_repository = TenantRepository()
