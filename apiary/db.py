"""Database engine, the ORM base, and the per-request transaction.

One async engine per process. The request (or background task) owns the transaction:
`session_scope` commits when the work succeeds and rolls back when it raises; services
only add, flush and query.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from sqlalchemy import DateTime, Executable, Insert, MetaData, Update, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InvalidatePoolError,
    StatementError,
)
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime}


def new_id() -> uuid.UUID:
    """A new row id: a UUIDv7 (RFC 9562), whose leading bits are the time it was made.

    48 bits of Unix milliseconds, then 12 bits of the sub-millisecond fraction (RFC 9562's
    "increased clock precision", so one process's ids come out in order), then 62 random
    bits. Ids made one after another land next to each other in a primary-key index
    instead of at random places in it: an insert touches the index's last, cached page.
    On SQLite that halves the cost of a ledger row's insert (bench/ledger_insert.py)."""
    nanos = time.time_ns()
    millis, fraction = divmod(nanos, 1_000_000)
    sub_ms = fraction * 4096 // 1_000_000  # 12 bits
    random_bits = int.from_bytes(os.urandom(8)) >> 2  # 62 bits
    value = (millis << 80) | (0x7 << 76) | (sub_ms << 64) | (0b10 << 62) | random_bits
    return uuid.UUID(int=value)


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def _sqlite_pragmas(dbapi_connection: Any, _: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


# How long a client told the database is unreachable waits before trying again.
UNAVAILABLE_RETRY_AFTER_S = 5


def database_unreachable(error: BaseException) -> bool:
    """Whether `error` means the database cannot be reached (down, restarting, the
    connection cut), not that a statement was wrong: worth a 503 and a retry, not a 500."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    cause: BaseException | None = error
    for _ in range(6):  # the driver's error, wrapped by SQLAlchemy and by the pool
        if cause is None or type(cause).__module__.startswith("redis."):
            return False  # Redis down is another outage, with a policy of its own
        if isinstance(cause, OSError):  # refused, reset, timed out: no socket to a server
            return True
        sqlstate = getattr(cause, "sqlstate", None)
        # 08: connection exception; 57P: the server is shutting down or starting up.
        if isinstance(sqlstate, str) and sqlstate.startswith(("08", "57P")):
            return True
        cause = getattr(cause, "orig", None) or cause.__cause__ or cause.__context__
    return False


def create_engine(url: str) -> AsyncEngine:
    # JSON columns (events, checkpoints' metadata, figures) through orjson: the standard
    # library's encoder was a few percent of a swarm's CPU. hide_parameters: SQL errors are
    # logged, and their parameters can hold password hashes.
    options: dict[str, Any] = {
        "hide_parameters": True,
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
    }
    if url.startswith("sqlite"):
        engine = create_async_engine(url, **options)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_async_engine(url, pool_size=10, max_overflow=20, **options)
    _ping_when_idle(engine)
    return engine


# A pooled connection left idle this long is pinged before it is used again: a PostgreSQL
# restart, a failover or a proxy's idle timeout may have closed it meanwhile. SQLAlchemy's
# `pool_pre_ping` pings on every checkout instead, and asyncpg's ping is three round trips
# (BEGIN, ";", ROLLBACK): under load that was an eighth of a replica's CPU and most of the
# transactions PostgreSQL saw sitting open after BEGIN. A connection used moments ago that
# has since died fails its statement as a disconnect instead, which invalidates the whole
# pool (SQLAlchemy does that on any disconnect) and answers 503 like the outage it is.
PING_AFTER_IDLE_S = 5.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    dialect = engine.dialect

    def checkout(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at < PING_AFTER_IDLE_S:
            return  # new, or used moments ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:  # what SQLAlchemy's own pre-ping catches
            if dialect.is_disconnect(error, dbapi_connection, None):
                # The pool retries with a fresh connection, after dropping every
                # connection as old as this one (the server they talked to is gone).
                raise InvalidatePoolError() from error
            raise

    def checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["returned_at"] = time.monotonic()

    event.listen(engine.sync_engine.pool, "checkout", checkout)
    event.listen(engine.sync_engine.pool, "checkin", checkin)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)


def create_lookup_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for a lone read (who is this token's caller?) outside any transaction:
    one round trip for the statement instead of three (BEGIN, the statement, ROLLBACK).
    They share the engine's pool; the isolation level goes back to the default when a
    connection returns to it. Nothing written through them is atomic with anything else."""
    return async_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
    )


@asynccontextmanager
async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any error, except an error that
    says its changes stand (`keep_changes`, e.g. the audit entry of a refused sign-in)."""
    async with factory() as session:
        try:
            yield session
        except BaseException as error:
            if getattr(error, "keep_changes", False):
                await session.commit()
            else:
                await session.rollback()
            raise
        await session.commit()


Work = Callable[[AsyncSession], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Write:
    """One row's INSERT or UPDATE: a prebuilt Core statement and its parameters.

    Writes of the same statement object in one group commit run as one executemany."""

    statement: Executable
    params: dict[str, Any]


class GroupCommit:
    """Small writes made at about the same time share one transaction (a group commit).

    A swarm of 100 sub-agents writes its events, subtask updates and checkpoint writes
    within milliseconds of each other; one commit each would make the database (SQLite's
    single writer above all) the bottleneck. `run(*items)` queues writes and returns once
    the transaction holding them has committed, so callers keep their guarantee ("stored
    when this returns"); transactions run one after another in queue order.

    Within a transaction, `Write`s of the same statement run together as one executemany,
    in queue order; groups of different statements, and the writes of callers queued at
    the same time, have no order between them (as with concurrent transactions). A `Work`
    (any function of the session) runs after everything queued before it.

    If a shared transaction fails because of what one write holds (a constraint, a bad
    value), each caller's items are retried alone, so one bad write fails only its own
    caller; if it fails for any other reason (the database is locked or gone), every caller
    of that transaction gets the error at once instead of one slow retry each.

    `barrier()` returns once everything queued before it has committed: whoever writes or
    reads outside the queue afterwards (an execution's final state) sees all of it.
    """

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory
        self._queue: list[_Queued] = []
        self._drain: asyncio.Task[None] | None = None
        self.transactions = 0  # committed, for tests and benchmarks

    async def run(self, *items: Write | Work) -> None:
        await asyncio.shield(self.submit(*items))  # a cancelled caller's write still lands

    def submit(self, *items: Write | Work) -> asyncio.Future[None]:
        """Queue writes now (their place in the order is taken at this call) and return
        the future of their commit, for a caller with something to do meanwhile."""
        future = asyncio.get_running_loop().create_future()
        # Read the outcome even when the caller is gone, so no error is left unobserved.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._queue.append((items, future))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._run_queue(), name="group-commit")
        return future

    async def barrier(self) -> None:
        await self.run()  # an empty unit of work, committed after all queued before it

    async def _run_queue(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await self._commit(batch)
            except BaseException as error:  # cancelled at shutdown: nobody waits forever
                for _, future in batch + self._queue:
                    _settle(future, error)
                self._queue = []
                raise

    async def _commit(self, batch: list[_Queued]) -> None:
        try:
            await self._transaction([item for items, _ in batch for item in items])
        except Exception as error:
            if len(batch) == 1 or not _one_writes_fault(error):
                for _, future in batch:
                    _settle(future, error)
                return
            for items, future in batch:  # find the bad one: each caller alone, in order
                try:
                    await self._transaction(list(items))
                except Exception as alone:
                    _settle(future, alone)
                else:
                    self.transactions += 1
                    _settle(future, None)
            return
        self.transactions += 1
        for _, future in batch:
            _settle(future, None)

    async def _transaction(self, items: list[Write | Work]) -> None:
        if not items:  # only barriers: transactions run in order, so nothing to wait for
            return
        bind = self._factory.kw.get("bind")
        if isinstance(bind, AsyncEngine) and all(isinstance(item, Write) for item in items):
            prepared = _prepare(bind.dialect, cast("list[Write]", items))
            if prepared is not None and bind.dialect.name == "sqlite":
                await _run_prepared_sqlite(bind, prepared)
                return
            if prepared is not None:
                async with bind.begin() as connection:
                    for sql, rows in prepared:
                        await connection.exec_driver_sql(sql, rows)
                return
        async with session_scope(self._factory) as session:
            await _apply(session, items)


_Queued = tuple[tuple[Write | Work, ...], "asyncio.Future[None]"]


def _one_writes_fault(error: Exception) -> bool:
    """An error one write's own content causes (so retrying each caller alone finds it):
    a constraint, a bad value, a value that cannot be bound. Not a locked or lost
    database, which every write of the batch would meet again."""
    if isinstance(error, IntegrityError | DataError):
        return True
    if isinstance(error, DBAPIError):
        return False
    return isinstance(error, StatementError | ValueError | TypeError)


async def _apply(session: AsyncSession, items: Sequence[Write | Work]) -> None:
    groups: dict[int, tuple[Executable, list[dict[str, Any]]]] = {}
    for item in items:
        if isinstance(item, Write):
            groups.setdefault(id(item.statement), (item.statement, []))[1].append(item.params)
            continue
        await _execute_groups(session, groups)
        groups = {}
        await item(session)
    await _execute_groups(session, groups)


async def _execute_groups(
    session: AsyncSession, groups: dict[int, tuple[Executable, list[dict[str, Any]]]]
) -> None:
    for statement, rows in groups.values():
        await session.execute(statement, rows)


# -- A group commit's statements, prepared once per shape -----------------------------------
#
# Through SQLAlchemy each row of an executemany goes through its general parameter handling,
# and on SQLite each statement is three trips to aiosqlite's thread (cursor, execute, close),
# each waking the event loop that also runs the sub-agents. A swarm's group commits are a
# few executemany statements of many rows: here each statement is compiled once per shape
# and its rows become the driver's parameter tuples through the same type processors and
# Python-side column defaults SQLAlchemy would apply. On SQLite they are run and committed
# in the database's thread in one trip; on PostgreSQL each is one executemany of asyncpg's
# (a prepared statement, its rows pipelined). Errors come back as SQLAlchemy's (an
# `IntegrityError` is still one write's fault).


@dataclass(frozen=True, slots=True)
class ExecutemanyPlan:
    """How one statement's rows (dicts with `keys`) become the DBAPI's parameter tuples."""

    sql: str
    keys: frozenset[str]
    # Per positional parameter: the row key it reads (or None: a column default to call),
    # the default, and the type's bind processor.
    parameters: tuple[tuple[str | None, Callable[[], Any] | None, Callable[[Any], Any] | None], ...]

    def rows(self, params: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        out = []
        for row in params:
            values = []
            for key, default, process in self.parameters:
                value = row[key] if key is not None else default()  # type: ignore[misc]
                values.append(process(value) if process is not None else value)
            out.append(tuple(values))
        return out


_plans: dict[tuple[int, str, frozenset[str]], tuple[Executable, ExecutemanyPlan | None]] = {}


def executemany_plan(
    dialect: Dialect, statement: Executable, keys: frozenset[str]
) -> ExecutemanyPlan | None:
    """The plan for rows with `keys` (built once per statement, dialect and key set), or
    None when the statement needs what only SQLAlchemy's own execution does. The SQLite
    group commit and the ledger writer's batches run their rows through it."""
    key = (id(statement), dialect.name, keys)
    cached = _plans.get(key)
    if cached is not None and cached[0] is statement:
        return cached[1]
    plan = _build_plan(dialect, statement, keys)
    _plans[key] = (statement, plan)  # holding the statement keeps its id unique
    return plan


def _build_plan(
    dialect: Dialect, statement: Executable, keys: frozenset[str]
) -> ExecutemanyPlan | None:
    if not isinstance(statement, Insert | Update) or statement._returning:
        return None
    compiled: Any = statement.compile(
        dialect=dialect, column_keys=sorted(keys), for_executemany=True
    )
    if (
        not compiled.positional
        or compiled.literal_execute_params
        or compiled.post_compile_params
        or compiled.update_prefetch
    ):
        return None
    defaults: dict[str, Callable[[], Any]] = {}
    for column in compiled.insert_prefetch:
        default = column.default
        if default is not None and default.is_callable:
            defaults[column.key] = functools.partial(default.arg, None)
        elif default is not None and default.is_scalar:
            defaults[column.key] = functools.partial(lambda value: value, default.arg)
        else:
            return None
    processors = compiled._bind_processors
    parameters = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        if bind.key in keys:
            key, default_of = bind.key, None
        elif name in keys:
            key, default_of = name, None
        elif bind.key in defaults:
            key, default_of = None, defaults[bind.key]
        else:
            return None  # a value bound in the statement itself: SQLAlchemy's job
        parameters.append((key, default_of, processors.get(name)))
    return ExecutemanyPlan(compiled.string, keys, tuple(parameters))


def _prepare(
    dialect: Dialect, items: list[Write]
) -> list[tuple[str, list[tuple[Any, ...]]]] | None:
    """Each statement's SQL and its rows as the driver's tuples, grouped as `_apply` groups
    them; None if one of them needs SQLAlchemy's own execution."""
    groups: dict[int, tuple[Executable, list[dict[str, Any]]]] = {}
    for item in items:
        groups.setdefault(id(item.statement), (item.statement, []))[1].append(item.params)
    prepared: list[tuple[str, list[tuple[Any, ...]]]] = []
    for statement, rows in groups.values():
        keys = frozenset(rows[0])
        plan = executemany_plan(dialect, statement, keys)
        if plan is None or any(row.keys() != keys for row in rows):
            return None  # not the swarm's statements: all of it through SQLAlchemy
        prepared.append((plan.sql, plan.rows(rows)))
    return prepared


async def _run_prepared_sqlite(
    engine: AsyncEngine, prepared: list[tuple[str, list[tuple[Any, ...]]]]
) -> None:
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        database: Any = raw.driver_connection  # the aiosqlite connection
        try:
            await database._execute(_run_sqlite, database._conn, prepared)
        except sqlite3.Error as error:
            sql = next((sql for sql, _ in prepared), None)
            raise DBAPIError.instance(
                sql, None, error, sqlite3.Error, hide_parameters=True
            ) from error


def _run_sqlite(
    database: sqlite3.Connection, prepared: list[tuple[str, list[tuple[Any, ...]]]]
) -> None:
    """In aiosqlite's thread: every statement, then the commit; a rollback if one fails."""
    try:
        for sql, rows in prepared:
            database.executemany(sql, rows)
        database.commit()
    except BaseException:
        database.rollback()
        raise


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
