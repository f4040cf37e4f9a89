"""The group commit (`apiary.db.GroupCommit`) that the swarm's events, subtask updates and
checkpoint writes go through, and the ledger's flush, on the real database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace

import pytest
from sqlalchemy import Table, func, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.auth.context import Actor, AuthContext
from apiary.authz.permissions import Role
from apiary.db import GroupCommit, Write, session_scope
from apiary.gateway.providers.base import Usage
from apiary.runtime import Runtime
from apiary.tenants.models import Tenant
from apiary.usage.ledger import LedgerWriter, ledger_row
from apiary.usage.models import LedgerEntry

pytestmark = pytest.mark.both_databases

TENANTS: Table = Tenant.__table__  # type: ignore[assignment]
NEW_TENANT = insert(TENANTS)


def tenant(name: str) -> Write:
    return Write(NEW_TENANT, {"name": name})


async def names(runtime: Runtime, prefix: str) -> set[str]:
    async with session_scope(runtime.session_factory) as session:
        rows = await session.scalars(select(Tenant.name).where(Tenant.name.like(f"{prefix}%")))
        return set(rows)


async def test_concurrent_writes_share_transactions_and_are_stored_on_return(
    runtime: Runtime,
) -> None:
    writes = GroupCommit(runtime.session_factory)
    stored_on_return: list[bool] = []

    async def one(index: int) -> None:
        await writes.run(tenant(f"group-{index}"))
        stored_on_return.append(f"group-{index}" in await names(runtime, f"group-{index}"))

    await asyncio.gather(*(one(i) for i in range(50)))

    assert stored_on_return == [True] * 50
    assert await names(runtime, "group-") == {f"group-{i}" for i in range(50)}
    assert writes.transactions < 10  # 50 callers, a handful of commits


async def test_a_bad_write_fails_only_its_own_caller(runtime: Runtime) -> None:
    writes = GroupCommit(runtime.session_factory)
    await writes.run(tenant("taken"))

    outcomes = await asyncio.gather(
        writes.run(tenant("fine-1")),
        writes.run(tenant("taken")),  # the name is unique: this one violates it
        writes.run(tenant("fine-2"), tenant("fine-3")),
        return_exceptions=True,
    )

    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], IntegrityError)
    assert await names(runtime, "fine-") == {"fine-1", "fine-2", "fine-3"}


async def test_a_cancelled_callers_write_still_lands(runtime: Runtime) -> None:
    writes = GroupCommit(runtime.session_factory)
    waiting = asyncio.create_task(writes.run(tenant("cancelled-caller")))
    await asyncio.sleep(0)  # queued
    waiting.cancel()
    await writes.barrier()  # returns once everything queued before it has committed

    assert await names(runtime, "cancelled-caller") == {"cancelled-caller"}


async def test_a_database_error_fails_the_whole_batch_at_once(runtime: Runtime) -> None:
    """A locked or lost database is not one write's fault: every caller of the batch gets
    the error, rather than each being retried alone, slowly, into the same error."""
    writes = GroupCommit(runtime.session_factory)
    attempts = 0

    async def locked(_session: object) -> None:
        nonlocal attempts
        attempts += 1
        raise OperationalError("INSERT ...", {}, Exception("database is locked"))

    outcomes = await asyncio.gather(
        writes.run(tenant("batch-1")),
        writes.run(locked),
        writes.run(tenant("batch-2")),
        return_exceptions=True,
    )

    assert all(isinstance(outcome, OperationalError) for outcome in outcomes)
    assert attempts == 1
    assert await names(runtime, "batch-") == set()


async def ledger_for_a_tenant(runtime: Runtime, name: str) -> tuple[LedgerWriter, AuthContext]:
    async with session_scope(runtime.session_factory) as session:
        row = Tenant(name=name)
        session.add(row)
    auth = AuthContext(role=Role.DEVELOPER, tenant_id=row.id, actor=Actor())
    return LedgerWriter(runtime.session_factory), auth


def record(ledger: LedgerWriter, auth: AuthContext, reason: str) -> uuid.UUID:
    """One chat call's ledger entry, queued; its id."""
    entry = ledger_row(
        auth,
        {"model": "oai/gpt-4o-mini"},
        kind="chat",
        route=None,
        reason=reason,
        provider="oai",
        model="gpt-4o-mini",
        usage=Usage(prompt_tokens=1),
        cost_usd=0.0,
        latency_s=0.001,
    )
    ledger.record(entry)
    return uuid.UUID(str(entry["id"]))


