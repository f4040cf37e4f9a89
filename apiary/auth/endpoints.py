"""Routes under /api/v1/auth: password and OIDC sign-in, refresh, sign-out, and who am I."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, status
from pydantic import Field

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.auth.forwarded import client_ip
from apiary.auth.schemas import (
    AuthConfig,
    LoginRequest,
    Me,
    OIDCClientConfig,
    OIDCLoginRequest,
    RefreshRequest,
    TokenPair,
)
from apiary.auth.service import auth_service
from apiary.authz.permissions import Permission
from apiary.errors import BadRequest, documented
from apiary.kit.schemas import Schema
from apiary.runtime import RuntimeDep

router = APIRouter(prefix="/auth", tags=["auth"])

Signed = Annotated[AuthContext, authorize(Permission.SELF)]


class LogoutRequest(Schema):
    refresh_token: str | None = Field(default=None, max_length=512)


@router.get("/config", summary="How to sign in here: password, and OIDC when configured")
async def auth_config(runtime: RuntimeDep) -> AuthConfig:
    oidc = runtime.settings.oidc
    if oidc is None:
        return AuthConfig()
    return AuthConfig(oidc=OIDCClientConfig(issuer=oidc.issuer, client_id=oidc.audience))


@router.post("/login", summary="Sign in with email and password")
async def login(
    body: LoginRequest, request: Request, session: DbSession, runtime: RuntimeDep
) -> TokenPair:
    return await auth_service.login(
        session,
        body,
        settings=runtime.settings,
        counters=runtime.counters,
        ip=client_ip(request),
    )


@router.post(
    "/oidc",
    summary="Sign in with an ID token from the configured OIDC issuer",
    responses=documented(402),
)
async def login_oidc(
    body: OIDCLoginRequest, request: Request, session: DbSession, runtime: RuntimeDep
) -> TokenPair:
    if runtime.oidc is None:
        raise BadRequest("OIDC sign-in is not configured (set APIARY_OIDC__ISSUER and audience)")
    return await auth_service.login_oidc(
        session,
        body.id_token,
        verifier=runtime.oidc,
        settings=runtime.settings,
        counters=runtime.counters,
        ip=client_ip(request),
    )


@router.post("/refresh", summary="Exchange a refresh token for a new token pair")
async def refresh(
    body: RefreshRequest, request: Request, session: DbSession, runtime: RuntimeDep
) -> TokenPair:
    return await auth_service.refresh(
        session,
        body.refresh_token,
        settings=runtime.settings,
        ip=client_ip(request),
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End this session")
async def logout(auth: Signed, session: DbSession, body: LogoutRequest | None = None) -> None:
    await auth_service.logout(session, auth, refresh_token=body.refresh_token if body else None)


@router.get("/me", summary="The caller: user or API key, tenant, role, memberships")
async def me(auth: Signed, session: DbSession) -> Me:
    return await auth_service.me(session, auth)
