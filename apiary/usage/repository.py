"""All SQL over the ledger for the usage API; every query starts from the tenant scope.

Totals are summed by the database, never by loading rows. A UTC day is computed portably:
SQLite keeps timestamps as UTC text, so `date()` of it is the UTC date; PostgreSQL keeps
`timestamptz`, which is converted to UTC explicitly before the cast so the session's time
zone never moves a call to another day.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Date, Select, and_, case, cast, func, literal_column, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from apiary.authz.scope import TenantScope
from apiary.kit.repository import paginate
from apiary.kit.schemas import PageParams
from apiary.usage.models import LedgerEntry
from apiary.usage.schemas import UsageDimension


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    # cached_tokens clamped per call to [0, prompt_tokens], as catalog.cost_usd prices them.
    billable_cached_tokens: int = 0
    cost_usd: float = 0.0  # over priced calls only
    unpriced_calls: int = 0
    cache_hits: int = 0
    saved_usd: float = 0.0

    def __add__(self, other: LedgerTotals) -> LedgerTotals:
        return LedgerTotals(
            calls=self.calls + other.calls,
            errors=self.errors + other.errors,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            billable_cached_tokens=self.billable_cached_tokens + other.billable_cached_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            unpriced_calls=self.unpriced_calls + other.unpriced_calls,
            cache_hits=self.cache_hits + other.cache_hits,
            saved_usd=self.saved_usd + other.saved_usd,
        )


@dataclass(frozen=True, slots=True)
class TotalsByKind:
    """Totals of the calls sharing one kind, priced flag and cache-hit flag."""

    kind: str
    priced: bool
    cache_hit: bool
    totals: LedgerTotals


@dataclass(frozen=True, slots=True)
class SeriesTotals:
    day: dt.date | None
    key: str | None
    totals: LedgerTotals


_GROUP_COLUMNS: dict[UsageDimension, Any] = {
    UsageDimension.MODEL: LedgerEntry.model,
    UsageDimension.PROVIDER: LedgerEntry.provider,
    UsageDimension.ROUTE: LedgerEntry.route,
    UsageDimension.API_KEY: LedgerEntry.api_key_id,
    UsageDimension.AGENT: LedgerEntry.agent_id,
}


def _count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _measures() -> list[ColumnElement[Any]]:
    e = LedgerEntry
    billable_cached = case(
        (e.cached_tokens < 0, 0),
        (e.cached_tokens > e.prompt_tokens, e.prompt_tokens),
        else_=e.cached_tokens,
    )
    return [
        func.count().label("calls"),
        _count_where(e.status != "ok").label("errors"),
        func.coalesce(func.sum(e.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(e.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(e.cached_tokens), 0).label("cached_tokens"),
        func.coalesce(func.sum(billable_cached), 0).label("billable_cached_tokens"),
        func.coalesce(func.sum(case((e.priced, e.cost_usd), else_=0.0)), 0.0).label("cost_usd"),
        _count_where(e.priced.is_(False)).label("unpriced_calls"),
        _count_where(e.cache_hit.is_(True)).label("cache_hits"),
        func.coalesce(func.sum(e.saved_usd), 0.0).label("saved_usd"),
    ]


def _totals(row: Any) -> LedgerTotals:
    return LedgerTotals(
        calls=int(row.calls),
        errors=int(row.errors),
        prompt_tokens=int(row.prompt_tokens),
        completion_tokens=int(row.completion_tokens),
        cached_tokens=int(row.cached_tokens),
        billable_cached_tokens=int(row.billable_cached_tokens),
        cost_usd=float(row.cost_usd),
        unpriced_calls=int(row.unpriced_calls),
        cache_hits=int(row.cache_hits),
        saved_usd=float(row.saved_usd),
    )


def _utc_day(session: AsyncSession) -> ColumnElement[dt.date]:
    if session.get_bind().dialect.name == "postgresql":
        # A literal, not a bound parameter: PostgreSQL must see the GROUP BY expression and
        # the selected one as identical, and two parameters ($1, $2) are not.
        return cast(func.timezone(literal_column("'UTC'"), LedgerEntry.created_at), Date)
    return func.date(LedgerEntry.created_at, type_=Date)


def _key(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)  # a UUID, or a name


class UsageRepository:
    def _in_window(
        self, scope: TenantScope, *, start: dt.datetime, end: dt.datetime
    ) -> Select[LedgerEntry]:
        return scope.select(LedgerEntry).where(
            LedgerEntry.created_at >= start, LedgerEntry.created_at < end
        )

    async def totals_by_kind(
        self, session: AsyncSession, scope: TenantScope, *, start: dt.datetime, end: dt.datetime
    ) -> list[TotalsByKind]:
        e = LedgerEntry
        statement = (
            self._in_window(scope, start=start, end=end)
            .with_only_columns(e.kind, e.priced, e.cache_hit, *_measures())
            .group_by(e.kind, e.priced, e.cache_hit)
        )
        rows = await session.execute(statement)
        return [
            TotalsByKind(
                kind=row.kind,
                priced=bool(row.priced),
                cache_hit=bool(row.cache_hit),
                totals=_totals(row),
            )
            for row in rows
        ]

    async def series(
        self,
        session: AsyncSession,
        scope: TenantScope,
        *,
        start: dt.datetime,
        end: dt.datetime,
        group_by: UsageDimension,
        by_day: bool,
    ) -> list[SeriesTotals]:
        groups: dict[str, ColumnElement[Any]] = {}
        if by_day or group_by is UsageDimension.DAY:
            groups["day"] = _utc_day(session)
        column = _GROUP_COLUMNS.get(group_by)
        if column is not None:
            groups["key"] = column
        statement = (
            self._in_window(scope, start=start, end=end)
            .with_only_columns(*(expr.label(name) for name, expr in groups.items()), *_measures())
            .group_by(*groups.values())
        )
        found: list[SeriesTotals] = []
        for row in await session.execute(statement):
            mapping = row._mapping
            row_day: dt.date | None = mapping.get("day")
            key = _key(row_day) if column is None else _key(mapping["key"])
            found.append(SeriesTotals(day=row_day, key=key, totals=_totals(row)))
        # Sorted here, not in SQL: SQLite and PostgreSQL order nulls and UUIDs differently.
        found.sort(key=lambda s: (s.day or dt.date.min, s.key is None, s.key or ""))
        return found

    async def entries_after(
        self,
        session: AsyncSession,
        scope: TenantScope,
        *,
        start: dt.datetime,
        end: dt.datetime,
        after: tuple[dt.datetime, uuid.UUID] | None,
        limit: int,
    ) -> Sequence[LedgerEntry]:
        """The next `limit` entries in (created_at, id) order after `after`: keyset paging,
        so each chunk of an export costs the same however far in it is."""
        e = LedgerEntry
        statement = self._in_window(scope, start=start, end=end)
        if after is not None:
            at, row_id = after
            statement = statement.where(
                or_(e.created_at > at, and_(e.created_at == at, e.id > row_id))
            )
        statement = statement.order_by(e.created_at, e.id).limit(limit)
        return (await session.scalars(statement)).all()

    async def execution_entries(
        self,
        session: AsyncSession,
        scope: TenantScope,
        execution_id: uuid.UUID,
        page: PageParams,
    ) -> tuple[Sequence[LedgerEntry], int]:
        """One execution's model calls, oldest first."""
        statement = scope.select(LedgerEntry).where(LedgerEntry.execution_id == execution_id)
        return await paginate(session, statement, page, LedgerEntry.created_at, LedgerEntry.id)


usage_repository = UsageRepository()
