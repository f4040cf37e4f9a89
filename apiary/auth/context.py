"""Who is calling: the principal every endpoint receives, however it authenticated."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from apiary.authz.permissions import Permission, Role, may_grant, permissions_of
from apiary.authz.scope import TenantScope
from apiary.errors import Forbidden


@dataclass(frozen=True, slots=True)
class Actor:
    """The who and where of an action, as the audit log records it."""

    user_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class AuthContext:
    role: Role
    tenant_id: uuid.UUID | None
    actor: Actor
    session_id: uuid.UUID | None = None  # the sign-in, for JWT callers
    # Set when a swarm execution calls the gateway, so ledger rows carry them.
    execution_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None

    @property
    def is_super_admin(self) -> bool:
        return self.role is Role.SUPER_ADMIN

    @property
    def user_id(self) -> uuid.UUID | None:
        return self.actor.user_id

    @property
    def via_key(self) -> bool:
        """Whether the caller holds its role through an API key rather than a sign-in."""
        return self.actor.api_key_id is not None

    @property
    def permissions(self) -> frozenset[Permission]:
        """What this caller may do: its role's permissions, narrowed for a key and for a
        person signed in to no tenant."""
        return permissions_of(self.role, via_key=self.via_key, tenantless=self.tenant_id is None)

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    def may_grant(self, role: Role) -> bool:
        """Whether this caller may hand out `role`, or act on a holder of it."""
        return may_grant(self.role, role, via_key=self.via_key)

    @property
    def scope(self) -> TenantScope:
        """The choke point for this caller's tenant-owned data."""
        if self.tenant_id is None:
            raise Forbidden("this endpoint needs a tenant: sign in to one of your tenants")
        return TenantScope(self.tenant_id)
