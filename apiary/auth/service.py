"""Sign-in, token refresh and sign-out.

A sign-in opens an `AuthSession`; its refresh tokens rotate on every use. Presenting a
refresh token a second time means it was copied, so the whole session is revoked (OAuth 2.0
Security BCP, refresh token rotation). Failed sign-ins are counted per account and per IP;
past the limit the caller waits out the window with 429 and `Retry-After`.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.audit.service import audit_service
from apiary.auth.context import Actor, AuthContext
from apiary.auth.models import AuthSession, RefreshToken
from apiary.auth.oidc import OIDCIdentity
from apiary.auth.passwords import verify_password
from apiary.auth.repository import auth_repository
from apiary.auth.schemas import LoginRequest, Me, MembershipView, TokenPair
from apiary.auth.tokens import AccessClaims, digest, issue_access_token, new_refresh_token
from apiary.authz.permissions import Role
from apiary.authz.scope import TenantScope
from apiary.config import Settings
from apiary.db import session_scope, utcnow
from apiary.errors import Conflict, Forbidden, TooManyRequests, Unauthorized
from apiary.kv import CounterStore
from apiary.tenants.models import Tenant, TenantStatus
from apiary.users.models import Membership, User


class AuthService:
    async def login(
        self,
        session: AsyncSession,
        request: LoginRequest,
        *,
        settings: Settings,
        counters: CounterStore,
        factory: async_sessionmaker[AsyncSession],
        ip: str | None,
    ) -> TokenPair:
        email = request.email.lower()
        keys = [f"login-fail:account:{email}", f"login-fail:ip:{ip or '-'}"]
        for key in keys:
            failures, retry_after = await counters.get(key)
            if failures >= settings.login_max_failures:
                raise TooManyRequests(
                    "too many failed sign-ins; try again later", retry_after_s=retry_after
                )
        user = await auth_repository.user_by_email(session, email)
        valid = await verify_password(user.password_hash if user else None, request.password)
        if user is None or not valid or not user.is_active:
            for key in keys:
                await counters.incr(key, ttl_s=settings.login_failure_window_s)
            await audit_service.record_alone(
                factory,
                action="auth.login_failed",
                actor=Actor(user_id=user.id if user else None, ip=ip),
                tenant_id=None,
                details={"email": email, "method": "password"},
            )
            raise Unauthorized("invalid email or password")
        await counters.delete(keys[0])
        tenant, role = await self._choose_tenant(session, user, request.tenant)
        return await self._open_session(
            session, user, tenant, role, method="password", settings=settings, ip=ip
        )

    async def login_oidc(
        self,
        session: AsyncSession,
        identity: OIDCIdentity,
        *,
        settings: Settings,
        ip: str | None,
    ) -> TokenPair:
        assert settings.oidc is not None
        tenant = (
            await auth_repository.tenant_by_oidc_id(session, identity.tenant_ref)
            if identity.tenant_ref
            else None
        )
        if tenant is None:
            raise Forbidden("no Apiary tenant is linked to your identity provider's tenant")
        # The IdP's subject is unique only within its tenant, and its email claim is not
        # verified, so an account is bound to (tenant claim, subject), and an existing
        # account is linked by email only if it already belongs to this tenant.
        subject = f"{identity.tenant_ref}:{identity.subject}"
        user = await auth_repository.user_by_oidc_subject(session, subject)
        if user is None:
            user = await auth_repository.user_by_email(session, identity.email)
            if user is None:
                user = User(email=identity.email, name=identity.name, password_hash=None)
                session.add(user)
                await session.flush()
            elif (
                user.oidc_subject is not None
                or user.is_super_admin
                or await auth_repository.membership(session, user_id=user.id, tenant_id=tenant.id)
                is None
            ):
                raise Conflict(
                    f"an Apiary account for {identity.email} already exists; an admin of "
                    f"tenant {tenant.name!r} must add it before it can sign in with OIDC"
                )
            user.oidc_subject = subject
        if not user.is_active:
            raise Unauthorized("account disabled")
        found = await auth_repository.membership(session, user_id=user.id, tenant_id=tenant.id)
        if found is None:
            # The IdP's signed tenant claim chose this tenant, so it scopes the new membership.
            membership = TenantScope(tenant.id).add(
                session, Membership(user_id=user.id, role=settings.oidc.default_role)
            )
            await session.flush()
            role = Role(membership.role)
        else:
            role = Role(found[0].role)
        if tenant.status != TenantStatus.ACTIVE:
            raise Forbidden(f"tenant {tenant.name!r} is suspended")
        return await self._open_session(
            session, user, tenant, role, method="oidc", settings=settings, ip=ip
        )

    async def refresh(
        self,
        session: AsyncSession,
        refresh_token: str,
        *,
        settings: Settings,
        factory: async_sessionmaker[AsyncSession],
        ip: str | None,
    ) -> TokenPair:
        found = await auth_repository.refresh_token(session, digest(refresh_token))
        if found is None:
            raise Unauthorized("invalid refresh token")
        token, auth_session = found
        now = utcnow()
        if auth_session.revoked_at is not None:
            raise Unauthorized("session ended: sign in again")
        if token.used_at is not None:
            await self._revoke_replayed(factory, auth_session, ip=ip)
            raise Unauthorized("refresh token reused: the session has been revoked")
        if token.expires_at <= now:
            raise Unauthorized("refresh token expired: sign in again")
        user = await auth_repository.user_by_id(session, auth_session.user_id)
        if user is None or not user.is_active:
            raise Unauthorized("account disabled")
        role = Role.SUPER_ADMIN if user.is_super_admin else None
        if auth_session.tenant_id is not None:
            membership = await auth_repository.membership(
                session, user_id=user.id, tenant_id=auth_session.tenant_id
            )
            if membership is not None:
                role = role or Role(membership[0].role)
        if role is None:
            raise Unauthorized("no longer a member of this tenant: sign in again")
        token.used_at = now
        return await self._issue(session, auth_session, role, settings=settings)

    async def logout(
        self, session: AsyncSession, auth: AuthContext, *, refresh_token: str | None
    ) -> None:
        now = utcnow()
        session_ids: set[uuid.UUID] = set()
        if auth.session_id is not None:
            session_ids.add(auth.session_id)
        if refresh_token:
            found = await auth_repository.refresh_token(session, digest(refresh_token))
            if found is not None and found[1].user_id == auth.user_id:
                session_ids.add(found[1].id)
        for session_id in session_ids:
            await auth_repository.revoke_sessions(
                session, reason="logout", now=now, session_id=session_id
            )
        await audit_service.record(
            session, action="auth.logout", actor=auth.actor, tenant_id=auth.tenant_id
        )

    async def me(self, session: AsyncSession, auth: AuthContext) -> Me:
        user = await auth_repository.user_by_id(session, auth.user_id) if auth.user_id else None
        memberships = await auth_repository.memberships_of(session, user.id) if user else []
        return Me(
            user_id=auth.user_id,
            api_key_id=auth.actor.api_key_id,
            email=user.email if user else None,
            name=user.name if user else None,
            tenant_id=auth.tenant_id,
            role=auth.role,
            is_super_admin=auth.is_super_admin,
            memberships=[
                MembershipView(tenant_id=t.id, tenant_name=t.name, role=Role(m.role))
                for m, t in memberships
            ],
        )

    async def _choose_tenant(
        self, session: AsyncSession, user: User, requested: str | None
    ) -> tuple[Tenant | None, Role]:
        memberships = await auth_repository.memberships_of(session, user.id)
        if requested is not None:
            tenant = await auth_repository.tenant_by_ref(session, requested)
            match = [(m, t) for m, t in memberships if tenant is not None and t.id == tenant.id]
            if match:
                return match[0][1], Role.SUPER_ADMIN if user.is_super_admin else Role(
                    match[0][0].role
                )
            if user.is_super_admin and tenant is not None:
                return tenant, Role.SUPER_ADMIN
            raise Forbidden(f"you are not a member of tenant {requested!r}")
        active = [(m, t) for m, t in memberships if t.status == TenantStatus.ACTIVE]
        if user.is_super_admin:
            return (active[0][1] if active else None), Role.SUPER_ADMIN
        if active:
            return active[0][1], Role(active[0][0].role)
        if memberships:
            raise Forbidden("every tenant you belong to is suspended")
        raise Forbidden("you are not a member of any tenant")

    async def _open_session(
        self,
        session: AsyncSession,
        user: User,
        tenant: Tenant | None,
        role: Role,
        *,
        method: str,
        settings: Settings,
        ip: str | None,
    ) -> TokenPair:
        if tenant is not None and tenant.status != TenantStatus.ACTIVE and not user.is_super_admin:
            raise Forbidden(f"tenant {tenant.name!r} is suspended")
        auth_session = AuthSession(
            user_id=user.id, tenant_id=tenant.id if tenant else None, method=method
        )
        session.add(auth_session)
        await session.flush()
        await audit_service.record(
            session,
            action="auth.login",
            actor=Actor(user_id=user.id, ip=ip),
            tenant_id=tenant.id if tenant else None,
            details={"method": method},
        )
        return await self._issue(session, auth_session, role, settings=settings)

    async def _issue(
        self, session: AsyncSession, auth_session: AuthSession, role: Role, *, settings: Settings
    ) -> TokenPair:
        now = utcnow()
        refresh = new_refresh_token()
        session.add(
            RefreshToken(
                session_id=auth_session.id,
                token_hash=digest(refresh),
                expires_at=now + timedelta(seconds=settings.refresh_token_ttl_s),
            )
        )
        await session.flush()
        access = issue_access_token(
            AccessClaims(
                user_id=auth_session.user_id,
                session_id=auth_session.id,
                tenant_id=auth_session.tenant_id,
            ),
            signing_key=settings.signing_key,
            ttl_s=settings.access_token_ttl_s,
            now=now,
        )
        return TokenPair(
            access_token=access,
            refresh_token=refresh,
            expires_in=settings.access_token_ttl_s,
            tenant_id=auth_session.tenant_id,
            role=role,
        )

    async def _revoke_replayed(
        self,
        factory: async_sessionmaker[AsyncSession],
        auth_session: AuthSession,
        *,
        ip: str | None,
    ) -> None:
        # In a transaction of its own: the request fails with 401, the revocation must stay.
        async with session_scope(factory) as session:
            await auth_repository.revoke_sessions(
                session, reason="refresh_reuse", now=utcnow(), session_id=auth_session.id
            )
            await audit_service.record(
                session,
                action="auth.refresh_reused",
                actor=Actor(user_id=auth_session.user_id, ip=ip),
                tenant_id=auth_session.tenant_id,
                details={"session_id": str(auth_session.id)},
            )


auth_service = AuthService()
