from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field

from apiary.authz.permissions import Role
from apiary.kit.schemas import NAME_JOINERS, Email, Schema, visible_text

# A person's display name: no controls or invisible characters but the joiners.
UserName = Annotated[
    str, Field(max_length=200), AfterValidator(lambda v: visible_text(v, keep=NAME_JOINERS))
]


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
    name: UserName = ""
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


class InvitationCreate(Schema):
    email: Email = Field(
        description="An existing account's email; a new person is added with POST /members"
    )
    role: Role


class Invitation(Schema):
    """A pending invitation, as the inviting tenant sees it."""

    id: uuid.UUID
    user_id: uuid.UUID
    email: str
    role: Role
    invited_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime


class InvitationReceived(Schema):
    """A pending invitation, as the invited account sees it."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    tenant_name: str
    role: Role
    invited_by_email: str | None
    created_at: datetime
    expires_at: datetime


class Joined(Schema):
    """The membership an accepted invitation made: sign in to `tenant_id` to use it."""

    membership_id: uuid.UUID
    tenant_id: uuid.UUID
    tenant_name: str
    role: Role
