"""Queries for users and memberships; memberships only through the tenant scope."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.authz.permissions import Role
from apiary.authz.scope import TenantScope
from apiary.kit.schemas import PageParams
from apiary.tenants.models import Tenant
from apiary.users.models import Membership, User


class UserRepository:
    async def by_email(self, session: AsyncSession, email: str) -> User | None:
        return await session.scalar(select(User).where(User.email == email.lower()))

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


user_repository = UserRepository()
membership_repository = MembershipRepository()
