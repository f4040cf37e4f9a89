"""Conversation memory: the next execution in a thread is given the earlier turns, and the
oldest are summarized once they pass the token limit.

Every test runs on the store the configuration picks: Redis on the PostgreSQL + Redis pass,
the database on the embedded pass."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from apiary.config import Settings
from apiary.memory.models import ThreadTurn
from apiary.memory.service import memory_service
from apiary.runtime import Runtime
from tests.conftest import TEST_REDIS
from tests.fakes import Reply
from tests.gateway.conftest import GatewayFactory
from tests.swarm.conftest import PRICES, ROUTES, Swarm

pytestmark = pytest.mark.both_databases

LONG = "word " * 120  # about 120 tokens: two such turns do not fit a limit of 100


def _user_prompt(swarm: Swarm, index: int) -> str:
    body = swarm.gateway.upstream.requests_for("openai")[index].body
    assert body is not None
    content: str = body["messages"][-1]["content"]
    return content


async def _run(swarm: Swarm, task: str, thread_id: str) -> None:
    started = await swarm.start(task, thread_id=thread_id, options={"mode": "single"})
    assert (await swarm.wait(started["id"]))["state"] == "succeeded"


async def _record(
    runtime: Runtime,
    tenant_id: uuid.UUID,
    agent_id: uuid.UUID,
    task: str,
    *,
    execution_id: uuid.UUID | None = None,
) -> None:
    """What the engine does when an execution in thread "t-1" succeeds."""
    await memory_service.record_turn(
        runtime,
        tenant_id=tenant_id,
        agent_id=agent_id,
        thread_id="t-1",
        execution_id=execution_id or uuid.uuid4(),
        task=task,
        answer="Noted.",
    )


async def _remembered(runtime: Runtime, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> str:
    return await memory_service.context_text(
        runtime, tenant_id=tenant_id, agent_id=agent_id, thread_id="t-1"
    )


@asynccontextmanager
async def _another_worker(
    settings: Settings, data_dir: Path, **swarm: Any
) -> AsyncIterator[Runtime]:
    """A runtime of its own, as another worker process has, on the same database and Redis."""
    configured = settings.model_copy(
        update={"data_dir": data_dir, "swarm": settings.swarm.model_copy(update=swarm)}
    )
    runtime = Runtime.build(configured)
    try:
        yield runtime
    finally:
        await runtime.close()


async def test_a_thread_remembers_earlier_turns(swarm: Swarm) -> None:
    swarm.gateway.upstream.script("openai", Reply(text="Your name is Ada."))
    await _run(swarm, "My name is Ada.", "t-1")
    await _run(swarm, "What is my name?", "t-1")
    prompt = _user_prompt(swarm, 1)
    assert "User: My name is Ada." in prompt
    assert "Assistant: Your name is Ada." in prompt
    assert prompt.endswith("What is my name?")
    # Another thread starts empty.
    await _run(swarm, "What is my name?", "t-2")
    assert _user_prompt(swarm, 2) == "What is my name?"


async def test_turns_are_kept_in_redis_when_it_is_configured_else_in_the_database(
    swarm: Swarm,
) -> None:
    swarm.gateway.upstream.script("openai", Reply(text="Noted."))
    await _run(swarm, "My name is Ada.", "t-1")
    async with swarm.gateway.runtime.session_factory() as session:
        rows = (await session.scalars(select(ThreadTurn))).all()
    if not TEST_REDIS:
        assert [row.task for row in rows] == ["My name is Ada."]
        return
    assert rows == []
    redis = Redis.from_url(TEST_REDIS)
    keys = set(await redis.keys("apiary:memory:*"))
    await redis.aclose()
    thread = f"apiary:memory:{{{swarm.gateway.tenant.id}:{swarm.agent_id}:t-1}}"
    assert keys == {f"{thread}:executions".encode(), f"{thread}:turns".encode()}


async def test_another_worker_sees_the_thread(swarm: Swarm, make_gateway: GatewayFactory) -> None:
    swarm.gateway.upstream.script("openai", Reply(text="Your name is Ada."))
    await _run(swarm, "My name is Ada.", "t-1")
    # The next execution in the thread is run by another app, with a runtime of its own.
    other = await make_gateway(routes=ROUTES, prices=PRICES)
    assert other.runtime is not swarm.gateway.runtime
    elsewhere = Swarm(other, other.http(), swarm.headers, swarm.agent_id)
    await _run(elsewhere, "What is my name?", "t-1")
    assert "Assistant: Your name is Ada." in _user_prompt(swarm, 1)


async def test_an_execution_recorded_twice_is_one_turn(
    swarm: Swarm, settings: Settings, tmp_path: Path
) -> None:
    tenant_id, agent_id = uuid.UUID(swarm.gateway.tenant.id), uuid.UUID(swarm.agent_id)
    execution_id = uuid.uuid4()
    async with _another_worker(settings, tmp_path) as other:
        # A resumed execution finishing on two workers at once, a few times over.
        await asyncio.gather(
            *(
                _record(runtime, tenant_id, agent_id, "My name is Ada.", execution_id=execution_id)
                for runtime in (swarm.gateway.runtime, other) * 3
            )
        )
    remembered = await _remembered(swarm.gateway.runtime, tenant_id, agent_id)
    assert remembered == "User: My name is Ada.\nAssistant: Noted."


async def test_another_tenant_cannot_read_the_thread(
    swarm: Swarm, make_gateway: GatewayFactory
) -> None:
    runtime = swarm.gateway.runtime
    other = await make_gateway(routes=ROUTES, prices=PRICES)
    tenant_a, tenant_b = uuid.UUID(swarm.gateway.tenant.id), uuid.UUID(other.tenant.id)
    agent_id = uuid.UUID(swarm.agent_id)
    await _record(runtime, tenant_a, agent_id, "The code is 1234.")
    # The same agent and thread ids, asked for by another tenant.
    assert await _remembered(runtime, tenant_b, agent_id) == ""
    await _record(runtime, tenant_b, agent_id, "Mine is 5678.")
    seen_by_a = await _remembered(runtime, tenant_a, agent_id)
    assert "1234" in seen_by_a
    assert "5678" not in seen_by_a


async def test_deleting_an_agent_forgets_its_threads(swarm: Swarm) -> None:
    runtime = swarm.gateway.runtime
    tenant_id, agent_id = uuid.UUID(swarm.gateway.tenant.id), uuid.UUID(swarm.agent_id)
    kept = await swarm.http.post(
        "/api/v1/agents", headers=swarm.headers, json={"name": "kept", "model": "default"}
    )
    assert kept.status_code == 201, kept.text
    kept_id = uuid.UUID(kept.json()["id"])
    await _record(runtime, tenant_id, agent_id, "My name is Ada.")
    await _record(runtime, tenant_id, kept_id, "My name is Grace.")
    deleted = await swarm.http.delete(f"/api/v1/agents/{agent_id}", headers=swarm.headers)
    assert deleted.status_code == 204
    assert await _remembered(runtime, tenant_id, agent_id) == ""
    assert "Grace" in await _remembered(runtime, tenant_id, kept_id)


async def _two_long_turns(swarm: Swarm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Thread "long" with two turns, of which only the newest fits the token limit."""
    monkeypatch.setattr(swarm.gateway.runtime.settings.swarm, "memory_token_limit", 100)
    for turn in range(2):
        swarm.gateway.upstream.script("openai", Reply(text=f"answer {turn} {LONG}"))
        await _run(swarm, f"question {turn}", "long")


