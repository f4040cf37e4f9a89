"""Routes under /api/v1/usage: the tenant's totals, series for charts, and exports (CSV,
JSON Lines) streamed with a date range and filters."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.authz.permissions import Permission
from apiary.runtime import Runtime, RuntimeDep
from apiary.usage.repository import ExportFilters
from apiary.usage.schemas import UsageBucket, UsageDimension, UsageSeries, UsageSummary
from apiary.usage.service import ExportFormat, Window, resolve_window, usage_service

router = APIRouter(prefix="/usage", tags=["usage"])

Reader = Annotated[AuthContext, authorize(Permission.USAGE_READ)]


def _window(
    start: Annotated[
        dt.datetime | None,
        Query(
            alias="from",
            description="Start of the range, included: ISO-8601 with a timezone, e.g. "
            "2026-11-01T00:00:00Z. Default: the start of the calendar month (UTC) that `to` "
            "closes, i.e. of the current month when `to` is not given either",
        ),
    ] = None,
    end: Annotated[
        dt.datetime | None,
        Query(
            alias="to",
            description="End of the range, excluded: ISO-8601 with a timezone. Default: the "
            "start of next month (UTC)",
        ),
    ] = None,
) -> Window:
    return resolve_window(start, end)


UsageRange = Annotated[Window, Depends(_window)]


@router.get("/summary", summary="Totals of this tenant's model calls, and savings vs a baseline")
async def summary(
    auth: Reader,
    session: DbSession,
    runtime: RuntimeDep,
    window: UsageRange,
    baseline: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=300,
            description="A model to compare with, as provider/model or a model name from the "
            "price table (e.g. gpt-4o): what the same calls would have cost had each been "
            "sent to it, and how much routing and caching saved against that",
        ),
    ] = None,
) -> UsageSummary:
    return await usage_service.summary(
        session, auth.scope, window, baseline=baseline, overrides=runtime.settings.prices
    )


@router.get("/series", summary="This tenant's usage grouped by day, model, provider, ...")
async def series(
    auth: Reader,
    session: DbSession,
    window: UsageRange,
    group_by: Annotated[
        UsageDimension,
        Query(
            description="day: one row per UTC date (key YYYY-MM-DD); otherwise one row per "
            "value of that ledger column (null when calls had none)"
        ),
    ] = UsageDimension.DAY,
    bucket: Annotated[
        UsageBucket | None,
        Query(
            description="day: split each group further by UTC date, giving (day, key) rows, "
            "e.g. spend per model over time"
        ),
    ] = None,
) -> UsageSeries:
    return await usage_service.series(session, auth.scope, window, group_by=group_by, bucket=bucket)


def _filters(
    model: Annotated[
        str | None, Query(max_length=200, description="Only calls served by this model")
    ] = None,
    provider: Annotated[
        str | None, Query(max_length=100, description="Only calls served by this provider")
    ] = None,
    route: Annotated[
        str | None, Query(max_length=100, description="Only calls through this route")
    ] = None,
    api_key_id: Annotated[uuid.UUID | None, Query(description="Only this API key's calls")] = None,
    agent_id: Annotated[uuid.UUID | None, Query(description="Only this agent's calls")] = None,
    kind: Annotated[
        Literal["chat", "embedding"] | None, Query(description="Only calls of this kind")
    ] = None,
    status: Annotated[
        Literal["ok", "error"] | None, Query(description="Only calls that ended so")
    ] = None,
) -> ExportFilters:
    given = {
        "model": model,
        "provider": provider,
        "route": route,
        "api_key_id": api_key_id,
        "agent_id": agent_id,
        "kind": kind,
        "status": status,
    }
    return {name: value for name, value in given.items() if value is not None}


Filters = Annotated[ExportFilters, Depends(_filters)]


def _export(
    auth: AuthContext, runtime: Runtime, window: Window, filters: ExportFilters, fmt: ExportFormat
) -> StreamingResponse:
    filename = usage_service.export_filename(window, fmt)
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(
        usage_service.export(runtime.session_factory, auth.scope, window, filters=filters, fmt=fmt),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/export.csv",
    summary="This tenant's ledger entries in the range, as CSV, streamed",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_csv(
    auth: Reader, runtime: RuntimeDep, window: UsageRange, filters: Filters
) -> StreamingResponse:
    return _export(auth, runtime, window, filters, "csv")


@router.get(
    "/export.jsonl",
    summary="This tenant's ledger entries in the range, as JSON Lines (one object a line)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def export_jsonl(
    auth: Reader, runtime: RuntimeDep, window: UsageRange, filters: Filters
) -> StreamingResponse:
    return _export(auth, runtime, window, filters, "jsonl")
