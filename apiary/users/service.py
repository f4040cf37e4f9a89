"""Members of a tenant: add (creating the user if new), invite, change role, remove.

A tenant always keeps at least one tenant admin, and nobody grants a role above their own (an
API key: only below its own). A person new to Apiary is created directly as a member; an
account that already exists joins a tenant only by accepting an invitation, signed in as
itself, since membership lets a tenant see its sign-ins and end its sessions. The platform's
super admin is never a member of any tenant.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from apiary.api_keys.service import api_key_service
from apiary.audit.service import audit_service
from apiary.auth.context import AuthContext
from apiary.auth.passwords import hash_password
from apiary.auth.repository import auth_repository
from apiary.authz.permissions import MEMBER_ROLES, Role
from apiary.authz.scope import TenantScope
from apiary.billing.entitlements import check_seat
from apiary.db import utcnow
from apiary.errors import Conflict, Forbidden, NotFound
from apiary.kit.schemas import PageParams
from apiary.tenants.models import Tenant
from apiary.users.models import Invitation, Membership, User
from apiary.users.repository import (
    invitation_repository,
    membership_repository,
    user_repository,
)
from apiary.users.schemas import Invitation as InvitationView
from apiary.users.schemas import (
    InvitationCreate,
    InvitationReceived,
    Joined,
    Member,
    MemberCreate,
    MemberCreated,
    MemberUpdate,
)


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
        else:
            _enrollable(user)
            if await membership_repository.of_user(session, scope, user.id) is not None:
                raise Conflict(f"{body.email} is already a member of this tenant")
            if not auth.is_super_admin:
                # Joining lets the tenant see the account's sign-ins and end its sessions:
                # its owner decides (the platform's own tenant set-up excepted).
                raise Conflict(
                    f"an account for {user.email} already exists: invite it with POST "
                    "/api/v1/members/invitations; it joins when it accepts"
                )
        await check_seat(session, scope)
        membership = scope.add(session, Membership(user_id=user.id, role=body.role))
        await session.flush()
        await audit_service.record(
            session,
            action="member.added",
            actor=auth.actor,
            tenant_id=scope.tenant_id,
            target_type="user",
            target_id=user.id,
            details={"role": body.role.value},
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
            details={"role": membership.role, "keys_revoked": revoked},
        )

    async def _keep_an_admin(self, session: AsyncSession, scope: TenantScope) -> None:
        # Counted after the change, under the tenant lock: two admins demoting each other
        # at once cannot both succeed.
        if await membership_repository.count_admins(session, scope) < 1:
            raise Conflict("a tenant must keep at least one tenant_admin")


def _enrollable(user: User) -> None:
    if user.is_super_admin:
        raise Forbidden(
            f"{user.email} is the platform's super admin account: it cannot be a member "
            "of a tenant, nor be invited to one"
        )


INVITATION_TTL = timedelta(days=7)


def _invitation(invitation: Invitation, user: User) -> InvitationView:
    return InvitationView(
        id=invitation.id,
        user_id=user.id,
        email=user.email,
        role=Role(invitation.role),
        invited_by=invitation.invited_by,
        created_at=invitation.created_at,
        expires_at=invitation.expires_at,
    )


def _received(invitation: Invitation, tenant: Tenant, inviter: User | None) -> InvitationReceived:
    return InvitationReceived(
        id=invitation.id,
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        role=Role(invitation.role),
        invited_by_email=inviter.email if inviter else None,
        created_at=invitation.created_at,
        expires_at=invitation.expires_at,
    )


class InvitationService:
    """Invitations: the tenant's side (invite, list, cancel) and the invitee's (list,
    accept, decline). An invitation names an existing account; nothing of the account
    reaches the tenant until it accepts."""

    async def invite(
        self, session: AsyncSession, auth: AuthContext, body: InvitationCreate
    ) -> InvitationView:
        scope = auth.scope
        if not auth.may_grant(body.role):
            raise Forbidden(_may_not("grant", auth, body.role))
        user = await user_repository.by_email(session, body.email)
        if user is None:
            raise NotFound(
                f"no account for {body.email}: add a new person with POST /api/v1/members"
            )
        _enrollable(user)
        if await membership_repository.of_user(session, scope, user.id) is not None:
            raise Conflict(f"{body.email} is already a member of this tenant")
        now = utcnow()
        invitation = await invitation_repository.of_user(session, scope, user.id)
        if invitation is None:
            invitation = scope.add(session, Invitation(user_id=user.id, role=body.role))
        # Inviting again renews the invitation, with the role asked for now.
        invitation.role = body.role
        invitation.invited_by = auth.user_id
        invitation.created_at = now
        invitation.expires_at = now + INVITATION_TTL
        await session.flush()
        await audit_service.record(
            session,
            action="member.invited",
            actor=auth.actor,
            tenant_id=scope.tenant_id,
            target_type="user",
            target_id=user.id,
            details={"role": body.role.value},
        )
        return _invitation(invitation, user)

    async def pending(
        self, session: AsyncSession, auth: AuthContext, page: PageParams
    ) -> tuple[list[InvitationView], int]:
        rows, total = await invitation_repository.page(session, auth.scope, page, now=utcnow())
        return [_invitation(i, u) for i, u in rows], total

    async def cancel(
        self, session: AsyncSession, auth: AuthContext, invitation_id: uuid.UUID
    ) -> None:
        invitation, user = await invitation_repository.get(session, auth.scope, invitation_id)
        if not auth.may_grant(Role(invitation.role)):
            raise Forbidden(_may_not("cancel an invitation as", auth, Role(invitation.role)))
        await session.delete(invitation)
        await session.flush()
        await audit_service.record(
            session,
            action="member.invitation_cancelled",
            actor=auth.actor,
            tenant_id=auth.tenant_id,
            target_type="user",
            target_id=user.id,
            details={"role": invitation.role},
        )

    async def received(self, session: AsyncSession, auth: AuthContext) -> list[InvitationReceived]:
        user_id = _person(auth)
        rows = await invitation_repository.received(session, user_id, now=utcnow())
        return [_received(*row) for row in rows]

    async def accept(
        self, session: AsyncSession, auth: AuthContext, invitation_id: uuid.UUID
    ) -> Joined:
        invitation, tenant, user = await self._own(session, auth, invitation_id)
        _enrollable(user)
        scope = TenantScope(tenant.id)  # the invitation's tenant, found by the invitee's id
        await membership_repository.lock_tenant(session, scope)
        await session.delete(invitation)
        membership = await membership_repository.of_user(session, scope, user.id)
        if membership is None:
            await check_seat(session, scope)
            membership = scope.add(session, Membership(user_id=user.id, role=invitation.role))
        await session.flush()
        await audit_service.record(
            session,
            action="member.joined",
            actor=auth.actor,
            tenant_id=tenant.id,
            target_type="user",
            target_id=user.id,
            details={"role": membership.role},
        )
        return Joined(
            membership_id=membership.id,
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            role=Role(membership.role),
        )

    async def decline(
        self, session: AsyncSession, auth: AuthContext, invitation_id: uuid.UUID
    ) -> None:
        invitation, tenant, user = await self._own(session, auth, invitation_id)
        await session.delete(invitation)
        await session.flush()
        await audit_service.record(
            session,
            action="member.invitation_declined",
            actor=auth.actor,
            tenant_id=tenant.id,
            target_type="user",
            target_id=user.id,
            details={"role": invitation.role},
        )

    async def _own(
        self, session: AsyncSession, auth: AuthContext, invitation_id: uuid.UUID
    ) -> tuple[Invitation, Tenant, User]:
        user_id = _person(auth)
        found = await invitation_repository.received(
            session, user_id, now=utcnow(), invitation_id=invitation_id
        )
        user = await user_repository.by_id(session, user_id)
        if not found or user is None:
            # Someone else's invitation is as absent as one that never was.
            raise NotFound(f"invitation {invitation_id} not found")
        return found[0][0], found[0][1], user


def _person(auth: AuthContext) -> uuid.UUID:
    if auth.user_id is None:
        raise Forbidden("only the invited account, signed in as itself, answers an invitation")
    return auth.user_id


member_service = MemberService()
invitation_service = InvitationService()
