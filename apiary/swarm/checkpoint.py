"""A LangGraph checkpointer on Apiary's own database (PostgreSQL or SQLite).

One implementation for both deployments, in tables Alembic migrates. It stores each
checkpoint whole (the swarm's state is small: a task, subtask prompts and results) and each
finished task's pending writes, which is what lets a resumed run skip the sub-agents that
had already finished in the interrupted superstep. Each write call returns once committed
(writes arriving together share a group commit), so a worker killed right after a
sub-agent finished still leaves that sub-agent's result.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import ormsgpack
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde import jsonplus
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Send
from sqlalchemy import Executable, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.db import GroupCommit, Write, session_scope
from apiary.swarm.models import SwarmCheckpoint, SwarmCheckpointWrite


class SwarmSerializer(JsonPlusSerializer):
    """LangGraph's serializer, with a faster way to one type it meets often: a `Send`.

    A 100-way fan-out stores a hundred `Send`s twice (as the decomposition's task writes
    and in the next checkpoint). LangGraph's encoder tries every type it knows on an object
    msgpack cannot encode itself, and reaches `Send` after a check against a runtime
    protocol, which costs tens of microseconds on Python 3.11; this one checks for `Send`
    first. The bytes are LangGraph's own (tests compare them), so it reads them back."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if obj is None or isinstance(obj, bytes | bytearray):
            return super().dumps_typed(obj)
        try:
            return "msgpack", _pack(obj)
        except ormsgpack.MsgpackEncodeError:
            return super().dumps_typed(obj)  # its own error, or its pickle fallback


def _pack(obj: Any) -> bytes:
    return ormsgpack.packb(obj, default=_default, option=jsonplus._option)


def _default(obj: Any) -> Any:
    if type(obj) is Send and getattr(obj, "timeout", None) is None:
        return ormsgpack.Ext(
            jsonplus.EXT_CONSTRUCTOR_POS_ARGS,
            _pack((Send.__module__, Send.__name__, (obj.node, obj.arg))),
        )
    return jsonplus._msgpack_default(obj)


def _ids(config: RunnableConfig) -> tuple[str, str]:
    configurable = config.get("configurable", {})
    return str(configurable["thread_id"]), str(configurable.get("checkpoint_ns", ""))


