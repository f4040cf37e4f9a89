"""Query helpers shared by repositories: counting and paging a select."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.kit.schemas import PageParams

RowT = TypeVar("RowT")


async def paginate(
    session: AsyncSession, statement: Select[RowT], page: PageParams, *order_by: Any
) -> tuple[Sequence[RowT], int]:
    total = await session.scalar(
        select(func.count()).select_from(statement.order_by(None).subquery())
    )
    rows = await session.scalars(
        statement.order_by(*order_by).limit(page.limit).offset(page.offset)
    )
    return rows.all(), int(total or 0)