async def stored(runtime: Runtime, entry_id: uuid.UUID) -> bool:
    async with session_scope(runtime.session_factory) as session:
        count = await session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.id == entry_id)
        )
    return count == 1


async def test_ledger_flush_returns_only_once_every_earlier_entry_is_stored(
    runtime: Runtime,
) -> None:
    """Two sub-agents finishing together both flush before checkpointing: the second must
    not return while the first flush is still committing the second's entry."""
    ledger, auth = await ledger_for_a_tenant(runtime, "ledger-tenant")
    record(ledger, auth, "sub-agent 1")
    second = record(ledger, auth, "sub-agent 2")
    first_flush = asyncio.create_task(ledger.flush())
    await asyncio.sleep(0)  # the first flush has taken both entries and is committing
    await ledger.flush()  # the second sub-agent's flush
    assert await stored(runtime, second)
    await first_flush


async def test_the_writer_stores_every_column_as_the_orm_reads_it(runtime: Runtime) -> None:
    """The writer hands its batches to the driver itself: each column must land exactly as
    an ordinary insert would store it (ids, the UTC timestamp, JSON, booleans, nulls)."""
    ledger, auth = await ledger_for_a_tenant(runtime, "ledger-columns")
    auth = replace(
        auth, actor=Actor(api_key_id=uuid.uuid4()), execution_id=uuid.uuid4(), agent_id=None
    )
    entry = ledger_row(
        auth,
        {"model": "auto"},
        kind="chat",
        route="auto",
        reason="complexity 0.91 > 0.8",
        provider="oai",
        model="gpt-4o",
        usage=Usage(prompt_tokens=12, completion_tokens=7, cached_tokens=3),
        cost_usd=None,
        latency_s=0.25,
        ttft_s=0.05,
        fallback_path=["claude/claude-sonnet-4: rate_limit"],
        streamed=True,
        tokens_estimated=True,
    )
    ledger.record(entry)
    await ledger.flush()
    async with session_scope(runtime.session_factory) as session:
        row = await session.get(LedgerEntry, entry["id"])
    assert row is not None
    stored_columns = {column.key: getattr(row, column.key) for column in LedgerEntry.__table__.c}
    assert stored_columns == entry


async def test_an_entry_the_batch_cannot_take_neither_blocks_nor_loses_the_others(
    runtime: Runtime,
) -> None:
    """An entry missing a column (a caller not using ledger_row) makes the driver-level
    batch fail: the writer then goes one by one, where the column's default applies."""
    ledger, auth = await ledger_for_a_tenant(runtime, "ledger-incomplete")
    before = record(ledger, auth, "before")
    incomplete = ledger_row(
        auth,
        {"model": "oai/gpt-4o-mini"},
        kind="chat",
        route=None,
        reason="no streamed column",
        provider="oai",
        model="gpt-4o-mini",
        usage=Usage(),
        cost_usd=0.0,
        latency_s=0.001,
    )
    del incomplete["streamed"]
    ledger.record(incomplete)
    after = record(ledger, auth, "after")
    await ledger.flush()
    assert not ledger._pending
    for entry_id in (before, incomplete["id"], after):
        assert await stored(runtime, entry_id)
    assert ledger.dropped == 0


async def test_closing_the_writer_stores_entries_recorded_during_its_last_flush(
    runtime: Runtime,
) -> None:
    ledger, auth = await ledger_for_a_tenant(runtime, "ledger-close")
    early = record(ledger, auth, "early")
    closing = asyncio.create_task(ledger.close())
    for _ in range(100):  # until the last flush has taken the entry and is committing it
        if not ledger._pending:
            break
        await asyncio.sleep(0)
    late = record(ledger, auth, "late")
    await closing
    assert await stored(runtime, early)
    assert await stored(runtime, late)


