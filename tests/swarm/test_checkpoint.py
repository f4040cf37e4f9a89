"""The checkpointer: LangGraph's format with a fast path for `Send`, and task writes that
wait for the commit of what their task stored itself."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Send
from sqlalchemy.exc import OperationalError

from apiary.runtime import Runtime
from apiary.swarm.checkpoint import DatabaseSaver, SwarmSerializer

pytestmark = pytest.mark.both_databases

FAN_OUT = [Send("subagent", {"index": i, "prompt": f"part {i}"}) for i in range(3)]


@pytest.mark.parametrize(
    "value",
    [
        FAN_OUT[0],  # a task write of the decomposition
        {"channel_values": {"__pregel_tasks": FAN_OUT, "task": "t"}, "v": 4},  # a checkpoint
        [{"index": 0, "status": "succeeded", "result": "x", "error": None, "seconds": 1.0}],
        {"id": uuid.UUID(int=7), "tags": {"a"}},  # types the fast path leaves to LangGraph
        None,
        b"raw",
    ],
)
def test_the_bytes_are_langgraphs_own(value: Any) -> None:
    """A checkpoint written with the fast path reads back with LangGraph's serializer (and
    the other way round), so a worker of either version resumes the other's executions."""
    ours, langgraphs = SwarmSerializer(), JsonPlusSerializer()
    assert ours.dumps_typed(value) == langgraphs.dumps_typed(value)
    assert langgraphs.loads_typed(ours.dumps_typed(value)) == value


def test_a_send_with_a_timeout_keeps_it() -> None:
    send = Send("subagent", {"index": 0, "prompt": "p"}, timeout=5.0)
    ours, langgraphs = SwarmSerializer(), JsonPlusSerializer()
    assert ours.dumps_typed(send) == langgraphs.dumps_typed(send)


def _config(thread_id: str, checkpoint_id: str | None = None) -> Any:
    configurable = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


async def test_a_tasks_writes_wait_for_its_own_commit(runtime: Runtime) -> None:
    """A sub-agent returns without waiting for the commit of its result and charges. Its
    task writes, and the thread's next checkpoint, are stored only after that commit: a
    worker killed before it resumes with the sub-agent still to run, never with a
    checkpoint counting it finished while its charges are lost."""
    saver = DatabaseSaver(runtime.session_factory, runtime.writes)
    thread = str(uuid.uuid4())
    first = empty_checkpoint()
    stored_config = await saver.aput(_config(thread), first, {"step": 0}, {})
    committing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    saver.store_after(thread, "task-1", committing)

    writing = asyncio.create_task(saver.aput_writes(stored_config, [("results", [1])], "task-1"))
    checkpointing = asyncio.create_task(
        saver.aput(stored_config, empty_checkpoint(), {"step": 1}, {})
    )
    await asyncio.sleep(0.05)
    assert not writing.done()
    assert not checkpointing.done()
    found = await saver.aget_tuple(_config(thread))
    assert found is not None
    assert found.checkpoint["id"] == first["id"]
    assert found.pending_writes == []

    committing.set_result(None)
    await writing
    await checkpointing
    latest = await saver.aget_tuple(_config(thread, first["id"]))
    assert latest is not None
    assert latest.pending_writes == [("task-1", "results", [1])]


async def test_a_tasks_failed_commit_stores_neither_its_writes_nor_later_checkpoints(
    runtime: Runtime,
) -> None:
    saver = DatabaseSaver(runtime.session_factory, runtime.writes)
    thread = str(uuid.uuid4())
    first = empty_checkpoint()
    stored_config = await saver.aput(_config(thread), first, {"step": 0}, {})
    failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    saver.store_after(thread, "task-1", failed)
    failed.set_exception(OperationalError("INSERT ...", {}, Exception("database is locked")))

    with pytest.raises(OperationalError):
        await saver.aput_writes(stored_config, [("results", [1])], "task-1")
    with pytest.raises(OperationalError):
        await saver.aput(stored_config, empty_checkpoint(), {"step": 1}, {})
    found = await saver.aget_tuple(_config(thread))
    assert found is not None
    assert found.checkpoint["id"] == first["id"]
    assert found.pending_writes == []
    await saver.adelete_thread(thread)  # the run is over: nothing of it is held any longer
    assert await saver.aget_tuple(_config(thread)) is None
    await saver.aput(_config(thread), empty_checkpoint(), {"step": 0}, {})
