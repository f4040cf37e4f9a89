"""What `GET /metrics` works out when it is scraped: the platform's state, not its traffic.

Executions by state, running sub-agents, the knowledge backlog, the Celery queue and its
consumers, each provider's breaker, the database pool, whether the database and Redis
answer and how fast, each budgeted tenant's month-to-date spend as a share of its budget.
None of it is kept up to date on a request path: each scrape asks the database, Redis and
this process's gateway once, every probe under `PROBE_TIMEOUT_S`, and exports fresh
gauges. A dependency that does not answer is reported as down (`apiary_database_up 0`,
`apiary_redis_up 0`) and what depends on it is left out of that scrape, never guessed.

Labels stay bounded: states and statuses are enums, providers come from the gateway
config, queues are fixed, and the per-tenant budget ratio exists only for tenants with a
monthly budget (one series each, labelled with the tenant's name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from apiary.executions.models import ExecutionState
from apiary.gateway.resilience import BreakerState
from apiary.knowledge.models import DocumentStatus
from apiary.observability.repository import TenantBudget, platform_repository

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncSession

    from apiary.runtime import Runtime

log = logging.getLogger("apiary.metrics")

PROBE_TIMEOUT_S: Final = 2.0


class _Families(Collector):
    """A registry's view of metric families already worked out for this scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled(
    name: str, documentation: str, label: str, values: Iterable[tuple[str, float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in values:
        family.add_metric([key], value)
    return family


class PlatformMetrics:
    """The scrape-time collector of one app. Its Redis round trips go over the process's
    shared client (`apiary.kit.redis`), on a pooled connection of their own: the counters'
    batches have their own lane, so a scrape neither waits behind them nor slows them."""

    async def exposition(self, runtime: Runtime) -> bytes:
        families = await self.collect(runtime)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(families))
        return generate_latest(registry)

    @classmethod
    def process_exposition(cls, runtime: Runtime) -> bytes:
        """This process's own figures only (breakers, pool, ledger writer): for a worker,
        whose shared-state figures the API replicas already report."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(list(cls._process_families(runtime))))
        return generate_latest(registry)

    async def collect(self, runtime: Runtime) -> list[Metric]:
        families: list[Metric] = []
        families += self._process_families(runtime)
        database, redis = await asyncio.gather(
            self._database_families(runtime), self._redis_families(runtime)
        )
        families += database + redis
        return families

    # -- this process ---------------------------------------------------------------------

    @staticmethod
    def _process_families(runtime: Runtime) -> Iterator[Metric]:
        breaker = GaugeMetricFamily(
            "apiary_gateway_breaker_state",
            "Each provider's circuit breaker in this process: 1 for its current state.",
            labels=["provider", "state"],
        )
        failures = GaugeMetricFamily(
            "apiary_gateway_breaker_consecutive_failures",
            "Consecutive failures each provider's breaker has counted in this process.",
            labels=["provider"],
        )
        for name, handle in runtime.providers.handles.items():
            current = handle.breaker.state
            for state in BreakerState:
                breaker.add_metric([name, state.value], 1.0 if state is current else 0.0)
            failures.add_metric([name], handle.breaker.consecutive_failures)
        yield breaker
        yield failures

        pool = runtime.engine.pool
        size = _call(pool, "size")
        checked_out = _call(pool, "checkedout")
        connections = GaugeMetricFamily(
            "apiary_db_pool_connections",
            "This process's database connections: in use (checked out) or idle in the pool.",
            labels=["state"],
        )
        connections.add_metric(["in_use"], checked_out)
        connections.add_metric(["idle"], _call(pool, "checkedin"))
        yield connections
        # What it may open: the pool's size plus its overflow (SQLAlchemy's QueuePool).
        overflow = getattr(pool, "_max_overflow", 0)
        capacity = size + max(overflow, 0)
        yield _gauge(
            "apiary_db_pool_capacity",
            "How many database connections this process may hold at once.",
            capacity,
        )

        ledger = runtime.ledger
        yield _gauge(
            "apiary_ledger_pending_entries",
            "Ledger entries this process holds that are not written to the database yet.",
            ledger.pending,
        )
        written = CounterMetricFamily(
            "apiary_ledger_entries_written",
            "Ledger entries this process's writer stored in the database.",
            value=ledger.written,
        )
        yield written

    # -- the database ---------------------------------------------------------------------

    async def _database_families(self, runtime: Runtime) -> list[Metric]:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S), runtime.session_factory() as session:
                started = time.perf_counter()
                await platform_repository.ping(session)
                ping_s = time.perf_counter() - started
        except Exception as error:  # down, or too slow to answer: say so, guess nothing
            log.warning("metrics: the database did not answer (%s)", type(error).__name__)
            return [_gauge("apiary_database_up", _DATABASE_UP, 0)]
        families: list[Metric] = [
            _gauge("apiary_database_up", _DATABASE_UP, 1),
            _gauge(
                "apiary_database_ping_seconds",
                "Round trip of a `SELECT 1` from this process, at the last scrape.",
                ping_s,
            ),
        ]
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S * 2), runtime.session_factory() as session:
                states = await platform_repository.executions_by_state(session)
                running = await platform_repository.subagents_running(session)
                documents = await platform_repository.documents_by_status(session)
                budgets = await platform_repository.budgets(session)
                spent = await self._spent(runtime, session, budgets)
        except Exception as error:
            log.warning("metrics: the database's counts timed out (%s)", type(error).__name__)
            return families
        families += [
            _labelled(
                "apiary_executions",
                "Executions in the database, by state (every tenant).",
                "state",
                ((state.value, states.get(state.value, 0)) for state in ExecutionState),
            ),
            _gauge(
                "apiary_subagents_running",
                "Sub-agents running now, in every process (subtasks of unfinished executions).",
                running,
            ),
            _labelled(
                "apiary_knowledge_documents",
                "Knowledge documents by ingestion status; queued + processing is the backlog.",
                "status",
                ((status.value, documents.get(status.value, 0)) for status in DocumentStatus),
            ),
        ]
        ratio = GaugeMetricFamily(
            "apiary_tenant_budget_used_ratio",
            "Month-to-date spend over the monthly budget, for each tenant that has a budget.",
            labels=["tenant"],
        )
        soft = GaugeMetricFamily(
            "apiary_tenant_budget_soft_limit_ratio",
            "The share of its budget at which each budgeted tenant is warned.",
            labels=["tenant"],
        )
        for budget in budgets:
            ratio.add_metric([budget.tenant], spent.get(budget.tenant_id, 0.0) / budget.budget_usd)
            soft.add_metric([budget.tenant], budget.soft_limit_ratio)
        families += [ratio, soft]
        return families

    async def _spent(
        self, runtime: Runtime, session: AsyncSession, budgets: list[TenantBudget]
    ) -> dict[uuid.UUID, float]:
        """Each budgeted tenant's month-to-date spend: the enforcer's counter (what the next
        call is judged against) or, where the counter store has none or does not answer,
        the ledger's sum."""
        # The enforcer's own naming of its spend counters, so the two can never disagree.
        from apiary.limits.enforcer import MICRO, _month, _name

        month = _month()
        spent: dict[uuid.UUID, float] = {}
        missing = []
        answering = True
        for budget in budgets:
            value = ttl = 0
            if answering:
                try:
                    async with asyncio.timeout(PROBE_TIMEOUT_S):
                        counter = f"spend:{_name(budget.tenant_id)}:{month}"
                        value, ttl = await runtime.counters.get(counter)
                except Exception:  # Redis down: every spend is still in the ledger
                    answering = False
            if ttl == 0 and value == 0:
                missing.append(budget.tenant_id)
            else:
                spent[budget.tenant_id] = value / MICRO
        if missing:
            start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            spent |= await platform_repository.spent_since(session, missing, start)
        return spent

    # -- Redis and the Celery queue -------------------------------------------------------

    async def _redis_families(self, runtime: Runtime) -> list[Metric]:
        redis = runtime.redis
        if redis is None:
            return []
        started = time.perf_counter()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S * 2):
                await redis.ping()
                ping_s = time.perf_counter() - started
                celery = runtime.settings.runner == "celery"
                queue = await self._queue(redis) if celery else None
        except Exception as error:
            log.warning("metrics: Redis did not answer (%s)", type(error).__name__)
            return [_gauge("apiary_redis_up", _REDIS_UP, 0)]
        families: list[Metric] = [
            _gauge("apiary_redis_up", _REDIS_UP, 1),
            _gauge(
                "apiary_redis_ping_seconds",
                "Round trip of a PING to Redis from this process, at the last scrape.",
                ping_s,
            ),
        ]
        if queue is not None:
            depth, unacked, consumers = queue
            families += [
                _labelled(
                    "apiary_celery_queue_depth",
                    "Executions waiting in the Celery queue for a worker to take them.",
                    "queue",
                    [(_queue_name(), depth)],
                ),
                _gauge(
                    "apiary_celery_unacked",
                    "Executions a worker took and has not finished (acknowledged) yet.",
                    unacked,
                ),
            ]
            if consumers is not None:
                families.append(
                    _gauge(
                        "apiary_celery_consumers",
                        "Broker connections waiting on the queue for work: workers with room.",
                        consumers,
                    )
                )
        return families

    async def _queue(self, redis: Redis) -> tuple[int, int, int | None]:
        from apiary.worker.celery_app import QUEUE_LISTS, UNACKED

        async with redis.pipeline(transaction=False) as pipe:
            for key in QUEUE_LISTS:
                pipe.llen(key)
            pipe.hlen(UNACKED)
            replies = await pipe.execute()
        depth = sum(int(n) for n in replies[:-1])
        unacked = int(replies[-1])
        # A worker with a free process blocks in BRPOP on the queue; one with every process
        # busy, or none at all, does not: either way nothing takes the next message.
        consumers = None
        with contextlib.suppress(Exception):  # some managed Redis refuse CLIENT LIST:
            clients = await redis.client_list()  # then unknown, never a false 0
            consumers = sum(1 for client in clients if client.get("cmd") == "brpop")
        return depth, unacked, consumers


_DATABASE_UP: Final = "1 when the database answered this scrape's probe within its timeout."
_REDIS_UP: Final = "1 when Redis answered this scrape's PING within its timeout."


def _queue_name() -> str:
    from apiary.worker.celery_app import QUEUE

    return QUEUE


def _call(pool: object, method: str) -> int:
    function: Callable[[], int] | None = getattr(pool, method, None)
    return int(function()) if function is not None else 0
