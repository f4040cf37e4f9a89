"""First-run and CLI administration: the super admin, tenants and keys made from a shell.

These run as the platform itself (an `AuthContext` with the super admin role and no user),
through the same services as the API, so the audit log records them too.
"""

from __future__ import annotations

import secrets
from typing import Any

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
