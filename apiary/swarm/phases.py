"""The graph's three phases (`graph.Phases`): the orchestrator splits the task, each
sub-agent carries out its subtask, and the synthesis combines their results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from apiary.db import session_scope, utcnow
from apiary.errors import ApiaryError
from apiary.executions.event_types import (
    DecompositionDegraded,
    EventData,
    SubagentFinished,
    SubagentRetry,
    SubagentStarted,
    SubtasksPlanned,
)
from apiary.executions.figures import Phase
from apiary.executions.models import ExecutionState, SubtaskStatus
from apiary.executions.repository import execution_repository
from apiary.observability import tracing
from apiary.swarm.calls import BudgetStop, Tally, chat
from apiary.swarm.context import SwarmContext
from apiary.swarm.graph import Phases, SubtaskResult
from apiary.swarm.progress import (
    TokenStream,
    phase_write,
    set_state_soon,
    state_change,
    subtask_update,
)
from apiary.swarm.prompts import (
    DECOMPOSE_PROMPT,
    SYNTHESIZE_PROMPT,
    decomposition_schema,
    parse_subtasks,
    synthesis_request,
    system_prompt,
    with_background,
)
from apiary.swarm.tool_loop import tool_loop
from apiary.swarm.tools import ToolError, unique_sources

RETRIES = 1  # a failed sub-agent is tried once more, then reported


class AllSubagentsFailed(Exception):
    pass


def _span_attributes(context: SwarmContext, **more: str | int) -> dict[str, str | int]:
    return {"apiary.execution_id": str(context.execution_id), **more}


# -- decompose ------------------------------------------------------------------------------


async def run_decompose(context: SwarmContext, task: str) -> list[str]:
    with tracing.span("apiary.swarm.decompose", attributes=_span_attributes(context)) as span:
        prompts = await _decompose(context, task)
        if span is not None:
            span.set_attribute("apiary.subtasks", len(prompts))
        return prompts


async def _decompose(context: SwarmContext, task: str) -> list[str]:
    decomposing = set_state_soon(context, ExecutionState.DECOMPOSING)
    started = time.perf_counter()
    tally = Tally()
    prompts: list[str] | None
    if context.mode == "single" or context.max_agents == 1:
        prompts = [task]
    else:
        schema = decomposition_schema(context.max_agents)
        system = DECOMPOSE_PROMPT.format(n=context.max_agents)
        call = await chat(
            context.deps,
            context.auth,
            context.spend,
            {
                "model": context.agent.model,
                "temperature": context.agent.temperature,
                "messages": [
                    {"role": "system", "content": system_prompt(context.agent, system)},
                    {"role": "user", "content": with_background(context.background, task)},
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
                DecompositionDegraded(reason="the orchestrator's answer was not valid JSON")
            )
            prompts = [task]
    await decomposing
    phase = phase_write(context, Phase.DECOMPOSE, tally, time.perf_counter() - started)
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
    running, change = state_change(context, ExecutionState.RUNNING)
    await context.events.emit_all(
        [SubtasksPlanned(subtasks=prompts), running],
        alongside=[phase, *new_subtasks, change],
    )
    return prompts


# -- sub-agents -----------------------------------------------------------------------------


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
            subtask_update(context, index, status=SubtaskStatus.SKIPPED.value)
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
        SubagentStarted(subtask=index, prompt=prompt[:500]),
        alongside=[
            subtask_update(
                context, index, status=SubtaskStatus.RUNNING.value, started_at=started_at
            )
        ],
    )
    tally = Tally()
    output = TokenStream(context, index)
    status, result, error = SubtaskStatus.FAILED, None, None
    sources: list[dict[str, Any]] = []
    for attempt in range(RETRIES + 1):
        sources = []  # the citations of the attempt that answers
        try:
            result = await tool_loop(context, index, prompt, tally, sources, output)
        except BudgetStop as stop:
            status, error = SubtaskStatus.SKIPPED, str(stop)
            break
        except (ApiaryError, ToolError, KeyError, ValueError, RuntimeError) as failure:
            error = f"{type(failure).__name__}: {failure}"[:1000]
            if attempt < RETRIES:
                await context.events.emit_all(
                    [*output.take(), SubagentRetry(subtask=index, error=error)]
                )
            continue
        status, error = SubtaskStatus.SUCCEEDED, None
        break
    seconds = time.perf_counter() - started
    await start_stored
    finished = subtask_update(
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
    events: list[EventData] = [
        *output.take(),
        SubagentFinished(
            subtask=index,
            status=status,
            seconds=round(seconds, 4),
            cost_usd=tally.cost_usd,
            spent_usd=context.spend.cost_usd,
            error=error,
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
    synthesizing = set_state_soon(context, ExecutionState.SYNTHESIZING)
    started = time.perf_counter()
    output = TokenStream(context)
    tally = Tally()
    try:
        call = await chat(
            context.deps,
            context.auth,
            context.spend,
            {
                "model": context.agent.model,
                "temperature": context.agent.temperature,
                "messages": [
                    {"role": "system", "content": system_prompt(context.agent, SYNTHESIZE_PROMPT)},
                    {
                        "role": "user",
                        "content": with_background(
                            context.background, synthesis_request(task, ordered)
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
    phase = phase_write(context, Phase.SYNTHESIZE, tally, time.perf_counter() - started)
    await context.events.emit_all(output.take(), alongside=[phase])
    return call.text


PHASES = Phases(decompose=run_decompose, subagent=run_subagent, synthesize=run_synthesize)
