from __future__ import annotations

import uuid

from pydantic import Field

from apiary.authz.permissions import Permission, Role
from apiary.kit.schemas import Email, Schema


class LoginRequest(Schema):
    email: Email
    password: str = Field(min_length=1, max_length=1024)
    tenant: str | None = Field(
        default=None, description="Tenant id or name to sign in to; default: your first tenant"
    )


class OIDCLoginRequest(Schema):
    id_token: str = Field(min_length=1, max_length=16_384)


class RefreshRequest(Schema):
    refresh_token: str = Field(min_length=1, max_length=512)


class TokenPair(Schema):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int
    tenant_id: uuid.UUID | None
    role: Role


class MembershipView(Schema):
    tenant_id: uuid.UUID
    tenant_name: str
    role: Role


class Me(Schema):
    user_id: uuid.UUID | None
    api_key_id: uuid.UUID | None
    email: str | None
    name: str | None
    tenant_id: uuid.UUID | None
    role: Role
    is_super_admin: bool
    memberships: list[MembershipView]
    permissions: list[Permission] = Field(
        default_factory=list, description="What this caller's role may do, for role-based UIs"
    )
    grantable_roles: list[Role] = Field(
        default_factory=list,
        description="The member roles this caller may hand out (invite, add, change a member "
        "to), highest first; acting on a member holding another role is refused",
    )


class OIDCClientConfig(Schema):
    issuer: str
    client_id: str = Field(description="The audience: the client id ID tokens are issued to")


class AuthConfig(Schema):
    """How one may sign in here; public, so a sign-in page can show the right buttons."""

    password: bool = True
    oidc: OIDCClientConfig | None = None
