"""Sign-in, token refresh and sign-out.

A sign-in opens an `AuthSession`; its refresh tokens rotate on every use. Presenting a
refresh token a second time means it was copied, so the whole session is revoked (OAuth 2.0
Security BCP, refresh token rotation). Failed sign-ins are throttled per (account, client
address) with backoff (apiary/auth/throttle.py): 429 and `Retry-After` for that address only.

An OIDC sign-in applies the identity provider's word on roles when a role map is configured
(`OIDCSettings.role_map`, `tenant_role_maps`): the groups or app roles in the ID token choose
the member's role at every sign-in, so someone removed from a group loses its role the next
time they sign in.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from apiary.api_keys.service import api_key_service
from apiary.audit.service import audit_service
from apiary.auth.context import Actor, AuthContext
from apiary.auth.models import AuthSession, RefreshToken
from apiary.auth.oidc import OIDCIdentity, OIDCVerifier
from apiary.auth.passwords import verify_password
from apiary.auth.repository import auth_repository
from apiary.auth.schemas import LoginRequest, Me, MembershipView, OIDCCodeRequest, TokenPair
from apiary.auth.throttle import LoginThrottle
from apiary.auth.tokens import AccessClaims, digest, issue_access_token, new_refresh_token
from apiary.authz.permissions import RANK, Role
from apiary.authz.scope import TenantScope
from apiary.billing.entitlements import Feature, check_seat, require_feature
from apiary.config import OIDCSettings, Settings
from apiary.db import utcnow
from apiary.errors import Conflict, Forbidden, Unauthorized
from apiary.kv import CounterStore
from apiary.tenants.models import Tenant, TenantStatus
from apiary.tenants.repository import tenant_repository
from apiary.users.models import Membership, User
from apiary.users.repository import invitation_repository, user_repository


class AuthService:
    async def login(
        self,
        session: AsyncSession,
        request: LoginRequest,
        *,
        settings: Settings,
        counters: CounterStore,
        ip: str | None,
    ) -> TokenPair:
        email = request.email.lower()
        throttle = LoginThrottle(counters, settings)
        await _admit_sign_in(session, throttle, email, ip, {"email": email})
        user = await user_repository.by_email(session, email)
        valid = await verify_password(user.password_hash if user else None, request.password)
        if user is None or not valid or not user.is_active:
            await throttle.failed(email, ip)
            await self._record_failure(session, user, email=email, ip=ip, requested=request.tenant)
            raise Unauthorized("invalid email or password", keep_changes=True)
        await throttle.succeeded(email, ip)
        tenant, role = await self._choose_tenant(session, user, request.tenant)
        return await self._open_session(
            session, user, tenant, role, method="password", settings=settings, ip=ip
        )

    async def _record_failure(
        self,
        session: AsyncSession,
        user: User | None,
        *,
        email: str,
        ip: str | None,
        requested: str | None,
    ) -> None:
        """One entry, in the one tenant the sign-in was aimed at, so its admins see attacks
        on their member: the tenant asked for, if the account belongs to it, else the one it
        would have landed in. Never in every tenant the account belongs to, and never in a
        tenant for the super admin or an unknown email (those are platform entries)."""
        tenant_id: uuid.UUID | None = None
        if user is not None and not user.is_super_admin:
            memberships = await auth_repository.memberships_of(session, user.id)
            aimed = [t for _, t in memberships if requested in (str(t.id), t.name)]
            active = [t for _, t in memberships if t.status == TenantStatus.ACTIVE]
            landing = aimed or active or [t for _, t in memberships]
            tenant_id = landing[0].id if landing else None
        await audit_service.record(
            session,
            action="auth.login_failed",
            actor=Actor(user_id=user.id if user else None, ip=ip),
            tenant_id=tenant_id,
            # An account is named by its id (the actor), never its address, so erasing the
            # person (apiary/privacy) leaves nothing of it in the append-only log; only an
            # address that is no account's is kept, to show what was tried.
            details={"method": "password"} if user else {"email": email, "method": "password"},
        )

    async def login_oidc_code(
        self,
        session: AsyncSession,
        request: OIDCCodeRequest,
        *,
        verifier: OIDCVerifier,
        settings: Settings,
        counters: CounterStore,
        ip: str | None,
    ) -> TokenPair:
        """The authorization code flow: redeem the code with its PKCE verifier at the
        issuer, then sign in with the ID token it gives, which must carry the nonce."""
        throttle = LoginThrottle(counters, settings)
        # Whose code it is is unknown until it is redeemed: refusals count per address.
        account = "oidc:-"
        await _admit_sign_in(session, throttle, account, ip, {"account": account, "method": "oidc"})
        try:
            id_token = await verifier.redeem_code(
                request.code, code_verifier=request.code_verifier, redirect_uri=request.redirect_uri
            )
        except Unauthorized as refused:
            await throttle.failed(account, ip)
            await audit_service.record(
                session,
                action="auth.oidc_failed",
                actor=Actor(ip=ip),
                tenant_id=None,
                details={"reason": refused.detail[:200]},
            )
            refused.keep_changes = True
            raise
        return await self.login_oidc(
            session,
            id_token,
            nonce=request.nonce,
            verifier=verifier,
            settings=settings,
            counters=counters,
            ip=ip,
        )

    async def login_oidc(
        self,
        session: AsyncSession,
        id_token: str,
        *,
        nonce: str | None = None,
        verifier: OIDCVerifier,
        settings: Settings,
        counters: CounterStore,
        ip: str | None,
    ) -> TokenPair:
        """Sign in with an ID token; every refusal is audited and throttled like a wrong
        password: per (account the token claims, client address), see `LoginThrottle`, so one
        address's failures (a NAT, an office) lock no one else out."""
        account = verifier.claimed_account(id_token)
        throttle = LoginThrottle(counters, settings)
        await _admit_sign_in(
            session, throttle, account, ip, {"account": account[:200], "method": "oidc"}
        )
        try:
            identity = await verifier.verify(id_token, nonce=nonce)
            tokens = await self._login_identity(session, identity, settings=settings, ip=ip)
        except (Unauthorized, Forbidden, Conflict) as refused:
            await session.rollback()  # nothing half-provisioned stays; the audit entry does
            await throttle.failed(account, ip)
            await audit_service.record(
                session,
                action="auth.oidc_failed",
                actor=Actor(ip=ip),
                tenant_id=None,
                details={"reason": refused.detail[:200]},
            )
            refused.keep_changes = True
            raise
        await throttle.succeeded(account, ip)
        return tokens

    async def _login_identity(
        self,
        session: AsyncSession,
        identity: OIDCIdentity,
        *,
        settings: Settings,
        ip: str | None,
    ) -> TokenPair:
        assert settings.oidc is not None
        tenant = (
            await tenant_repository.by_oidc_id(session, identity.tenant_ref)
            if identity.tenant_ref
            else None
        )
        if tenant is None:
            raise Forbidden("no Apiary tenant is linked to your identity provider's tenant")
        await require_feature(session, TenantScope(tenant.id), Feature.OIDC)
        # The IdP's subject is unique only within its tenant, and its email claim is not
        # verified, so an account is bound to (tenant claim, subject). An existing account
        # is linked by email only if it belongs to this tenant and to no other: a tenant
        # admin can add anyone's email to their tenant, and must not gain their account.
        subject = f"{identity.tenant_ref}:{identity.subject}"
        user = await auth_repository.user_by_oidc_subject(session, subject)
        if user is None:
            user = await user_repository.by_email(session, identity.email)
            if user is None:
                user = User(email=identity.email, name=identity.name, password_hash=None)
                session.add(user)
                await session.flush()
            elif (
                user.oidc_subject is not None
                or user.is_super_admin
                or {t.id for _, t in await auth_repository.memberships_of(session, user.id)}
                != {tenant.id}
            ):
                raise Conflict(
                    f"an Apiary account for {identity.email} already exists; an admin of "
                    f"tenant {tenant.name!r} must add it before it can sign in with OIDC"
                )
            user.oidc_subject = subject
        if not user.is_active:
            raise Unauthorized("account disabled")
        mapped = _mapped_role(identity, settings.oidc)
        found = await auth_repository.membership(session, user_id=user.id, tenant_id=tenant.id)
        if found is None:
            await check_seat(session, TenantScope(tenant.id))
            # The IdP's signed tenant claim chose this tenant, so it scopes the new membership.
            membership = TenantScope(tenant.id).add(
                session, Membership(user_id=user.id, role=mapped or settings.oidc.default_role)
            )
            await session.flush()
            role = Role(membership.role)
        else:
            role = Role(found[0].role)
            if mapped is not None and mapped is not role:
                await self._apply_mapped_role(
                    session, found[0], user, tenant, old=role, new=mapped, ip=ip
                )
                role = mapped
        if tenant.status != TenantStatus.ACTIVE:
            raise Forbidden(f"tenant {tenant.name!r} is suspended")
        return await self._open_session(
            session, user, tenant, role, method="oidc", settings=settings, ip=ip
        )

    async def _apply_mapped_role(
        self,
        session: AsyncSession,
        membership: Membership,
        user: User,
        tenant: Tenant,
        *,
        old: Role,
        new: Role,
        ip: str | None,
    ) -> None:
        """The identity provider moved this member to another role: the membership follows,
        and keys they created that the new role could not grant stop, as when an admin
        changes the role. The IdP is the source of truth here, so even a tenant's last
        admin is demoted (the super admin can always restore one)."""
        membership.role = new
        await session.flush()
        # The member acting on their own behalf, in this tenant: the audit entries say so.
        acting = AuthContext(role=new, tenant_id=tenant.id, actor=Actor(user_id=user.id, ip=ip))
        revoked = await api_key_service.revoke_created_by(
            session, acting, user_id=user.id, above=new, reason="creator's role lowered"
        )
        await audit_service.record(
            session,
            action="member.role_changed",
            actor=acting.actor,
            tenant_id=tenant.id,
            target_type="user",
            target_id=user.id,
            details={
                "email": user.email,
                "from": old.value,
                "to": new.value,
                "keys_revoked": revoked,
                "source": "oidc",
            },
        )

    async def refresh(
        self,
        session: AsyncSession,
        refresh_token: str,
        *,
        settings: Settings,
        ip: str | None,
    ) -> TokenPair:
        found = await auth_repository.refresh_token(session, digest(refresh_token))
        if found is None:
            raise Unauthorized("invalid refresh token")
        token, auth_session = found
        now = utcnow()
        if auth_session.revoked_at is not None:
            raise Unauthorized("session ended: sign in again")
        if token.expires_at <= now:
            raise Unauthorized("refresh token expired: sign in again")
        # Marking it used is the check: of two concurrent refreshes, only one updates a row.
        if not await auth_repository.mark_refresh_used(session, token.id, now):
            await self._revoke_replayed(session, auth_session, ip=ip)
            raise Unauthorized(
                "refresh token reused: the session has been revoked", keep_changes=True
            )
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
        if role is None and auth_session.tenant_id is None:
            role = Role.VIEWER  # signed in to no tenant: only TENANTLESS (permissions.py)
        if role is None:
            raise Unauthorized("no longer a member of this tenant: sign in again")
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
            permissions=sorted(auth.permissions),
            # The server's own rule, so a UI never restates it: highest rank first.
            grantable_roles=sorted(
                (role for role in Role if auth.may_grant(role)), key=lambda role: -RANK[role]
            ),
        )

    async def _choose_tenant(
        self, session: AsyncSession, user: User, requested: str | None
    ) -> tuple[Tenant | None, Role]:
        memberships = await auth_repository.memberships_of(session, user.id)
        if requested is not None:
            tenant = await tenant_repository.by_ref(session, requested)
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
        if await invitation_repository.received(session, user.id, now=utcnow()):
            # Nowhere to work yet, but invitations to answer: a sign-in to no tenant, which
            # may only see and answer them (TENANTLESS in the permission matrix).
            return None, Role.VIEWER
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
            keys=settings.signing_keys,
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
        self, session: AsyncSession, auth_session: AuthSession, *, ip: str | None
    ) -> None:
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


