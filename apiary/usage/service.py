"""Usage reports over the ledger: totals, series, the baseline comparison, the CSV export.

Savings against a baseline model (see `BaselineComparison`): over the priced chat calls of
the window, `baseline cost - actual cost`, split exactly in two. The cache part is what the
gateway's cache hits would have cost on the baseline, less what they did cost (usually
nothing); the routing part is the same difference over every other compared call, i.e. what
serving them on the models chosen saved against the baseline. Prices are linear in tokens,
so the baseline cost of a group of calls is `catalog.cost_usd` of their summed tokens.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from sqlalchemy import ColumnElement, Select, case, func, literal
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from apiary.authz.scope import TenantScope
from apiary.db import utcnow
from apiary.errors import Unprocessable
from apiary.gateway import catalog
from apiary.gateway.config import PriceConfig
from apiary.gateway.providers.base import Usage
from apiary.usage.repository import ExportFilters, LedgerTotals, usage_repository
from apiary.usage.schemas import (
    BaselineComparison,
    UsageBucket,
    UsageDimension,
    UsageSeries,
    UsageSeriesRow,
    UsageSummary,
)

EXPORT_BATCH_ROWS = 5000
ExportFormat = Literal["csv", "jsonl"]

EXPORT_COLUMNS = (
    "created_at",
    "id",
    "kind",
    "status",
    "requested_model",
    "route",
    "provider",
    "model",
    "api_key_id",
    "user_id",
    "agent_id",
    "execution_id",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "tokens_estimated",
    "cost_usd",
    "priced",
    "cache_hit",
    "saved_usd",
    "latency_ms",
    "ttft_ms",
    "streamed",
    "error",
)

# A cell starting with one of these is a formula to a spreadsheet; requested_model and error
# come from callers and upstreams, so such text is quoted (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_CHARS = frozenset(_FORMULA_START)


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open UTC range [start, end)."""

    start: dt.datetime
    end: dt.datetime


def _month_start(moment: dt.datetime) -> dt.datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(month_start: dt.datetime) -> dt.datetime:
    return _month_start(month_start + dt.timedelta(days=32))


def resolve_window(
    start: dt.datetime | None, end: dt.datetime | None, *, now: dt.datetime | None = None
) -> Window:
    """The range a report covers. `to` defaults to the end of the current UTC month, `from`
    to the start of the month `to` closes (so no parameters = the current calendar month)."""
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.utcoffset() is None:
            raise Unprocessable(f"{name}: give a timezone, e.g. 2026-01-01T00:00:00Z")
    if end is None:
        end = _next_month(_month_start((now or utcnow()).astimezone(dt.UTC)))
    end = end.astimezone(dt.UTC)
    if start is None:
        start = _month_start(end - dt.timedelta(microseconds=1))
    start = start.astimezone(dt.UTC)
    if start >= end:
        raise Unprocessable(f"from: must be before to ({start.isoformat()} >= {end.isoformat()})")
    return Window(start, end)


def resolve_baseline(name: str, *, overrides: Mapping[str, PriceConfig]) -> catalog.ModelInfo:
    """The price of a baseline given as `provider/model` (a price override applies) or as a
    model name the catalog knows (some contain a slash: `deepseek-ai/DeepSeek-V3`)."""
    name = name.strip()
    info: catalog.ModelInfo | None = None
    provider, slash, model = name.partition("/")
    if slash:
        info = catalog.lookup(provider, model, overrides=overrides)
    info = info or catalog.lookup("", name, overrides={})
    if info is None:
        raise Unprocessable(
            f"baseline: unknown model {name!r}; give provider/model or a model name from "
            "the price table"
        )
    if info.input is None or info.output is None:
        raise Unprocessable(f"baseline: model {name!r} has no known price")
    return info


def _rate(hits: int, calls: int) -> float:
    return hits / calls if calls else 0.0


