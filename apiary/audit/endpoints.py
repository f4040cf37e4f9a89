"""Routes under /api/v1/audit-log: tenant admins read their tenant's trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from apiary.audit.schemas import AuditEntry
from apiary.audit.service import audit_service
from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.authz.permissions import Permission
from apiary.kit.schemas import Page, Paging, page_of

router = APIRouter(prefix="/audit-log", tags=["audit"])


@router.get("", summary="Read this tenant's audit log, newest first")
async def list_entries(
    auth: Annotated[AuthContext, authorize(Permission.AUDIT_READ)],
    session: DbSession,
    page: Paging,
    action: Annotated[str | None, Query(max_length=60, description="e.g. api_key.created")] = None,
) -> Page[AuditEntry]:
    rows, total = await audit_service.list(session, auth.scope, page, action=action)
    return page_of(AuditEntry, rows, total, page)


@router.get(
    "/export.csv",
    summary="Export this tenant's whole audit log as CSV, oldest first (a plan feature)",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_entries(
    auth: Annotated[AuthContext, authorize(Permission.AUDIT_READ)], session: DbSession
) -> Response:
    text = await audit_service.export_csv(session, auth.scope)
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit-log.csv"'},
    )
