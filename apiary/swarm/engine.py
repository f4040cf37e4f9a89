"""Running one execution from its id: load, run (or resume) the graph, finish the record.

`SwarmEngine.run` is what both runners call (the in-process one and the Celery task). It is
safe to call again for the same execution: a finished one is left alone, an unfinished one
resumes from its last LangGraph checkpoint, whose stored task writes mean sub-agents that
had finished are neither re-run nor charged again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.auth.context import Actor, AuthContext
from apiary.authz.permissions import Role
from apiary.authz.scope import TenantScope
from apiary.db import Write, database_unreachable, session_scope, utcnow
from apiary.errors import ApiaryError
from apiary.executions.bus import cancel_channel
from apiary.executions.events import EventRecorder
from apiary.executions.models import Execution, ExecutionState, Subtask, SubtaskStatus
from apiary.executions.repository import SubtaskFigures, execution_repository
from apiary.memory.service import memory_service
from apiary.observability import tracing
from apiary.swarm.calls import BudgetStop, Call, Spend, Tally, chat
from apiary.swarm.checkpoint import DatabaseSaver
from apiary.swarm.context import SwarmContext, SwarmDeps
from apiary.swarm.graph import Phases, SubtaskResult, build_graph
from apiary.swarm.lease import ExecutionBusy, Lease
from apiary.swarm.slots import Slots
from apiary.swarm.tools import REGISTRY, ToolContext, ToolError, unique_sources

log = logging.getLogger("apiary.swarm")

RETRIES = 1  # a failed sub-agent is tried once more, then reported
CANCEL_POLL_S = 1.0
TOKEN_EVENT_EVERY_S = 0.1  # streamed text becomes at most one event per this, per stream

DECOMPOSE_PROMPT = (
    "You are the orchestrator of a team of up to {n} sub-agents working in parallel. "
    "Split the user's task into independent subtasks, each a self-contained instruction "
    "a sub-agent can carry out alone. Use as few subtasks as the task needs (at most {n}). "
    'Answer only with JSON: {{"subtasks": ["...", "..."]}}.'
)
SUBAGENT_PROMPT = (
    "You are a sub-agent in a team. Carry out your subtask and answer with the result "
    "only; other sub-agents handle the rest of the task. When you use a passage from "
    "knowledge_search, cite it as [n] with its source (file, page or section)."
)
SYNTHESIZE_PROMPT = (
    "Combine the sub-agents' results into one answer to the user's task. If some "
    "subtasks failed, answer from what succeeded and say plainly what is missing. "
    "Keep the sub-agents' citations: every [n] marker with its source stays next to the "
    "fact it supports."
)


class AllSubagentsFailed(Exception):
    pass


# -- small database steps -------------------------------------------------------------------


def _state_change(
    context: SwarmContext, state: ExecutionState
) -> tuple[tuple[str, dict[str, Any]], Write]:
    """A new state: its event, and the write that stores it (to go in one transaction)."""
    change = execution_repository.execution_write(
        context.scope, context.execution_id, {"state": state.value, "updated_at": utcnow()}
    )
    return ("state", {"state": state.value}), change


def _set_state_soon(context: SwarmContext, state: ExecutionState) -> asyncio.Future[None]:
    """A new state, stored while the phase's model call is sent (the caller awaits it
    before the phase ends: queued first, it is committed before the phase's next event)."""
    (type, data), change = _state_change(context, state)
    return context.events.emit_soon(type, alongside=[change], **data)


def _phase_write(context: SwarmContext, phase: str, tally: Tally, seconds: float) -> Write:
    """A phase's figures, written with the run's next event (the run keeps them all, so
    nothing is read back)."""
    context.phases[phase] = {
        "seconds": round(seconds, 4),
        "prompt_tokens": tally.prompt_tokens,
        "completion_tokens": tally.completion_tokens,
        "cost_usd": tally.cost_usd,
        "calls": tally.calls,
    }
    return execution_repository.execution_write(
        context.scope, context.execution_id, {"figures": {"phases": dict(context.phases)}}
    )


def _subtask_update(context: SwarmContext, index: int, **values: Any) -> Write:
    return execution_repository.subtask_write(context.scope, context.execution_id, index, values)


