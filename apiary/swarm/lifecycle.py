"""One run of an execution, around its graph: the context prepared from the stored
execution, the graph run (or resumed) under its lease with a watcher for a cancel or a lost
lease and the deadline, and the end: final state, figures, the thread's memory, the last
events."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from langgraph.graph.state import CompiledStateGraph
from sqlalchemy.ext.asyncio import AsyncSession

from apiary.agents.schemas import AgentDefinition
from apiary.auth.context import Actor, AuthContext
from apiary.authz.permissions import Role
from apiary.authz.scope import TenantScope
from apiary.db import database_unreachable, session_scope, utcnow
from apiary.errors import ApiaryError
from apiary.executions.bus import cancel_channel
from apiary.executions.event_types import Done, Resumed, StateChanged
from apiary.executions.events import EventRecorder
from apiary.executions.figures import ExecutionFigures, execution_figures, seconds_between
from apiary.executions.models import (
    Execution,
    ExecutionState,
    FinishedExecutionState,
    Subtask,
    SubtaskStatus,
)
from apiary.executions.repository import SubtaskFigures, execution_repository
from apiary.memory.service import memory_service
from apiary.swarm.calls import BudgetStop, Spend, chat
from apiary.swarm.checkpoint import DatabaseSaver
from apiary.swarm.context import SwarmContext, SwarmDeps
from apiary.swarm.graph import SubtaskResult
from apiary.swarm.lease import Lease
from apiary.swarm.phases import AllSubagentsFailed, partial_answer
from apiary.swarm.prompts import SUMMARIZE_PROMPT
from apiary.swarm.slots import Slots

log = logging.getLogger("apiary.swarm")

CANCEL_POLL_S = 1.0


async def prepare(
    deps: SwarmDeps,
    saver: DatabaseSaver,
    tenant_slots: Slots,
    session: AsyncSession,
    scope: TenantScope,
    execution_id: uuid.UUID,
) -> tuple[SwarmContext, Execution]:
    """The run's context, from the execution as stored (in the caller's transaction, which
    counts this attempt when it commits)."""
    tenant_id = scope.tenant_id
    execution = await execution_repository.get(session, scope, execution_id)
    subtasks = await execution_repository.subtasks(session, scope, execution_id)
    if not ExecutionState(execution.state).finished:
        execution.attempts += 1
        execution.started_at = execution.started_at or utcnow()
    stored_figures = ExecutionFigures.model_validate(execution.figures or {})
    spent = _spent(stored_figures, subtasks)
    last_seq = await execution_repository.last_seq(session, scope, execution_id)
    options = execution.options or {}
    agent = AgentDefinition.model_validate(execution.agent)
    budget = options.get("budget_usd") or agent.max_cost_usd
    max_agents = int(options.get("max_agents") or agent.max_subagents or 1)
    auth = AuthContext(
        role=Role(execution.role),
        tenant_id=tenant_id,
        actor=Actor(user_id=execution.user_id, api_key_id=execution.api_key_id),
        execution_id=execution_id,
        agent_id=agent.id,
    )
    context = SwarmContext(
        deps=deps,
        saver=saver,
        execution_id=execution_id,
        scope=scope,
        auth=auth,
        agent=agent,
        mode=str(options.get("mode") or "swarm"),
        max_agents=max_agents,
        spend=Spend(budget_usd=float(budget) if budget else None, cost_usd=spent),
        events=EventRecorder(deps, scope, execution_id, last_seq=last_seq),
        slots=asyncio.Semaphore(max_agents),
        tenant_slots=tenant_slots,
        thread_id=execution.thread_id,
        task=execution.task,
        max_steps=deps.settings.swarm.max_steps,
        phases=dict(stored_figures.phases),
        started_at=execution.started_at,
    )
    return context, execution


def _spent(figures: ExecutionFigures, subtasks: Sequence[Subtask]) -> float:
    return sum(p.cost_usd for p in figures.phases.values()) + sum(s.cost_usd for s in subtasks)


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


async def _summarizer(context: SwarmContext, text: str) -> str:
    call = await chat(
        context.deps,
        context.auth,
        context.spend,
        {
            "model": context.agent.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": SUMMARIZE_PROMPT},
                {"role": "user", "content": text},
            ],
        },
    )
    return call.text


async def _cancel_requested(context: SwarmContext) -> bool:
    async with session_scope(context.deps.session_factory) as session:
        return await execution_repository.cancel_requested(
            session, context.scope, context.execution_id
        )


async def run_leased(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    lease: Lease,
    context: SwarmContext,
    execution: Execution,
) -> None:
    """Run or resume the graph to the execution's end, while `lease` is held: a cancel, a
    lost lease, the deadline and each failure end it as its state says."""
    execution_id, saver = context.execution_id, context.saver
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
        await context.events.emit(Resumed(attempt=execution.attempts))
    deadline_s = float(
        (execution.options or {}).get("deadline_s") or context.agent.timeout_s or 300
    )
    assert execution.started_at is not None
    remaining = deadline_s - seconds_between(execution.started_at, utcnow())
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
        async with context.deps.notifier.listen(cancel_channel(execution_id)) as listener:
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
                await context.deps.writes.barrier()  # its last writes land before the next run's
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


def _closed(subtask: SubtaskFigures, finished_at: datetime) -> SubtaskFigures:
    """A subtask as the execution's end leaves it (`close_subtasks_write`)."""
    if subtask.status == SubtaskStatus.RUNNING.value:
        return dataclasses.replace(
            subtask, status=SubtaskStatus.CANCELLED.value, finished_at=finished_at
        )
    if subtask.status == SubtaskStatus.PENDING.value:
        return dataclasses.replace(subtask, status=SubtaskStatus.SKIPPED.value)
    return subtask


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
    figures = execution_figures(
        phases=context.phases,
        started_at=context.started_at,
        finished_at=finished_at,
        subtasks=[_closed(subtask, finished_at) for subtask in stored],
    )
    phases = figures.phases.values()
    cost_usd = sum(p.cost_usd for p in phases)
    final = execution_repository.execution_write(
        context.scope,
        context.execution_id,
        {
            "state": state.value,
            "answer": answer,
            "error": error,
            "finished_at": finished_at,
            "updated_at": finished_at,
            "figures": figures.model_dump(mode="json"),
            "cost_usd": cost_usd,
            "prompt_tokens": sum(p.prompt_tokens for p in phases),
            "completion_tokens": sum(p.completion_tokens for p in phases),
        },
    )
    # The subtasks closed, the final state and its last events: one transaction.
    await context.events.emit_all(
        [
            StateChanged(state=state),
            Done(
                state=FinishedExecutionState(state.value),
                answer=answer,
                error=error,
                cost_usd=cost_usd,
                figures=figures,
            ),
        ],
        alongside=[
            execution_repository.close_subtasks_write(
                context.scope, context.execution_id, finished_at=finished_at
            ),
            final,
        ],
    )
    await context.saver.adelete_thread(str(context.execution_id))
