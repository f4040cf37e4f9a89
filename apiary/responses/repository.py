"""All SQL over stored responses; every tenant's read and write goes through its scope."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.authz.scope import TenantScope
from apiary.db import Write
from apiary.responses.models import StoredResponse


class ResponseRepository:
    def insert(self, scope: TenantScope, **values: Any) -> Write:
        """A new row for the group commit (one executemany with its neighbours)."""
        return scope.insert_row(StoredResponse, **values)

    async def get(
        self, session: AsyncSession, scope: TenantScope, row_id: uuid.UUID, *, now: datetime
    ) -> StoredResponse | None:
        """The tenant's response, unless it has expired (the sweep may not have run yet)."""
        return await session.scalar(
            scope.select(StoredResponse).where(
                StoredResponse.id == row_id, StoredResponse.expires_at > now
            )
        )

    async def delete(self, session: AsyncSession, row: StoredResponse) -> None:
        await session.delete(row)  # found through the scope by `get`

    async def delete_expired(self, session: AsyncSession, *, now: datetime, batch: int) -> int:
        """Delete up to `batch` expired rows of any tenant (the retention sweep is the
        platform's, not a tenant's: it acts for no caller); returns how many went."""
        expired = select(StoredResponse.id).where(StoredResponse.expires_at <= now).limit(batch)
        ids = list(await session.scalars(expired))
        if not ids:
            return 0
        await session.execute(delete(StoredResponse).where(StoredResponse.id.in_(ids)))
        return len(ids)


response_repository = ResponseRepository()
