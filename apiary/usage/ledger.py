"""The ledger writer: entries are queued on the request path and inserted in batches.

A request only appends to an in-memory queue (microseconds). One background task drains it
every `flush_interval_s`, or sooner when `batch_size` entries wait, with one multi-row
INSERT per batch. Shutdown flushes what is left. If the database is down, the batch is
kept and retried, up to `max_pending` entries; past that the oldest are dropped and counted
(a ledger gap is better than a gateway that stops answering).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.auth.context import AuthContext
from apiary.db import Write, executemany_plan, new_id, session_scope, utcnow
from apiary.gateway.providers.base import Usage
from apiary.observability.metrics import (
    GATEWAY_CACHE_SAVED,
    GATEWAY_CALLS,
    GATEWAY_COST,
    GATEWAY_TOKENS,
    GATEWAY_UNPRICED,
    LEDGER_DROPPED,
    LEDGER_WRITE_FAILURES,
    labelled,
)
from apiary.usage import partitions, rollups
from apiary.usage.models import LedgerEntry

log = logging.getLogger("apiary.ledger")

# A Core insert on the table: the ORM's bulk path costs about three times as much per row
# for the same statement, and the rows are plain dicts already. The writer's batches skip
# even its per-row parameter handling: `executemany_plan` compiles the statement once and
# turns the rows into the driver's tuples through the same type processors (on SQLite 31-40
# against 40-52 µs of CPU per row, the database's own work included).
_INSERT = insert(LedgerEntry.__table__)  # type: ignore[arg-type]  # it is a Table


class _UnwritableRow(Exception):
    """An entry the writer cannot turn into the driver's parameters."""


def ledger_row(
    auth: AuthContext,
    body: dict[str, Any],
    *,
    kind: str,
    route: str | None,
    reason: str,
    provider: str | None,
    model: str | None,
    usage: Usage,
    cost_usd: float | None,
    latency_s: float,
    ttft_s: float | None = None,
    cache_hit: bool = False,
    saved_usd: float = 0.0,
    fallback_path: Sequence[str] = (),
    error: str | None = None,
    streamed: bool = False,
    tokens_estimated: bool = False,
) -> dict[str, Any]:
    """One ledger row (LedgerEntry's columns), stamped with the caller's tenant."""
    return {
        "id": new_id(),
        "created_at": utcnow(),
        "tenant_id": auth.scope.tenant_id,
        "api_key_id": auth.actor.api_key_id,
        "user_id": auth.actor.user_id,
        "execution_id": auth.execution_id,
        "agent_id": auth.agent_id,
        "kind": kind,
        "requested_model": str(body.get("model"))[:200],
        "route": route[:100] if route else route,
        "reason": reason[:200],
        "provider": provider[:100] if provider else provider,
        "model": model[:200] if model else model,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "tokens_estimated": tokens_estimated,
        "cost_usd": cost_usd,
        "priced": cost_usd is not None,
        "cache_hit": cache_hit,
        "saved_usd": saved_usd,
        "latency_ms": latency_s * 1000,
        "ttft_ms": ttft_s * 1000 if ttft_s is not None else None,
        "fallback_path": list(fallback_path),
        "status": "error" if error else "ok",
        "error": error[:500] if error else None,
        "streamed": streamed,
    }


def _count(entry: dict[str, Any]) -> None:
    provider, model = entry["provider"] or "none", entry["model"] or "none"
    status, cache = entry["status"], "hit" if entry["cache_hit"] else "miss"
    labelled(GATEWAY_CALLS, provider, model, status, cache).inc()
    labelled(GATEWAY_TOKENS, provider, model, "prompt").inc(entry["prompt_tokens"])
    labelled(GATEWAY_TOKENS, provider, model, "completion").inc(entry["completion_tokens"])
    if entry["cost_usd"] is None:
        labelled(GATEWAY_UNPRICED, provider, model).inc()
    elif entry["cost_usd"] > 0:
        labelled(GATEWAY_COST, provider, model).inc(entry["cost_usd"])
    if entry["saved_usd"]:
        GATEWAY_CACHE_SAVED.inc(entry["saved_usd"])


