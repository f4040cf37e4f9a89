"""Every ORM model, imported in one place so Alembic and the tests see the whole schema."""

from apiary.agents.models import Agent, AgentVersion
from apiary.alerts.models import Alert, AlertChannel, AlertDelivery, AlertDeliveryAttempt
from apiary.api_keys.models import ApiKey
from apiary.audit.models import AuditChainHead, AuditEntry
from apiary.auth.models import AuthSession, RefreshToken
from apiary.billing.models import (
    Credit,
    Invoice,
    InvoiceCounter,
    InvoiceLine,
    Plan,
    PlanChange,
    StripeCustomer,
    StripeEvent,
)
from apiary.crypto.models import TenantDataKey
from apiary.db import Base
from apiary.executions.models import Execution, ExecutionEvent, Subtask
from apiary.knowledge.models import KnowledgeBase, KnowledgeDocument, KnowledgeDocumentEvent
from apiary.limits.models import TenantLimits
from apiary.memory.models import ThreadSummary, ThreadTurn
from apiary.responses.models import StoredResponse
from apiary.swarm.models import SwarmCheckpoint, SwarmCheckpointWrite
from apiary.tenants.models import Tenant
from apiary.usage.models import LedgerEntry, LedgerRollup
from apiary.users.models import Invitation, Membership, User

__all__ = [
    "Agent",
    "AgentVersion",
    "Alert",
    "AlertChannel",
    "AlertDelivery",
    "AlertDeliveryAttempt",
    "ApiKey",
    "AuditChainHead",
    "AuditEntry",
    "AuthSession",
    "Base",
    "Credit",
    "Execution",
    "ExecutionEvent",
    "Invitation",
    "Invoice",
    "InvoiceCounter",
    "InvoiceLine",
    "KnowledgeBase",
    "KnowledgeDocument",
    "KnowledgeDocumentEvent",
    "LedgerEntry",
    "LedgerRollup",
    "Membership",
    "Plan",
    "PlanChange",
    "RefreshToken",
    "StoredResponse",
    "StripeCustomer",
    "StripeEvent",
    "Subtask",
    "SwarmCheckpoint",
    "SwarmCheckpointWrite",
    "Tenant",
    "TenantDataKey",
    "TenantLimits",
    "ThreadSummary",
    "ThreadTurn",
    "User",
]
