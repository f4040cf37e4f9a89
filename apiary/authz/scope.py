"""The tenant-scoping choke point: every tenant-owned read and write goes through `TenantScope`.

Repositories never filter by tenant themselves; they ask the scope for a statement that is
already filtered, and hand new rows to it to be stamped. A row of another tenant is simply
not found, so the API answers 404, never 403, and never confirms that it exists.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Delete,
    ForeignKey,
    Insert,
    Select,
    Table,
    Update,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from apiary.db import Base, Write
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

    def update(self, model: type[OwnedT]) -> Update:
        return update(model).where(_tenant_column(model) == self.tenant_id)

    def delete(self, model: type[OwnedT]) -> Delete:
        return delete(model).where(_tenant_column(model) == self.tenant_id)

    def insert_row(self, model: type[OwnedT], /, **values: Any) -> Write:
        """One new row, stamped with this tenant, for a group commit."""
        return Write(_insert(model), {**values, "tenant_id": self.tenant_id})

    def update_row(self, model: type[OwnedT], key: dict[str, Any], /, **values: Any) -> Write:
        """`values` into this tenant's row(s) matching `key` (column: value), for a group
        commit. The statement is built once per shape, so repeating it is cheap."""
        statement = _update(model, tuple(key), tuple(values))
        params = {f"key_{name}": value for name, value in key.items()}
        params.update({f"set_{name}": value for name, value in values.items()})
        params["scope_tenant_id"] = self.tenant_id
        return Write(statement, params)

    def add(self, session: AsyncSession, row: OwnedT) -> OwnedT:
        row.tenant_id = self.tenant_id  # type: ignore[attr-defined]
        session.add(row)
        return row


@functools.cache
def _insert(model: type[Base]) -> Insert:
    _tenant_column(model)
    table: Table = model.__table__  # type: ignore[assignment]
    return insert(table)


@functools.cache
def _update(model: type[Base], keys: tuple[str, ...], columns: tuple[str, ...]) -> Update:
    # On the Table, not the mapped class: with a list of parameters the ORM would turn an
    # UPDATE of the class into its "bulk update by primary key", ignoring the WHERE.
    table: Table = model.__table__  # type: ignore[assignment]
    criteria = [table.c[name] == bindparam(f"key_{name}") for name in keys]
    return (
        update(table)
        .where(table.c.tenant_id == bindparam("scope_tenant_id"), *criteria)
        .values({name: bindparam(f"set_{name}") for name in columns})
    )


def _label(model: type[object]) -> str:
    return "".join(f" {c.lower()}" if c.isupper() else c for c in model.__name__).strip()
