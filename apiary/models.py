"""Every ORM model, imported in one place so Alembic and the tests see the whole schema."""

from apiary.api_keys.models import ApiKey
from apiary.audit.models import AuditChainHead, AuditEntry
from apiary.auth.models import AuthSession, RefreshToken
from apiary.db import Base
from apiary.knowledge.models import KnowledgeBase, KnowledgeDocument
from apiary.limits.models import TenantLimits
from apiary.tenants.models import Tenant
from apiary.usage.models import LedgerEntry
from apiary.users.models import Membership, User

__all__ = [
    "ApiKey",
    "AuditChainHead",
    "AuditEntry",
    "AuthSession",
    "Base",
    "KnowledgeBase",
    "KnowledgeDocument",
    "LedgerEntry",
    "Membership",
    "RefreshToken",
    "Tenant",
    "TenantLimits",
    "User",
]
