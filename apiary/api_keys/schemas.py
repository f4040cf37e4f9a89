from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from apiary.authz.permissions import Role
from apiary.kit.schemas import PlainLine, Schema


class ApiKey(Schema):
    id: uuid.UUID
    name: str
    prefix: str
    role: Role
    created_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreate(Schema):
    name: PlainLine = Field(min_length=1, max_length=200)
    role: Role
    expires_at: datetime | None = Field(default=None, description="ISO-8601 with a timezone")


class ApiKeyCreated(ApiKey):
    key: str = Field(description="The secret key: shown this once, never again")