class _Output:
    """A model call's streamed text as `token` events (with the sub-agent's index, or none
    for the synthesis), at most one per `TOKEN_EVENT_EVERY_S`: a chunk waits for those that
    follow it within that time, so a hundred sub-agents streaming do not write an event per
    chunk each, and a short answer streamed at once is one event."""

    def __init__(self, context: SwarmContext, subtask: int | None = None) -> None:
        self._events = context.events
        self._where: dict[str, Any] = {} if subtask is None else {"subtask": subtask}
        self._pending: list[str] = []
        self._since: float | None = None  # when the oldest text not yet sent arrived

    async def add(self, text: str) -> None:
        self._pending.append(text)
        now = time.monotonic()
        if self._since is None:
            self._since = now
        elif now - self._since >= TOKEN_EVENT_EVERY_S:
            await self.flush()

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        """The text not sent yet, as a token event for the caller to store with its next
        event (one commit for both)."""
        if not self._pending:
            return []
        text = "".join(self._pending)
        self._pending.clear()
        self._since = None
        return [("token", {"text": text, **self._where})]

    async def flush(self) -> None:
        await self._events.emit_all(self.take())


# -- decompose ------------------------------------------------------------------------------


def _with_background(context: SwarmContext, text: str) -> str:
    return f"{context.background}\n\n{text}" if context.background else text


def parse_subtasks(text: str, limit: int) -> list[str] | None:
    """The subtask list from the orchestrator's JSON, or None when it cannot be read."""
    candidate = text.strip()
    fenced = re.search(r"\{.*\}", candidate, re.DOTALL)
    if fenced:
        candidate = fenced.group(0)
    try:
        document = orjson.loads(candidate)
    except orjson.JSONDecodeError:
        return None
    items = document.get("subtasks") if isinstance(document, dict) else None
    if not isinstance(items, list):
        return None
    prompts = [str(item).strip() for item in items if isinstance(item, str) and item.strip()]
    return prompts[:limit] or None


async def run_decompose(context: SwarmContext, task: str) -> list[str]:
    with tracing.span("apiary.swarm.decompose", attributes=_span_attributes(context)) as span:
        prompts = await _decompose(context, task)
        if span is not None:
            span.set_attribute("apiary.subtasks", len(prompts))
        return prompts


def _span_attributes(context: SwarmContext, **more: str | int) -> dict[str, str | int]:
    return {"apiary.execution_id": str(context.execution_id), **more}


async def _decompose(context: SwarmContext, task: str) -> list[str]:
    decomposing = _set_state_soon(context, ExecutionState.DECOMPOSING)
    started = time.perf_counter()
    tally = Tally()
    prompts: list[str] | None
    if context.mode == "single" or context.max_agents == 1:
        prompts = [task]
    else:
        schema = {
            "type": "object",
            "properties": {
                "subtasks": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1, "maxLength": 300},
                    "minItems": 1,
                    "maxItems": context.max_agents,
                }
            },
            "required": ["subtasks"],
            "additionalProperties": False,
        }
        system = DECOMPOSE_PROMPT.format(n=context.max_agents)
        if context.agent.get("system_prompt"):
            system = f"{context.agent['system_prompt']}\n\n{system}"
        call = await chat(
            context.deps,
            context.auth,
            context.spend,
            {
                "model": context.agent["model"],
                "temperature": context.agent.get("temperature", 0.2),
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": _with_background(context, task)},
                ],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "decomposition", "strict": True, "schema": schema},
                },
            },
        )
        tally.add(call)
        prompts = parse_subtasks(call.text, context.max_agents)
        if prompts is None:
            await context.events.emit(
                "decomposition_degraded", reason="the orchestrator's answer was not valid JSON"
            )
            prompts = [task]
    await decomposing
    phase = _phase_write(context, "decompose", tally, time.perf_counter() - started)
    existing: set[int] = set()
    if context.resumed:  # a run that stopped after storing them, before its checkpoint
        async with session_scope(context.deps.session_factory) as session:
            existing = {
                row.index
                for row in await execution_repository.subtasks(
                    session, context.scope, context.execution_id
                )
            }
    new_subtasks = [
        execution_repository.new_subtask_write(context.scope, context.execution_id, i, prompt)
        for i, prompt in enumerate(prompts)
        if i not in existing  # a resumed run already stored them
    ]
    running, change = _state_change(context, ExecutionState.RUNNING)
    await context.events.emit_all(
        [("subtasks_planned", {"subtasks": prompts}), running],
        alongside=[phase, *new_subtasks, change],
    )
    return prompts