def _baseline_cost(info: catalog.ModelInfo, totals: LedgerTotals) -> float:
    usage = Usage(
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        cached_tokens=totals.billable_cached_tokens,
    )
    cost = catalog.cost_usd(info, usage)
    assert cost is not None  # resolve_baseline refused unpriced models
    return cost


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_text(rows: Iterable[Iterable[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


class UsageService:
    async def summary(
        self,
        session: AsyncSession,
        scope: TenantScope,
        window: Window,
        *,
        baseline: str | None,
        overrides: Mapping[str, PriceConfig],
    ) -> UsageSummary:
        baseline_info = resolve_baseline(baseline, overrides=overrides) if baseline else None
        groups = await usage_repository.totals_by_kind(
            session, scope, start=window.start, end=window.end
        )
        total = sum((g.totals for g in groups), LedgerTotals())
        comparison = None
        if baseline is not None and baseline_info is not None:
            compared = [g for g in groups if g.priced and g.kind == "chat"]
            hits = sum((g.totals for g in compared if g.cache_hit), LedgerTotals())
            sent = sum((g.totals for g in compared if not g.cache_hit), LedgerTotals())
            cache_savings = _baseline_cost(baseline_info, hits) - hits.cost_usd
            routing_savings = _baseline_cost(baseline_info, sent) - sent.cost_usd
            compared_calls = hits.calls + sent.calls
            comparison = BaselineComparison(
                model=baseline,
                compared_calls=compared_calls,
                excluded_calls=total.calls - compared_calls,
                cost_usd=_baseline_cost(baseline_info, hits + sent),
                actual_cost_usd=hits.cost_usd + sent.cost_usd,
                savings_usd=cache_savings + routing_savings,
                cache_savings_usd=cache_savings,
                routing_savings_usd=routing_savings,
            )
        return UsageSummary(
            from_=window.start,
            to=window.end,
            calls=total.calls,
            errors=total.errors,
            prompt_tokens=total.prompt_tokens,
            completion_tokens=total.completion_tokens,
            cached_tokens=total.cached_tokens,
            cost_usd=total.cost_usd,
            unpriced_calls=total.unpriced_calls,
            cache_hits=total.cache_hits,
            cache_hit_rate=_rate(total.cache_hits, total.calls),
            saved_by_cache_usd=total.saved_usd,
            baseline=comparison,
        )

    async def series(
        self,
        session: AsyncSession,
        scope: TenantScope,
        window: Window,
        *,
        group_by: UsageDimension,
        bucket: UsageBucket | None,
    ) -> UsageSeries:
        found = await usage_repository.series(
            session,
            scope,
            start=window.start,
            end=window.end,
            group_by=group_by,
            by_day=bucket is UsageBucket.DAY,
        )
        rows = [
            UsageSeriesRow(
                key=s.key,
                day=s.day,
                calls=s.totals.calls,
                errors=s.totals.errors,
                prompt_tokens=s.totals.prompt_tokens,
                completion_tokens=s.totals.completion_tokens,
                cached_tokens=s.totals.cached_tokens,
                cost_usd=s.totals.cost_usd,
                unpriced_calls=s.totals.unpriced_calls,
                cache_hits=s.totals.cache_hits,
                cache_hit_rate=_rate(s.totals.cache_hits, s.totals.calls),
                saved_by_cache_usd=s.totals.saved_usd,
            )
            for s in found
        ]
        return UsageSeries(
            from_=window.start, to=window.end, group_by=group_by, bucket=bucket, rows=rows
        )

    def export_filename(self, window: Window, extension: str = "csv") -> str:
        return f"apiary-usage-{window.start:%Y%m%dT%H%M%SZ}-{window.end:%Y%m%dT%H%M%SZ}.{extension}"

    async def export(
        self,
        factory: async_sessionmaker[AsyncSession],
        scope: TenantScope,
        window: Window,
        *,
        filters: ExportFilters,
        fmt: ExportFormat,
        batch_rows: int = EXPORT_BATCH_ROWS,
    ) -> AsyncIterator[bytes]:
        """The window's ledger entries as CSV or JSON Lines, streamed from a server-side
        cursor: `batch_rows` rows are fetched, formatted and sent at a time, so memory stays
        the same however many rows the range holds and the first bytes leave before the
        query has read them all. It runs while the response streams (the request's session
        is closed by then) in a session of its own, holding one connection until the end.
        """
        statement = usage_repository.export_query(
            scope, start=window.start, end=window.end, columns=EXPORT_COLUMNS, filters=filters
        ).execution_options(yield_per=batch_rows)
        if fmt == "csv":
            yield _csv_text([list(EXPORT_COLUMNS)]).encode()
        write = _csv_rows if fmt == "csv" else _jsonl_rows
        async with factory() as session:
            connection = await session.connection()
            if connection.dialect.name == "postgresql":
                if fmt == "csv":  # the cells' text written by the database, the rows by csv
                    statement, write = _csv_cells_in_sql(statement), _csv_bytes
                async for records in _asyncpg_batches(connection, statement, batch_rows):
                    yield write(records)
                return
            result = await session.stream(statement)
            async for rows in result.partitions():
                yield write(rows)


async def _asyncpg_batches(
    connection: AsyncConnection, statement: Select[Any], batch_rows: int
) -> AsyncIterator[Sequence[Any]]:
    """The statement's rows through asyncpg's own cursor, a batch per round trip: asyncpg
    decodes times and UUIDs in C, where SQLAlchemy's result would run each value through
    Python (the export's rate goes from about 60,000 to well over 100,000 rows a second).
    Its parameters are the window, the tenant and the filters, all types asyncpg binds.

    The next batch is asked for before this one is handed on, so PostgreSQL reads it while
    the caller formats this one (one fetch in flight at a time, as a connection allows):
    each side's time hides the other's instead of adding to it."""
    compiled = statement.compile(dialect=connection.dialect)
    params = [compiled.params[name] for name in compiled.positiontup or ()]
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection  # an asyncpg.Connection
    async with driver.transaction():  # a cursor lives in a transaction
        cursor = await driver.cursor(compiled.string, *params)
        ahead = asyncio.ensure_future(cursor.fetch(batch_rows))
        try:
            while records := await ahead:
                ahead = asyncio.ensure_future(cursor.fetch(batch_rows))
                await asyncio.sleep(0)  # the fetch sends its request before we format
                yield records
        finally:
            if not ahead.done():  # the caller stopped early: finish the fetch in flight
                await asyncio.wait([ahead])
            elif not ahead.cancelled():
                ahead.exception()  # retrieved, so an error of a fetch not awaited is not logged


# The columns a caller's text may reach (model names, routes, upstream errors): a formula
# start is quoted in CSV. Indexes into EXPORT_COLUMNS.
_TEXT = tuple(
    EXPORT_COLUMNS.index(name)
    for name in ("kind", "status", "requested_model", "route", "provider", "model", "error")
)
_CREATED = EXPORT_COLUMNS.index("created_at")
_FORMULA_PATTERN = "^[" + "".join(sorted(_FORMULA_CHARS - {"-"})) + "-]"  # a regex class


def _csv_cells_in_sql(statement: Select[Any]) -> Select[Any]:
    """The export's statement with PostgreSQL writing the two cells `_csv_cells` rewrites
    row by row in Python, the same text: the time as `datetime.isoformat` writes a UTC
    time (microseconds only when there are any) and a text cell starting a formula behind
    a quote. The rows then go to the csv writer as they come (with the fetch ahead in
    `_asyncpg_batches`, 107-113k rows a second against 92-102k, docs/benchmarks.md)."""
    cells: list[ColumnElement[Any]] = []
    for index, column in enumerate(statement.selected_columns):
        if index == _CREATED:
            utc = func.timezone("UTC", column)
            fraction = case(
                (func.date_trunc("second", column) == column, literal("")),
                else_=func.to_char(utc, ".US"),
            )
            cells.append(
                (func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS') + fraction + "+00:00").label(
                    column.name
                )
            )
        elif index in _TEXT:
            quoted = case((column.regexp_match(_FORMULA_PATTERN), "'" + column), else_=column)
            cells.append(quoted.label(column.name))
        else:
            cells.append(column)
    return statement.with_only_columns(*cells)


def _csv_cells(row: Sequence[Any]) -> list[Any]:
    cells = list(row)
    cells[_CREATED] = cells[_CREATED].isoformat()
    for index in _TEXT:
        value = cells[index]
        if value and value[0] in _FORMULA_CHARS:
            cells[index] = "'" + value
    return cells


def _csv_rows(rows: Sequence[Any]) -> bytes:
    # The csv module already writes None as an empty cell, UUIDs and numbers as str() does;
    # only the time and the text cells need a look.
    return _csv_bytes(map(_csv_cells, rows))


def _csv_bytes(rows: Iterable[Iterable[Any]]) -> bytes:
    return _csv_text(rows).encode()


def _jsonl_rows(rows: Sequence[Row[Any]]) -> bytes:
    # orjson writes datetimes as ISO-8601 and uuid.UUIDs as strings itself; `default=str`
    # covers asyncpg's own UUID type, which PostgreSQL rows carry. One object a line.
    dumps = orjson.dumps
    return b"".join(
        dumps(dict(zip(EXPORT_COLUMNS, row, strict=True)), default=str) + b"\n" for row in rows
    )


usage_service = UsageService()
