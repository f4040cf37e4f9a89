from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from apiary.kit.schemas import Email, PlainLine, Schema, UpdateSchema, visible_text
from apiary.tenants.models import TenantStatus

# A tenant is named at sign-in and in the CLI, so two names must never look alike: no
# controls and no invisible characters (zero-width, bidi overrides) at all.
TenantName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(visible_text),
]


class Tenant(Schema):
    id: uuid.UUID
    name: str
    status: TenantStatus
    plan: str = Field(description="The key of its plan (GET /api/v1/admin/plans)")
    currency: str
    oidc_tenant_id: str | None
    created_at: datetime


class TenantCreate(Schema):
    name: TenantName
    plan: PlainLine = Field(default="free", min_length=1, max_length=40)
    oidc_tenant_id: PlainLine | None = Field(default=None, min_length=1, max_length=200)
    admin_email: Email | None = Field(
        default=None, description="Create (or add) this user as the tenant's first admin"
    )
    admin_password: str | None = Field(default=None, min_length=10, max_length=1024)


class TenantUpdate(UpdateSchema):
    name: TenantName | None = None
    plan: PlainLine | None = Field(default=None, min_length=1, max_length=40)
    status: TenantStatus | None = None
    oidc_tenant_id: PlainLine | None = Field(default=None, min_length=1, max_length=200)
    force: bool = Field(
        default=False,
        description="Move to `plan` even if the tenant holds more than it allows (409 "
        "otherwise); it keeps what it has, and adding more is refused",
    )


class TenantCreated(Schema):
    tenant: Tenant
    admin_user_id: uuid.UUID | None
    admin_temporary_password: str | None = Field(
        description="Shown once, when Apiary generated the admin's password"
    )
