"""The swarm as a LangGraph `StateGraph`: decompose → `Send` fan-out → sub-agents → synthesize.

Nodes take what they need from the run's `SwarmContext` (LangGraph's runtime context),
never from the state: the state holds only what must survive a restart (the task, the
subtask prompts, each sub-agent's result), and it is checkpointed after every step. What
each node does is the engine's (`Phases`); this module only wires them.
"""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, NamedTuple, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime as GraphRuntime
from langgraph.types import Send

from apiary.swarm.checkpoint import DatabaseSaver
from apiary.swarm.context import SwarmContext


class SubtaskResult(TypedDict):
    index: int
    status: str
    result: str | None
    error: str | None
    seconds: float


class SwarmState(TypedDict):
    task: str
    subtasks: list[str]
    results: Annotated[list[SubtaskResult], operator.add]
    answer: str


class SubagentInput(TypedDict):
    index: int
    prompt: str


class Phases(NamedTuple):
    """The work of each node, given by the engine."""

    decompose: Callable[[SwarmContext, str], Awaitable[list[str]]]
    # (context, index, prompt, task id) -> the sub-agent's result
    subagent: Callable[[SwarmContext, int, str, str | None], Awaitable[SubtaskResult]]
    synthesize: Callable[[SwarmContext, str, Sequence[SubtaskResult]], Awaitable[str]]


def fan_out(state: SwarmState) -> list[Send] | str:
    if not state["subtasks"]:
        return "synthesize"
    return [
        Send("subagent", SubagentInput(index=index, prompt=prompt))
        for index, prompt in enumerate(state["subtasks"])
    ]


def build_graph(saver: DatabaseSaver, phases: Phases) -> CompiledStateGraph[Any, Any, Any, Any]:
    async def decompose(state: SwarmState, runtime: GraphRuntime[SwarmContext]) -> dict[str, Any]:
        return {"subtasks": await phases.decompose(runtime.context, state["task"])}

    async def subagent(state: SubagentInput, runtime: GraphRuntime[SwarmContext]) -> dict[str, Any]:
        task_id = runtime.execution_info.task_id if runtime.execution_info else None
        result = await phases.subagent(runtime.context, state["index"], state["prompt"], task_id)
        return {"results": [result]}

    async def synthesize(state: SwarmState, runtime: GraphRuntime[SwarmContext]) -> dict[str, Any]:
        return {"answer": await phases.synthesize(runtime.context, state["task"], state["results"])}

    builder = StateGraph(SwarmState, context_schema=SwarmContext)
    builder.add_node("decompose", decompose)
    builder.add_node("subagent", subagent, input_schema=SubagentInput)
    builder.add_node("synthesize", synthesize)
    builder.add_edge(START, "decompose")
    builder.add_conditional_edges("decompose", fan_out, ["subagent", "synthesize"])
    builder.add_edge("subagent", "synthesize")
    builder.add_edge("synthesize", END)
    return builder.compile(checkpointer=saver)
