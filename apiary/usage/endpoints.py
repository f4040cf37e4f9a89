"""Routes under /api/v1/usage: the tenant's totals, series for charts, and a CSV export."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.authz.permissions import Permission
from apiary.runtime import RuntimeDep
from apiary.usage.schemas import UsageBucket, UsageDimension, UsageSeries, UsageSummary
from apiary.usage.service import Window, resolve_window, usage_service

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


@router.get(
    "/export.csv",
    summary="This tenant's ledger entries in the range, as CSV",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_csv(auth: Reader, runtime: RuntimeDep, window: UsageRange) -> StreamingResponse:
    filename = usage_service.export_filename(window)
    return StreamingResponse(
        usage_service.export_csv(runtime.session_factory, auth.scope, window),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
