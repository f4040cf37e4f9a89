"""Routes under /api/v1/privacy: data subject rights (export, erasure, tenant deletion).

A person exports or erases their own account; a tenant admin exports the tenant, or a
member's data in it, and erases a member who belongs to no other tenant; the platform's
super admin does any of it and deletes tenants. Exports answer a zip archive, streamed
from a temporary file once it is complete.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.authz.permissions import Permission
from apiary.errors import documented
from apiary.privacy.schemas import ErasureReport, TenantDeletionReport
from apiary.privacy.service import Archive, privacy_service
from apiary.runtime import RuntimeDep

router = APIRouter(prefix="/privacy", tags=["privacy"])

Person = Annotated[AuthContext, authorize(Permission.SELF)]
TenantAdmin = Annotated[AuthContext, authorize(Permission.PRIVACY_MANAGE)]
SuperAdmin = Annotated[AuthContext, authorize(Permission.TENANTS_MANAGE)]

_ZIP: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {}}, "description": "A zip archive"}
}


def _download(archive: Archive) -> StreamingResponse:
    return StreamingResponse(
        archive.chunks(),
        media_type="application/zip",
        # Also when the client goes away mid-download and the chunks are never all read.
        background=BackgroundTask(archive.close),
        headers={"Content-Disposition": f'attachment; filename="{archive.filename}"'},
    )


@router.get(
    "/tenants/{tenant_id}/export",
    summary="Export everything of a tenant as a zip (JSON Lines per table, memory, documents)",
    response_class=StreamingResponse,
    responses={**_ZIP, **documented(404)},
)
async def export_tenant(
    auth: TenantAdmin, session: DbSession, runtime: RuntimeDep, tenant_id: uuid.UUID
) -> StreamingResponse:
    """Your own tenant (a tenant admin), or any tenant (the super admin)."""
    return _download(await privacy_service.export_tenant(session, auth, tenant_id, runtime))


@router.delete(
    "/tenants/{tenant_id}",
    summary="Delete a tenant and all its data; report what was removed",
    responses=documented(404, 409),
)
async def delete_tenant(
    auth: SuperAdmin, session: DbSession, runtime: RuntimeDep, tenant_id: uuid.UUID
) -> TenantDeletionReport:
    """Every row of every tenant-owned table, its vectors, cache entries, counters and
    memory; members of no other tenant are erased. Its audit entries are kept (they name
    ids only). 409 while executions still run."""
    return await privacy_service.delete_tenant(session, auth, tenant_id, runtime)


@router.get(
    "/users/{user_id}/export",
    summary="Export a person's data as a zip (profile, sign-ins, rows naming them, documents)",
    response_class=StreamingResponse,
    responses={**_ZIP, **documented(404)},
)
async def export_user(
    auth: Person, session: DbSession, runtime: RuntimeDep, user_id: uuid.UUID
) -> StreamingResponse:
    """Yourself (every tenant you belong to), a member of your tenant (a tenant admin:
    what this tenant holds), or anyone (the super admin)."""
    return _download(await privacy_service.export_user(session, auth, user_id, runtime))


@router.post(
    "/users/{user_id}/erasure",
    summary="Erase a person: personal data removed, references kept anonymous",
    responses=documented(403, 404, 409),
)
async def erase_user(
    auth: Person, session: DbSession, runtime: RuntimeDep, user_id: uuid.UUID
) -> ErasureReport:
    """Yourself, a member of your tenant who belongs to no other (a tenant admin), or
    anyone but the super admin (the super admin). Erasing again reports `already_erased`.
    409 for the last tenant admin of a tenant."""
    return await privacy_service.erase_user(session, auth, user_id, runtime)
