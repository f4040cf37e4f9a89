"""The ledger's rollups: reports read from them must equal a scan of the raw rows, whatever
order, replica or hour the entries were written in."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import uuid
from typing import Any

import pytest

from apiary.auth.context import Actor, AuthContext
from apiary.authz.permissions import Role
from apiary.authz.scope import TenantScope
from apiary.db import create_engine, create_session_factory, session_scope, utcnow
from apiary.gateway.providers.base import Usage
from apiary.runtime import Runtime
from apiary.tenants.models import Tenant
from apiary.usage.ledger import LedgerWriter, ledger_row
from apiary.usage.repository import LedgerTotals, plan_window, usage_repository
from apiary.usage.schemas import UsageDimension

pytestmark = pytest.mark.both_databases

MODELS = [("oai", "gpt-4o-mini"), ("oai", "gpt-4o"), ("ant", "claude-haiku"), (None, None)]
ROUTES = [None, "default", "cheap"]


def _random_entry(
    rng: random.Random,
    tenant: uuid.UUID,
    keys: list[uuid.UUID | None],
    agents: list[uuid.UUID | None],
    at: dt.datetime,
) -> dict[str, Any]:
    provider, model = rng.choice(MODELS)
    prompt = rng.randint(0, 5000)
    cost = None if rng.random() < 0.1 else round(rng.random() / 100, 6)
    auth = AuthContext(
        role=Role.DEVELOPER,
        tenant_id=tenant,
        actor=Actor(api_key_id=rng.choice(keys)),
        agent_id=rng.choice(agents),
    )
    entry = ledger_row(
        auth,
        {"model": model or "unknown"},
        kind=rng.choice(["chat", "chat", "embedding"]),
        route=rng.choice(ROUTES),
        reason="test",
        provider=provider,
        model=model,
        usage=Usage(prompt, rng.randint(0, 800), rng.randint(-5, prompt + 50)),
        cost_usd=cost,
        latency_s=0.01,
        cache_hit=rng.random() < 0.2,
        saved_usd=rng.random() / 1000 if rng.random() < 0.2 else 0.0,
        error="boom" if rng.random() < 0.1 else None,
    )
    entry["created_at"] = at
    return entry


def _same(a: LedgerTotals, b: LedgerTotals) -> bool:
    # Counts and tokens exactly; float sums up to the order they were added in.
    for name in a.__slots__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, float):
            if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9):
                return False
        elif x != y:
            return False
    return True


async def _tenant(runtime: Runtime) -> uuid.UUID:
    async with session_scope(runtime.session_factory) as session:
        row = Tenant(name=f"rollups-{uuid.uuid4().hex[:6]}")
        session.add(row)
    return row.id


def test_a_window_is_split_into_days_hours_and_partial_hours() -> None:
    t = dt.datetime(2026, 3, 1, 22, 30, tzinfo=dt.UTC)
    plan = plan_window(t, t + dt.timedelta(days=2, hours=2))  # 03-01 22:30 .. 03-04 00:30
    assert plan.raw == (
        (t, t.replace(hour=23, minute=0)),
        (dt.datetime(2026, 3, 4, tzinfo=dt.UTC), dt.datetime(2026, 3, 4, 0, 30, tzinfo=dt.UTC)),
    )
    assert plan.hours == ((t.replace(hour=23, minute=0), dt.datetime(2026, 3, 2, tzinfo=dt.UTC)),)
    assert plan.days == (
        dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 4, tzinfo=dt.UTC),
    )
    # Whole months in the middle come from the month rollups, except for series by day.
    late = dt.datetime(2026, 5, 30, 7, tzinfo=dt.UTC)
    spans = plan_window(late, dt.datetime(2026, 8, 3, 1, tzinfo=dt.UTC))
    assert spans.months == (
        dt.datetime(2026, 6, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 8, 1, tzinfo=dt.UTC),
    )
    assert spans.days == (
        dt.datetime(2026, 5, 31, tzinfo=dt.UTC),
        dt.datetime(2026, 6, 1, tzinfo=dt.UTC),
    )
    assert spans.days_after == (
        dt.datetime(2026, 8, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 8, 3, tzinfo=dt.UTC),
    )
    by_day = plan_window(late, dt.datetime(2026, 8, 3, 1, tzinfo=dt.UTC), months=False)
    assert by_day.months is None
    assert by_day.days == (
        dt.datetime(2026, 5, 31, tzinfo=dt.UTC),
        dt.datetime(2026, 8, 3, tzinfo=dt.UTC),
    )
    inside = plan_window(t, t + dt.timedelta(minutes=20))
    assert inside.raw == ((t, t + dt.timedelta(minutes=20)),)
    assert not inside.hours


async def test_reports_from_rollups_equal_a_raw_scan_with_late_and_concurrent_writes(
    runtime: Runtime, database_url: str
) -> None:
    """Two replicas' ledger writers record interleaved random calls (a fifth of them late:
    stamped hours or days in the past), flushing concurrently; every report over random
    windows (unaligned ends, whole days, the current hour) equals a scan of the raw rows."""
    rng = random.Random(23)
    tenants = [await _tenant(runtime), await _tenant(runtime)]
    keys: list[uuid.UUID | None] = [None, uuid.uuid4(), uuid.uuid4()]
    agents: list[uuid.UUID | None] = [None, uuid.uuid4()]
    now = utcnow()
    second = create_engine(database_url)  # the other replica: its own engine and pool
    try:
        writers = [
            LedgerWriter(runtime.session_factory, batch_size=37),
            LedgerWriter(create_session_factory(second), batch_size=41),
        ]
        for _ in range(4):
            for _ in range(300):
                if rng.random() < 0.3:  # late: written now, for a past hour (or month)
                    at = now - dt.timedelta(seconds=rng.randint(3600, 70 * 86400))
                else:
                    at = now - dt.timedelta(seconds=rng.randint(0, 3000))
                rng.choice(writers).record(
                    _random_entry(rng, rng.choice(tenants), keys, agents, at)
                )
            await asyncio.gather(*(writer.flush() for writer in writers))
        assert sum(w.written for w in writers) == 1200
        assert sum(w.dropped for w in writers) == 0
    finally:
        await second.dispose()

    windows = [(now - dt.timedelta(days=80), now + dt.timedelta(hours=1))]
    for _ in range(8):
        start = now - dt.timedelta(seconds=rng.randint(0, 75 * 86400))
        windows.append((start, start + dt.timedelta(seconds=rng.randint(60, 50 * 86400))))
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    windows.append((day - dt.timedelta(days=3), day))  # whole days only
    month = day.replace(day=1)
    before = (month - dt.timedelta(days=1)).replace(day=1)
    windows.append((before, month))  # one whole calendar month
    windows.append((before - dt.timedelta(days=9, hours=5), now))  # days, a month, days
    windows.append((now.replace(minute=0, second=0, microsecond=0), now + dt.timedelta(1)))

    async with runtime.session_factory() as session:
        for tenant in tenants:
            scope = TenantScope(tenant)
            for start, end in windows:
                fast = await usage_repository.totals_by_kind(session, scope, start=start, end=end)
                slow = await usage_repository.totals_by_kind(
                    session, scope, start=start, end=end, raw_only=True
                )
                assert [(g.kind, g.priced, g.cache_hit) for g in fast] == [
                    (g.kind, g.priced, g.cache_hit) for g in slow
                ]
                assert all(_same(f.totals, s.totals) for f, s in zip(fast, slow, strict=True))
                for dimension in UsageDimension:
                    for by_day in (False, True):
                        rows = await usage_repository.series(
                            session, scope, start=start, end=end, group_by=dimension, by_day=by_day
                        )
                        raw = await usage_repository.series(
                            session,
                            scope,
                            start=start,
                            end=end,
                            group_by=dimension,
                            by_day=by_day,
                            raw_only=True,
                        )
                        assert [(r.day, r.key) for r in rows] == [(r.day, r.key) for r in raw]
                        assert all(
                            _same(r.totals, s.totals) for r, s in zip(rows, raw, strict=True)
                        ), (dimension, by_day, start, end)
        # The whole platform's, too (what an operator's report reads).
        start, end = windows[0]
        fast_all = await usage_repository.totals(session, None, start=start, end=end)
        slow_all = await usage_repository.totals(session, None, start=start, end=end, raw_only=True)
        assert fast_all.calls == 1200
        assert _same(fast_all, slow_all)
