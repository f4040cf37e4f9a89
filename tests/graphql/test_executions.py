"""Executions through GraphQL: started once per idempotency key, cancelled, read whole in
one query (subtasks, agent, events, figures, sources, ledger), and followed live over
`graphql-transport-ws`, resumable from a sequence number."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from httpx_ws import AsyncWebSocketSession, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport

from apiary.authz.permissions import Role
from tests.factories import make_api_key, make_tenant
from tests.fakes import Reply, Slow
from tests.graphql.client import error_names, gql
from tests.swarm.conftest import Swarm

pytestmark = pytest.mark.both_databases

START = """
mutation Start($input: ExecutionCreateInput!, $key: String) {
  createExecution(input: $input, idempotencyKey: $key) { created execution { id state } }
}
"""
PAGE = """
query Page($id: UUID!) {
  execution(id: $id) {
    id state answer costUsd figures
    definition { name version }
    agent { id name }
    subtasks { index status result promptTokens }
    sources { filename }
    events(after: 0) { seq type data }
    ledger(first: 10) { totalCount nodes { model promptTokens costUsd status } }
  }
}
"""
EVENTS = """
subscription Follow($id: UUID!, $after: Int!) {
  executionEvents(executionId: $id, after: $after) { seq type data }
}
"""


def plan(*subtasks: str) -> Reply:
    return Reply(text=orjson.dumps({"subtasks": list(subtasks)}).decode())


async def test_an_idempotency_key_starts_one_execution(swarm: Swarm) -> None:
    variables = {
        "input": {"agentId": swarm.agent_id, "task": "Plan", "options": {"mode": "single"}},
        "key": "order-42",
    }
    first = await gql(swarm.http, START, swarm.headers, **variables)
    assert "errors" not in first, first
    again = await gql(swarm.http, START, swarm.headers, **variables)
    started, repeated = first["data"]["createExecution"], again["data"]["createExecution"]
    assert (started["created"], repeated["created"]) == (True, False)
    assert repeated["execution"]["id"] == started["execution"]["id"]
    # REST knows the key too: the same execution, answered 200.
    rest = await swarm.http.post(
        "/api/v1/executions",
        headers={**swarm.headers, "Idempotency-Key": "order-42"},
        json={"agent_id": swarm.agent_id, "task": "Plan", "options": {"mode": "single"}},
    )
    assert (rest.status_code, rest.json()["id"]) == (200, started["execution"]["id"])
    await swarm.wait(started["execution"]["id"])
    assert len(swarm.gateway.upstream.requests_for("openai")) == 1  # it ran once


async def test_the_execution_page_in_one_query(swarm: Swarm) -> None:
    swarm.gateway.upstream.script("openai", plan("a", "b"))
    started = await swarm.start()
    await swarm.wait(started["id"])
    document = await gql(swarm.http, PAGE, swarm.headers, id=started["id"])
    assert "errors" not in document, document
    execution = document["data"]["execution"]
    rest = await swarm.get(started["id"])
    assert (execution["state"], rest["state"]) == ("SUCCEEDED", "succeeded")
    assert execution["answer"] == rest["answer"]
    assert execution["figures"] == rest["figures"]
    assert execution["agent"] == {"id": swarm.agent_id, "name": "planner"}
    assert execution["definition"] == {"name": "planner", "version": 1}
    assert [s["result"] for s in execution["subtasks"]] == [s["result"] for s in rest["subtasks"]]
    assert [s["index"] for s in execution["subtasks"]] == [0, 1]
    events = execution["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "done"
    ledger = await swarm.http.get(
        f"/api/v1/executions/{started['id']}/ledger", headers=swarm.headers
    )
    assert execution["ledger"]["totalCount"] == ledger.json()["total"] >= 3  # plan, 2, synthesis
    assert {row["status"] for row in execution["ledger"]["nodes"]} == {"ok"}


async def test_cancel_stops_a_running_execution(swarm: Swarm) -> None:
    swarm.gateway.upstream.script("openai", plan("a", "b"))
    swarm.gateway.upstream.set_default("openai", Slow(30))
    started = await swarm.start()
    for _ in range(500):  # running: its start-up writes are done (SQLite takes one writer)
        if (await swarm.get(started["id"]))["state"] == "running":
            break
        await asyncio.sleep(0.02)
    cancel = "mutation($id: UUID!) { cancelExecution(id: $id) { id cancelRequested } }"
    cancelled = await gql(swarm.http, cancel, swarm.headers, id=started["id"])
    assert cancelled["data"]["cancelExecution"]["cancelRequested"] is True
    finished = await swarm.wait(started["id"], timeout_s=5)
    assert finished["state"] == "cancelled"
    again = await gql(swarm.http, cancel, swarm.headers, id=started["id"])
    assert error_names(again) == ["Conflict"]
    assert "already ended (cancelled)" in again["errors"][0]["message"]


def _init(token: str) -> dict[str, Any]:
    return {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}


async def _follow(
    socket: AsyncWebSocketSession, token: str, execution_id: str, after: int
) -> list[dict[str, Any]]:
    await socket.send_json(
        {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
    )
    assert (await socket.receive_json())["type"] == "connection_ack"
    await socket.send_json(
        {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": EVENTS, "variables": {"id": execution_id, "after": after}},
        }
    )
    events: list[dict[str, Any]] = []
    while True:
        message = await socket.receive_json()
        if message["type"] == "complete":
            return events
        assert message["type"] == "next", message
        assert "errors" not in message["payload"], message
        events.append(message["payload"]["data"]["executionEvents"])


async def test_the_subscription_follows_a_run_live_and_resumes(swarm: Swarm) -> None:
    swarm.gateway.upstream.script("openai", plan("a", "b"), Slow(0.3), Slow(0.3))
    started = await swarm.start()
    transport = ASGIWebSocketTransport(app=swarm.gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://apiary.test") as client:
        socket: AsyncWebSocketSession
        async with aconnect_ws("/graphql", client, subprotocols=["graphql-transport-ws"]) as socket:
            live = await _follow(socket, swarm.gateway.key, started["id"], 0)
        seqs = [event["seq"] for event in live]
        assert seqs == list(range(1, len(seqs) + 1))
        assert live[-1]["type"] == "done"
        assert live[-1]["data"]["state"] == "succeeded"
        assert [e["type"] for e in live].count("subagent_finished") == 2
        # Resumed after a sequence number: only what came after it.
        middle = seqs[len(seqs) // 2]
        async with aconnect_ws("/graphql", client, subprotocols=["graphql-transport-ws"]) as socket:
            resumed = await _follow(socket, swarm.gateway.key, started["id"], middle)
        assert [event["seq"] for event in resumed] == seqs[middle:]


async def test_the_subscription_refuses_what_rest_refuses(swarm: Swarm) -> None:
    execution = await swarm.wait((await swarm.start(options={"mode": "single"}))["id"])
    other = await make_tenant(swarm.gateway.runtime, swarm.http, "ws-intruder")
    other_key = await make_api_key(swarm.gateway.runtime, other, Role.VIEWER)
    transport = ASGIWebSocketTransport(app=swarm.gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://apiary.test") as client:
        socket: AsyncWebSocketSession
        async with aconnect_ws("/graphql", client, subprotocols=["graphql-transport-ws"]) as socket:
            await socket.send_json(
                {
                    "type": "connection_init",
                    "payload": {"authorization": f"Bearer {other_key.token}"},
                }
            )
            assert (await socket.receive_json())["type"] == "connection_ack"
            await socket.send_json(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": EVENTS, "variables": {"id": execution["id"], "after": 0}},
                }
            )
            message = await socket.receive_json()
            assert (await socket.receive_json())["type"] == "complete"
        assert message["type"] == "next", message
        assert message["payload"]["data"] is None
        [error] = message["payload"]["errors"]
        assert error["extensions"] == {"error": "NotFound", "status": 404, "code": "BAD_USER_INPUT"}
        assert error["message"] == f"execution {execution['id']} not found"


async def test_a_websockets_client_follows_events_through_a_real_server(swarm: Swarm) -> None:
    """The README's client: `websockets` over uvicorn, as a script would connect."""
    import websockets
    from websockets.typing import Subprotocol

    from tests.serving import serving

    execution = await swarm.wait((await swarm.start(options={"mode": "single"}))["id"])
    async with (
        serving(swarm.gateway.app) as url,
        websockets.connect(
            url.replace("http://", "ws://") + "/graphql",
            subprotocols=[Subprotocol("graphql-transport-ws")],
        ) as socket,
    ):
        await socket.send(orjson.dumps(_init(swarm.gateway.key)).decode())
        assert orjson.loads(await socket.recv())["type"] == "connection_ack"
        subscribe = {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": EVENTS, "variables": {"id": execution["id"], "after": 1}},
        }
        await socket.send(orjson.dumps(subscribe).decode())
        received = []
        while (message := orjson.loads(await socket.recv()))["type"] == "next":
            received.append(message["payload"]["data"]["executionEvents"])
        assert message["type"] == "complete"
    assert received[0]["seq"] == 2
    assert received[-1]["type"] == "done"
