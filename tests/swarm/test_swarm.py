"""The swarm end to end on the fake upstream: decompose, parallel sub-agents, synthesize,
and each way an execution can end."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from sqlalchemy import select

from apiary.audit.models import AuditEntry
from apiary.usage.models import LedgerEntry
from tests.fakes import Fail, Reply, Slow, ToolCall
from tests.gateway.conftest import GatewayFactory
from tests.swarm.conftest import Swarm, build_swarm

pytestmark = pytest.mark.both_databases


def plan(*subtasks: str) -> Reply:
    return Reply(text=orjson.dumps({"subtasks": list(subtasks)}).decode())


async def test_decompose_fan_out_and_synthesize(swarm: Swarm) -> None:
    upstream = swarm.gateway.upstream
    upstream.script("openai", plan("find flights", "find hotels", "find trains"))
    started = await swarm.start("Plan a trip to Rome")
    assert started["state"] == "queued"
    execution = await swarm.wait(started["id"])
    assert execution["state"] == "succeeded", execution
    subtasks = execution["subtasks"]
    assert [s["prompt"] for s in subtasks] == ["find flights", "find hotels", "find trains"]
    assert all(s["status"] == "succeeded" for s in subtasks)
    assert "echo: find hotels" in subtasks[1]["result"]
    # The synthesis call saw every sub-agent's result.
    synthesis = upstream.requests_for("openai")[-1].body
    assert synthesis is not None
    assert "echo: find trains" in synthesis["messages"][-1]["content"]
    assert execution["answer"].startswith("echo: ")
    decompose = upstream.requests_for("openai")[0].body
    assert decompose is not None
    assert decompose["response_format"]["type"] == "json_schema"

    figures = execution["figures"]
    assert set(figures["phases"]) == {"decompose", "subagents", "synthesize"}
    assert figures["critical_path_s"] > 0
    assert figures["subagent_total_s"] > 0
    assert execution["cost_usd"] == pytest.approx(
        sum(p["cost_usd"] for p in figures["phases"].values())
    )
    assert execution["cost_usd"] > 0

    # Every call is in the ledger, stamped with the execution and the agent.
    ledger = await swarm.gateway.ledger()
    assert len(ledger) == 5
    assert {row.execution_id for row in ledger} == {uuid.UUID(started["id"])}
    assert {row.agent_id for row in ledger} == {uuid.UUID(swarm.agent_id)}
    assert sum(row.cost_usd or 0 for row in ledger) == pytest.approx(execution["cost_usd"])


async def test_sub_agents_run_in_parallel(swarm: Swarm) -> None:
    upstream = swarm.gateway.upstream
    upstream.script("openai", plan(*(f"part {i}" for i in range(5))))
    upstream.script("openai", *(Slow(0.5) for _ in range(5)))
    execution = await swarm.wait((await swarm.start())["id"])
    assert execution["state"] == "succeeded"
    figures = execution["figures"]
    assert figures["subagent_total_s"] >= 2.5
    assert figures["phases"]["subagents"]["seconds"] < 1.5  # five 0.5 s calls at once
    assert figures["speedup"] > 2


async def test_unparseable_decomposition_degrades_to_one_subagent(swarm: Swarm) -> None:
    swarm.gateway.upstream.script("openai", Reply(text="Sure! First, book flights..."))
    execution = await swarm.wait((await swarm.start("Plan a trip"))["id"])
    assert execution["state"] == "succeeded"
    assert [s["prompt"] for s in execution["subtasks"]] == ["Plan a trip"]
    assert execution["answer"] == execution["subtasks"][0]["result"]


async def test_failed_subagent_is_retried_once(swarm: Swarm) -> None:
    upstream = swarm.gateway.upstream
    upstream.script("openai", plan("only part"), Fail(400, message="bad luck"))
    execution = await swarm.wait((await swarm.start())["id"])
    assert execution["state"] == "succeeded"
    (subtask,) = execution["subtasks"]
    assert subtask["attempts"] == 2
    assert subtask["status"] == "succeeded"


async def test_synthesis_says_what_failed(swarm: Swarm) -> None:
    upstream = swarm.gateway.upstream
    # Two sub-agents, two attempts each; three failures leave exactly one standing.
    upstream.script("openai", plan("part a", "part b"), Fail(400), Fail(400), Fail(400))
    execution = await swarm.wait((await swarm.start())["id"])
    assert execution["state"] == "succeeded", execution
    statuses = sorted(s["status"] for s in execution["subtasks"])
    assert statuses == ["failed", "succeeded"]
    synthesis = upstream.requests_for("openai")[-1].body
    assert synthesis is not None
    assert "FAILED" in synthesis["messages"][-1]["content"]


async def test_every_subagent_failing_fails_the_execution(swarm: Swarm) -> None:
    swarm.gateway.upstream.script("openai", plan("only part"), Fail(400), Fail(400))
    execution = await swarm.wait((await swarm.start())["id"])
    assert execution["state"] == "failed"
    assert "every sub-agent failed" in execution["error"]


async def test_budget_stops_spending(swarm: Swarm) -> None:
    upstream = swarm.gateway.upstream
    # At the test price a token costs $0.001: the plan costs $0.002, each sub-agent $0.02.
    upstream.script(
        "openai",
        Reply(text=orjson.dumps({"subtasks": ["a", "b"]}).decode(), usage=(1, 1)),
        Slow(0.5, Reply(text="done", usage=(10, 10))),
        Slow(0.5, Reply(text="done", usage=(10, 10))),
    )
    started = await swarm.start(options={"budget_usd": 0.01})
    execution = await swarm.wait(started["id"])
    assert execution["state"] == "budget_exceeded", execution
    # Both sub-agents started while money was left, and finished; the synthesis call was never made.
    assert len(upstream.requests_for("openai")) == 3
    assert execution["answer"] == "[1] done\n\n[2] done"
    assert "synthesize" not in execution["figures"]["phases"]
    assert execution["cost_usd"] == pytest.approx(0.042)


async def test_budget_stops_a_tool_loop(make_gateway: GatewayFactory) -> None:
    swarm = await build_swarm(make_gateway, tools=["calculator"])
    upstream = swarm.gateway.upstream
    upstream.script(
        "openai",
        Reply(tool_calls=[ToolCall("calculator", '{"expression": "1+1"}')], usage=(10, 10)),
    )
    execution = await swarm.wait(
        (await swarm.start(options={"budget_usd": 0.01, "mode": "single"}))["id"]
    )
    assert execution["state"] == "budget_exceeded"
    assert len(upstream.requests_for("openai")) == 1  # the second step was never paid for
    assert execution["subtasks"][0]["status"] == "skipped"


async def test_deadline_times_out_with_partial_results(swarm: Swarm) -> None:
    upstream = swarm.gateway.upstream
    upstream.script("openai", plan("quick", "slow"), Reply(text="quick result"))
    upstream.set_default("openai", Slow(30))
    # The deadline counts from the start: the plan, a slot and the quick reply fit in it
    # with room to spare on a loaded machine; the slow reply (30 s) does not.
    started = await swarm.start(options={"deadline_s": 3.0})
    execution = await swarm.wait(started["id"], timeout_s=15)
    assert execution["state"] == "timed_out"
    # Whichever sub-agent got the quick reply: its result is kept, the other was stopped.
    assert execution["answer"] in ("[1] quick result", "[2] quick result")
    assert sorted(s["status"] for s in execution["subtasks"]) == ["cancelled", "succeeded"]


async def test_cancel_stops_running_subagents(swarm: Swarm) -> None:
    upstream = swarm.gateway.upstream
    upstream.script("openai", plan("a", "b", "c"))
    upstream.set_default("openai", Slow(30))
    started = await swarm.start()
    # Cancelled once every sub-agent is under way (a sub-agent still waiting for its slot
    # when the run is cancelled ends "skipped", not "cancelled").
    for _ in range(500):
        subtasks = (await swarm.get(started["id"]))["subtasks"]
        if len(subtasks) == 3 and all(s["status"] == "running" for s in subtasks):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"the sub-agents never all ran: {subtasks}")
    cancelled_at = asyncio.get_running_loop().time()
    response = await swarm.http.post(
        f"/api/v1/executions/{started['id']}/cancel", headers=swarm.headers
    )
    assert response.status_code == 200
    execution = await swarm.wait(started["id"], timeout_s=5)
    assert asyncio.get_running_loop().time() - cancelled_at < 4  # not the 30 s reply
    assert execution["state"] == "cancelled"
    assert {s["status"] for s in execution["subtasks"]} == {"cancelled"}
    again = await swarm.http.post(
        f"/api/v1/executions/{started['id']}/cancel", headers=swarm.headers
    )
    assert again.status_code == 409
    # Created and cancelled: each once in the audit log, by the caller, naming the execution.
    async with swarm.gateway.runtime.session_factory() as session:
        audited = (
            await session.execute(
                select(AuditEntry.action, AuditEntry.target_id, AuditEntry.details).where(
                    AuditEntry.target_type == "execution"
                )
            )
        ).all()
    assert sorted((action, target) for action, target, _ in audited) == [
        ("execution.cancelled", started["id"]),
        ("execution.created", started["id"]),
    ]
    created = next(details for action, _, details in audited if action == "execution.created")
    assert created["sub_agents"] >= 1
    assert "task" not in created  # what ran, not on what


async def test_tools_run_with_the_runtime_context(make_gateway: GatewayFactory) -> None:
    swarm = await build_swarm(make_gateway, tools=["calculator", "knowledge_search"])
    upstream = swarm.gateway.upstream
    upstream.script(
        "openai",
        Reply(tool_calls=[ToolCall("calculator", '{"expression": "6*7"}')]),
        Reply(text="the answer is 42"),
    )
    execution = await swarm.wait((await swarm.start(options={"mode": "single"}))["id"])
    assert execution["state"] == "succeeded"
    assert execution["answer"] == "the answer is 42"
    assert execution["subtasks"][0]["tool_calls"] == 1
    tool_message = upstream.requests_for("openai")[-1].body
    assert tool_message is not None
    assert tool_message["messages"][-1] == {
        "role": "tool",
        "tool_call_id": tool_message["messages"][-2]["tool_calls"][0]["id"],
        "content": "42",
    }
    names = [t["function"]["name"] for t in upstream.requests_for("openai")[0].body["tools"]]  # type: ignore[index]
    assert names == ["calculator", "knowledge_search"]


async def test_ledger_rows_carry_the_execution(swarm: Swarm) -> None:
    execution = await swarm.wait((await swarm.start(options={"mode": "single"}))["id"])
    async with swarm.gateway.runtime.session_factory() as session:
        await swarm.gateway.runtime.ledger.flush()
        rows = (await session.scalars(select(LedgerEntry))).all()
    assert [str(r.execution_id) for r in rows] == [execution["id"]]
