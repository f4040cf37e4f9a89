"""Helpers for billing tests: tenants that existed last month, ledger rows at given times."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import update

from apiary.billing.models import PlanChange
from apiary.db import new_id
from apiary.executions.models import Execution
from apiary.runtime import Runtime
from apiary.tenants.models import Tenant
from apiary.usage.ledger import store_entries


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


async def created_on(runtime: Runtime, tenant_id: str, when: dt.datetime) -> None:
    async with runtime.session_factory() as session:
        await session.execute(
            update(Tenant).where(Tenant.id == uuid.UUID(tenant_id)).values(created_at=when)
        )
        await session.commit()


async def plan_changed_on(runtime: Runtime, tenant_id: str, when: dt.datetime) -> None:
    """Date the tenant's recorded plan changes to `when` (they were made just now)."""
    async with runtime.session_factory() as session:
        await session.execute(
            update(PlanChange)
            .where(PlanChange.tenant_id == uuid.UUID(tenant_id))
            .values(changed_at=when)
        )
        await session.commit()


def ledger_entry(
    tenant_id: str,
    when: dt.datetime,
    *,
    cost_usd: float | None,
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "created_at": when,
        "tenant_id": uuid.UUID(tenant_id),
        "api_key_id": None,
        "user_id": None,
        "execution_id": None,
        "agent_id": None,
        "kind": "chat",
        "requested_model": "gpt-4o-mini",
        "route": None,
        "reason": "test",
        "provider": "oai",
        "model": "gpt-4o-mini",
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cached_tokens": 0,
        "tokens_estimated": False,
        "cost_usd": cost_usd,
        "priced": cost_usd is not None,
        "cache_hit": False,
        "saved_usd": 0.0,
        "latency_ms": 1.0,
        "ttft_ms": None,
        "fallback_path": [],
        "status": "ok",
        "error": None,
        "streamed": False,
    }


async def add_ledger(runtime: Runtime, entries: list[dict[str, Any]]) -> None:
    async with runtime.session_factory() as session:
        await store_entries(session, entries)
        await session.commit()


async def add_execution(runtime: Runtime, tenant_id: str, when: dt.datetime) -> None:
    async with runtime.session_factory() as session:
        session.add(
            Execution(
                tenant_id=uuid.UUID(tenant_id),
                created_at=when,
                updated_at=when,
                agent_version=1,
                agent={},
                task="t",
                state="succeeded",
                role="developer",
            )
        )
        await session.commit()
