"""The shipped plans (plans.yaml beside this file) and loading them without overwriting.

The migration that creates the `plans` table and every start-up insert the shipped plans
whose key is missing, and nothing else: a plan the super admin edited (or archived) stays
as it is."""

from __future__ import annotations

from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.billing.models import Plan
from apiary.db import new_id, session_scope, utcnow

PLANS_FILE = Path(__file__).with_name("plans.yaml")
_MONEY = ("monthly_fee_usd", "included_spend_usd", "markup_pct")

# The plan a tenant whose old free-text label named no shipped plan is put on: unlimited,
# every feature, no fee, provider cost passed through. It keeps such a tenant's behaviour
# as it was before plans existed.
FALLBACK_PLAN = "enterprise"


@cache
def shipped_plans() -> tuple[dict[str, Any], ...]:
    document = yaml.safe_load(PLANS_FILE.read_text())
    plans = []
    for entry in document["plans"]:
        plan = dict(entry)
        for field in _MONEY:
            if plan.get(field) is not None:
                plan[field] = Decimal(str(plan[field]))
        plans.append(plan)
    return tuple(plans)


def rows_for(missing: set[str]) -> list[dict[str, Any]]:
    """Insertable rows (every column) of the shipped plans whose key is in `missing`."""
    now = utcnow()
    return [
        {**plan, "id": new_id(), "created_at": now, "updated_at": now, "archived": False}
        for plan in shipped_plans()
        if plan["key"] in missing
    ]


async def load_default_plans(factory: async_sessionmaker[AsyncSession]) -> int:
    """Insert the shipped plans not in the table yet; returns how many were added."""
    async with session_scope(factory) as session:
        return await insert_missing(session)


async def insert_missing(session: AsyncSession) -> int:
    present = set((await session.scalars(select(Plan.key))).all())
    rows = rows_for({plan["key"] for plan in shipped_plans()} - present)
    if not rows:
        return 0
    # Two replicas starting together: the second's rows conflict on the key and are skipped.
    dialect = session.get_bind().dialect.name
    statement = (pg_insert if dialect == "postgresql" else sqlite_insert)(Plan)
    await session.execute(statement.on_conflict_do_nothing(index_elements=["key"]), rows)
    return len(rows)