async def test_a_flush_leaves_entries_recorded_meanwhile_for_the_next_batch(
    runtime: Runtime,
) -> None:
    """Calls keep arriving while a batch commits: the flush writes what was queued when it
    started and returns, so the late entries go in the next tick's batch instead of a
    stream of small transactions each paying a commit."""
    ledger, auth = await ledger_for_a_tenant(runtime, "ledger-no-chase")
    early = record(ledger, auth, "queued before the flush")
    flushing = asyncio.create_task(ledger.flush())
    for _ in range(100):  # until the flush has taken the entry and is committing it
        if not ledger._pending:
            break
        await asyncio.sleep(0)
    late = record(ledger, auth, "recorded during the commit")
    await flushing
    assert await stored(runtime, early)
    assert not await stored(runtime, late)
    assert [entry["id"] for entry in ledger._pending] == [late]
    await ledger.flush()
    assert await stored(runtime, late)


async def test_a_cancelled_flush_does_not_lose_the_entries_it_took(runtime: Runtime) -> None:
    """A sub-agent cancelled while its flush writes everybody's entries must not take them
    down with it."""
    ledger, auth = await ledger_for_a_tenant(runtime, "cancelled-flush")
    entry = record(ledger, auth, "cancelled flush")
    flushing = asyncio.create_task(ledger.flush())
    await asyncio.sleep(0)  # it has taken the entry and is writing it
    flushing.cancel()
    await ledger.flush()  # waits for the write under way
    assert await stored(runtime, entry)


async def test_a_sub_agent_takes_its_execution_s_charges_into_its_own_commit(
    runtime: Runtime,
) -> None:
    """A sub-agent stores its charges in the transaction that stores its result: it takes
    its execution's queued entries and leaves every other caller's to the writer."""
    ledger, auth = await ledger_for_a_tenant(runtime, "ledger-take")
    execution_id = uuid.uuid4()
    mine = record(ledger, replace(auth, execution_id=execution_id), "the sub-agent's call")
    other = record(ledger, auth, "an API call")

    writes = await ledger.take(execution_id)
    # The entry, and its hour's, day's and month's rollups (keyed by tenant, no id of their own).
    assert [write.params["id"] for write in writes if "id" in write.params] == [mine]
    assert sorted(w.params["period"] for w in writes if "period" in w.params) == [
        "day",
        "hour",
        "month",
    ]
    await runtime.writes.run(*writes)
    assert await stored(runtime, mine)
    assert not await stored(runtime, other)  # still queued for the writer
    await ledger.flush()
    assert await stored(runtime, other)


async def test_an_execution_s_entries_nobody_takes_are_flushed_like_any_other(
    runtime: Runtime,
) -> None:
    """The decomposition's and the synthesis's calls are charged to the execution too, but
    no sub-agent takes them: the writer's flush stores them, and a later take finds none."""
    ledger, auth = await ledger_for_a_tenant(runtime, "ledger-untaken")
    execution_id = uuid.uuid4()
    entry = record(ledger, replace(auth, execution_id=execution_id), "the synthesis call")
    await ledger.flush()
    assert await stored(runtime, entry)
    assert await ledger.take(execution_id) == []


async def test_taking_charges_waits_for_a_flush_under_way(runtime: Runtime) -> None:
    """An entry the writer's flush took is being committed in another transaction: the
    sub-agent must not store its result before that commit either."""
    ledger, auth = await ledger_for_a_tenant(runtime, "ledger-take-wait")
    execution_id = uuid.uuid4()
    in_flight = record(ledger, replace(auth, execution_id=execution_id), "before the flush")
    flushing = asyncio.create_task(ledger.flush())
    for _ in range(100):  # until the flush has taken the entry and is committing it
        if not ledger._executions and all(entry["id"] != in_flight for entry in ledger._pending):
            break
        await asyncio.sleep(0)
    assert await ledger.take(execution_id) == []
    assert await stored(runtime, in_flight)
    await flushing


async def test_charges_whose_commit_failed_go_back_to_the_writer(runtime: Runtime) -> None:
    ledger, auth = await ledger_for_a_tenant(runtime, "ledger-put-back")
    execution_id = uuid.uuid4()
    entry = record(ledger, replace(auth, execution_id=execution_id), "a sub-agent's call")
    writes = await ledger.take(execution_id)
    ledger.put_back(writes)  # its transaction failed
    assert not await stored(runtime, entry)
    await ledger.flush()
    assert await stored(runtime, entry)


