"""Routes under /api/v1/auth: password and OIDC sign-in, refresh, sign-out, and who am I.

Each sign-in and refresh answers a token pair; a browser asks (`refresh_cookie`) for the
refresh token as an httpOnly cookie instead (apiary/auth/cookies.py), and refreshes and signs
out with that cookie, while API clients keep sending refresh tokens in the body.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from pydantic import Field

from apiary.auth.context import AuthContext
from apiary.auth.cookies import (
    clear_refresh_cookie,
    cleared_cookie_header,
    refresh_cookie,
    require_same_origin,
    set_refresh_cookie,
)
from apiary.auth.dependencies import DbSession, authorize
from apiary.auth.forwarded import client_ip
from apiary.auth.schemas import (
    AuthConfig,
    LoginRequest,
    Me,
    OIDCClientConfig,
    OIDCCodeRequest,
    OIDCLoginRequest,
    RefreshRequest,
    TokenPair,
)
from apiary.auth.service import auth_service
from apiary.authz.permissions import Permission
from apiary.config import Settings
from apiary.errors import BadRequest, Unauthorized, documented
from apiary.kit.schemas import Schema
from apiary.runtime import RuntimeDep

router = APIRouter(prefix="/auth", tags=["auth"])
# Served at the site's root, where other services look for it.
well_known_router = APIRouter(tags=["auth"])

Signed = Annotated[AuthContext, authorize(Permission.SELF)]


class LogoutRequest(Schema):
    refresh_token: str | None = Field(default=None, max_length=512)


def _deliver(
    pair: TokenPair, request: Request, response: Response, *, cookie: bool, settings: Settings
) -> TokenPair:
    """The pair as asked: the refresh token in the body, or in the httpOnly cookie only."""
    if not cookie or pair.refresh_token is None:
        return pair
    set_refresh_cookie(request, response, pair.refresh_token, max_age=settings.refresh_token_ttl_s)
    return pair.model_copy(update={"refresh_token": None})


def _cookie_requested(request: Request, wanted: bool) -> bool:
    # Setting a session cookie is checked like using one: another site's page must not sign
    # a visitor in to an account of its choosing (login CSRF).
    if wanted:
        require_same_origin(request)
    return wanted


@router.get("/config", summary="How to sign in here: password, and OIDC when configured")
async def auth_config(runtime: RuntimeDep) -> AuthConfig:
    oidc = runtime.settings.oidc
    if oidc is None:
        return AuthConfig()
    return AuthConfig(
        oidc=OIDCClientConfig(issuer=oidc.issuer, client_id=oidc.audience, scope=oidc.scopes)
    )


class JsonWebKey(Schema):
    kty: str
    crv: str
    x: str
    y: str
    kid: str
    use: str
    alg: str


class JsonWebKeySet(Schema):
    keys: list[JsonWebKey]


@well_known_router.get(
    "/.well-known/jwks.json",
    summary="The public keys access tokens are signed with (ES256), for other services",
)
async def jwks(runtime: RuntimeDep, response: Response) -> JsonWebKeySet:
    # Empty while tokens are signed with a shared secret (HS256), which is never published.
    response.headers["cache-control"] = "public, max-age=300"
    return JsonWebKeySet.model_validate(runtime.settings.signing_keys.jwks())


@router.post("/login", summary="Sign in with email and password", responses=documented(403))
async def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    session: DbSession,
    runtime: RuntimeDep,
) -> TokenPair:
    cookie = _cookie_requested(request, body.refresh_cookie)
    pair = await auth_service.login(
        session,
        body,
        settings=runtime.settings,
        counters=runtime.counters,
        ip=client_ip(request),
    )
    return _deliver(pair, request, response, cookie=cookie, settings=runtime.settings)


@router.post(
    "/oidc",
    summary="Sign in with an ID token from the configured OIDC issuer",
    responses=documented(402, 403),
)
async def login_oidc(
    body: OIDCLoginRequest,
    request: Request,
    response: Response,
    session: DbSession,
    runtime: RuntimeDep,
) -> TokenPair:
    if runtime.oidc is None:
        raise BadRequest("OIDC sign-in is not configured (set APIARY_OIDC__ISSUER and audience)")
    cookie = _cookie_requested(request, body.refresh_cookie)
    pair = await auth_service.login_oidc(
        session,
        body.id_token,
        verifier=runtime.oidc,
        settings=runtime.settings,
        counters=runtime.counters,
        ip=client_ip(request),
    )
    return _deliver(pair, request, response, cookie=cookie, settings=runtime.settings)


@router.post(
    "/oidc/code",
    summary="Sign in with an authorization code (OIDC code flow with PKCE): Apiary redeems it",
    responses=documented(402, 403, 503),
)
async def login_oidc_code(
    body: OIDCCodeRequest,
    request: Request,
    response: Response,
    session: DbSession,
    runtime: RuntimeDep,
) -> TokenPair:
    if runtime.oidc is None:
        raise BadRequest("OIDC sign-in is not configured (set APIARY_OIDC__ISSUER and audience)")
    cookie = _cookie_requested(request, body.refresh_cookie)
    pair = await auth_service.login_oidc_code(
        session,
        body,
        verifier=runtime.oidc,
        settings=runtime.settings,
        counters=runtime.counters,
        ip=client_ip(request),
    )
    return _deliver(pair, request, response, cookie=cookie, settings=runtime.settings)


@router.post(
    "/refresh",
    summary="Exchange a refresh token (body, or the httpOnly cookie) for a new token pair",
    responses=documented(403),
)
async def refresh(
    request: Request,
    response: Response,
    session: DbSession,
    runtime: RuntimeDep,
    body: RefreshRequest | None = None,
) -> TokenPair:
    token = body.refresh_token if body else None
    cookie = token is None
    if token is None:
        require_same_origin(request)
        token = refresh_cookie(request)
        if token is None:
            raise Unauthorized("no refresh token: send refresh_token, or sign in again")
    try:
        pair = await auth_service.refresh(
            session,
            token,
            settings=runtime.settings,
            ip=client_ip(request),
        )
    except Unauthorized as refused:
        if cookie:
            refused.headers["set-cookie"] = cleared_cookie_header(request)
        raise
    return _deliver(pair, request, response, cookie=cookie, settings=runtime.settings)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End this session (and the refresh token's, body or cookie)",
    responses=documented(403),
)
async def logout(
    auth: Signed,
    request: Request,
    response: Response,
    session: DbSession,
    body: LogoutRequest | None = None,
) -> None:
    token = body.refresh_token if body else None
    if token is None and refresh_cookie(request) is not None:
        require_same_origin(request)
        token = refresh_cookie(request)
    await auth_service.logout(session, auth, refresh_token=token)
    clear_refresh_cookie(request, response)


@router.get("/me", summary="The caller: user or API key, tenant, role, memberships")
async def me(auth: Signed, session: DbSession) -> Me:
    return await auth_service.me(session, auth)