class LedgerWriter:
    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        max_pending: int = 100_000,
    ) -> None:
        self._factory = factory
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._pending: deque[dict[str, Any]] = deque(maxlen=max_pending)
        self._executions: dict[uuid.UUID, list[dict[str, Any]]] = {}  # swarm calls' entries
        self._held = 0  # how many entries `_executions` holds
        self._writing = 0  # how many entries the batch being written holds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # One flush at a time: a caller that finds a flush under way waits for it and then
        # writes what is left, so when `flush()` returns every entry recorded before the
        # call is stored, not merely taken by another flush still committing.
        self._flushing = asyncio.Lock()
        self.dropped = 0
        self.written = 0
        # Months known to have a ledger partition (PostgreSQL); None until first checked,
        # and `_unpartitioned` once the table turns out to be a plain one.
        self._months: set[dt.date] = set()
        self._unpartitioned: bool | None = None

    @property
    def pending(self) -> int:
        """Entries queued and not written yet, the batch being written included (for the
        metrics scrape, which may run in another thread while a write is under way)."""
        return len(self._pending) + self._held + self._writing

    def record(self, entry: dict[str, Any]) -> None:
        """Queue one entry (a dict of LedgerEntry columns). Never blocks, never raises."""
        _count(entry)
        execution_id = entry["execution_id"]
        if execution_id is not None:
            # Kept by execution, so a finishing sub-agent takes its own without a search
            # through everybody's (`take`); the next flush writes what nobody took.
            self._executions.setdefault(execution_id, []).append(entry)
            self._held += 1
        else:
            if len(self._pending) == self._pending.maxlen:
                self.dropped += 1
                LEDGER_DROPPED.inc()
            self._pending.append(entry)
        if len(self._pending) + self._held >= self._batch_size:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        # Shielded: a caller cancelled mid-write (a sub-agent whose execution was cancelled)
        # must not take the batch it popped, every tenant's entries, down with it.
        await asyncio.shield(self._flush())

    async def _flush(self) -> None:
        async with self._flushing:
            await self._write_pending()

    async def _write_pending(self) -> None:
        # Only what is queued now: entries recorded while a batch commits wait for the next
        # tick (or a full batch). Chasing them instead turns a busy gateway's ledger into a
        # stream of 10-row transactions, each paying a whole commit's fixed cost.
        if self._executions:  # what no sub-agent took: written with everybody's
            for entries in self._executions.values():
                self._pending.extend(entries)
            self._executions.clear()
            self._held = 0
        if not self._pending:
            return
        last = self._pending[-1]
        done = False
        while not done and self._pending:
            batch: list[dict[str, Any]] = []
            while self._pending and len(batch) < self._batch_size and not done:
                batch.append(self._pending.popleft())
                done = batch[-1] is last
            self._writing = len(batch)
            try:
                await self._ensure_partitions(batch)
                async with session_scope(self._factory) as session:
                    connection = await session.connection()
                    plan = executemany_plan(connection.dialect, _INSERT, frozenset(batch[0]))
                    if plan is None or any(entry.keys() != plan.keys for entry in batch):
                        raise _UnwritableRow  # not all built by ledger_row: one by one
                    try:
                        rows = plan.rows(batch)
                    except Exception as error:  # a value its column's type refuses
                        raise _UnwritableRow from error
                    await connection.exec_driver_sql(plan.sql, rows)
                    # The batch's rollups in its own transaction: never ahead of or behind
                    # the raw rows they sum.
                    await connection.execute(
                        rollups.upsert(connection.dialect), rollups.aggregate(batch)
                    )
            except (IntegrityError, DataError, _UnwritableRow):
                # One bad row (its tenant deleted meanwhile, a value its column refuses) must
                # not block the rest forever: find it by writing the rows one by one.
                written = await self._write_one_by_one(batch)
                self._writing = 0  # written, dropped, or back in the queue
                if not written:
                    return
                continue
            except Exception:
                self._pending.extendleft(reversed(batch))  # back in the queue, then counted
                self._writing = 0
                LEDGER_WRITE_FAILURES.inc()
                log.exception("ledger batch of %d entries not written; will retry", len(batch))
                return
            self._writing = 0
            self.written += len(batch)

    async def _write_one_by_one(self, batch: list[dict[str, Any]]) -> bool:
        """Each entry in its own transaction (through SQLAlchemy, which also fills in a
        missing column's default); an entry the database refuses is dropped and counted.
        False when the database itself fails: the rest go back in the queue."""
        for index, entry in enumerate(batch):
            try:
                entry.setdefault("id", new_id())
                entry.setdefault("created_at", utcnow())
                await self._ensure_partitions([entry])
                async with session_scope(self._factory) as session:
                    await session.execute(_INSERT, [entry])
                    connection = await session.connection()
                    await connection.execute(
                        rollups.upsert(connection.dialect), rollups.aggregate([entry])
                    )
            except (OperationalError, InterfaceError):
                self._pending.extendleft(reversed(batch[index:]))  # back, then counted
                self._writing = 0
                LEDGER_WRITE_FAILURES.inc()
                log.exception("ledger entries not written; will retry")
                return False
            except (StatementError, KeyError, TypeError, ValueError) as error:
                self.dropped += 1
                LEDGER_DROPPED.inc()
                log.error(
                    "ledger entry %s dropped: the database refused it (%s)",
                    entry.get("id"),
                    type(error).__name__,
                )
            else:
                self.written += 1
        return True

    async def take(self, execution_id: uuid.UUID) -> list[Write]:
        """An execution's queued entries, taken out of the queue as writes for the caller's
        own transaction (a sub-agent stores its charges with its result: one commit, not
        two). A flush under way is waited for first, so none of the execution's entries is
        still being written elsewhere. If the caller's transaction fails, `put_back`."""
        async with self._flushing:
            mine = self._executions.pop(execution_id, [])
            self._held -= len(mine)
        if not mine:
            return []
        await self._ensure_partitions(mine)
        upsert = rollups.upsert(self._dialect())
        return [Write(_INSERT, entry) for entry in mine] + [
            Write(upsert, row) for row in rollups.aggregate(mine)
        ]

    def _dialect(self) -> Dialect:
        bind = self._factory.kw["bind"]
        dialect: Dialect = bind.dialect
        return dialect

    async def _ensure_partitions(self, entries: Sequence[dict[str, Any]]) -> None:
        """Create the ledger partitions `entries` need that are not known to exist (a
        set lookup per batch; a query only in a month's first batch)."""
        if self._unpartitioned:
            return
        months = {partitions.month_of(entry["created_at"]) for entry in entries} - self._months
        if not months:
            return
        async with session_scope(self._factory) as session:
            connection = await session.connection()
            if self._unpartitioned is None:
                self._unpartitioned = not await partitions.is_partitioned(connection)
                if self._unpartitioned:
                    return
            await partitions.ensure(connection, months)
        self._months |= months

    def put_back(self, writes: Sequence[Write]) -> None:
        """Entries `take`n whose transaction failed: queued again, to be retried."""
        entries = [write.params for write in writes if write.statement is _INSERT]
        self._pending.extendleft(reversed(entries))

    async def store_soon(
        self,
        execution_id: uuid.UUID,
        submit: Callable[[Sequence[Write]], asyncio.Future[None]],
    ) -> asyncio.Future[None]:
        """`submit(charges)` queues the caller's transaction with the execution's queued
        entries (`take`) in it and returns the future of its commit, returned here; if that
        commit fails the entries are queued again (`put_back`), whether or not anyone still
        waits for it (a sub-agent cancelled, or not waiting at all)."""
        charges = await self.take(execution_id)
        stored = submit(charges)
        stored.add_done_callback(lambda done: self._put_back_if_failed(done, charges))
        return stored

    def _put_back_if_failed(self, stored: asyncio.Future[None], charges: Sequence[Write]) -> None:
        if charges and (stored.cancelled() or stored.exception() is not None):
            self.put_back(charges)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # A flush writes what was queued when it began: repeat while entries recorded
        # meanwhile remain and the database takes them.
        while self._pending or self._executions:
            done = self.written + self.dropped
            await self.flush()
            if self.written + self.dropped == done:  # the database takes nothing
                left = len(self._pending) + self._held
                log.error("%d ledger entries not written at shutdown", left)
                return


async def store_entries(session: AsyncSession, entries: Sequence[dict[str, Any]]) -> None:
    """Ledger rows and their rollups in the caller's transaction: how the ledger is written
    outside the writer (imports, fixtures, sample data). A raw row inserted any other way is
    missing from every report read from the rollups."""
    if not entries:
        return
    connection = await session.connection()
    if await partitions.is_partitioned(connection):
        await partitions.ensure(
            connection, {partitions.month_of(entry["created_at"]) for entry in entries}
        )
    await connection.execute(_INSERT, list(entries))
    await connection.execute(rollups.upsert(connection.dialect), rollups.aggregate(entries))