async def test_charges_survive_a_caller_cancelled_while_its_commit_fails(
    runtime: Runtime,
) -> None:
    """A sub-agent cancelled (its execution cancelled or out of time) while the commit of
    its result and charges is queued, and that commit then fails (a locked database): the
    charges go back to the writer, which stores them, instead of vanishing with the caller."""
    ledger, auth = await ledger_for_a_tenant(runtime, "ledger-cancelled-commit")
    execution_id = uuid.uuid4()
    entry = record(ledger, replace(auth, execution_id=execution_id), "a sub-agent's call")

    async def locked(session: AsyncSession) -> None:
        raise OperationalError("UPDATE ...", {}, Exception("database is locked"))

    started = asyncio.Event()

    def submit(charges: Sequence[Write]) -> asyncio.Future[None]:
        started.set()
        return runtime.writes.submit(*charges, locked)  # fails the whole transaction

    async def finish() -> None:
        await asyncio.shield(await ledger.store_soon(execution_id, submit))

    blocker = asyncio.create_task(runtime.writes.run(lambda _: asyncio.sleep(0.2)))
    await asyncio.sleep(0)  # the queue is busy: the store waits behind it
    finishing = asyncio.create_task(finish())
    await started.wait()
    finishing.cancel()
    await asyncio.gather(finishing, blocker, return_exceptions=True)
    await runtime.writes.barrier()
    assert not await stored(runtime, entry)
    await ledger.flush()
    assert await stored(runtime, entry)


async def test_rows_read_back_as_sqlalchemy_would_have_written_them(runtime: Runtime) -> None:
    """The group commit builds the statements' parameters itself (the same type processors
    and Python-side column defaults) and hands them to the driver (in aiosqlite's thread on
    SQLite, as asyncpg executemany calls on PostgreSQL). A
    ledger entry (UUIDs, a missing one, a UTC timestamp, floats, booleans, a JSON list) and
    a tenant (its id, creation time, status and plan left to the column defaults) written
    through it read back like the same rows written through a session. Two entries go in
    one statement, as a fan-out's rows do."""
    _, auth = await ledger_for_a_tenant(runtime, "read-back")
    entries = []
    for _ in range(3):
        entry = ledger_row(
            replace(auth, execution_id=uuid.uuid4(), agent_id=uuid.uuid4()),
            {"model": "oai/gpt-4o-mini"},
            kind="chat",
            route="default",
            reason="read back",
            provider="oai",
            model="gpt-4o-mini",
            usage=Usage(prompt_tokens=3, completion_tokens=4),
            cost_usd=0.25,
            latency_s=0.5,
            ttft_s=None,
            fallback_path=["oai/gpt-4o", "oai/gpt-4o-mini"],
            streamed=True,
        )
        entries.append(entry)
    ledger_insert = insert(LedgerEntry.__table__)  # type: ignore[arg-type]
    # The group commit, two rows in one statement (the second with a time to first token).
    entries[2]["ttft_ms"], entries[2]["fallback_path"] = 12.5, []
    await runtime.writes.run(Write(ledger_insert, entries[0]), Write(ledger_insert, entries[2]))
    async with session_scope(runtime.session_factory) as session:  # SQLAlchemy's own
        await session.execute(ledger_insert, [entries[1]])
    await runtime.writes.run(tenant("read-back-defaults"))
    async with session_scope(runtime.session_factory) as session:
        await session.execute(NEW_TENANT, [{"name": "read-back-defaults-orm"}])

    async with session_scope(runtime.session_factory) as session:
        rows = {
            row.id: row
            for row in await session.scalars(
                select(LedgerEntry).where(LedgerEntry.id.in_([e["id"] for e in entries]))
            )
        }
        tenants = {
            row.name: row
            for row in await session.scalars(
                select(Tenant).where(Tenant.name.like("read-back-defaults%"))
            )
        }
    columns = [c.key for c in LedgerEntry.__table__.columns]
    for entry in entries:
        row = rows[entry["id"]]
        assert {key: getattr(row, key) for key in columns} == {key: entry[key] for key in columns}
    ours, theirs = tenants["read-back-defaults"], tenants["read-back-defaults-orm"]
    assert isinstance(ours.id, uuid.UUID)
    assert ours.id != theirs.id
    assert ours.created_at.tzinfo is not None
    assert abs((ours.created_at - theirs.created_at).total_seconds()) < 60
    assert (ours.status, ours.plan) == (theirs.status, theirs.plan)
