"""Members of a tenant: add (creating the user if new), change role, remove.

A tenant always keeps at least one tenant admin, and nobody grants a role above their own.
"""

from __future__ import annotations

import secrets
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from apiary.api_keys.service import api_key_service
from apiary.audit.service import audit_service
from apiary.auth.context import AuthContext
from apiary.auth.passwords import hash_password
from apiary.auth.repository import auth_repository
from apiary.authz.permissions import MEMBER_ROLES, Role
from apiary.authz.scope import TenantScope
from apiary.db import utcnow
from apiary.errors import Conflict, Forbidden
from apiary.kit.schemas import PageParams
from apiary.users.models import Membership, User
from apiary.users.repository import membership_repository, user_repository
from apiary.users.schemas import Member, MemberCreate, MemberCreated, MemberUpdate


def _member(membership: Membership, user: User) -> Member:
    return Member(
        id=membership.id,
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=Role(membership.role),
        created_at=membership.created_at,
    )


def _may_not(verb: str, auth: AuthContext, role: Role) -> str:
    if auth.via_key and role in MEMBER_ROLES:
        # Whoever a key makes or promotes outlives the key, so it may not carry its powers.
        return (
            f"an API key may not {verb} {role.value!r}: keys grant only roles below their own "
            f"({auth.role.value!r}); sign in as a user"
        )
    return f"role {auth.role.value!r} may not {verb} {role.value!r}"


class MemberService:
    async def list(
        self, session: AsyncSession, auth: AuthContext, page: PageParams
    ) -> tuple[list[Member], int]:
        rows, total = await membership_repository.page(session, auth.scope, page)
        return [_member(m, u) for m, u in rows], total

    async def get(
        self, session: AsyncSession, auth: AuthContext, membership_id: uuid.UUID
    ) -> Member:
        membership, user = await membership_repository.get(session, auth.scope, membership_id)
        return _member(membership, user)

    async def add(
        self, session: AsyncSession, auth: AuthContext, body: MemberCreate
    ) -> MemberCreated:
        return await self.add_to(session, auth.scope, body, auth=auth)

    async def add_to(
        self,
        session: AsyncSession,
        scope: TenantScope,
        body: MemberCreate,
        *,
        auth: AuthContext,
    ) -> MemberCreated:
        """Add `body.email` to the scope's tenant; used by tenant creation too."""
        if not auth.may_grant(body.role):
            raise Forbidden(_may_not("grant", auth, body.role))
        temporary_password: str | None = None
        user = await user_repository.by_email(session, body.email)
        if user is None:
            password = body.password
            if password is None:
                temporary_password = password = secrets.token_urlsafe(12)
            user = User(
                email=body.email.lower(),
                name=body.name,
                password_hash=await hash_password(password),
            )
            session.add(user)
            await session.flush()
        elif await membership_repository.of_user(session, scope, user.id) is not None:
            raise Conflict(f"{body.email} is already a member of this tenant")
        membership = scope.add(session, Membership(user_id=user.id, role=body.role))
        await session.flush()
        await audit_service.record(
            session,
            action="member.added",
            actor=auth.actor,
            tenant_id=scope.tenant_id,
            target_type="user",
            target_id=user.id,
            details={"email": user.email, "role": body.role.value},
        )
        return MemberCreated(
            **_member(membership, user).model_dump(), temporary_password=temporary_password
        )

    async def change_role(
        self, session: AsyncSession, auth: AuthContext, membership_id: uuid.UUID, body: MemberUpdate
    ) -> Member:
        membership, user = await membership_repository.get(session, auth.scope, membership_id)
        if not auth.may_grant(body.role):
            raise Forbidden(_may_not("grant", auth, body.role))
        old = Role(membership.role)
        if old == body.role:
            return _member(membership, user)
        if not auth.may_grant(old):
            raise Forbidden(_may_not("change a", auth, old))
        await membership_repository.lock_tenant(session, auth.scope)
        membership.role = body.role
        await session.flush()
        if old is Role.TENANT_ADMIN:
            await self._keep_an_admin(session, auth.scope)
        revoked = await api_key_service.revoke_created_by(
            session, auth, user_id=user.id, above=body.role, reason="creator's role lowered"
        )
        await audit_service.record(
            session,
            action="member.role_changed",
            actor=auth.actor,
            tenant_id=auth.tenant_id,
            target_type="user",
            target_id=user.id,
            details={
                "email": user.email,
                "from": old.value,
                "to": body.role.value,
                "keys_revoked": revoked,
            },
        )
        return _member(membership, user)

    async def remove(
        self, session: AsyncSession, auth: AuthContext, membership_id: uuid.UUID
    ) -> None:
        membership, user = await membership_repository.get(session, auth.scope, membership_id)
        if not auth.may_grant(Role(membership.role)):
            raise Forbidden(_may_not("remove a", auth, Role(membership.role)))
        await membership_repository.lock_tenant(session, auth.scope)
        await session.delete(membership)
        await session.flush()
        if Role(membership.role) is Role.TENANT_ADMIN:
            await self._keep_an_admin(session, auth.scope)
        revoked = await api_key_service.revoke_created_by(
            session, auth, user_id=user.id, reason="creator removed"
        )
        # Their sign-ins to this tenant end now, not when the access token expires.
        await auth_repository.revoke_sessions(
            session, reason="removed", now=utcnow(), user_id=user.id, tenant_id=auth.tenant_id
        )
        await audit_service.record(
            session,
            action="member.removed",
            actor=auth.actor,
            tenant_id=auth.tenant_id,
            target_type="user",
            target_id=user.id,
            details={"email": user.email, "role": membership.role, "keys_revoked": revoked},
        )

    async def _keep_an_admin(self, session: AsyncSession, scope: TenantScope) -> None:
        # Counted after the change, under the tenant lock: two admins demoting each other
        # at once cannot both succeed.
        if await membership_repository.count_admins(session, scope) < 1:
            raise Conflict("a tenant must keep at least one tenant_admin")


member_service = MemberService()
