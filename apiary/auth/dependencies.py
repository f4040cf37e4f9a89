"""FastAPI dependencies: the database session, the caller (`AuthContext`), and `authorize`.

Every endpoint takes `auth: Annotated[AuthContext, authorize(Permission.X)]`; a test walks
the routes and fails on any endpoint that does not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.auth.context import Actor, AuthContext
from apiary.auth.forwarded import client_ip
from apiary.auth.key_cache import VerifiedKey, changed_keys
from apiary.auth.repository import auth_repository
from apiary.auth.tokens import (
    SigningKeys,
    api_key_prefix,
    decode_access_token,
    digest,
    digests_match,
)
from apiary.authz.permissions import Permission, Role, allows
from apiary.db import session_scope, utcnow
from apiary.errors import Forbidden, Unauthorized
from apiary.observability import tracing
from apiary.observability.logging import request_context
from apiary.runtime import Runtime, RuntimeDep
from apiary.tenants.models import TenantStatus


async def _session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with session_scope(runtime.session_factory) as session:
        yield session
    if changed_keys(session):  # committed: keys it revoked stop here at once
        runtime.key_cache.invalidate()


# scope="function": the commit happens before the response is sent, so a failed commit is
# an error response rather than a success the database never saw.
DbSession = Annotated[AsyncSession, Depends(_session, scope="function")]


def bearer_credentials(authorization: str) -> str:
    """The credentials of an `Authorization: Bearer ...` header value."""
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthorized("send 'Authorization: Bearer <access token or API key>'")
    return credentials.strip()


async def _from_api_key(key: str, ip: str | None, runtime: Runtime) -> AuthContext:
    now = utcnow()
    key_digest = digest(key)
    verified = runtime.key_cache.get(key_digest)
    if verified is None:
        with tracing.span("apiary.authenticate", attributes={"apiary.auth.kind": "api_key"}):
            verified = await _verify_key(key, key_digest, runtime)
        runtime.key_cache.put(key_digest, verified)
    if verified.expires_at is not None and verified.expires_at <= now:
        raise Unauthorized("API key expired")
    runtime.key_usage.note(verified.key_id, now)
    return AuthContext(
        role=verified.role,
        tenant_id=verified.tenant_id,
        actor=Actor(api_key_id=verified.key_id, ip=ip),
    )


async def _verify_key(key: str, key_digest: str, runtime: Runtime) -> VerifiedKey:
    """The key's row, checked: a read of the database (the verified key is then cached)."""
    prefix = api_key_prefix(key)
    found = None
    if prefix:
        async with runtime.lookups() as session:
            found = await auth_repository.api_key_by_prefix(session, prefix)
    if found is None or not digests_match(found[0].key_hash, key_digest):
        raise Unauthorized("invalid API key")
    api_key, tenant = found
    if api_key.revoked_at is not None:
        raise Unauthorized("API key revoked")
    if tenant.status != TenantStatus.ACTIVE:
        raise Forbidden(f"tenant {tenant.name!r} is suspended")
    return VerifiedKey(
        key_id=api_key.id,
        tenant_id=tenant.id,
        role=Role(api_key.role),
        expires_at=api_key.expires_at,
    )


async def _from_access_token(
    session: AsyncSession, token: str, keys: SigningKeys, ip: str | None
) -> AuthContext:
    claims = decode_access_token(token, keys=keys)
    found = await auth_repository.access_check(
        session, session_id=claims.session_id, user_id=claims.user_id, tenant_id=claims.tenant_id
    )
    if found is None or found.session_revoked:
        raise Unauthorized("session ended: sign in again")
    if not found.user_active:
        raise Unauthorized("account disabled")
    actor = Actor(user_id=claims.user_id, ip=ip)
    role: Role | None = Role.SUPER_ADMIN if found.super_admin else None
    if found.role is not None and role is None:
        if found.tenant_status != TenantStatus.ACTIVE:
            raise Forbidden(f"tenant {found.tenant_name!r} is suspended")
        role = Role(found.role)
    if role is None and claims.tenant_id is None:
        role = Role.VIEWER  # signed in to no tenant: it holds only TENANTLESS (permissions.py)
    if role is None:
        raise Unauthorized("no longer a member of this tenant: sign in again")
    return AuthContext(
        role=role, tenant_id=claims.tenant_id, actor=actor, session_id=claims.session_id
    )


async def authenticate(credentials: str, ip: str | None, runtime: Runtime) -> AuthContext:
    """The caller behind an access token or API key: for the FastAPI dependency, the /v1 hot
    path and the WebSocket routes alike."""
    # Who is calling is read in a short session of its own, released before the endpoint
    # runs: a request never holds one pooled connection while waiting for another, and a
    # gateway call whose key is cached touches no connection at all.
    auth = await _identify(credentials, ip, runtime)
    if auth.tenant_id is not None and tracing.TRACER is not None and not tracing.dropped():
        tracing.current_span().set_attribute("apiary.tenant_id", str(auth.tenant_id))
    context = request_context.get()
    if context is not None and auth.tenant_id is not None:
        context.tenant_id = str(auth.tenant_id)
    return auth


async def _identify(credentials: str, ip: str | None, runtime: Runtime) -> AuthContext:
    if credentials.startswith("apy_"):
        return await _from_api_key(credentials, ip, runtime)
    with tracing.span("apiary.authenticate", attributes={"apiary.auth.kind": "access_token"}):
        async with runtime.lookups() as session:
            return await _from_access_token(session, credentials, runtime.settings.signing_keys, ip)


async def current_auth(request: Request, runtime: RuntimeDep) -> AuthContext:
    credentials = bearer_credentials(request.headers.get("authorization", ""))
    return await authenticate(credentials, client_ip(request), runtime)


def authorize(permission: Permission) -> DependsParam:
    """The dependency an endpoint declares: authenticated, and its role holds `permission`."""

    async def check(auth: Annotated[AuthContext, Depends(current_auth)]) -> AuthContext:
        if not auth.can(permission):
            if auth.via_key and allows(auth.role, permission):
                raise Forbidden(
                    f"API keys do not hold permission {permission.value!r} (what a key does "
                    "must not outlive it): sign in as a user"
                )
            if auth.tenant_id is None and allows(auth.role, permission):
                raise Forbidden(
                    "you are signed in to no tenant: accept an invitation "
                    "(GET /api/v1/invitations), then sign in to that tenant"
                )
            raise Forbidden(f"role {auth.role.value!r} lacks permission {permission.value!r}")
        return auth

    check.permission = permission  # type: ignore[attr-defined]  # read by the route walk test
    dependency: DependsParam = Depends(check)
    return dependency


def required_permission(dependency: Callable[..., Coroutine[Any, Any, Any]]) -> Permission | None:
    value = getattr(dependency, "permission", None)
    return value if isinstance(value, Permission) else None
