"""One real execution on the bundled SmolLM2 model (llama.cpp), no fake upstream: the
orchestrator's JSON plan parses, two sub-agents answer, and the synthesis streams."""

from __future__ import annotations

import asyncio

import httpx

from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from tests.factories import make_api_key, make_tenant


async def test_a_small_swarm_on_the_local_model(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert [p.kind for p in runtime.providers.config.providers] == ["local"]
    runtime.settings.swarm.max_tokens = 64  # keep it quick: a few tokens per call
    try:
        tenant = await make_tenant(runtime, client, "local-swarm")
        key = await make_api_key(runtime, tenant, Role.DEVELOPER)
        agent = await client.post(
            "/api/v1/agents",
            headers=key.headers,
            json={"name": "tiny", "model": "local/smollm2", "max_subagents": 2, "temperature": 0},
        )
        assert agent.status_code == 201, agent.text
        started = await client.post(
            "/api/v1/executions",
            headers=key.headers,
            json={"agent_id": agent.json()["id"], "task": "Name two fruits and two colours."},
        )
        assert started.status_code == 202, started.text
        execution_id = started.json()["id"]
        execution: dict[str, object] = {}
        for _ in range(1200):
            response = await client.get(f"/api/v1/executions/{execution_id}", headers=key.headers)
            execution = response.json()
            if execution["state"] in ("succeeded", "failed", "timed_out", "budget_exceeded"):
                break
            await asyncio.sleep(0.1)
        assert execution["state"] == "succeeded", execution
        assert execution["answer"]
        subtasks = execution["subtasks"]
        assert isinstance(subtasks, list)
        assert 1 <= len(subtasks) <= 2
        assert all(s["status"] == "succeeded" for s in subtasks)
        events = await client.get(f"/api/v1/executions/{execution_id}/events", headers=key.headers)
        assert "event: done" in events.text
    finally:
        runtime.settings.swarm.max_tokens = None
