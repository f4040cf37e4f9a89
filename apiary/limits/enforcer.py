"""Enforcing budgets and rate limits on each gateway call, before it reaches a provider.

- Requests per minute, per tenant and per API key: fixed one-minute windows in the counter
  store (Redis in production, so every replica counts together); over the limit → 429 with
  `Retry-After` set to the end of the window.
- Tokens per minute: the window's tokens so far (added when calls finish) must be under
  the limit for a call to start.
- Monthly budget: month-to-date spend in micro-dollars. A call first *reserves* its
  estimated cost (prompt tokens and `max_tokens` at the first candidate model's price)
  with one atomic increment, so concurrent calls cannot all squeeze under the limit; when
  the reservation would pass the budget it is taken back and the call gets 402. When the
  call ends the reservation is replaced by the real cost. Crossing the soft threshold
  (default 80 %) adds a warning header and one audit entry per month.

The spend counter starts from the ledger's month-to-date sum, once per month and
deployment (`set_if_absent`), so a restart does not forget what was spent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.audit.service import audit_service
from apiary.auth.context import AuthContext
from apiary.authz.scope import TenantScope
from apiary.db import session_scope
from apiary.errors import PaymentRequired, TooManyRequests
from apiary.kv import CounterStore
from apiary.limits.repository import limits_repository
from apiary.limits.schemas import Limits
from apiary.limits.service import NO_LIMITS

MICRO = 1_000_000
_MONTH_TTL_S = 40 * 86_400
_LIMITS_TTL_S = 5.0  # how long a replica may use limits it read, before reading again


@dataclass
class Admission:
    """A call let through: what it reserved, to be settled when it ends."""

    auth: AuthContext
    limits: Limits
    reserved_micro: int = 0
    month: str = ""


def _month() -> str:
    now = time.gmtime()  # a tenth of the cost of datetime.now(UTC).strftime(...)
    return f"{now.tm_year}{now.tm_mon:02d}"


class LimitEnforcer:
    def __init__(self, counters: CounterStore, factory: async_sessionmaker[AsyncSession]) -> None:
        self._counters = counters
        self._factory = factory
        self._limits: dict[uuid.UUID, tuple[float, Limits]] = {}
        # One read per tenant at a time: the hundred calls of a swarm that find the cache
        # expired together wait for the same read instead of making a hundred.
        self._reading: dict[uuid.UUID, asyncio.Future[Limits]] = {}

    def forget(self, tenant_id: uuid.UUID) -> None:
        """Drop cached limits after a change, so this replica applies them at once."""
        self._limits.pop(tenant_id, None)
        self._reading.pop(tenant_id, None)

    async def _limits_of(self, tenant_id: uuid.UUID) -> Limits:
        cached = self._limits.get(tenant_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        reading = self._reading.get(tenant_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read_limits(tenant_id))
            self._reading[tenant_id] = reading
            reading.add_done_callback(lambda done: self._finished_reading(tenant_id, done))
        return await asyncio.shield(reading)

    def _finished_reading(self, tenant_id: uuid.UUID, done: asyncio.Future[Limits]) -> None:
        if self._reading.get(tenant_id) is done:  # not a newer read started after forget()
            del self._reading[tenant_id]

    async def _read_limits(self, tenant_id: uuid.UUID) -> Limits:
        async with self._factory() as session:
            row = await limits_repository.get(session, TenantScope(tenant_id))
        limits = Limits.model_validate(row) if row else NO_LIMITS
        if limits == NO_LIMITS:
            limits = NO_LIMITS  # calls compare by identity: `==` on a model is slow
        self._limits[tenant_id] = (time.monotonic() + _LIMITS_TTL_S, limits)
        return limits

    async def admit(
        self, auth: AuthContext, *, estimate_cost_usd: Callable[[], float | None]
    ) -> Admission:
        tenant_id = auth.scope.tenant_id
        limits = await self._limits_of(tenant_id)
        admission = Admission(auth=auth, limits=limits)
        if limits is NO_LIMITS:
            return admission
        now = time.time()
        minute = int(now // 60)
        retry_after = 60 - int(now % 60)
        key_id = auth.actor.api_key_id
        windows = [(f"rl:req:t:{tenant_id}:{minute}", limits.tenant_rpm, "tenant")]
        if key_id is not None:
            windows.append((f"rl:req:k:{key_id}:{minute}", limits.key_rpm, "API key"))
        for name, limit, who in windows:
            if limit is not None and await self._counters.incr(name, ttl_s=61) > limit:
                raise TooManyRequests(
                    f"{who} request rate limit reached ({limit} per minute)",
                    retry_after_s=retry_after,
                )
        token_windows = [(f"rl:tok:t:{tenant_id}:{minute}", limits.tenant_tpm, "tenant")]
        if key_id is not None:
            token_windows.append((f"rl:tok:k:{key_id}:{minute}", limits.key_tpm, "API key"))
        for name, limit, who in token_windows:
            if limit is not None and (await self._counters.get(name))[0] >= limit:
                raise TooManyRequests(
                    f"{who} token rate limit reached ({limit} per minute)",
                    retry_after_s=retry_after,
                )
        if limits.monthly_budget_usd is not None:
            month = _month()
            key = await self._spend_key(tenant_id, month)
            reserve = int((estimate_cost_usd() or 0.0) * MICRO)
            total = await self._counters.incr(key, ttl_s=_MONTH_TTL_S, amount=reserve)
            budget = int(limits.monthly_budget_usd * MICRO)
            if total > budget or (reserve == 0 and total >= budget):
                await self._counters.incr(key, ttl_s=_MONTH_TTL_S, amount=-reserve)
                spent = (total - reserve) / MICRO
                raise PaymentRequired(
                    f"monthly budget of ${limits.monthly_budget_usd:,.2f} reached "
                    f"(${spent:,.2f} spent this month); raise it in the tenant's limits"
                )
            admission.reserved_micro, admission.month = reserve, month
        return admission

    async def settle(
        self, admission: Admission, *, tokens: int, cost_usd: float | None
    ) -> str | None:
        """Replace the reservation by the real cost; returns a budget warning, if any."""
        limits, auth = admission.limits, admission.auth
        if limits is NO_LIMITS:
            return None
        tenant_id = auth.scope.tenant_id
        minute = int(time.time() // 60)
        if limits.tenant_tpm is not None and tokens:
            await self._counters.incr(f"rl:tok:t:{tenant_id}:{minute}", ttl_s=61, amount=tokens)
        if limits.key_tpm is not None and tokens and auth.actor.api_key_id is not None:
            await self._counters.incr(
                f"rl:tok:k:{auth.actor.api_key_id}:{minute}", ttl_s=61, amount=tokens
            )
        if limits.monthly_budget_usd is None or not admission.month:
            return None
        key = f"spend:{tenant_id}:{admission.month}"
        delta = int((cost_usd or 0.0) * MICRO) - admission.reserved_micro
        total = await self._counters.incr(key, ttl_s=_MONTH_TTL_S, amount=delta)
        threshold = limits.monthly_budget_usd * limits.soft_limit_ratio * MICRO
        if total < threshold:
            return None
        warning = (
            f"{total / MICRO / limits.monthly_budget_usd:.0%} of the monthly budget "
            f"(${limits.monthly_budget_usd:,.2f}) is spent"
        )
        if await self._counters.set_if_absent(
            f"budget-warned:{tenant_id}:{admission.month}", 1, ttl_s=_MONTH_TTL_S
        ):
            async with session_scope(self._factory) as session:
                await audit_service.record(
                    session,
                    action="budget.soft_limit_reached",
                    actor=auth.actor,
                    tenant_id=tenant_id,
                    details={"warning": warning},
                )
        return warning

    async def _spend_key(self, tenant_id: uuid.UUID, month: str) -> str:
        key = f"spend:{tenant_id}:{month}"
        if (await self._counters.get(key))[0] == 0:
            start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            async with self._factory() as session:
                spent = await limits_repository.spent_since(session, TenantScope(tenant_id), start)
            await self._counters.set_if_absent(key, int(spent * MICRO), ttl_s=_MONTH_TTL_S)
        return key
