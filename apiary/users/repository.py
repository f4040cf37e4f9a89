"""Queries for users and memberships; memberships only through the tenant scope."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from apiary.authz.permissions import Role
from apiary.authz.scope import TenantScope
from apiary.kit.schemas import PageParams
from apiary.tenants.models import Tenant
from apiary.users.models import Invitation, Membership, User


class UserRepository:
    async def by_email(self, session: AsyncSession, email: str) -> User | None:
        return await session.scalar(select(User).where(User.email == email.lower()))

    async def by_id(self, session: AsyncSession, user_id: uuid.UUID) -> User | None:
        return await session.get(User, user_id)

    async def any_super_admin(self, session: AsyncSession) -> bool:
        found = await session.scalar(select(User.id).where(User.is_super_admin).limit(1))
        return found is not None


class MembershipRepository:
    async def page(
        self, session: AsyncSession, scope: TenantScope, page: PageParams
    ) -> tuple[Sequence[tuple[Membership, User]], int]:
        statement = scope.select(Membership).join(User, User.id == Membership.user_id)
        total = await session.scalar(
            select(func.count()).select_from(statement.order_by(None).subquery())
        )
        rows = await session.execute(
            statement.add_columns(User)
            .order_by(Membership.created_at, Membership.id)
            .limit(page.limit)
            .offset(page.offset)
        )
        return [(m, u) for m, u in rows], int(total or 0)

    async def get(
        self, session: AsyncSession, scope: TenantScope, membership_id: uuid.UUID
    ) -> tuple[Membership, User]:
        membership = await scope.get(session, Membership, membership_id)
        user = await session.get(User, membership.user_id)
        assert user is not None  # the foreign key guarantees it
        return membership, user

    async def of_user(
        self, session: AsyncSession, scope: TenantScope, user_id: uuid.UUID
    ) -> Membership | None:
        return await session.scalar(scope.select(Membership).where(Membership.user_id == user_id))

    async def lock_tenant(self, session: AsyncSession, scope: TenantScope) -> None:
        """Serialize membership changes in one tenant until the transaction ends (PostgreSQL
        row lock; SQLite serializes writers anyway)."""
        await session.execute(
            select(Tenant.id).where(Tenant.id == scope.tenant_id).with_for_update()
        )

    async def count_admins(self, session: AsyncSession, scope: TenantScope) -> int:
        statement = scope.select(Membership).where(Membership.role == Role.TENANT_ADMIN)
        count = await session.scalar(select(func.count()).select_from(statement.subquery()))
        return int(count or 0)


class InvitationRepository:
    async def page(
        self, session: AsyncSession, scope: TenantScope, page: PageParams, *, now: datetime
    ) -> tuple[Sequence[tuple[Invitation, User]], int]:
        statement = (
            scope.select(Invitation)
            .join(User, User.id == Invitation.user_id)
            .where(Invitation.expires_at > now)
        )
        total = await session.scalar(
            select(func.count()).select_from(statement.order_by(None).subquery())
        )
        rows = await session.execute(
            statement.add_columns(User)
            .order_by(Invitation.created_at, Invitation.id)
            .limit(page.limit)
            .offset(page.offset)
        )
        return [(i, u) for i, u in rows], int(total or 0)

    async def get(
        self, session: AsyncSession, scope: TenantScope, invitation_id: uuid.UUID
    ) -> tuple[Invitation, User]:
        invitation = await scope.get(session, Invitation, invitation_id)
        user = await session.get(User, invitation.user_id)
        assert user is not None  # the foreign key guarantees it
        return invitation, user

    async def of_user(
        self, session: AsyncSession, scope: TenantScope, user_id: uuid.UUID
    ) -> Invitation | None:
        return await session.scalar(scope.select(Invitation).where(Invitation.user_id == user_id))

    async def received(
        self,
        session: AsyncSession,
        user_id: uuid.UUID,
        *,
        now: datetime,
        invitation_id: uuid.UUID | None = None,
    ) -> list[tuple[Invitation, Tenant, User | None]]:
        """The signed-in account's own pending invitations, in every tenant: keyed by the
        caller's user id (never by a tenant from the request), like its memberships."""
        inviter = aliased(User)
        statement = (
            select(Invitation, Tenant, inviter)
            .join(Tenant, Tenant.id == Invitation.tenant_id)
            .outerjoin(inviter, inviter.id == Invitation.invited_by)
            .where(Invitation.user_id == user_id, Invitation.expires_at > now)
            .order_by(Invitation.created_at, Invitation.id)
        )
        if invitation_id is not None:
            statement = statement.where(Invitation.id == invitation_id)
        return [(i, t, u) for i, t, u in await session.execute(statement)]


user_repository = UserRepository()
invitation_repository = InvitationRepository()
membership_repository = MembershipRepository()