# -- sub-agents -----------------------------------------------------------------------------


async def _tool_loop(
    context: SwarmContext,
    index: int,
    prompt: str,
    tally: Tally,
    sources: list[dict[str, Any]],
    output: _Output,
) -> str:
    """Call the model, run the tools it asks for, until it answers or the steps run out.

    The citations of the knowledge-base passages its tools returned go to `sources`; the
    answer's last streamed text is left in `output` for the caller's next event."""
    allowed = [REGISTRY[name] for name in context.agent.get("tools", []) if name in REGISTRY]
    system = SUBAGENT_PROMPT
    if context.agent.get("system_prompt"):
        system = f"{context.agent['system_prompt']}\n\n{system}"
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": _with_background(context, prompt)},
    ]
    tool_context = ToolContext(
        deps=context.deps,
        tenant_id=context.scope.tenant_id,
        execution_id=context.execution_id,
        agent_id=context.auth.agent_id,
        thread_id=context.thread_id,
        auth=context.auth,
        knowledge_base_ids=tuple(
            uuid.UUID(str(kb_id)) for kb_id in context.agent.get("knowledge_base_ids") or []
        ),
        sources=sources,
    )
    last: Call | None = None
    for _ in range(context.max_steps):
        body: dict[str, Any] = {
            "model": context.agent["model"],
            "temperature": context.agent.get("temperature", 0.2),
            "messages": messages,
        }
        if allowed:
            body["tools"] = [tool.spec() for tool in allowed]
        last = await chat(context.deps, context.auth, context.spend, body, on_token=output.add)
        tally.add(last)
        calls = last.message.get("tool_calls") or []
        if not calls:
            return last.text
        await output.flush()  # what the model said before its tool calls, shown now
        messages.append(
            {"role": "assistant", "content": last.message.get("content"), "tool_calls": calls}
        )
        for tool_call in calls:
            function = tool_call.get("function") or {}
            name = str(function.get("name"))
            result = await _run_tool(tool_context, name, function.get("arguments") or "{}")
            tally.tool_calls += 1
            await context.events.emit("tool_call", subtask=index, tool=name, output=result[:500])
            messages.append(
                {"role": "tool", "tool_call_id": tool_call.get("id"), "content": result}
            )
    raise ToolError(f"no answer within the step limit of {context.max_steps} model calls")


async def _run_tool(tool_context: ToolContext, name: str, arguments: str) -> str:
    # Named as the GenAI conventions name a tool call.
    with tracing.span(
        f"execute_tool {name}",
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name},
    ) as span:
        result = await _tool(tool_context, name, arguments)
        if span is not None and result.startswith("error: "):
            tracing.record_error(span, "tool_error")
        return result


async def _tool(tool_context: ToolContext, name: str, arguments: str) -> str:
    tool = REGISTRY.get(name)
    if tool is None:
        return f"error: no tool named {name!r}"
    try:
        parsed = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        return "error: the arguments were not valid JSON"
    if not isinstance(parsed, dict):
        return "error: the arguments must be a JSON object"
    try:
        return await tool.run(tool_context, parsed)
    except ToolError as error:
        return f"error: {error}"


async def run_subagent(
    context: SwarmContext, index: int, prompt: str, task_id: str | None = None
) -> SubtaskResult:
    async with context.slots, context.tenant_slots:
        attributes = _span_attributes(context, **{"apiary.subtask.index": index})
        with tracing.span("apiary.swarm.subagent", attributes=attributes) as span:
            result = await _subagent(context, index, prompt, task_id)
            if span is not None:
                span.set_attribute("apiary.subtask.status", result["status"])
                if result["status"] != "succeeded":
                    tracing.record_error(span, result["status"])
            return result


