"""DataLoaders: a page of executions with their subtasks and agents costs the same few SQL
statements whether it holds 5 executions or 50."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from apiary.executions.models import Execution, Subtask
from apiary.runtime import Runtime
from tests.factories import TenantFixture, make_tenant
from tests.graphql.client import gql

pytestmark = pytest.mark.both_databases

PAGE = """
query Page($first: Int!) {
  executions(first: $first) {
    totalCount
    edges { node { id state agent { id name version } subtasks { index status result } } }
  }
}
"""


# Set in the test's task, which the in-process client runs the request in: statements of
# the process's background work (the alert poller, the key-use recorder) are not counted.
_counting: ContextVar[bool] = ContextVar("_counting", default=False)


@contextmanager
def counted(runtime: Runtime) -> Iterator[list[str]]:
    statements: list[str] = []

    def note(*args: Any) -> None:
        if _counting.get():
            statements.append(str(args[2]))  # (conn, cursor, statement, ...)

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", note)
    token = _counting.set(True)
    try:
        yield statements
    finally:
        _counting.reset(token)
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", note)


async def _executions(
    runtime: Runtime, client: httpx.AsyncClient, tenant: TenantFixture, count: int
) -> None:
    agents = []
    for n in range(5):
        created = await client.post(
            "/api/v1/agents", headers=tenant.admin.headers, json={"name": f"agent-{n}"}
        )
        assert created.status_code == 201, created.text
        agents.append(created.json())
    async with runtime.session_factory() as session:
        for n in range(count):
            agent = agents[n % len(agents)]
            execution_id = uuid.uuid4()
            session.add(
                Execution(
                    id=execution_id,
                    tenant_id=uuid.UUID(tenant.id),
                    agent_id=uuid.UUID(agent["id"]),
                    agent_version=1,
                    agent={"id": agent["id"], "name": agent["name"], "version": 1},
                    task=f"task {n}",
                    state="succeeded",
                    role="developer",
                )
            )
            for index in range(3):
                session.add(
                    Subtask(
                        tenant_id=uuid.UUID(tenant.id),
                        execution_id=execution_id,
                        index=index,
                        prompt=f"part {index}",
                        status="succeeded",
                        result=f"result {n}.{index}",
                    )
                )
        await session.commit()


async def test_a_page_of_executions_costs_a_bounded_number_of_statements(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    await _executions(runtime, client, tenant, 50)
    costs = {}
    for size in (5, 50):
        await gql(client, PAGE, tenant.admin.headers, first=1)  # the caller's look-ups warm
        with counted(runtime) as statements:
            document = await gql(client, PAGE, tenant.admin.headers, first=size)
        assert "errors" not in document, document
        edges = document["data"]["executions"]["edges"]
        assert len(edges) == size
        assert all(len(edge["node"]["subtasks"]) == 3 for edge in edges)
        assert all(edge["node"]["agent"]["name"].startswith("agent-") for edge in edges)
        costs[size] = len(statements)
    # Who calls, the count, the page, the subtasks of all, the agents of all (and the
    # transaction's own statements on some drivers): the same for 5 as for 50.
    assert costs[50] == costs[5], costs
    assert costs[50] <= 8, costs
