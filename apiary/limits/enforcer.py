"""Enforcing budgets and rate limits on each gateway call, before it reaches a provider.

- Requests per minute, per tenant and per API key: fixed one-minute windows in the counter
  store (Redis in production, so every replica counts together); over the limit → 429 with
  `Retry-After` set to the end of the window.
- Tokens per minute: the window's tokens so far (added when calls finish) must be under
  the limit for a call to start.
- Monthly budget: month-to-date spend in micro-dollars. A call first *reserves* its
  estimated cost (prompt tokens and `max_tokens` at the first candidate model's price);
  when the reservation would pass the budget the call gets 402. When the call ends the
  reservation is replaced by the real cost. Crossing the soft threshold (default 80 %)
  adds a warning header and one audit entry per month. Crossing 50, 80 or 100 % (or a
  call refused for the budget) raises a `budget.threshold` alert (apiary/alerts): one
  comparison per settled call below 50 %, and a set look-up above it, so the hot path
  pays nothing more; the alert is written and sent in the background.

A call's checks (both request windows, both token windows, the reservation) are one
`CounterStore.take`: all fit and all are added, or nothing is, atomically (a Lua script
in Redis, and concurrent calls on any replica cannot squeeze past a limit together).
Settling is not waited for: its changes go with the next round trip (`add_soon`), and the
budget warning is worked out from the spend the admission saw. On Redis, the takes and
settlements a replica makes while one round trip is on its way share the next one, so
under load a call costs less than one round trip.

With a shared counter store (Redis), a replica *leases* a block of its counters instead of
taking one call's share at a time: one `take` of n calls' request slots and n times the
call's reservation, which the next calls of the same tenant and key spend locally with no
round trip, for at most `_LEASE_S` and within the minute. What a lease has left when it ends
is given back. A lease never holds more than 1/`_LEASE_SHARE` of a limit (nor more than
`_LEASE_CALLS` calls), and a limit too small for a lease of two calls, or a lease that does
not fit, leaves the call to the exact take: so near a limit admission is as exact as
without leases (a refusal always comes from an exact take), and far from it a replica holds
at most a 64th of a limit it may not use (given back within a second). A token-per-minute
limit is looked at when the lease is taken: calls on the lease may start up to a second
after other replicas' finished calls pushed the minute's tokens over it.

The tenant's plan (apiary/billing) bounds its own limits: the effective request and token
rates are the stricter of the two, and a plan without overage makes its included spend a
monthly budget; a tenant's own limit may be stricter than its plan's, never looser.

The spend counter starts from the ledger's month-to-date sum when it does not exist (once
per month and deployment, or after the counter store lost it), so a restart does not
forget what was spent.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.alerts.events import BUDGET_THRESHOLDS
from apiary.audit.service import audit_service
from apiary.auth.context import AuthContext
from apiary.authz.scope import TenantScope
from apiary.billing.models import Plan
from apiary.db import session_scope
from apiary.errors import PaymentRequired, TooManyRequests
from apiary.kv import Change, Check, CounterStore
from apiary.limits.repository import limits_repository
from apiary.limits.schemas import Limits
from apiary.limits.service import NO_LIMITS
from apiary.observability import tracing
from apiary.observability.metrics import LIMIT_REFUSED

MICRO = 1_000_000
# A refusal's counter, by the guard that refused (the names `admit` gives its checks).
_REFUSED = {
    "tenant request": LIMIT_REFUSED["tenant_rpm"],
    "API key request": LIMIT_REFUSED["key_rpm"],
    "tenant token": LIMIT_REFUSED["tenant_tpm"],
    "API key token": LIMIT_REFUSED["key_tpm"],
    "budget": LIMIT_REFUSED["budget"],
}
_MONTH_TTL_S = 40 * 86_400
_ALERTED_MAX = 100_000  # thresholds remembered as told; forgotten in bulk past this


class BudgetListener(Protocol):
    """Told when a tenant's month-to-date spend first reaches a threshold (percent of the
    monthly budget) in this process; it must not block (apiary/alerts/runner.py)."""

    def budget_crossed(
        self,
        tenant_id: uuid.UUID,
        *,
        month: str,
        threshold: int,
        spent_usd: float,
        budget_usd: float,
        refused: bool,
    ) -> None: ...


_LIMITS_TTL_S = 5.0  # how long a replica may use limits it read, before reading again
_LEASE_S = 1.0  # how long a lease of the shared counters may be spent from
_LEASE_CALLS = 32  # calls a lease holds at most
_LEASE_SHARE = 64  # a lease holds at most this fraction (1/64) of each limit


@dataclass(slots=True)
class _Lease:
    """Request slots and budget taken from the shared counters ahead of the calls that
    spend them (see the module's docstring)."""

    checks: tuple[Check, ...]  # the take it came from, one call's amounts
    spend: str | None  # the spend counter among them
    calls: int  # request slots left
    budget_micro: int  # reservation left
    spent_micro: int  # the month's spend when it was taken, the whole lease included
    until: float  # time.monotonic() past which it is given back
    # Tokens this replica's calls on it may still add under the token-per-minute limits
    # (a 64th of the smallest), None without one: past it, calls take exactly again.
    tokens_left: int | None


@dataclass
class Admission:
    """A call let through: what it reserved, to be settled when it ends."""

    auth: AuthContext
    limits: Limits
    reserved_micro: int = 0
    month: str = ""
    spent_micro: int = 0  # the month's spend when admitted, this call's reservation included
    lease: _Lease | None = None  # the lease of the shared counters it was admitted on

    def on_lease(self, lease: _Lease) -> Admission:
        """Admitted on `lease`: counted already, from what the lease took."""
        self.spent_micro, self.lease = lease.spent_micro, lease
        return self


def _month() -> str:
    now = time.gmtime()  # a tenth of the cost of datetime.now(UTC).strftime(...)
    return f"{now.tm_year}{now.tm_mon:02d}"


class LimitEnforcer:
    def __init__(
        self,
        counters: CounterStore,
        factory: async_sessionmaker[AsyncSession],
        *,
        on_budget: BudgetListener | None = None,
    ) -> None:
        self._counters = counters
        self._factory = factory
        self._on_budget = on_budget
        # (tenant, month, threshold) this process has raised: each is raised here once; the
        # alert's unique key makes it once across replicas.
        self._alerted: set[tuple[str, str, int]] = set()
        self._limits: dict[uuid.UUID, tuple[float, Limits]] = {}
        # Per tenant, the guards whose bound is the plan's (named in a refusal), and the
        # plan's features the gateway asks about (the semantic cache), read with the limits.
        self._from_plan: dict[uuid.UUID, dict[str, str]] = {}
        self._features: dict[uuid.UUID, frozenset[str]] = {}
        # One read per tenant at a time: the hundred calls of a swarm that find the cache
        # expired together wait for the same read instead of making a hundred.
        self._reading: dict[uuid.UUID, asyncio.Future[Limits]] = {}
        # Months whose budget warning is known to be in the audit log: every call past the
        # soft limit would otherwise ask the counter store again.
        self._warned: set[str] = set()

        # Bumped by `forget`: a read that started before a change must not cache what it
        # read (the old limits) once it ends.
        self._changes: dict[uuid.UUID, int] = {}
        # Leases of the shared counters, by the keys of the checks they were taken for.
        self._leases: dict[tuple[str, ...], _Lease] = {}

    def forget(self, tenant_id: uuid.UUID) -> None:
        """Drop cached limits after a change is committed, so this replica applies them at
        once."""
        self._limits.pop(tenant_id, None)
        self._reading.pop(tenant_id, None)
        self._changes[tenant_id] = self._changes.get(tenant_id, 0) + 1

    def forget_all(self) -> None:
        """Drop every cached limit (a plan changed: every tenant on it)."""
        self._limits.clear()
        self._reading.clear()

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
        changes = self._changes.get(tenant_id, 0)
        async with self._factory() as session:
            row = await limits_repository.get(session, TenantScope(tenant_id))
            plan = await limits_repository.plan(session, TenantScope(tenant_id))
        limits = Limits.model_validate(row) if row else NO_LIMITS
        if plan is not None:
            limits = self._bounded_by_plan(tenant_id, limits, plan)
            self._features[tenant_id] = frozenset(
                name for name in ("semantic_cache", "oidc", "audit_export") if getattr(plan, name)
            )
        if limits == NO_LIMITS:
            limits = NO_LIMITS  # calls compare by identity: `==` on a model is slow
        if self._changes.get(tenant_id, 0) == changes:
            self._limits[tenant_id] = (time.monotonic() + _LIMITS_TTL_S, limits)
        return limits

    async def has_feature(self, tenant_id: uuid.UUID, feature: str) -> bool:
        """Whether the tenant's plan includes `feature` (as of the cached read, 5 s)."""
        await self._limits_of(tenant_id)
        return feature in self._features.get(tenant_id, frozenset())

    def _bounded_by_plan(self, tenant_id: uuid.UUID, limits: Limits, plan: Plan) -> Limits:
        cap = None if plan.overage or plan.included_spend_usd is None else plan.included_spend_usd
        bounds = {
            "tenant_rpm": ("tenant request", plan.requests_per_minute, f"the {plan.name} plan's"),
            "tenant_tpm": ("tenant token", plan.tokens_per_minute, f"the {plan.name} plan's"),
            "monthly_budget_usd": (
                "budget",
                float(cap) if cap is not None else None,
                f"the {plan.name} plan's included spend",
            ),
        }
        changes: dict[str, object] = {}
        sources: dict[str, str] = {}
        for field, (guard, bound, source) in bounds.items():
            own = getattr(limits, field)
            if bound is not None and (own is None or bound < own):
                changes[field] = bound
                sources[guard] = source
        self._from_plan[tenant_id] = sources
        return limits.model_copy(update=changes) if changes else limits

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
        tenant, key_id = _name(tenant_id), auth.actor.api_key_id
        key = _name(key_id) if key_id is not None else None
        # Every counter the call must fit under, checked and added in one atomic step (one
        # round trip to Redis), so a refused call counts nowhere.
        checks: list[Check] = []
        guards: list[str] = []  # what each check guards, named if it refuses the call
        if limits.tenant_rpm is not None:
            checks.append(Check(f"rl:req:t:{tenant}:{minute}", 1, limits.tenant_rpm, 61))
            guards.append("tenant request")
        if limits.key_rpm is not None and key is not None:
            checks.append(Check(f"rl:req:k:{key}:{minute}", 1, limits.key_rpm, 61))
            guards.append("API key request")
        if limits.tenant_tpm is not None:  # tokens are added when calls end: only a look
            checks.append(Check(f"rl:tok:t:{tenant}:{minute}", 0, limits.tenant_tpm, 61))
            guards.append("tenant token")
        if limits.key_tpm is not None and key is not None:
            checks.append(Check(f"rl:tok:k:{key}:{minute}", 0, limits.key_tpm, 61))
            guards.append("API key token")
        spend = None
        if limits.monthly_budget_usd is not None:
            admission.month = _month()
            spend = f"spend:{tenant}:{admission.month}"
            admission.reserved_micro = int((estimate_cost_usd() or 0.0) * MICRO)
            budget_micro = int(limits.monthly_budget_usd * MICRO)
            checks.append(Check(spend, admission.reserved_micro, budget_micro, _MONTH_TTL_S))
            guards.append("budget")
        if not checks:
            return admission
        if self._counters.shared:
            leased = self._from_lease(
                tuple(check.key for check in checks), admission.reserved_micro
            )
            if leased is not None:  # counted already, in this process's lease
                return admission.on_lease(leased)
        # Counted in Redis (a round trip, a step of its own in a sampled request's trace)
        # or in the process's own store.
        if not self._counters.shared or tracing.TRACER is None or tracing.dropped():
            return await self._count(admission, checks, guards, spend, now)
        with tracing.child("apiary.limits.admit"):
            return await self._count(admission, checks, guards, spend, now)

    async def _count(
        self,
        admission: Admission,
        checks: list[Check],
        guards: list[str],
        spend: str | None,
        now: float,
    ) -> Admission:
        """Add the call to the counters `checks`, or to a new lease of them; raise the
        refusal of the first `guards` it does not fit under."""
        tenant_id, limits = admission.auth.scope.tenant_id, admission.limits
        if self._counters.shared:
            names = tuple(check.key for check in checks)
            leased = await self._lease(names, checks, admission.reserved_micro, spend)
            if leased is not None:
                return admission.on_lease(leased)
        outcome = await self._counters.take(checks, existing=spend)
        if outcome.missing:
            assert spend is not None
            await self._start_spend(tenant_id, spend)
            outcome = await self._counters.take(checks, existing=spend)
            if outcome.missing:  # lost again at once (the store evicting): count from zero
                outcome = await self._counters.take(checks)
        if outcome.refused is not None:
            guard, check = guards[outcome.refused], checks[outcome.refused]
            _REFUSED[guard].inc()
            source = self._from_plan.get(tenant_id, {}).get(guard)
            if guard == "budget":
                self._budget_alert(
                    _name(tenant_id),
                    admission.month,
                    outcome.value,
                    limits.monthly_budget_usd,
                    refused=True,
                )
            if guard == "budget" and source is not None:
                raise PaymentRequired(
                    f"included_spend: {source} of ${limits.monthly_budget_usd:,.2f} a month is "
                    f"spent (${outcome.value / MICRO:,.2f} this month); a plan with overage "
                    "lifts this (GET /api/v1/billing/plan)"
                )
            if guard == "budget":
                raise PaymentRequired(
                    f"monthly budget of ${limits.monthly_budget_usd:,.2f} reached "
                    f"(${outcome.value / MICRO:,.2f} spent this month); raise it in the "
                    "tenant's limits"
                )
            raise TooManyRequests(
                f"{guard} rate limit reached ({check.limit} per minute"
                + (f", {source} limit)" if source else ")"),
                retry_after_s=60 - int(now % 60),
            )
        admission.spent_micro = outcome.total
        return admission

    def _from_lease(self, names: tuple[str, ...], reserved_micro: int) -> _Lease | None:
        """The lease for the call checking the counters `names`, now spent from; None when
        there is none (or it ended, or has too little left: then it is given back)."""
        lease = self._leases.get(names)
        if lease is None:
            return None
        if (
            lease.calls > 0
            and lease.budget_micro >= reserved_micro
            and (lease.tokens_left is None or lease.tokens_left > 0)
            and time.monotonic() < lease.until
        ):
            lease.calls -= 1
            lease.budget_micro -= reserved_micro
            return lease
        self._give_back(names, lease)
        return None

    async def _lease(
        self, names: tuple[str, ...], checks: list[Check], reserved_micro: int, spend: str | None
    ) -> _Lease | None:
        """Take a lease of `calls` calls for these checks, this call's share spent from it;
        None when the limits are too small for one or it does not fit."""
        calls = _LEASE_CALLS
        tokens_left: int | None = None
        for check in checks:
            if check.amount > 0:
                calls = min(calls, check.limit // (_LEASE_SHARE * check.amount))
            else:  # a look: a token-per-minute limit
                share = check.limit // _LEASE_SHARE
                tokens_left = share if tokens_left is None else min(tokens_left, share)
        if calls < 2 or tokens_left == 0:
            return None
        block = [Check(c.key, c.amount * calls, c.limit, c.ttl_s) for c in checks]
        outcome = await self._counters.take(block, existing=spend)
        if outcome.refused is not None or outcome.missing:
            return None  # the exact take decides, and says why
        lease = _Lease(
            checks=tuple(checks),
            spend=spend,
            calls=calls - 1,
            budget_micro=reserved_micro * (calls - 1),
            spent_micro=outcome.total,
            until=time.monotonic() + _LEASE_S,
            tokens_left=tokens_left,
        )
        earlier = self._leases.get(names)
        if earlier is not None:  # another call of the same kind leased meanwhile
            self._give_back(names, earlier)
        self._leases[names] = lease
        asyncio.get_running_loop().call_later(_LEASE_S, self._expire, names, lease)
        return lease

    def give_back_leases(self) -> None:
        """End every lease (the process is stopping): what they hold goes back to the
        shared counters with their next round trip."""
        for names, lease in list(self._leases.items()):
            self._give_back(names, lease)

    def _expire(self, names: tuple[str, ...], lease: _Lease) -> None:
        if self._leases.get(names) is lease:
            self._give_back(names, lease)

    def _give_back(self, names: tuple[str, ...], lease: _Lease) -> None:
        """End a lease: what it has left goes back to the shared counters."""
        if self._leases.get(names) is lease:
            del self._leases[names]
        changes: list[Change] = []
        for check in lease.checks:
            if check.key == lease.spend:
                if lease.budget_micro:
                    changes.append(
                        Change(check.key, -lease.budget_micro, check.ttl_s, existing=True)
                    )
            elif check.amount > 0 and lease.calls:
                # Only to a window still there: one that has ended (or was deleted with
                # its tenant) holds nothing to give back to, and adding to it would start
                # it again.
                changes.append(
                    Change(check.key, -check.amount * lease.calls, check.ttl_s, existing=True)
                )
        lease.calls = lease.budget_micro = 0
        if changes:
            self._counters.add_soon(changes)

    async def settle(
        self, admission: Admission, *, tokens: int, cost_usd: float | None
    ) -> str | None:
        """Replace the reservation by the real cost; returns a budget warning, if any."""
        limits, auth = admission.limits, admission.auth
        if limits is NO_LIMITS:
            return None
        tenant = _name(auth.scope.tenant_id)
        minute = int(time.time() // 60)
        lease = admission.lease
        if lease is not None and lease.tokens_left is not None:
            lease.tokens_left -= tokens
        changes: list[Change] = []
        if limits.tenant_tpm is not None and tokens:
            changes.append(Change(f"rl:tok:t:{tenant}:{minute}", tokens, 61))
        key_id = auth.actor.api_key_id
        if limits.key_tpm is not None and tokens and key_id is not None:
            changes.append(Change(f"rl:tok:k:{_name(key_id)}:{minute}", tokens, 61))
        budget = limits.monthly_budget_usd
        delta = 0
        if budget is not None and admission.month:
            delta = int((cost_usd or 0.0) * MICRO) - admission.reserved_micro
            # Only if the counter is there: one the store lost (a restart, a flush) is
            # started from the ledger by the next admission; a settle creating it would
            # start it from this one delta, and the month's spend would be forgotten.
            changes.append(
                Change(f"spend:{tenant}:{admission.month}", delta, _MONTH_TTL_S, existing=True)
            )
        if not changes:
            return None
        self._counters.add_soon(changes)
        if budget is None or not admission.month or not admission.spent_micro:
            return None
        # The spend as this call saw it, settled: other calls' reservations are in it, their
        # settlements may not be yet, so this errs towards warning early.
        total = admission.spent_micro + delta
        if total >= budget * MICRO * 0.5:  # the lowest alert threshold
            self._budget_alert(tenant, admission.month, total, budget, refused=False)
        if total < budget * limits.soft_limit_ratio * MICRO:
            return None
        warning = f"{total / MICRO / budget:.0%} of the monthly budget (${budget:,.2f}) is spent"
        warned = f"budget-warned:{tenant}:{admission.month}"
        if warned in self._warned:  # this replica knows the month's entry exists
            return warning
        self._warned.add(warned)
        if await self._counters.set_if_absent(warned, 1, ttl_s=_MONTH_TTL_S):
            async with session_scope(self._factory) as session:
                await audit_service.record(
                    session,
                    action="budget.soft_limit_reached",
                    actor=auth.actor,
                    tenant_id=auth.scope.tenant_id,
                    details={"warning": warning},
                )
        return warning

    def _budget_alert(
        self, tenant: str, month: str, spent_micro: int, budget: float | None, *, refused: bool
    ) -> None:
        """Raise the highest budget threshold reached, unless raised here before."""
        if self._on_budget is None or not budget or budget <= 0:
            return
        ratio = spent_micro / (budget * MICRO)
        threshold = 100 if refused or ratio >= 1 else 80 if ratio >= 0.8 else 50
        if (ratio < 0.5 and not refused) or (tenant, month, threshold) in self._alerted:
            return
        if len(self._alerted) > _ALERTED_MAX:
            self._alerted.clear()
        # The lower ones too: jumping from 40 to 85 % tells 80 %, not 50 % as well.
        self._alerted.update((tenant, month, t) for t in BUDGET_THRESHOLDS if t <= threshold)
        self._on_budget.budget_crossed(
            uuid.UUID(tenant),
            month=month,
            threshold=threshold,
            spent_usd=spent_micro / MICRO,
            budget_usd=budget,
            refused=refused,
        )

    async def _start_spend(self, tenant_id: uuid.UUID, key: str) -> None:
        """Start this month's spend counter from the ledger (once per month, and again if
        the counter store lost it), so a restart does not forget what was spent."""
        start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        async with self._factory() as session:
            spent = await limits_repository.spent_since(session, TenantScope(tenant_id), start)
        await self._counters.set_if_absent(key, int(spent * MICRO), ttl_s=_MONTH_TTL_S)


@functools.lru_cache(maxsize=4096)
def _name(id_: uuid.UUID) -> str:
    """A tenant's or key's id as it appears in counter names (`str(UUID)` runs Python code
    each time, and every call names up to six counters)."""
    return str(id_)