async def _subagent(
    context: SwarmContext, index: int, prompt: str, task_id: str | None
) -> SubtaskResult:
    if context.spend.exhausted:
        context.spend.stopped = True
        await context.deps.writes.run(
            _subtask_update(context, index, status=SubtaskStatus.SKIPPED.value)
        )
        return SubtaskResult(
            index=index, status="skipped", result=None, error="budget spent", seconds=0.0
        )
    started_at = utcnow()
    started = time.perf_counter()
    # Stored while the model call is on its way (its commit waited for, below, before the
    # sub-agent's end is): a hundred sub-agents start at once, and waiting for their
    # shared commit first would delay every model call by it.
    start_stored = context.events.emit_soon(
        "subagent_started",
        alongside=[
            _subtask_update(
                context, index, status=SubtaskStatus.RUNNING.value, started_at=started_at
            )
        ],
        subtask=index,
        prompt=prompt[:500],
    )
    tally = Tally()
    output = _Output(context, index)
    status, result, error = SubtaskStatus.FAILED, None, None
    sources: list[dict[str, Any]] = []
    for attempt in range(RETRIES + 1):
        sources = []  # the citations of the attempt that answers
        try:
            result = await _tool_loop(context, index, prompt, tally, sources, output)
        except BudgetStop as stop:
            status, error = SubtaskStatus.SKIPPED, str(stop)
            break
        except (ApiaryError, ToolError, KeyError, ValueError, RuntimeError) as failure:
            error = f"{type(failure).__name__}: {failure}"[:1000]
            if attempt < RETRIES:
                await context.events.emit_all(
                    [*output.take(), ("subagent_retry", {"subtask": index, "error": error})]
                )
            continue
        status, error = SubtaskStatus.SUCCEEDED, None
        break
    seconds = time.perf_counter() - started
    await start_stored
    finished = _subtask_update(
        context,
        index,
        status=status.value,
        result=result,
        error=error,
        model=", ".join(tally.models) or None,
        prompt_tokens=tally.prompt_tokens,
        completion_tokens=tally.completion_tokens,
        cost_usd=tally.cost_usd,
        attempts=min(attempt + 1, RETRIES + 1),
        tool_calls=tally.tool_calls,
        sources=unique_sources(sources),
        finished_at=utcnow(),
    )
    events = [
        *output.take(),
        (
            "subagent_finished",
            {
                "subtask": index,
                "status": status.value,
                "seconds": round(seconds, 4),
                "cost_usd": tally.cost_usd,
                "spent_usd": context.spend.cost_usd,
                "error": error,
            },
        ),
    ]
    # Everything this sub-agent was charged goes in the transaction that stores its result,
    # before its result is checkpointed: a worker killed in between loses no charge.
    stored = await context.deps.ledger.store_soon(
        context.execution_id,
        lambda charges: context.events.emit_all_soon(events, alongside=[finished, *charges]),
    )
    if task_id is None:
        await asyncio.shield(stored)
    else:
        # The sub-agent's end need not wait for that commit: the checkpointer stores its
        # task writes only once it has succeeded. The fan-out's last sub-agents finish
        # together, and the synthesis is sent meanwhile instead of after their commits.
        context.saver.store_after(str(context.execution_id), task_id, stored)
    return SubtaskResult(
        index=index, status=status.value, result=result, error=error, seconds=seconds
    )


# -- synthesize -----------------------------------------------------------------------------


def partial_answer(results: Sequence[SubtaskResult]) -> str:
    """What was done, without a synthesis call (the budget or the clock ran out)."""
    done = [r for r in sorted(results, key=lambda r: r["index"]) if r["status"] == "succeeded"]
    if not done:
        return ""
    return "\n\n".join(f"[{r['index'] + 1}] {r['result']}" for r in done)


async def run_synthesize(context: SwarmContext, task: str, results: Sequence[SubtaskResult]) -> str:
    with tracing.span("apiary.swarm.synthesize", attributes=_span_attributes(context)):
        return await _synthesize(context, task, results)


