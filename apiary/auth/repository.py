"""Queries for authentication. The lookups here run before a tenant is known (who is this
caller?), so they are the one place that reads users, sessions and API keys across tenants."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, null, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.api_keys.models import ApiKey
from apiary.auth.models import AuthSession, RefreshToken
from apiary.tenants.models import Tenant
from apiary.users.models import Membership, User


@dataclass(frozen=True, slots=True)
class AccessCheck:
    """What an access token's request needs to know of its sign-in session, its account
    and, when it names a tenant, the membership there (None when there is none)."""

    session_revoked: bool
    user_active: bool
    super_admin: bool
    role: str | None
    tenant_name: str | None
    tenant_status: str | None


class AuthRepository:
    async def user_by_id(self, session: AsyncSession, user_id: uuid.UUID) -> User | None:
        return await session.get(User, user_id)

    async def user_by_oidc_subject(self, session: AsyncSession, subject: str) -> User | None:
        return await session.scalar(select(User).where(User.oidc_subject == subject))

    async def membership(
        self, session: AsyncSession, *, user_id: uuid.UUID, tenant_id: uuid.UUID
    ) -> tuple[Membership, Tenant] | None:
        row = (
            await session.execute(
                select(Membership, Tenant)
                .join(Tenant, Tenant.id == Membership.tenant_id)
                .where(Membership.user_id == user_id, Membership.tenant_id == tenant_id)
            )
        ).first()
        return (row[0], row[1]) if row else None

    async def memberships_of(
        self, session: AsyncSession, user_id: uuid.UUID
    ) -> list[tuple[Membership, Tenant]]:
        rows = await session.execute(
            select(Membership, Tenant)
            .join(Tenant, Tenant.id == Membership.tenant_id)
            .where(Membership.user_id == user_id)
            .order_by(Membership.created_at, Tenant.name)
        )
        return [(m, t) for m, t in rows]

    async def access_check(
        self,
        session: AsyncSession,
        *,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
    ) -> AccessCheck | None:
        """The sign-in session, its account and its membership in `tenant_id`, in one
        round trip: every request with an access token asks, so it is one query, not three.
        None when the session does not exist or belongs to another account."""
        query = (
            select(AuthSession.revoked_at, User.is_active, User.is_super_admin)
            .join(User, User.id == AuthSession.user_id)
            .where(AuthSession.id == session_id, User.id == user_id)
        )
        if tenant_id is None:
            query = query.add_columns(null(), null(), null())  # no tenant, so no membership
        else:
            query = (
                query.add_columns(Membership.role, Tenant.name, Tenant.status)
                .outerjoin(
                    Membership,
                    and_(Membership.user_id == User.id, Membership.tenant_id == tenant_id),
                )
                .outerjoin(Tenant, Tenant.id == Membership.tenant_id)
            )
        row = (await session.execute(query)).first()
        if row is None:
            return None
        # Typed as the first select's three columns; add_columns made it six.
        values: tuple[Any, ...] = tuple(row)
        revoked_at, active, super_admin, role, tenant_name, tenant_status = values
        return AccessCheck(
            session_revoked=revoked_at is not None,
            user_active=active,
            super_admin=super_admin,
            role=role,
            tenant_name=tenant_name,
            tenant_status=tenant_status,
        )

    async def refresh_token(
        self, session: AsyncSession, token_hash: str
    ) -> tuple[RefreshToken, AuthSession] | None:
        row = (
            await session.execute(
                select(RefreshToken, AuthSession)
                .join(AuthSession, AuthSession.id == RefreshToken.session_id)
                .where(RefreshToken.token_hash == token_hash)
            )
        ).first()
        return (row[0], row[1]) if row else None

    async def mark_refresh_used(
        self, session: AsyncSession, token_id: uuid.UUID, now: datetime
    ) -> bool:
        """Mark a refresh token used; False when it already was (a replay)."""
        result = await session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == token_id, RefreshToken.used_at.is_(None))
            .values(used_at=now)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def revoke_sessions(
        self,
        session: AsyncSession,
        *,
        reason: str,
        now: datetime,
        session_id: uuid.UUID | None = None,
        user_id: uuid.UUID | None = None,
        tenant_id: uuid.UUID | None = None,
    ) -> None:
        statement = update(AuthSession).where(AuthSession.revoked_at.is_(None))
        if session_id is not None:
            statement = statement.where(AuthSession.id == session_id)
        if user_id is not None:
            statement = statement.where(AuthSession.user_id == user_id)
        if tenant_id is not None:
            statement = statement.where(AuthSession.tenant_id == tenant_id)
        await session.execute(statement.values(revoked_at=now, revoked_reason=reason))

    async def api_key_by_prefix(
        self, session: AsyncSession, prefix: str
    ) -> tuple[ApiKey, Tenant] | None:
        row = (
            await session.execute(
                select(ApiKey, Tenant)
                .join(Tenant, Tenant.id == ApiKey.tenant_id)
                .where(ApiKey.prefix == prefix)
            )
        ).first()
        return (row[0], row[1]) if row else None


auth_repository = AuthRepository()
