"""The permission matrix: which role may do what. The only place that answers that question.

Every endpoint declares one `Permission` through `apiary.auth.dependencies.authorize`; a test
walks the routes and fails on any endpoint that declares none.

A caller holds its role through a credential: a person's sign-in, or an API key. A key is
the weaker credential (revoked with one click, shared by machines), so nothing it creates may
outlive it with its own powers: it holds its role's permissions minus `KEY_WITHHELD` (no key
mints or revokes keys), and it grants only roles below its own (a tenant_admin key cannot make
a tenant admin, who would keep signing in and minting keys after the key is revoked).
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
    INVITATIONS_RESPOND = "invitations:respond"  # see, accept, decline your invitations
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
    BILLING_READ = "billing:read"  # the tenant's plan, usage against it, invoices
    BILLING_WRITE = "billing:write"  # the tenant's billing settings (currency)
    PLANS_MANAGE = "plans:manage"  # the platform's plans, closing periods, revenue
    # The tenant's alert channels (webhook URLs, e-mail recipients) and their delivery log.
    ALERTS_MANAGE = "alerts:manage"
    # Data subject rights: export the tenant's data, export or erase a member's personal data.
    PRIVACY_MANAGE = "privacy:manage"


_READ = {
    Permission.SELF,
    Permission.INVITATIONS_RESPOND,
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
# What only the platform's super admin does.
_PLATFORM = {Permission.TENANTS_MANAGE, Permission.PLANS_MANAGE}
_TENANT_ADMIN = set(Permission) - _PLATFORM

MATRIX: dict[Role, frozenset[Permission]] = {
    Role.SUPER_ADMIN: frozenset(Permission),
    Role.TENANT_ADMIN: frozenset(_TENANT_ADMIN),
    Role.DEVELOPER: frozenset(_BUILD),
    Role.VIEWER: frozenset(_READ),
    Role.BILLING_ADMIN: frozenset(
        _READ
        | {
            Permission.USAGE_READ,
            Permission.BUDGETS_WRITE,
            Permission.BILLING_READ,
            Permission.BILLING_WRITE,
            Permission.ALERTS_MANAGE,
        }
    ),
}

# How much a role may do, for "may not grant more than you hold" checks.
RANK: dict[Role, int] = {
    Role.VIEWER: 0,
    Role.BILLING_ADMIN: 1,
    Role.DEVELOPER: 1,
    Role.TENANT_ADMIN: 2,
    Role.SUPER_ADMIN: 3,
}


# What an API key never holds, whatever its role: minting keys (a key that mints keys would
# outlive its own revocation through them) or revoking them (key management is for people),
# answering invitations (joining a tenant is the account owner's own decision), and
# exporting or erasing people's data (a decision a person signs in to take).
KEY_WITHHELD: frozenset[Permission] = frozenset(
    {Permission.API_KEYS_WRITE, Permission.INVITATIONS_RESPOND, Permission.PRIVACY_MANAGE}
)


# All that a person signed in to no tenant holds (the super admin excepted): an account
# whose only business is the invitations it has not answered yet.
TENANTLESS: frozenset[Permission] = frozenset({Permission.SELF, Permission.INVITATIONS_RESPOND})


def _held(role: Role, via_key: bool, tenantless: bool) -> frozenset[Permission]:
    held = MATRIX[role] - KEY_WITHHELD if via_key else MATRIX[role]
    return held & TENANTLESS if tenantless and role is not Role.SUPER_ADMIN else held


# Every (role, via_key, tenantless) answer, computed once: `auth.can` runs on every request,
# and building frozensets there cost more than the rest of the check.
_HELD: dict[tuple[Role, bool, bool], frozenset[Permission]] = {
    (role, via_key, tenantless): _held(role, via_key, tenantless)
    for role in Role
    for via_key in (False, True)
    for tenantless in (False, True)
}


def permissions_of(
    role: Role, *, via_key: bool = False, tenantless: bool = False
) -> frozenset[Permission]:
    """Everything `role` may do, held through a sign-in or (`via_key`) an API key, in a
    tenant or (`tenantless`, a person's sign-in to no tenant) in none."""
    return _HELD[role, via_key, tenantless]


def allows(
    role: Role, permission: Permission, *, via_key: bool = False, tenantless: bool = False
) -> bool:
    return permission in permissions_of(role, via_key=via_key, tenantless=tenantless)


def may_grant(granter: Role, role: Role, *, via_key: bool = False) -> bool:
    """Whether a principal may hand out (or act on a holder of) `role`: only member roles; a
    person their own role or a lesser one, an API key only a lesser one."""
    if role not in MEMBER_ROLES:
        return False
    if via_key:
        return RANK[role] < RANK[granter]
    if granter in (Role.SUPER_ADMIN, Role.TENANT_ADMIN):
        return True
    return role == granter or RANK[role] < RANK[granter]