async def _synthesize(context: SwarmContext, task: str, results: Sequence[SubtaskResult]) -> str:
    ordered = sorted(results, key=lambda r: r["index"])
    succeeded = [r for r in ordered if r["status"] == "succeeded"]
    if context.spend.stopped or context.spend.exhausted:
        context.spend.stopped = True
        return partial_answer(ordered)
    if not succeeded:
        raise AllSubagentsFailed(
            "every sub-agent failed: " + "; ".join(str(r["error"]) for r in ordered)
        )
    if len(ordered) == 1:
        return str(succeeded[0]["result"])  # one sub-agent: its answer is the answer
    synthesizing = _set_state_soon(context, ExecutionState.SYNTHESIZING)
    started = time.perf_counter()
    sections = []
    for r in ordered:
        if r["status"] == "succeeded":
            sections.append(f"Subtask {r['index'] + 1} result:\n{r['result']}")
        else:
            sections.append(f"Subtask {r['index'] + 1} FAILED: {r['error']}")
    system = SYNTHESIZE_PROMPT
    if context.agent.get("system_prompt"):
        system = f"{context.agent['system_prompt']}\n\n{system}"

    output = _Output(context)
    tally = Tally()
    try:
        call = await chat(
            context.deps,
            context.auth,
            context.spend,
            {
                "model": context.agent["model"],
                "temperature": context.agent.get("temperature", 0.2),
                "messages": [
                    {"role": "system", "content": system},
                    {
                        "role": "user",
                        "content": _with_background(
                            context, f"Task: {task}\n\n" + "\n\n".join(sections)
                        ),
                    },
                ],
            },
            on_token=output.add,
        )
    except BudgetStop:
        await synthesizing
        await output.flush()
        return partial_answer(ordered)
    await synthesizing
    tally.add(call)
    phase = _phase_write(context, "synthesize", tally, time.perf_counter() - started)
    await context.events.emit_all(output.take(), alongside=[phase])
    return call.text


# -- one run --------------------------------------------------------------------------------


def _seconds(start: datetime | None, end: datetime | None) -> float:
    if start is None or end is None:
        return 0.0
    return max((end - start).total_seconds(), 0.0)


def figures(
    *,
    phases: dict[str, Any],
    started_at: datetime | None,
    finished_at: datetime | None,
    subtasks: Sequence[SubtaskFigures],
) -> dict[str, Any]:
    """Wall time, sub-agent time, speedup, critical path, tokens and cost by phase."""
    phases = dict(phases)
    durations = [_seconds(s.started_at, s.finished_at) for s in subtasks if s.started_at]
    phases["subagents"] = {
        "seconds": round(
            _seconds(
                min((s.started_at for s in subtasks if s.started_at), default=None),
                max((s.finished_at for s in subtasks if s.finished_at), default=None),
            ),
            4,
        ),
        "prompt_tokens": sum(s.prompt_tokens for s in subtasks),
        "completion_tokens": sum(s.completion_tokens for s in subtasks),
        "cost_usd": sum(s.cost_usd for s in subtasks),
        "calls": len(subtasks),
    }
    subagent_total = sum(durations)
    wall = _seconds(started_at, finished_at or utcnow())
    parallel_wall = phases["subagents"]["seconds"]
    critical = (
        phases.get("decompose", {}).get("seconds", 0.0)
        + max(durations, default=0.0)
        + phases.get("synthesize", {}).get("seconds", 0.0)
    )
    return {
        "phases": phases,
        "wall_s": round(wall, 4),
        "subagent_total_s": round(subagent_total, 4),
        "speedup": round(subagent_total / parallel_wall, 3) if parallel_wall > 0 else None,
        "critical_path_s": round(critical, 4),
        "subagents": {
            status.value: sum(1 for s in subtasks if s.status == status.value)
            for status in SubtaskStatus
        },
    }


def _closed(subtask: SubtaskFigures, finished_at: datetime) -> SubtaskFigures:
    """A subtask as the execution's end leaves it (`close_subtasks_write`)."""
    if subtask.status == SubtaskStatus.RUNNING.value:
        return dataclasses.replace(
            subtask, status=SubtaskStatus.CANCELLED.value, finished_at=finished_at
        )
    if subtask.status == SubtaskStatus.PENDING.value:
        return dataclasses.replace(subtask, status=SubtaskStatus.SKIPPED.value)
    return subtask


def _spent(execution: Execution, subtasks: Sequence[Subtask]) -> float:
    phases = execution.figures.get("phases", {})
    return sum(float(p.get("cost_usd") or 0.0) for p in phases.values()) + sum(
        s.cost_usd for s in subtasks
    )


