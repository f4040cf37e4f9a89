from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from apiary.authz.permissions import Role
from apiary.kit.schemas import Email, PlainLine, Schema


class Member(Schema):
    id: uuid.UUID  # the membership id
    user_id: uuid.UUID
    email: str
    name: str
    role: Role
    created_at: datetime


class MemberCreate(Schema):
    email: Email
    role: Role
    name: PlainLine = Field(default="", max_length=200)
    password: str | None = Field(
        default=None,
        min_length=10,
        max_length=1024,
        description="For a new user; omitted, Apiary generates one and returns it once",
    )


class MemberUpdate(Schema):
    role: Role


class MemberCreated(Member):
    temporary_password: str | None = Field(
        default=None, description="Shown once, when Apiary generated the new user's password"
    )
