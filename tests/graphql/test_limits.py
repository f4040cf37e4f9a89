"""What /graphql refuses before running anything (too deep, too costly), what its errors
show (the client's mistake, REST's words, never internals), and GraphiQL's place."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport

from apiary.config import Settings
from apiary.executions.models import Execution
from apiary.main import create_app
from apiary.runtime import Runtime
from tests.factories import make_tenant
from tests.graphql.client import error_names, gql

pytestmark = pytest.mark.both_databases


async def test_a_query_too_deep_is_refused_before_it_runs(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    deep = (
        "{ executions { edges { node { agent { versions { edges { node "
        "{ definition { name } } } } } } } } }"
    )
    document = await gql(client, deep, tenant.admin.headers)
    assert document["data"] is None, document
    assert error_names(document) == ["QueryTooDeep"]
    assert "exceeds maximum operation depth of 7" in document["errors"][0]["message"]


async def test_a_query_too_costly_is_refused_naming_the_cost(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    costly = (
        "query($n: Int) { executions(first: $n) { nodes { events(first: 500) { seq type } } } }"
    )
    document = await gql(client, costly, tenant.admin.headers, n=200)
    assert document["data"] is None
    assert error_names(document) == ["QueryTooCostly"]
    assert "is over the limit of 10000" in document["errors"][0]["message"]
    # The same shape, small enough, runs.
    fine = await gql(client, costly, tenant.admin.headers, n=2)
    assert fine["data"] == {"executions": {"nodes": []}}


async def test_a_document_too_long_is_refused_before_it_is_parsed(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    aliases = " ".join(f"a{n}: __typename" for n in range(3000))
    document = await gql(client, "{ " + aliases + " }", tenant.admin.headers)
    assert document["data"] is None
    assert "more than 5000 tokens" in document["errors"][0]["message"]


async def test_an_unexpected_error_shows_no_internals(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    execution_id = uuid.uuid4()
    async with runtime.session_factory() as session:
        session.add(  # a row no release writes: its stored definition is not one
            Execution(
                id=execution_id,
                tenant_id=uuid.UUID(tenant.id),
                agent_version=1,
                agent={"temperature": "hot"},
                task="t",
                state="succeeded",
                role="developer",
            )
        )
        await session.commit()
    document = await gql(
        client,
        "query($id: UUID!) { execution(id: $id) { state definition { name } } }",
        tenant.admin.headers,
        id=str(execution_id),
    )
    [error] = document["errors"]
    assert error["extensions"] == {
        "error": "InternalError",
        "status": 500,
        "code": "INTERNAL_SERVER_ERROR",
    }
    assert error["message"].startswith("internal error (request id ")
    for internal in ("Traceback", "validation", "temperature", "pydantic", "sqlalchemy"):
        assert internal not in str(document)
    # The rest of the answer stands.
    assert document["data"] == {"execution": None} or document["data"]["execution"] is None


async def test_a_syntax_error_is_the_clients_to_read(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    response = await client.post(
        "/graphql", headers=tenant.admin.headers, json={"query": "{ agents { nosuch } }"}
    )
    errors = response.json()["errors"]
    assert errors[0]["message"] == "Cannot query field 'nosuch' on type 'AgentConnection'."
    assert errors[0]["extensions"]["error"] == "GraphQLError"


async def test_a_websocket_without_credentials_is_refused_at_connection_init(
    app: FastAPI,
) -> None:
    transport = ASGIWebSocketTransport(app=app)

    async def connect(http: httpx.AsyncClient) -> None:
        socket: AsyncWebSocketSession
        async with aconnect_ws("/graphql", http, subprotocols=["graphql-transport-ws"]) as socket:
            await socket.send_json({"type": "connection_init", "payload": {}})
            await socket.receive_json()

    async with httpx.AsyncClient(transport=transport, base_url="http://apiary.test") as http:
        with pytest.raises(BaseException) as refused:  # noqa: PT011 - unwrapped below
            await connect(http)
    error = refused.value
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, WebSocketDisconnect)
    assert error.code == 4403


@pytest.fixture
async def development_app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings.model_copy(update={"environment": "development"}))
    async with application.router.lifespan_context(application):
        yield application


async def test_graphiql_is_served_in_development_only(
    client: httpx.AsyncClient, development_app: FastAPI
) -> None:
    transport = httpx.ASGITransport(app=development_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://apiary.test") as dev:
        page = await dev.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()
    assert "https://unpkg.com" in page.headers["content-security-policy"]
    elsewhere = await client.get("/graphql", headers={"Accept": "text/html"})
    assert elsewhere.status_code == 404
    assert "graphiql" not in elsewhere.text.lower()