async def _finish(
    context: SwarmContext,
    state: ExecutionState,
    *,
    answer: str | None,
    error: str | None = None,
) -> None:
    # What the sub-agents queued (a cancelled one's last write too) lands before the final
    # state, so nothing overwrites it; the charges go to the ledger before it is said.
    await context.deps.writes.barrier()
    await context.deps.ledger.flush()
    thread_id, agent_id = context.thread_id, context.auth.agent_id
    if state is ExecutionState.SUCCEEDED and thread_id and agent_id and answer is not None:
        # Before the final state is visible: whoever sees the execution succeed and starts
        # the thread's next one finds this turn in the thread's memory. (Recording a turn
        # twice, if this run is resumed and finishes again, keeps one.)
        await memory_service.record_turn(
            context.deps,
            tenant_id=context.scope.tenant_id,
            agent_id=agent_id,
            thread_id=thread_id,
            execution_id=context.execution_id,
            task=context.task,
            answer=answer,
        )
    finished_at = utcnow()
    async with session_scope(context.deps.session_factory) as session:
        stored = await execution_repository.subtask_figures(
            session, context.scope, context.execution_id
        )
    subtasks = [_closed(subtask, finished_at) for subtask in stored]
    final_figures = figures(
        phases=context.phases,
        started_at=context.started_at,
        finished_at=finished_at,
        subtasks=subtasks,
    )
    phases = final_figures["phases"]
    cost_usd = sum(float(p.get("cost_usd") or 0.0) for p in phases.values())
    final = execution_repository.execution_write(
        context.scope,
        context.execution_id,
        {
            "state": state.value,
            "answer": answer,
            "error": error,
            "finished_at": finished_at,
            "updated_at": finished_at,
            "figures": final_figures,
            "cost_usd": cost_usd,
            "prompt_tokens": sum(int(p.get("prompt_tokens") or 0) for p in phases.values()),
            "completion_tokens": sum(int(p.get("completion_tokens") or 0) for p in phases.values()),
        },
    )
    summary: dict[str, Any] = {"state": state.value, "cost_usd": cost_usd, "figures": final_figures}
    # The subtasks closed, the final state and its last events: one transaction.
    await context.events.emit_all(
        [
            ("state", {"state": state.value}),
            ("done", {"answer": answer, "error": error, **summary}),
        ],
        alongside=[
            execution_repository.close_subtasks_write(
                context.scope, context.execution_id, finished_at=finished_at
            ),
            final,
        ],
    )
    await context.saver.adelete_thread(str(context.execution_id))


async def _partial_from_db(context: SwarmContext) -> str:
    await context.deps.writes.barrier()  # results still queued count
    async with session_scope(context.deps.session_factory) as session:
        rows = await execution_repository.subtasks(session, context.scope, context.execution_id)
    return partial_answer(
        [
            SubtaskResult(index=r.index, status=r.status, result=r.result, error=r.error, seconds=0)
            for r in rows
        ]
    )


async def _summarizer(context: SwarmContext, text: str) -> str:
    call = await chat(
        context.deps,
        context.auth,
        context.spend,
        {
            "model": context.agent["model"],
            "temperature": 0,
            "messages": [
                {
                    "role": "system",
                    "content": "Summarize this conversation in a few sentences, keeping "
                    "facts, names, numbers and decisions.",
                },
                {"role": "user", "content": text},
            ],
        },
    )
    return call.text


async def _prepare(
    engine: SwarmEngine, session: AsyncSession, scope: TenantScope, execution_id: uuid.UUID
) -> tuple[SwarmContext, Execution]:
    """The run's context, from the execution as stored (in the caller's transaction, which
    counts this attempt when it commits)."""
    tenant_id = scope.tenant_id
    execution = await execution_repository.get(session, scope, execution_id)
    subtasks = await execution_repository.subtasks(session, scope, execution_id)
    if not ExecutionState(execution.state).finished:
        execution.attempts += 1
        execution.started_at = execution.started_at or utcnow()
    spent = _spent(execution, subtasks)
    last_seq = await execution_repository.last_seq(session, scope, execution_id)
    options = execution.options or {}
    agent = execution.agent
    agent_id = uuid.UUID(agent["id"]) if agent.get("id") else None
    budget = options.get("budget_usd") or agent.get("max_cost_usd")
    max_agents = int(options.get("max_agents") or agent.get("max_subagents") or 1)
    auth = AuthContext(
        role=Role(execution.role),
        tenant_id=tenant_id,
        actor=Actor(user_id=execution.user_id, api_key_id=execution.api_key_id),
        execution_id=execution_id,
        agent_id=agent_id,
    )
    deps = engine.deps
    context = SwarmContext(
        deps=deps,
        saver=engine.saver,
        execution_id=execution_id,
        scope=scope,
        auth=auth,
        agent=agent,
        mode=str(options.get("mode") or "swarm"),
        max_agents=max_agents,
        spend=Spend(budget_usd=float(budget) if budget else None, cost_usd=spent),
        events=EventRecorder(deps, scope, execution_id, last_seq=last_seq),
        slots=asyncio.Semaphore(max_agents),
        tenant_slots=engine.tenant_slots(tenant_id),
        thread_id=execution.thread_id,
        task=execution.task,
        max_steps=deps.settings.swarm.max_steps,
        phases=dict((execution.figures or {}).get("phases", {})),
        started_at=execution.started_at,
    )
    return context, execution


