"""All SQL over the ledger for the usage API; every query starts from the tenant scope.

Totals are summed by the database, never by loading rows. A UTC day is computed portably:
SQLite keeps timestamps as UTC text, so `date()` of it is the UTC date; PostgreSQL keeps
`timestamptz`, which is converted to UTC explicitly before the cast so the session's time
zone never moves a call to another day.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Date, Select, and_, case, cast, func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from apiary.authz.scope import TenantScope
from apiary.kit.repository import paginate
from apiary.kit.schemas import PageParams
from apiary.usage.models import LedgerEntry, LedgerRollup
from apiary.usage.rollups import DAY, HOUR, MEASURES, MONTH
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


# The column each dimension groups by, in the ledger and in its rollups alike.
_GROUP_COLUMNS: dict[UsageDimension, str] = {
    UsageDimension.MODEL: "model",
    UsageDimension.PROVIDER: "provider",
    UsageDimension.ROUTE: "route",
    UsageDimension.API_KEY: "api_key_id",
    UsageDimension.AGENT: "agent_id",
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


def _utc_day(session: AsyncSession, time: Any) -> ColumnElement[dt.date]:
    if session.get_bind().dialect.name == "postgresql":
        # A literal, not a bound parameter: PostgreSQL must see the GROUP BY expression and
        # the selected one as identical, and two parameters ($1, $2) are not.
        return cast(func.timezone(literal_column("'UTC'"), time), Date)
    return func.date(time, type_=Date)


def _as_date(value: object) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _key(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)  # a UUID, or a name


Range = tuple[dt.datetime, dt.datetime]
# Export filters: a ledger column (model, provider, route, api_key_id, agent_id, kind,
# status) and the value its rows must have.
ExportFilters = dict[str, object]


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """Where each part of a window [start, end) is read from: whole calendar months from
    the month rollups (unless the report groups by day), whole UTC days from the day
    rollups, whole hours around them from the hour rollups, and only the partial hours at
    the window's ends from the raw ledger. Rollups are written in the same transaction as
    the rows they sum, so the current hour is in them too, and the three parts never
    overlap: their sum is exactly a scan of the raw rows."""

    days: Range | None
    hours: tuple[Range, ...]
    raw: tuple[Range, ...]
    months: Range | None = None  # whole calendar months, when not grouped by day
    days_after: Range | None = None  # whole days after the last whole month


_HOUR, _DAY = dt.timedelta(hours=1), dt.timedelta(days=1)


def _floor(moment: dt.datetime, unit: dt.timedelta) -> dt.datetime:
    moment = moment.astimezone(dt.UTC)
    if unit == _DAY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def _ceil(moment: dt.datetime, unit: dt.timedelta) -> dt.datetime:
    floor = _floor(moment, unit)
    return floor if floor == moment else floor + unit


def _month_floor(moment: dt.datetime) -> dt.datetime:
    return moment.replace(day=1)  # of a UTC midnight


def _month_ceil(moment: dt.datetime) -> dt.datetime:
    floor = _month_floor(moment)
    if floor == moment:
        return floor
    return (floor + dt.timedelta(days=32)).replace(day=1)


def plan_window(start: dt.datetime, end: dt.datetime, *, months: bool = True) -> WindowPlan:
    first_hour, last_hour = _ceil(start, _HOUR), _floor(end, _HOUR)
    if first_hour >= last_hour:
        return WindowPlan(None, (), ((start, end),))
    raw = tuple(r for r in ((start, first_hour), (last_hour, end)) if r[0] < r[1])
    first_day, last_day = _ceil(first_hour, _DAY), _floor(last_hour, _DAY)
    if first_day >= last_day:
        return WindowPlan(None, ((first_hour, last_hour),), raw)
    hours = tuple(r for r in ((first_hour, first_day), (last_day, last_hour)) if r[0] < r[1])
    first_month, last_month = _month_ceil(first_day), _month_floor(last_day)
    if not months or first_month >= last_month:
        return WindowPlan((first_day, last_day), hours, raw)
    # Days before the first whole month and after the last are two ranges; the day range
    # keeps the first, and hours hold none of them, so the second goes in `days_after`.
    return WindowPlan(
        (first_day, first_month) if first_day < first_month else None,
        hours,
        raw,
        months=(first_month, last_month),
        days_after=(last_month, last_day) if last_month < last_day else None,
    )


def _rollup_measures() -> list[ColumnElement[Any]]:
    return [
        func.coalesce(func.sum(getattr(LedgerRollup, name)), 0).label(name) for name in MEASURES
    ]


def _rollup_where(plan: WindowPlan) -> ColumnElement[bool] | None:
    r = LedgerRollup
    parts: list[ColumnElement[bool]] = []
    for period, span in ((MONTH, plan.months), (DAY, plan.days), (DAY, plan.days_after)):
        if span is not None:
            parts.append(
                and_(r.period == period, r.bucket_start >= span[0], r.bucket_start < span[1])
            )
    for low, high in plan.hours:
        parts.append(and_(r.period == HOUR, r.bucket_start >= low, r.bucket_start < high))
    return or_(*parts) if parts else None


def _owned(scope: TenantScope | None, model: type[Any]) -> Select[Any]:
    """The tenant's rows, or the whole platform's with no scope (operators' reports and
    the benchmark only: the usage routes always pass the caller's scope)."""
    return select(model) if scope is None else scope.select(model)


class UsageRepository:
    def _raw(self, scope: TenantScope | None, ranges: Sequence[Range]) -> Select[Any]:
        e = LedgerEntry
        return _owned(scope, e).where(
            or_(*(and_(e.created_at >= low, e.created_at < high) for low, high in ranges))
        )

    async def _grouped(
        self,
        session: AsyncSession,
        scope: TenantScope | None,
        start: dt.datetime,
        end: dt.datetime,
        groups: Callable[[type[Any]], dict[str, ColumnElement[Any]]],
        *,
        raw_only: bool = False,
        by_month: bool = True,
    ) -> dict[tuple[Any, ...], LedgerTotals]:
        """Totals per group over [start, end): rollups plus the raw rows of partial hours
        (or, `raw_only`, a scan of the raw ledger: what the rollups must equal)."""
        if raw_only:
            plan = WindowPlan(None, (), ((start, end),))
        else:
            plan = plan_window(start, end, months=by_month)
        found: dict[tuple[Any, ...], LedgerTotals] = {}
        statements: list[Select[Any]] = []
        where = _rollup_where(plan)
        if where is not None:
            by = groups(LedgerRollup)
            statements.append(
                _owned(scope, LedgerRollup)
                .where(where)
                .with_only_columns(*(c.label(n) for n, c in by.items()), *_rollup_measures())
                .group_by(*by.values())
            )
        if plan.raw:
            by = groups(LedgerEntry)
            statements.append(
                self._raw(scope, plan.raw)
                .with_only_columns(*(c.label(n) for n, c in by.items()), *_measures())
                .group_by(*by.values())
            )
        for statement in statements:
            for row in await session.execute(statement):
                mapping = row._mapping
                key = tuple(mapping[name] for name in mapping if name not in MEASURES)
                found[key] = found.get(key, LedgerTotals()) + _totals(row)
        return found

    async def totals_by_kind(
        self,
        session: AsyncSession,
        scope: TenantScope | None,
        *,
        start: dt.datetime,
        end: dt.datetime,
        raw_only: bool = False,
    ) -> list[TotalsByKind]:
        def groups(model: type[Any]) -> dict[str, ColumnElement[Any]]:
            return {"kind": model.kind, "priced": model.priced, "cache_hit": model.cache_hit}

        found = await self._grouped(session, scope, start, end, groups, raw_only=raw_only)
        merged: dict[tuple[str, bool, bool], LedgerTotals] = {}
        for (kind, priced, hit), totals in found.items():
            key = (kind, bool(priced), bool(hit))
            merged[key] = merged.get(key, LedgerTotals()) + totals
        return [
            TotalsByKind(kind=kind, priced=priced, cache_hit=hit, totals=totals)
            for (kind, priced, hit), totals in sorted(merged.items())
        ]

    async def totals(
        self,
        session: AsyncSession,
        scope: TenantScope | None,
        *,
        start: dt.datetime,
        end: dt.datetime,
        raw_only: bool = False,
    ) -> LedgerTotals:
        groups = await self.totals_by_kind(session, scope, start=start, end=end, raw_only=raw_only)
        return sum((g.totals for g in groups), LedgerTotals())

    async def series(
        self,
        session: AsyncSession,
        scope: TenantScope | None,
        *,
        start: dt.datetime,
        end: dt.datetime,
        group_by: UsageDimension,
        by_day: bool,
        raw_only: bool = False,
    ) -> list[SeriesTotals]:
        with_day = by_day or group_by is UsageDimension.DAY
        name = _GROUP_COLUMNS.get(group_by)

        def groups(model: type[Any]) -> dict[str, ColumnElement[Any]]:
            chosen: dict[str, ColumnElement[Any]] = {}
            if with_day:
                time = model.created_at if model is LedgerEntry else model.bucket_start
                chosen["day"] = _utc_day(session, time)
            if name is not None:
                chosen["key"] = getattr(model, name)
            return chosen

        # A month's rollup cannot be split into its days: by-day series read day rollups.
        found = await self._grouped(
            session, scope, start, end, groups, raw_only=raw_only, by_month=not with_day
        )
        merged: dict[tuple[dt.date | None, str | None], LedgerTotals] = {}
        for values, totals in found.items():
            row_day = _as_date(values[0]) if with_day else None
            key = _key(row_day) if name is None else _key(values[-1])
            merged[(row_day, key)] = merged.get((row_day, key), LedgerTotals()) + totals
        rows = [SeriesTotals(day=d, key=k, totals=t) for (d, k), t in merged.items()]
        # Sorted here, not in SQL: SQLite and PostgreSQL order nulls and UUIDs differently.
        rows.sort(key=lambda s: (s.day or dt.date.min, s.key is None, s.key or ""))
        return rows

    def export_query(
        self,
        scope: TenantScope,
        *,
        start: dt.datetime,
        end: dt.datetime,
        columns: Sequence[str],
        filters: ExportFilters,
    ) -> Select[Any]:
        """The window's entries (only `columns`, as plain rows: no ORM objects) in
        (created_at, id) order, for a server-side cursor. The order is served by the
        (tenant, time) index, or (tenant, key, time) when filtered by key, partition after
        partition."""
        e = LedgerEntry
        table = e.__table__
        statement = self._raw(scope, [(start, end)]).with_only_columns(
            *(table.c[name] for name in columns)
        )
        for name, value in filters.items():
            statement = statement.where(table.c[name] == value)
        return statement.order_by(e.created_at, e.id)

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