def _mapped_role(identity: OIDCIdentity, oidc: OIDCSettings) -> Role | None:
    """The role the IdP's group or app role claims give, when a role map is in force for the
    identity's IdP tenant; None when none is (the membership's own role stands)."""
    role_map = oidc.role_map_for(identity.tenant_ref)
    if not role_map:
        return None
    matched = [Role(role_map[value]) for value in identity.role_claim_values if value in role_map]
    if matched:
        return max(matched, key=lambda role: RANK[role])
    if identity.groups_overage:
        raise Forbidden(
            "your identity provider left your groups out of the ID token (too many to list): "
            "ask its admin to emit only the groups assigned to Apiary's app, or to use app roles"
        )
    if oidc.require_mapped_role:
        raise Forbidden(
            "none of your groups or app roles at the identity provider gives a role in Apiary: "
            "ask an admin to add you to one"
        )
    return Role(oidc.default_role)


async def _admit_sign_in(
    session: AsyncSession,
    throttle: LoginThrottle,
    account: str,
    ip: str | None,
    details: dict[str, str],
) -> None:
    """Refuse a sign-in the throttle holds back (password or OIDC alike), auditing the
    first refusal of a lockout."""
    refusal = await throttle.admit(account, ip)
    if refusal is None:
        return
    if refusal.first:
        await audit_service.record(
            session,
            action="auth.login_throttled",
            actor=Actor(ip=ip),
            tenant_id=None,
            details={**details, "reason": refusal.reason},
        )
    raise refusal.error()
