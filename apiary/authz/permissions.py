"""The permission matrix: which role may do what. The only place that answers that question.

Every endpoint declares one `Permission` through `apiary.auth.dependencies.authorize`; a test
walks the routes and fails on any endpoint that declares none.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    SUPER_ADMIN = "super_admin"  # platform-wide; not a membership role
    TENANT_ADMIN = "tenant_admin"
    DEVELOPER = "developer"
    VIEWER = "viewer"
    BILLING_ADMIN = "billing_admin"


MEMBER_ROLES = frozenset(Role) - {Role.SUPER_ADMIN}


class Permission(StrEnum):
    SELF = "self"  # see yourself, end your own session: every role
    TENANTS_MANAGE = "tenants:manage"
    MEMBERS_READ = "members:read"
    MEMBERS_WRITE = "members:write"
    API_KEYS_READ = "api_keys:read"
    API_KEYS_WRITE = "api_keys:write"
    AUDIT_READ = "audit:read"
    AGENTS_READ = "agents:read"
    AGENTS_WRITE = "agents:write"
    EXECUTIONS_READ = "executions:read"
    EXECUTIONS_RUN = "executions:run"
    GATEWAY_CALL = "gateway:call"
    KNOWLEDGE_READ = "knowledge:read"
    KNOWLEDGE_WRITE = "knowledge:write"
    USAGE_READ = "usage:read"
    BUDGETS_WRITE = "budgets:write"
    PROVIDERS_READ = "providers:read"  # the gateway's providers and their health, no secrets


_READ = {
    Permission.SELF,
    Permission.MEMBERS_READ,
    Permission.AGENTS_READ,
    Permission.EXECUTIONS_READ,
    Permission.KNOWLEDGE_READ,
    Permission.PROVIDERS_READ,
}
_BUILD = _READ | {
    Permission.API_KEYS_READ,
    Permission.API_KEYS_WRITE,
    Permission.AGENTS_WRITE,
    Permission.EXECUTIONS_RUN,
    Permission.GATEWAY_CALL,
    Permission.KNOWLEDGE_WRITE,
    Permission.USAGE_READ,
}
_TENANT_ADMIN = set(Permission) - {Permission.TENANTS_MANAGE}

MATRIX: dict[Role, frozenset[Permission]] = {
    Role.SUPER_ADMIN: frozenset(Permission),
    Role.TENANT_ADMIN: frozenset(_TENANT_ADMIN),
    Role.DEVELOPER: frozenset(_BUILD),
    Role.VIEWER: frozenset(_READ),
    Role.BILLING_ADMIN: frozenset(_READ | {Permission.USAGE_READ, Permission.BUDGETS_WRITE}),
}

# How much a role may do, for "may not grant more than you hold" checks.
RANK: dict[Role, int] = {
    Role.VIEWER: 0,
    Role.BILLING_ADMIN: 1,
    Role.DEVELOPER: 1,
    Role.TENANT_ADMIN: 2,
    Role.SUPER_ADMIN: 3,
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in MATRIX[role]


def may_grant(granter: Role, role: Role) -> bool:
    """A principal may hand out its own role or a lesser one, and only member roles."""
    if role not in MEMBER_ROLES:
        return False
    if granter in (Role.SUPER_ADMIN, Role.TENANT_ADMIN):
        return True
    return role == granter or RANK[role] < RANK[granter]
