"""The checkpointer's serializer: LangGraph's format, with a fast path for `Send`."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Send

from apiary.swarm.checkpoint import SwarmSerializer

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
