"""The executions API: idempotency, tenants, listing, and the live event stream over SSE
and WebSocket, both resumable from a sequence number."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport

from apiary.authz.permissions import Role
from apiary.executions.event_types import DoneEvent, ExecutionEvent, ExecutionEventType
from tests.factories import make_api_key, make_tenant
from tests.fakes import Fail, Reply, Slow, ToolCall
from tests.gateway.conftest import GatewayFactory
from tests.sse import parse_sse
from tests.swarm.conftest import Swarm, build_swarm

pytestmark = pytest.mark.both_databases


def plan(*subtasks: str) -> Reply:
    return Reply(text=orjson.dumps({"subtasks": list(subtasks)}).decode())


async def test_idempotency_key_returns_the_same_execution(swarm: Swarm) -> None:
    first = await swarm.http.post(
        "/api/v1/executions",
        headers={**swarm.headers, "Idempotency-Key": "order-42"},
        json={"agent_id": swarm.agent_id, "task": "Plan", "options": {"mode": "single"}},
    )
    assert first.status_code == 202
    again = await swarm.http.post(
        "/api/v1/executions",
        headers={**swarm.headers, "Idempotency-Key": "order-42"},
        json={"agent_id": swarm.agent_id, "task": "Plan", "options": {"mode": "single"}},
    )
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = await swarm.start("Plan", options={"mode": "single"}, idempotency_key="order-43")
    assert other["id"] != first.json()["id"]
    for execution_id in (first.json()["id"], other["id"]):
        await swarm.wait(execution_id)
    # Each execution ran once: one upstream call each (single mode, no decomposition).
    assert len(swarm.gateway.upstream.requests_for("openai")) == 2
    listed = await swarm.http.get("/api/v1/executions", headers=swarm.headers)
    assert listed.json()["total"] == 2


async def test_another_tenant_sees_nothing(swarm: Swarm) -> None:
    execution = await swarm.wait((await swarm.start(options={"mode": "single"}))["id"])
    other = await make_tenant(swarm.gateway.runtime, swarm.http, "intruder")
    key = await make_api_key(swarm.gateway.runtime, other, Role.TENANT_ADMIN)
    for method, path in (
        ("GET", f"/api/v1/executions/{execution['id']}"),
        ("GET", f"/api/v1/executions/{execution['id']}/events"),
        ("POST", f"/api/v1/executions/{execution['id']}/cancel"),
    ):
        response = await swarm.http.request(method, path, headers=key.headers)
        assert response.status_code == 404, (path, response.text)
    # Starting an execution of another tenant's agent finds no agent.
    response = await swarm.http.post(
        "/api/v1/executions",
        headers=key.headers,
        json={"agent_id": swarm.agent_id, "task": "steal"},
    )
    assert response.status_code == 404
    assert (await swarm.http.get("/api/v1/executions", headers=key.headers)).json()["total"] == 0


async def test_validation_names_the_field(swarm: Swarm) -> None:
    response = await swarm.http.post(
        "/api/v1/executions",
        headers=swarm.headers,
        json={"agent_id": swarm.agent_id, "task": "x", "options": {"max_agents": 101}},
    )
    assert response.status_code == 422
    assert "max_agents" in response.json()["detail"]


async def test_list_filters_by_state_and_agent(swarm: Swarm) -> None:
    done = await swarm.wait((await swarm.start(options={"mode": "single"}))["id"])
    listed = await swarm.http.get(
        "/api/v1/executions",
        headers=swarm.headers,
        params={"state": "succeeded", "agent_id": swarm.agent_id},
    )
    assert [e["id"] for e in listed.json()["items"]] == [done["id"]]
    none = await swarm.http.get(
        "/api/v1/executions", headers=swarm.headers, params={"state": "failed"}
    )
    assert none.json()["items"] == []


async def test_every_event_a_run_streams_is_one_the_spec_documents(
    make_gateway: GatewayFactory,
) -> None:
    """A client typed from the OpenAPI spec (the dashboard) reads each event by its type: a
    run that degrades its plan, retries a sub-agent, calls a tool and streams its answer
    sends only events that validate against the documented union, field for field."""
    swarm = await build_swarm(make_gateway, tools=["calculator"])
    swarm.gateway.upstream.script(
        "openai",
        Reply(text="not a plan"),
        Fail(400, message="bad luck"),
        Reply(tool_calls=[ToolCall("calculator", '{"expression": "6*7"}')]),
        Reply(text="the answer is 42"),
    )
    started = await swarm.start()
    await swarm.wait(started["id"])
    response = await swarm.http.get(
        f"/api/v1/executions/{started['id']}/events", headers=swarm.headers
    )
    fields = ("seq", "type", "data", "created_at")
    events = [
        ExecutionEvent.model_validate({key: sent[key] for key in fields})
        for sent in parse_sse(response.text)
    ]
    kinds = {event.root.type for event in events}
    assert kinds == set(ExecutionEventType) - {ExecutionEventType.RESUMED}
    done = events[-1].root
    assert isinstance(done, DoneEvent)
    assert done.data.answer == "the answer is 42"
    assert done.data.figures.subagents is not None
    assert done.data.figures.subagents.succeeded == 1
    # The definition it ran with is documented too.
    detail = await swarm.get(started["id"])
    assert detail["agent"]["name"] == "planner"
    assert detail["agent"]["tools"] == ["calculator"]
    assert detail["agent"]["id"] == swarm.agent_id


async def test_sse_streams_every_step_and_resumes(swarm: Swarm) -> None:
    upstream = swarm.gateway.upstream
    upstream.script("openai", plan("a", "b"), Slow(0.3), Slow(0.3))
    started = await swarm.start()
    # Connected while it runs: the stream follows it live to the end.
    response = await swarm.http.get(
        f"/api/v1/executions/{started['id']}/events", headers=swarm.headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    seqs = [e["id"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    types = [e["event"] for e in events]
    states = [e["data"]["state"] for e in events if e["event"] == "state"]
    assert states[:4] == ["queued", "decomposing", "running", "synthesizing"]
    assert states[-1] == "succeeded"
    assert types.count("subagent_started") == 2
    assert types.count("subagent_finished") == 2
    assert types[-1] == "done"
    assert events[-1]["data"]["figures"]["critical_path_s"] > 0
    # Each sub-agent's answer streams as it is written, and so does the synthesis.
    execution = await swarm.get(started["id"])
    for subtask in execution["subtasks"]:
        streamed = "".join(
            e["data"]["text"]
            for e in events
            if e["event"] == "token" and e["data"].get("subtask") == subtask["index"]
        )
        assert streamed == subtask["result"]
    synthesis = [e["data"]["text"] for e in events if e["event"] == "token"][-1]
    assert "subtask" not in [e for e in events if e["event"] == "token"][-1]["data"]
    assert execution["answer"].endswith(synthesis)

    # Resuming from a sequence number replays only what came after it.
    middle = seqs[len(seqs) // 2]
    by_header = await swarm.http.get(
        f"/api/v1/executions/{started['id']}/events",
        headers={**swarm.headers, "Last-Event-ID": str(middle)},
    )
    assert [e["id"] for e in parse_sse(by_header.text)] == seqs[middle:]
    by_query = await swarm.http.get(
        f"/api/v1/executions/{started['id']}/events",
        headers=swarm.headers,
        params={"after": middle},
    )
    assert [e["id"] for e in parse_sse(by_query.text)] == seqs[middle:]


async def test_websocket_streams_events_with_a_token(swarm: Swarm) -> None:
    execution = await swarm.wait((await swarm.start(options={"mode": "single"}))["id"])
    transport = ASGIWebSocketTransport(app=swarm.gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://apiary.test") as client:
        url = f"/api/v1/executions/{execution['id']}/ws"
        socket: AsyncWebSocketSession
        async with aconnect_ws(f"{url}?token={swarm.gateway.key}&after=1", client) as socket:
            received = []
            while True:
                event: dict[str, Any] = orjson.loads(await socket.receive_text())
                received.append(event)
                if event["type"] == "done":
                    break
        assert received[0]["seq"] == 2
        assert received[-1]["data"]["state"] == "succeeded"

        other = await make_tenant(swarm.gateway.runtime, swarm.http, "ws-intruder")
        other_key = await make_api_key(swarm.gateway.runtime, other, Role.VIEWER)
        headers = {"Authorization": f"Bearer {other_key.token}"}
        # Accepted, then closed with 4404 (a browser's WebSocket sees the code that way).
        with pytest.raises(BaseException) as refused:  # noqa: PT011 - unwrapped below
            async with aconnect_ws(url, client, headers=headers) as socket:
                await socket.receive_text()
        error = refused.value
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        assert isinstance(error, WebSocketDisconnect)
        assert error.code == 4404  # another tenant's execution: not found


async def test_list_filters_by_creation_time(swarm: Swarm) -> None:
    done = await swarm.wait((await swarm.start(options={"mode": "single"}))["id"])
    created = done["created_at"]
    around = await swarm.http.get(
        "/api/v1/executions",
        headers=swarm.headers,
        params={"created_from": created, "created_to": "2999-01-01T00:00:00Z"},
    )
    assert [e["id"] for e in around.json()["items"]] == [done["id"]]
    later = await swarm.http.get(
        "/api/v1/executions", headers=swarm.headers, params={"created_from": "2999-01-01T00:00:00Z"}
    )
    assert later.json()["total"] == 0
    earlier = await swarm.http.get(
        "/api/v1/executions", headers=swarm.headers, params={"created_to": created}
    )
    assert earlier.json()["total"] == 0  # the end of the range is excluded


async def test_ledger_lists_the_executions_model_calls(swarm: Swarm) -> None:
    swarm.gateway.upstream.script("openai", plan("a", "b"))
    done = await swarm.wait((await swarm.start())["id"])
    assert done["state"] == "succeeded"
    other = await swarm.wait((await swarm.start(options={"mode": "single"}))["id"])
    # No flush here: an execution's calls are in the ledger by the time it says it ended.
    response = await swarm.http.get(
        f"/api/v1/executions/{done['id']}/ledger", headers=swarm.headers
    )
    assert response.status_code == 200, response.text
    rows = response.json()["items"]
    # Decompose, two sub-agents, synthesize: four calls, none of the other execution's.
    assert response.json()["total"] == 4
    assert [r["model"] for r in rows] == ["gpt-4o-mini"] * 4
    assert all(r["status"] == "ok" and r["requested_model"] == "default" for r in rows)
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(done["cost_usd"])
    times = [r["created_at"] for r in rows]
    assert times == sorted(times)
    single = await swarm.http.get(f"/api/v1/executions/{other['id']}/ledger", headers=swarm.headers)
    assert single.json()["total"] == 1
    intruder = await make_tenant(swarm.gateway.runtime, swarm.http, "ledger-intruder")
    key = await make_api_key(swarm.gateway.runtime, intruder, Role.TENANT_ADMIN)
    refused = await swarm.http.get(f"/api/v1/executions/{done['id']}/ledger", headers=key.headers)
    assert refused.status_code == 404


async def test_a_date_filter_without_a_timezone_is_a_clear_422(swarm: Swarm) -> None:
    response = await swarm.http.get(
        "/api/v1/executions", headers=swarm.headers, params={"created_from": "2026-11-01T00:00"}
    )
    assert response.status_code == 422, response.text
    assert "created_from" in response.json()["detail"]