class DatabaseSaver(BaseCheckpointSaver[int]):
    """Async-only: the swarm always runs its graph with `ainvoke`."""

    def __init__(
        self, factory: async_sessionmaker[AsyncSession], writes: GroupCommit | None = None
    ) -> None:
        super().__init__(serde=SwarmSerializer())
        self._factory = factory
        # The sub-agents of one superstep finish together: their writes share a commit.
        self._writes = writes or GroupCommit(factory)
        # (thread, task) -> the commit of what the task stored itself (`store_after`)
        self._after: dict[tuple[str, str], asyncio.Future[None]] = {}

    def store_after(self, thread_id: str, task_id: str, stored: asyncio.Future[None]) -> None:
        """The task's own rows (a sub-agent's result and charges) are being committed: its
        writes, and the thread's next checkpoints, are stored once that commit has
        succeeded, and not at all if it fails (the run then fails with its error), so no
        checkpoint says a task finished whose result and charges are not stored. The task
        need not wait for its commit itself."""
        key = (thread_id, task_id)
        self._after[key] = stored
        # Once it has succeeded there is nothing to wait for; a failed one stays, so the
        # writes and checkpoints after it fail too, until the thread is deleted.
        stored.add_done_callback(lambda done: self._stored(key, done))

    def _stored(self, key: tuple[str, str], done: asyncio.Future[None]) -> None:
        if not done.cancelled() and done.exception() is None and self._after.get(key) is done:
            del self._after[key]

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, ns = _ids(config)
        checkpoint_id = get_checkpoint_id(config)
        async with self._factory() as session:
            statement = select(SwarmCheckpoint).where(
                SwarmCheckpoint.thread_id == thread_id, SwarmCheckpoint.checkpoint_ns == ns
            )
            if checkpoint_id:
                statement = statement.where(SwarmCheckpoint.checkpoint_id == checkpoint_id)
            else:
                statement = statement.order_by(SwarmCheckpoint.checkpoint_id.desc()).limit(1)
            row = await session.scalar(statement)
            if row is None:
                return None
            writes = (
                await session.scalars(
                    select(SwarmCheckpointWrite)
                    .where(
                        SwarmCheckpointWrite.thread_id == thread_id,
                        SwarmCheckpointWrite.checkpoint_ns == ns,
                        SwarmCheckpointWrite.checkpoint_id == row.checkpoint_id,
                    )
                    .order_by(SwarmCheckpointWrite.task_id, SwarmCheckpointWrite.idx)
                )
            ).all()
        return self._tuple(row, writes)

    def _tuple(
        self, row: SwarmCheckpoint, writes: Sequence[SwarmCheckpointWrite]
    ) -> CheckpointTuple:
        configurable = {
            "thread_id": row.thread_id,
            "checkpoint_ns": row.checkpoint_ns,
            "checkpoint_id": row.checkpoint_id,
        }
        parent = (
            {"configurable": {**configurable, "checkpoint_id": row.parent_checkpoint_id}}
            if row.parent_checkpoint_id
            else None
        )
        return CheckpointTuple(
            config={"configurable": configurable},
            checkpoint=self.serde.loads_typed((row.type, row.checkpoint)),
            metadata=self.serde.loads_typed((row.meta_type, row.meta)),
            parent_config=parent,  # type: ignore[arg-type]
            pending_writes=[
                (w.task_id, w.channel, self.serde.loads_typed((w.type, w.value))) for w in writes
            ],
        )

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        statement = select(SwarmCheckpoint).order_by(SwarmCheckpoint.checkpoint_id.desc())
        if config is not None:
            thread_id, ns = _ids(config)
            statement = statement.where(
                SwarmCheckpoint.thread_id == thread_id, SwarmCheckpoint.checkpoint_ns == ns
            )
        if before is not None and (before_id := get_checkpoint_id(before)):
            statement = statement.where(SwarmCheckpoint.checkpoint_id < before_id)
        if limit is not None and not filter:
            statement = statement.limit(limit)
        async with self._factory() as session:
            rows = (await session.scalars(statement)).all()
        yielded = 0
        for row in rows:
            found = self._tuple(row, [])
            if filter and any(found.metadata.get(k) != v for k, v in filter.items()):
                continue
            yield found
            yielded += 1
            if limit is not None and yielded >= limit:
                return

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id, ns = _ids(config)
        for (thread, _), stored in list(self._after.items()):
            if thread == thread_id:
                await asyncio.shield(stored)  # the tasks it counts as finished are stored
        kind, blob = self.serde.dumps_typed(checkpoint)
        meta_kind, meta = self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))
        values = {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint["id"],
            "parent_checkpoint_id": config.get("configurable", {}).get("checkpoint_id"),
            "type": kind,
            "checkpoint": blob,
            "meta_type": meta_kind,
            "meta": meta,
        }
        await self._writes.run(Write(self._upsert(SwarmCheckpoint, replace=True), values))
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        thread_id, ns = _ids(config)
        before = self._after.get((thread_id, task_id))
        if before is not None:
            await asyncio.shield(before)  # raises its error: then this is not stored either
        checkpoint_id = str(config["configurable"]["checkpoint_id"])
        rows = []
        for index, (channel, value) in enumerate(writes):
            kind, blob = self.serde.dumps_typed(value)
            rows.append(
                {
                    "thread_id": thread_id,
                    "checkpoint_ns": ns,
                    "checkpoint_id": checkpoint_id,
                    "task_id": task_id,
                    "idx": WRITES_IDX_MAP.get(channel, index),
                    "channel": channel,
                    "type": kind,
                    "value": blob,
                    "task_path": task_path,
                }
            )
        if not rows:
            return
        # Special channels (errors, interrupts) may be written again and then replace;
        # a task's regular writes are written once and a repeat is ignored.
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        statement = self._upsert(SwarmCheckpointWrite, replace=replace)
        await self._writes.run(*(Write(statement, row) for row in rows))

    async def adelete_thread(self, thread_id: str) -> None:
        for key in [key for key in self._after if key[0] == thread_id]:
            del self._after[key]  # a failed one, or one whose writes never came
        async with session_scope(self._factory) as session:
            await session.execute(
                delete(SwarmCheckpointWrite).where(SwarmCheckpointWrite.thread_id == thread_id)
            )
            await session.execute(
                delete(SwarmCheckpoint).where(SwarmCheckpoint.thread_id == thread_id)
            )

    def _upsert(
        self, model: type[SwarmCheckpoint] | type[SwarmCheckpointWrite], *, replace: bool
    ) -> Executable:
        bind = self._factory.kw.get("bind")
        dialect = bind.dialect.name if bind is not None else "sqlite"
        return _upsert_statement(dialect, model, replace)

    # The synchronous API is not used: the graph is only ever run with `ainvoke`.
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        raise NotImplementedError("DatabaseSaver is async-only")

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        raise NotImplementedError("DatabaseSaver is async-only")

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        raise NotImplementedError("DatabaseSaver is async-only")


@functools.cache
def _upsert_statement(
    dialect: str, model: type[SwarmCheckpoint] | type[SwarmCheckpointWrite], replace: bool
) -> Executable:
    """INSERT, replacing (or keeping) a row with the same key: built once per shape, so the
    writes of a hundred sub-agents run as one executemany in their group commit."""
    table: Any = model.__table__
    keys = [column.name for column in table.primary_key.columns]
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement: Any = insert(table)
    upsert: Executable
    if replace:
        upsert = statement.on_conflict_do_update(
            index_elements=keys,
            set_={
                column.name: statement.excluded[column.name]
                for column in table.columns
                if column.name not in keys
            },
        )
    else:
        upsert = statement.on_conflict_do_nothing(index_elements=keys)
    return upsert
