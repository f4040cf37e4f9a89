"""Queries for tenants' data keys.

A process-wide keyring reads any tenant's keys: it is handed a tenant id by code that
already works inside that tenant's scope, and a data key is useless without the data."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.crypto.models import TenantDataKey


class DataKeyRepository:
    async def newest(self, session: AsyncSession, tenant_id: uuid.UUID) -> TenantDataKey | None:
        return await session.scalar(
            select(TenantDataKey)
            .where(TenantDataKey.tenant_id == tenant_id)
            .order_by(TenantDataKey.version.desc())
            .limit(1)
        )

    async def version(
        self, session: AsyncSession, tenant_id: uuid.UUID, version: int
    ) -> TenantDataKey | None:
        return await session.scalar(
            select(TenantDataKey).where(
                TenantDataKey.tenant_id == tenant_id, TenantDataKey.version == version
            )
        )

    def add(self, session: AsyncSession, row: TenantDataKey) -> TenantDataKey:
        session.add(row)
        return row

    async def page(
        self, session: AsyncSession, *, after: uuid.UUID | None, limit: int
    ) -> Sequence[TenantDataKey]:
        """Every tenant's keys in id order, `limit` at a time, for a rotation to walk."""
        statement = select(TenantDataKey).order_by(TenantDataKey.id).limit(limit)
        if after is not None:
            statement = statement.where(TenantDataKey.id > after)
        return (await session.scalars(statement.with_for_update())).all()

    async def kek_counts(self, session: AsyncSession) -> dict[str, int]:
        rows = await session.execute(
            select(TenantDataKey.kek_id, func.count()).group_by(TenantDataKey.kek_id)
        )
        return dict(rows.all())

    async def tenants_with_keys(self, session: AsyncSession) -> dict[uuid.UUID, int]:
        """Each tenant with a data key, and its newest version."""
        rows = await session.execute(
            select(TenantDataKey.tenant_id, func.max(TenantDataKey.version)).group_by(
                TenantDataKey.tenant_id
            )
        )
        return dict(rows.all())


data_key_repository = DataKeyRepository()
