"""First-run and CLI administration: the super admin, tenants and keys made from a shell.

These run as the platform itself (an `AuthContext` with the super admin role and no user),
through the same services as the API, so the audit log records them too.
"""

from __future__ import annotations

import secrets
import uuid
from typing import IO, Any

from sqlalchemy.ext.asyncio import AsyncSession

from apiary.api_keys.schemas import ApiKeyCreate
from apiary.api_keys.service import api_key_service
from apiary.audit.service import audit_service
from apiary.auth.context import Actor, AuthContext
from apiary.auth.passwords import hash_password
from apiary.authz.permissions import Role
from apiary.authz.scope import TenantScope
from apiary.db import session_scope
from apiary.errors import NotFound
from apiary.runtime import Runtime
from apiary.tenants.repository import tenant_repository
from apiary.tenants.schemas import TenantCreate
from apiary.tenants.service import tenant_service
from apiary.users.models import User
from apiary.users.repository import user_repository

PLATFORM = AuthContext(role=Role.SUPER_ADMIN, tenant_id=None, actor=Actor(ip="cli"))


async def ensure_super_admin(runtime: Runtime) -> tuple[str, str] | None:
    """Create the super admin if there is none; return (email, one-time password)."""
    async with session_scope(runtime.session_factory) as session:
        if await user_repository.any_super_admin(session):
            return None
        email = runtime.settings.bootstrap_admin_email.lower()
        password = secrets.token_urlsafe(15)
        user = await user_repository.by_email(session, email)
        if user is None:
            user = User(email=email, name="Super admin")
            session.add(user)
        user.password_hash = await hash_password(password)
        user.is_super_admin = True
        await session.flush()
        await audit_service.record(
            session,
            action="user.super_admin_created",
            actor=PLATFORM.actor,
            tenant_id=None,
            target_type="user",
            target_id=user.id,
            details={"email": email},
        )
        return email, password


async def cli_create_tenant(
    runtime: Runtime, *, name: str, admin_email: str, password: str | None, plan: str
) -> dict[str, Any]:
    from pydantic import ValidationError

    try:
        body = TenantCreate(name=name, plan=plan, admin_email=admin_email, admin_password=password)
    except ValidationError as error:
        first = error.errors()[0]
        raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    async with session_scope(runtime.session_factory) as session:
        created = await tenant_service.create(session, PLATFORM, body)
    result: dict[str, Any] = {
        "tenant_id": str(created.tenant.id),
        "tenant_name": created.tenant.name,
        "admin_user_id": str(created.admin_user_id),
        "admin_email": admin_email.lower(),
    }
    if created.admin_temporary_password:
        result["admin_password"] = created.admin_temporary_password
    return result


async def cli_create_api_key(
    runtime: Runtime, *, tenant: str, role: Role, name: str
) -> dict[str, Any]:
    async with session_scope(runtime.session_factory) as session:
        found = await tenant_repository.by_ref(session, tenant)
        if found is None:
            raise NotFound(f"tenant {tenant!r} not found")
        created = await api_key_service.create_in(
            session, TenantScope(found.id), ApiKeyCreate(name=name, role=role), auth=PLATFORM
        )
    return {
        "id": str(created.id),
        "tenant_id": str(found.id),
        "name": created.name,
        "role": created.role.value,
        "prefix": created.prefix,
        "key": created.key,
    }


async def _user_ref(session: AsyncSession, ref: str) -> User:
    """A user by id or by email, as a person names them in the CLI."""
    try:
        user = await user_repository.by_id(session, uuid.UUID(ref))
    except ValueError:
        user = await user_repository.by_email(session, ref.lower())
    if user is None:
        raise NotFound(f"user {ref!r} not found")
    return user


async def _tenant_ref(session: AsyncSession, ref: str) -> uuid.UUID:
    found = await tenant_repository.by_ref(session, ref)
    if found is None:
        raise NotFound(f"tenant {ref!r} not found")
    return found.id


async def cli_export(
    runtime: Runtime, *, tenant: str | None, user: str | None, out: IO[bytes]
) -> str:
    """Write a tenant's or a person's archive to `out`; return the archive's name."""
    from apiary.privacy.service import privacy_service

    async with session_scope(runtime.session_factory) as session:
        if tenant is not None:
            archive = await privacy_service.export_tenant(
                session, PLATFORM, await _tenant_ref(session, tenant), runtime
            )
        else:
            assert user is not None
            found = await _user_ref(session, user)
            archive = await privacy_service.export_user(session, PLATFORM, found.id, runtime)
    for chunk in archive.chunks():
        out.write(chunk)
    return archive.filename


async def cli_erase_user(runtime: Runtime, *, user: str) -> dict[str, Any]:
    from apiary.privacy.service import privacy_service

    async with session_scope(runtime.session_factory) as session:
        found = await _user_ref(session, user)
        report = await privacy_service.erase_user(session, PLATFORM, found.id, runtime)
    return report.model_dump(mode="json")


async def cli_delete_tenant(runtime: Runtime, *, tenant: str) -> dict[str, Any]:
    from apiary.privacy.service import privacy_service

    async with session_scope(runtime.session_factory) as session:
        tenant_id = await _tenant_ref(session, tenant)
        report = await privacy_service.delete_tenant(session, PLATFORM, tenant_id, runtime)
    return report.model_dump(mode="json")
