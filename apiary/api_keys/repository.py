"""Queries for API keys, all through the tenant scope."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from apiary.api_keys.models import ApiKey
from apiary.authz.scope import TenantScope
from apiary.kit.repository import paginate
from apiary.kit.schemas import PageParams


class ApiKeyRepository:
    async def page(
        self, session: AsyncSession, scope: TenantScope, page: PageParams
    ) -> tuple[Sequence[ApiKey], int]:
        return await paginate(
            session, scope.select(ApiKey), page, ApiKey.created_at.desc(), ApiKey.id
        )

    async def get(self, session: AsyncSession, scope: TenantScope, key_id: uuid.UUID) -> ApiKey:
        return await scope.get(session, ApiKey, key_id)

    async def active_created_by(
        self, session: AsyncSession, scope: TenantScope, user_id: uuid.UUID
    ) -> Sequence[ApiKey]:
        statement = scope.select(ApiKey).where(
            ApiKey.created_by == user_id, ApiKey.revoked_at.is_(None)
        )
        return (await session.scalars(statement)).all()

    def add(self, session: AsyncSession, scope: TenantScope, api_key: ApiKey) -> ApiKey:
        return scope.add(session, api_key)


api_key_repository = ApiKeyRepository()
