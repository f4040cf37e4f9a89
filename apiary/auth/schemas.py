from __future__ import annotations

import uuid

from pydantic import Field

from apiary.authz.permissions import Permission, Role
from apiary.kit.schemas import Email, Schema

REFRESH_COOKIE_DESCRIPTION = (
    "Browsers: deliver the refresh token as an httpOnly cookie scoped to /api/v1/auth instead "
    "of in the answer (whose refresh_token is then null); needs the X-Apiary-CSRF header"
)


class LoginRequest(Schema):
    email: Email
    password: str = Field(min_length=1, max_length=1024)
    tenant: str | None = Field(
        default=None, description="Tenant id or name to sign in to; default: your first tenant"
    )
    refresh_cookie: bool = Field(default=False, description=REFRESH_COOKIE_DESCRIPTION)


class OIDCLoginRequest(Schema):
    id_token: str = Field(min_length=1, max_length=16_384)
    refresh_cookie: bool = Field(default=False, description=REFRESH_COOKIE_DESCRIPTION)


class OIDCCodeRequest(Schema):
    """The end of the authorization code flow with PKCE: what the identity provider sent back
    to the browser, and the secrets the browser kept for it."""

    code: str = Field(min_length=1, max_length=4096, description="The `code` of the callback")
    # RFC 7636 4.1: 43 to 128 unreserved characters.
    code_verifier: str = Field(
        min_length=43,
        max_length=128,
        pattern=r"^[A-Za-z0-9._~-]+$",
        description="The PKCE verifier whose S256 challenge the authorization request sent",
    )
    redirect_uri: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
        description="The redirect_uri of the authorization request, exactly",
    )
    nonce: str = Field(
        min_length=16,
        max_length=256,
        description="The nonce of the authorization request; the ID token must carry it",
    )
    refresh_cookie: bool = Field(default=False, description=REFRESH_COOKIE_DESCRIPTION)


class RefreshRequest(Schema):
    refresh_token: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="The refresh token; without it, the apiary_refresh cookie is used (then "
        "the X-Apiary-CSRF header is required)",
    )


class TokenPair(Schema):
    access_token: str
    refresh_token: str | None = Field(
        description="The next refresh token (single use); null when it was set as the "
        "httpOnly apiary_refresh cookie instead"
    )
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
    scope: str = Field(
        default="openid email profile", description="The scope to ask for in the authorization"
    )


class AuthConfig(Schema):
    """How one may sign in here; public, so a sign-in page can show the right buttons."""

    password: bool = True
    oidc: OIDCClientConfig | None = None
