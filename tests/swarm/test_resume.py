"""An interrupted execution resumes from its LangGraph checkpoint: the sub-agents that had
finished are neither asked again upstream nor charged again."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import orjson
import pytest
from sqlalchemy import func, select

from apiary.swarm.lease import ExecutionBusy
from apiary.swarm.models import SwarmCheckpoint, SwarmCheckpointWrite
from apiary.usage.models import LedgerEntry
from apiary.worker.runner import InProcessRunner
from tests.fakes import Reply, Slow
from tests.swarm.conftest import Swarm

pytestmark = pytest.mark.both_databases


async def settled_ledger(swarm: Swarm) -> list[LedgerEntry]:
    """The ledger once no batch is in flight (another flush may be mid-insert)."""
    rows = await swarm.gateway.ledger()
    for _ in range(20):
        await asyncio.sleep(0.05)
        again = await swarm.gateway.ledger()
        if len(again) == len(rows):
            return again
        rows = again
    return rows


def _prompts(swarm: Swarm) -> Counter[str]:
    seen: Counter[str] = Counter()
    for request in swarm.gateway.upstream.requests_for("openai"):
        assert request.body is not None
        seen[request.body["messages"][-1]["content"]] += 1
    return seen


async def test_restart_resumes_without_redoing_finished_subagents(swarm: Swarm) -> None:
    upstream = swarm.gateway.upstream
    upstream.script(
        "openai",
        Reply(text=orjson.dumps({"subtasks": ["part 1", "part 2", "part 3"]}).decode()),
        # Two sub-agents answer at once; the third hangs until the process stops.
        Reply(text="r1"),
        Reply(text="r2"),
    )
    upstream.set_default("openai", Slow(60))
    started = await swarm.start()
    runner = swarm.gateway.runtime.runner
    assert isinstance(runner, InProcessRunner)
    for _ in range(300):
        execution = await swarm.get(started["id"])
        done = [s for s in execution["subtasks"] if s["status"] == "succeeded"]
        if len(done) == 2:
            break
        await asyncio.sleep(0.02)
    for _ in range(300):  # ... and their writes reach the checkpoint tables
        async with swarm.gateway.runtime.session_factory() as session:
            saved = await session.scalar(
                select(func.count(func.distinct(SwarmCheckpointWrite.task_id))).where(
                    SwarmCheckpointWrite.thread_id == started["id"],
                    SwarmCheckpointWrite.channel == "results",
                )
            )
        if saved == 3:  # the graph's input writes `results` too, then each finished sub-agent
            break
        await asyncio.sleep(0.02)
    assert saved == 3
    await runner.close()  # the process goes away mid-run
    interrupted = await swarm.get(started["id"])
    assert interrupted["state"] == "running"
    (slow,) = [s["prompt"] for s in interrupted["subtasks"] if s["status"] == "running"]
    ledger_before = len(await settled_ledger(swarm))
    assert ledger_before == 3  # the plan and the two fast sub-agents

    upstream.set_default("openai", None)  # the echo, from now on
    await runner.start()  # a new process: it resumes what is unfinished
    execution = await swarm.wait(started["id"])
    assert execution["state"] == "succeeded", execution
    seen = _prompts(swarm)
    for prompt in {"part 1", "part 2", "part 3"} - {slow}:
        assert seen[prompt] == 1, seen  # finished before the stop: not asked again
    assert seen[slow] == 2  # interrupted, so asked again
    results = sorted(s["result"] for s in execution["subtasks"])
    assert results == [f"echo: {slow}", "r1", "r2"]
    ledger = await swarm.gateway.ledger()
    # After the restart: only the slow sub-agent and the synthesis were charged.
    assert len(ledger) - ledger_before == 2
    assert all(str(row.execution_id) == started["id"] for row in ledger)
    # The checkpoints are pruned once the run is over (its last step, after the final
    # state a poll can already see).
    await runner.wait_idle()
    async with swarm.gateway.runtime.session_factory() as session:
        left = await session.scalar(
            select(func.count()).where(SwarmCheckpoint.thread_id == started["id"])
        )
    assert left == 0


async def test_a_second_run_of_a_running_execution_waits_for_its_lease(swarm: Swarm) -> None:
    """A broker may deliver an execution's job again while a worker still runs it; the
    second run must not start the sub-agents again."""
    upstream = swarm.gateway.upstream
    upstream.script("openai", Reply(text=orjson.dumps({"subtasks": ["part 1", "part 2"]}).decode()))
    upstream.set_default("openai", Slow(0.5))
    started = await swarm.start()
    for _ in range(300):
        if (await swarm.get(started["id"]))["state"] == "running":
            break
        await asyncio.sleep(0.02)

    with pytest.raises(ExecutionBusy) as busy:
        await swarm.gateway.runtime.swarm.run(uuid.UUID(started["id"]))
    lease_s = swarm.gateway.runtime.settings.swarm.lease_s
    assert 0 < busy.value.retry_after_s <= lease_s

    execution = await swarm.wait(started["id"])
    assert execution["state"] == "succeeded", execution
    seen = _prompts(swarm)
    assert seen["part 1"] == 1
    assert seen["part 2"] == 1
    # Finished: the lease is released, and running it again does nothing.
    await swarm.gateway.runtime.swarm.run(uuid.UUID(started["id"]))
    assert sum(_prompts(swarm).values()) == 4  # the plan, two parts, the synthesis