async def _background(context: SwarmContext, execution: Execution) -> str:
    parts = []
    if execution.thread_id and context.auth.agent_id:
        history = await memory_service.context_text(
            context.deps,
            tenant_id=context.scope.tenant_id,
            agent_id=context.auth.agent_id,
            thread_id=execution.thread_id,
            token_limit=context.deps.settings.swarm.memory_token_limit,
            summarize=lambda text: _summarizer(context, text),
        )
        if history:
            parts.append(f"Earlier in this conversation:\n{history}")
    if execution.inputs:
        parts.append("Inputs:\n" + orjson.dumps(execution.inputs).decode())
    return "\n\n".join(parts)


async def _cancel_requested(context: SwarmContext) -> bool:
    async with session_scope(context.deps.session_factory) as session:
        return await execution_repository.cancel_requested(
            session, context.scope, context.execution_id
        )


async def _run_leased(
    engine: SwarmEngine,
    scope: TenantScope,
    execution_id: uuid.UUID,
    lease: Lease,
    context: SwarmContext,
    execution: Execution,
) -> None:
    graph, saver = engine.graph, engine.saver
    if ExecutionState(execution.state).finished:
        await saver.adelete_thread(str(execution_id))
        return
    if execution.cancel_requested:
        await _finish(context, ExecutionState.CANCELLED, answer=None)
        return
    config: Any = {"configurable": {"thread_id": str(execution_id)}}
    resuming = await saver.aget_tuple(config) is not None
    context.resumed = resuming or execution.attempts > 1
    if resuming:
        await context.events.emit("resumed", attempt=execution.attempts)
    deadline_s = float(
        (execution.options or {}).get("deadline_s") or execution.agent.get("timeout_s") or 300
    )
    assert execution.started_at is not None
    remaining = deadline_s - _seconds(execution.started_at, utcnow())
    cancelled = asyncio.Event()
    lost = asyncio.Event()  # the lease went to another run: stop, and leave it to that one

    async def run() -> dict[str, Any]:
        if not resuming:
            context.background = await _background(context, execution)
            inputs: Any = {"task": execution.task, "subtasks": [], "results": [], "answer": ""}
        else:
            context.background = await _background(context, execution)
            inputs = None
        # "async": a step's checkpoint is saved while the next step runs (the synthesis
        # call no longer waits for the sub-agents' checkpoint). Saves and task writes share
        # the group commit's order, and the save is queued as the step starts, before its
        # tasks' writes (each task makes a model call first); a run that dies before the
        # save resumes from the checkpoint before, whose stored writes still spare the
        # tasks that finished. ainvoke returns only once every save has committed.
        result: dict[str, Any] = await graph.ainvoke(
            inputs, config, context=context, durability="async"
        )
        return result

    task = asyncio.create_task(run(), name=f"execution-{execution_id}")

    async def watch() -> None:
        async with engine.deps.notifier.listen(cancel_channel(execution_id)) as listener:
            while not task.done():
                await listener.wait(CANCEL_POLL_S)
                try:
                    kept = await lease.keep()
                    cancel = kept and await _cancel_requested(context)
                except Exception as error:  # a database blip: look again next time round
                    log.warning(
                        "execution %s: lease or cancel check failed: %s", execution_id, error
                    )
                    continue
                if not kept:
                    lost.set()
                    task.cancel()
                    return
                if cancel:
                    cancelled.set()
                    task.cancel()
                    return

    watcher = asyncio.create_task(watch())
    try:
        try:
            async with asyncio.timeout(max(remaining, 0.001)):
                result = await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await _finish(
                context,
                ExecutionState.TIMED_OUT,
                answer=await _partial_from_db(context) or None,
                error=f"deadline of {deadline_s:g} s passed",
            )
            return
        except asyncio.CancelledError:
            if lost.is_set():
                log.warning("execution %s: lease lost to another run; stopping", execution_id)
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                await engine.deps.writes.barrier()  # its last writes land before the next run's
                return
            if not cancelled.is_set():
                task.cancel()  # the runner is shutting down: leave it to be resumed
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                raise
            await _finish(
                context,
                ExecutionState.CANCELLED,
                answer=await _partial_from_db(context) or None,
            )
            return
        except AllSubagentsFailed as failure:
            await _finish(context, ExecutionState.FAILED, answer=None, error=str(failure))
            return
        except (ApiaryError, BudgetStop) as failure:
            if isinstance(failure, BudgetStop) or context.spend.stopped:
                await _finish(
                    context,
                    ExecutionState.BUDGET_EXCEEDED,
                    answer=await _partial_from_db(context) or None,
                    error=str(failure),
                )
            else:
                await _finish(
                    context,
                    ExecutionState.FAILED,
                    answer=None,
                    error=f"{failure.name}: {failure.detail}",
                )
            return
        except Exception as failure:
            if database_unreachable(failure):
                raise  # an outage, not the execution's fault: its runner runs it again
            log.exception("execution %s failed", execution_id)
            await _finish(
                context,
                ExecutionState.FAILED,
                answer=None,
                error=f"internal error: {type(failure).__name__}",
            )
            return
        state = (
            ExecutionState.BUDGET_EXCEEDED if context.spend.stopped else ExecutionState.SUCCEEDED
        )
        await _finish(
            context,
            state,
            answer=result.get("answer") or None,
            error="budget spent before every subtask ran" if context.spend.stopped else None,
        )
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher


