"""Entitlement checks, called where each action happens (the choke points of other domains).

Seats when a member is added or joins, sub-agents and concurrent executions when an
execution is created, knowledge bases and stored bytes when one is created or a document
uploaded, features where they are used. Rates and the included spend are not here: the
limits enforcer (apiary/limits) folds them into each gateway call's admission.

Counting checks take the tenant's lock first, so concurrent requests of one tenant are
checked one after another and exactly the limit is admitted."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from apiary.alerts.emitter import emit_soon
from apiary.alerts.events import AlertEvent, AlertKind
from apiary.authz.scope import TenantScope
from apiary.billing.errors import EntitlementExceeded, FeatureNotInPlan
from apiary.billing.models import Plan
from apiary.billing.repository import billing_repository
from apiary.db import utcnow


class Feature(StrEnum):
    SEMANTIC_CACHE = "semantic_cache"
    OIDC = "oidc"
    AUDIT_EXPORT = "audit_export"


_FEATURE_NAMES = {
    Feature.SEMANTIC_CACHE: "the semantic cache",
    Feature.OIDC: "OIDC single sign-on",
    Feature.AUDIT_EXPORT: "audit log export",
}


def _size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _refuse(
    scope: TenantScope, plan: Plan, entitlement: str, allowed: str, detail: str
) -> EntitlementExceeded:
    message = (
        f"{entitlement}: the {plan.name} plan allows {allowed}; {detail}. A plan with more "
        "lifts this (GET /api/v1/billing/plan shows the plan and its usage)"
    )
    # Told off the request's transaction, which rolls back with the refusal; once per
    # tenant, entitlement and month.
    emit_soon(
        AlertEvent(
            AlertKind.ENTITLEMENT_LIMIT_REACHED,
            scope.tenant_id,
            subject=entitlement,
            period=f"{utcnow():%Y-%m}",
            data={
                "entitlement": entitlement,
                "plan": plan.name,
                "limit": allowed,
                "detail": message,
            },
        )
    )
    return EntitlementExceeded(message)


async def check_seat(session: AsyncSession, scope: TenantScope) -> None:
    """One more member may join."""
    plan = await billing_repository.plan_of(session, scope.tenant_id)
    if plan.seats is None:
        return
    await billing_repository.lock_tenant(session, scope.tenant_id)
    seats = await billing_repository.seats(session, scope)
    if seats >= plan.seats:
        raise _refuse(scope, plan, "seats", f"{plan.seats} members", f"the tenant has {seats}")


async def check_execution(session: AsyncSession, scope: TenantScope, *, sub_agents: int) -> None:
    """One more execution with up to `sub_agents` sub-agents may start."""
    plan = await billing_repository.plan_of(session, scope.tenant_id)
    if plan.max_subagents is not None and sub_agents > plan.max_subagents:
        raise _refuse(
            scope,
            plan,
            "max_subagents",
            f"{plan.max_subagents} sub-agents per execution",
            f"this execution asks for {sub_agents} (set options.max_agents to at most "
            f"{plan.max_subagents})",
        )
    if plan.concurrent_executions is None:
        return
    await billing_repository.lock_tenant(session, scope.tenant_id)
    running = await billing_repository.running_executions(session, scope)
    if running >= plan.concurrent_executions:
        raise _refuse(
            scope,
            plan,
            "concurrent_executions",
            f"{plan.concurrent_executions} executions queued or running at once",
            f"{running} are; wait for one to finish or cancel one",
        )


async def check_knowledge_base(session: AsyncSession, scope: TenantScope) -> None:
    plan = await billing_repository.plan_of(session, scope.tenant_id)
    if plan.knowledge_bases is None:
        return
    await billing_repository.lock_tenant(session, scope.tenant_id)
    count = await billing_repository.knowledge_bases(session, scope)
    if count >= plan.knowledge_bases:
        raise _refuse(
            scope,
            plan,
            "knowledge_bases",
            f"{plan.knowledge_bases} knowledge base{'s' if plan.knowledge_bases != 1 else ''}",
            f"the tenant has {count}",
        )


async def check_storage(session: AsyncSession, scope: TenantScope, *, adding: int) -> None:
    plan = await billing_repository.plan_of(session, scope.tenant_id)
    if plan.storage_bytes is None:
        return
    await billing_repository.lock_tenant(session, scope.tenant_id)
    stored = await billing_repository.storage_bytes(session, scope)
    if stored + adding > plan.storage_bytes:
        raise _refuse(
            scope,
            plan,
            "storage_bytes",
            f"{_size(plan.storage_bytes)} of stored documents",
            f"{_size(stored)} are stored and this upload is {_size(adding)}",
        )


async def require_feature(session: AsyncSession, scope: TenantScope, feature: Feature) -> None:
    plan = await billing_repository.plan_of(session, scope.tenant_id)
    if not has_feature(plan, feature):
        raise FeatureNotInPlan(
            f"{feature.value}: {_FEATURE_NAMES[feature]} is not in the {plan.name} plan; "
            "a plan that includes it enables it (GET /api/v1/billing/plan)"
        )


def has_feature(plan: Plan, feature: Feature) -> bool:
    return bool(getattr(plan, feature.value))
