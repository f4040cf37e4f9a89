"""API keys: create (the secret is returned once), list, revoke."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from apiary.api_keys.models import ApiKey
from apiary.api_keys.repository import api_key_repository
from apiary.api_keys.schemas import ApiKey as ApiKeyView
from apiary.api_keys.schemas import ApiKeyCreate, ApiKeyCreated
from apiary.audit.service import audit_service
from apiary.auth.context import AuthContext
from apiary.auth.key_cache import keys_changed
from apiary.auth.tokens import new_api_key
from apiary.authz.permissions import Permission, Role, may_grant
from apiary.authz.scope import TenantScope
from apiary.db import utcnow
from apiary.errors import Forbidden, Unprocessable
from apiary.kit.schemas import PageParams


class ApiKeyService:
    async def create(
        self, session: AsyncSession, auth: AuthContext, body: ApiKeyCreate
    ) -> ApiKeyCreated:
        return await self.create_in(session, auth.scope, body, auth=auth)

    async def create_in(
        self, session: AsyncSession, scope: TenantScope, body: ApiKeyCreate, *, auth: AuthContext
    ) -> ApiKeyCreated:
        # The route already asked; asked again for callers that are not routes, from the
        # same matrix (which withholds api_keys:write from every API key).
        if not auth.can(Permission.API_KEYS_WRITE):
            raise Forbidden(
                "API keys cannot create API keys: sign in as a user"
                if auth.via_key
                else f"role {auth.role.value!r} lacks permission 'api_keys:write'"
            )
        if not auth.may_grant(body.role):
            raise Forbidden(f"role {auth.role.value!r} may not create a {body.role.value!r} key")
        if body.expires_at is not None:
            if body.expires_at.tzinfo is None:
                raise Unprocessable("expires_at: give a timezone, e.g. 2027-01-01T00:00:00Z")
            if body.expires_at <= utcnow():
                raise Unprocessable("expires_at: must be in the future")
        secret = new_api_key()
        api_key = api_key_repository.add(
            session,
            scope,
            ApiKey(
                name=body.name,
                prefix=secret.prefix,
                key_hash=secret.key_hash,
                role=body.role,
                created_by=auth.user_id,
                expires_at=body.expires_at,
            ),
        )
        await session.flush()
        await audit_service.record(
            session,
            action="api_key.created",
            actor=auth.actor,
            tenant_id=scope.tenant_id,
            target_type="api_key",
            target_id=api_key.id,
            details={"name": api_key.name, "prefix": api_key.prefix, "role": api_key.role},
        )
        return ApiKeyCreated(**ApiKeyView.model_validate(api_key).model_dump(), key=secret.key)

    async def list(
        self, session: AsyncSession, auth: AuthContext, page: PageParams
    ) -> tuple[Sequence[ApiKey], int]:
        return await api_key_repository.page(session, auth.scope, page)

    async def get(self, session: AsyncSession, auth: AuthContext, key_id: uuid.UUID) -> ApiKey:
        return await api_key_repository.get(session, auth.scope, key_id)

    async def revoke(self, session: AsyncSession, auth: AuthContext, key_id: uuid.UUID) -> ApiKey:
        api_key = await api_key_repository.get(session, auth.scope, key_id)
        if not auth.may_grant(Role(api_key.role)):
            raise Forbidden(f"role {auth.role.value!r} may not revoke a {api_key.role!r} key")
        if api_key.revoked_at is None:
            api_key.revoked_at = utcnow()
            await session.flush()
            keys_changed(session)
            await audit_service.record(
                session,
                action="api_key.revoked",
                actor=auth.actor,
                tenant_id=auth.tenant_id,
                target_type="api_key",
                target_id=api_key.id,
                details={"name": api_key.name, "prefix": api_key.prefix},
            )
        return api_key

    async def revoke_created_by(
        self,
        session: AsyncSession,
        auth: AuthContext,
        *,
        user_id: uuid.UUID,
        above: Role | None = None,
        reason: str,
    ) -> int:
        """Revoke the keys a member created (only those their role may no longer grant, when
        `above` is given): a key must not keep access its creator has lost."""
        revoked = 0
        for api_key in await api_key_repository.active_created_by(session, auth.scope, user_id):
            if above is not None and may_grant(above, Role(api_key.role)):
                continue
            api_key.revoked_at = utcnow()
            keys_changed(session)
            revoked += 1
            await audit_service.record(
                session,
                action="api_key.revoked",
                actor=auth.actor,
                tenant_id=auth.tenant_id,
                target_type="api_key",
                target_id=api_key.id,
                details={"name": api_key.name, "prefix": api_key.prefix, "reason": reason},
            )
        return revoked


api_key_service = ApiKeyService()