async def test_old_turns_are_summarized_past_the_limit(
    swarm: Swarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _two_long_turns(swarm, monkeypatch)
    upstream = swarm.gateway.upstream
    upstream.script("openai", Reply(text="SUMMARY: asked two questions"), Reply(text="ok"))
    await _run(swarm, "question 2", "long")
    summarize = upstream.requests_for("openai")[2].body
    assert summarize is not None
    assert "Summarize" in summarize["messages"][0]["content"]
    assert "question 0" in summarize["messages"][-1]["content"]
    prompt = _user_prompt(swarm, 3)
    assert "SUMMARY: asked two questions" in prompt
    assert "question 1" in prompt  # the newest turn is kept verbatim
    assert "answer 0" not in prompt  # the oldest only through the summary


async def test_a_summary_is_extended_with_the_turns_it_does_not_cover(
    swarm: Swarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _two_long_turns(swarm, monkeypatch)
    upstream = swarm.gateway.upstream
    upstream.script("openai", Reply(text="SUMMARY ONE"), Reply(text=f"answer 2 {LONG}"))
    await _run(swarm, "question 2", "long")  # folds turn 0
    upstream.script("openai", Reply(text="SUMMARY TWO"), Reply(text="ok"))
    await _run(swarm, "question 3", "long")  # folds turn 1 into the stored summary
    fold = upstream.requests_for("openai")[4].body
    assert fold is not None
    source: str = fold["messages"][-1]["content"]
    assert source.startswith("SUMMARY ONE")
    assert "question 1" in source
    assert "question 0" not in source  # already in SUMMARY ONE, not summarized again
    prompt = _user_prompt(swarm, 5)
    assert "SUMMARY TWO" in prompt
    assert "question 2" in prompt
    assert "question 1" not in prompt
    assert prompt.endswith("question 3")


@pytest.mark.services  # idle threads expire only on Redis (pass 1 of make test)
async def test_an_idle_thread_expires_on_redis(
    swarm: Swarm, settings: Settings, tmp_path: Path
) -> None:
    tenant_id, agent_id = uuid.UUID(swarm.gateway.tenant.id), uuid.UUID(swarm.agent_id)
    async with _another_worker(settings, tmp_path, memory_ttl_s=3) as runtime:
        await _record(runtime, tenant_id, agent_id, "first")
        await asyncio.sleep(2.0)
        await _record(runtime, tenant_id, agent_id, "second")  # restarts the idle time
        await asyncio.sleep(1.5)
        # Over 3 s since the first turn, under 3 s since the second: still remembered.
        assert "first" in await _remembered(runtime, tenant_id, agent_id)
        for _ in range(100):  # then idle past its 3 s: gone
            if await _remembered(runtime, tenant_id, agent_id) == "":
                break
            await asyncio.sleep(0.1)
        assert await _remembered(runtime, tenant_id, agent_id) == ""