class SwarmEngine:
    """Runs executions in this process: owns the compiled graph and, embedded, the tenants'
    sub-agent slots. Built once per process by the composition root (`Runtime.swarm`)."""

    def __init__(self, deps: SwarmDeps) -> None:
        self.deps = deps
        # Built once (compiling costs milliseconds), then run for every execution with its
        # own thread id.
        self.saver = DatabaseSaver(deps.session_factory, deps.writes)
        self.graph = build_graph(
            self.saver,
            Phases(decompose=run_decompose, subagent=run_subagent, synthesize=run_synthesize),
        )
        # Embedded (no Redis): a semaphore per tenant bounds its running sub-agents here.
        self._local_slots: dict[uuid.UUID, asyncio.Semaphore] = {}

    def tenant_slots(self, tenant_id: uuid.UUID) -> Slots:
        if self.deps.swarm_slots is not None:
            return self.deps.swarm_slots.of(tenant_id)  # every process's sub-agents, in Redis
        slots = self._local_slots.get(tenant_id)
        if slots is None:
            slots = asyncio.Semaphore(self.deps.settings.swarm.tenant_concurrency)
            self._local_slots[tenant_id] = slots
        return slots

    async def run(self, execution_id: uuid.UUID) -> None:
        """Run or resume one execution to a final state. Safe to call more than once, even
        at the same time: a second run raises `ExecutionBusy` while the first holds the
        lease."""
        attributes = {"apiary.execution_id": str(execution_id)}
        with tracing.span("apiary.execution", attributes=attributes):
            await self._run(execution_id)

    async def _run(self, execution_id: uuid.UUID) -> None:
        # Finding it, claiming its lease, loading it and counting the attempt: one
        # transaction (rolled back, so nothing claimed, if any of it fails).
        async with session_scope(self.deps.session_factory) as session:
            found = await execution_repository.tenant_and_state(session, execution_id)
            if found is None:
                log.warning("execution %s no longer exists; nothing to run", execution_id)
                return
            tenant_id, state = found
            scope = TenantScope(tenant_id)
            lease = Lease(
                self.deps.session_factory,
                scope,
                execution_id,
                ttl_s=self.deps.settings.swarm.lease_s,
            )
            try:
                await lease.claim(session)
            except ExecutionBusy:
                if state.finished:
                    return  # its run is wrapping up (the lease goes last): nothing left to do
                raise
            context, execution = await _prepare(self, session, scope, execution_id)
        try:
            await _run_leased(self, scope, execution_id, lease, context, execution)
        finally:
            await lease.release()
