"""The tenant-scoping choke point: every tenant-owned read and write goes through `TenantScope`.

Repositories never filter by tenant themselves; they ask the scope for a statement that is
already filtered, and hand new rows to it to be stamped. A row of another tenant is simply
not found, so the API answers 404, never 403, and never confirms that it exists.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import ColumnElement, ForeignKey, Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from apiary.db import Base
from apiary.errors import NotFound


class TenantOwned:
    """Mixin for every table whose rows belong to one tenant."""

    @declared_attr
    def tenant_id(cls) -> Mapped[uuid.UUID]:
        return mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)


# Any mapped class with a `tenant_id` column: TenantOwned tables, and the audit log, whose
# rows keep their tenant id without a foreign key.
OwnedT = TypeVar("OwnedT", bound=Base)


def _tenant_column(model: type[Base]) -> ColumnElement[uuid.UUID]:
    column = getattr(model, "tenant_id", None)
    if column is None:
        raise TypeError(f"{model.__name__} has no tenant_id: it is not tenant-owned")
    return column  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class TenantScope:
    tenant_id: uuid.UUID

    def select(self, model: type[OwnedT]) -> Select[OwnedT]:
        return select(model).where(_tenant_column(model) == self.tenant_id)

    async def get(self, session: AsyncSession, model: type[OwnedT], row_id: uuid.UUID) -> OwnedT:
        row = await session.scalar(self.select(model).where(model.__table__.c.id == row_id))
        if row is None:
            raise NotFound(f"{_label(model)} {row_id} not found")
        return row

    def add(self, session: AsyncSession, row: OwnedT) -> OwnedT:
        row.tenant_id = self.tenant_id  # type: ignore[attr-defined]
        session.add(row)
        return row


def _label(model: type[object]) -> str:
    return "".join(f" {c.lower()}" if c.isupper() else c for c in model.__name__).strip()
