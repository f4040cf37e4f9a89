"""The GraphQL API's queries and mutations: the same data, rules and words as REST."""

from __future__ import annotations

import httpx
import pytest

from apiary.authz.permissions import Role
from apiary.runtime import Runtime
from tests.factories import make_api_key, make_member, make_tenant
from tests.graphql.client import error_names, gql

pytestmark = pytest.mark.both_databases

CREATE_AGENT = """
mutation Create($input: AgentCreateInput!) {
  createAgent(input: $input) { id name version model maxSubagents }
}
"""


async def test_an_agent_created_here_is_the_one_rest_shows(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    created = await gql(
        client,
        CREATE_AGENT,
        tenant.admin.headers,
        input={"name": "planner", "maxSubagents": 3},
    )
    assert "errors" not in created, created
    agent = created["data"]["createAgent"]
    assert (agent["version"], agent["maxSubagents"]) == (1, 3)
    rest = await client.get(f"/api/v1/agents/{agent['id']}", headers=tenant.admin.headers)
    assert rest.json()["name"] == "planner"

    updated = await gql(
        client,
        """mutation($id: UUID!) { updateAgent(id: $id, input: {description: "v2"}) {
             version description versions { totalCount edges { node { version } } } } }""",
        tenant.admin.headers,
        id=agent["id"],
    )
    assert "errors" not in updated, updated
    assert updated["data"]["updateAgent"]["version"] == 2
    versions = updated["data"]["updateAgent"]["versions"]
    assert versions["totalCount"] == 2
    assert [edge["node"]["version"] for edge in versions["edges"]] == [2, 1]


async def test_bad_input_is_refused_naming_the_field(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    refused = await gql(
        client,
        CREATE_AGENT,
        tenant.admin.headers,
        input={"name": "planner", "maxSubagents": 1000},
    )
    assert refused["data"] == {"createAgent": None}
    assert error_names(refused) == ["Unprocessable"]
    assert "input.maxSubagents" in refused["errors"][0]["message"]
    listed = await gql(client, "{ agents { totalCount } }", tenant.admin.headers)
    assert listed["data"]["agents"]["totalCount"] == 0


async def test_the_permission_matrix_is_rests(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    viewer = await make_member(client, tenant, Role.VIEWER)
    refused = await gql(client, CREATE_AGENT, viewer.headers, input={"name": "nope"})
    assert error_names(refused) == ["Forbidden"]
    assert "lacks permission 'agents:write'" in refused["errors"][0]["message"]
    # A viewer reads agents but not API keys nor the audit log.
    read = await gql(client, "{ agents { totalCount } }", viewer.headers)
    assert read["data"]["agents"]["totalCount"] == 0
    keys = await gql(client, "{ apiKeys { totalCount } auditLog { totalCount } }", viewer.headers)
    assert error_names(keys) == ["Forbidden", "Forbidden"]
    # An API key never holds what REST withholds from keys: same words as REST.
    key = await make_api_key(runtime, tenant, Role.TENANT_ADMIN)
    listed = await gql(
        client, "{ apiKeys { edges { node { id name prefix role } } } }", key.headers
    )
    assert listed["data"]["apiKeys"]["edges"][0]["node"]["role"] == "TENANT_ADMIN"
    assert key.token not in str(listed)


async def test_without_credentials_fields_are_unauthorized_and_bad_ones_a_401(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    anonymous = await gql(client, "{ agents { totalCount } }")
    assert error_names(anonymous) == ["Unauthorized"]
    bad = await client.post(
        "/graphql",
        headers={"Authorization": "Bearer apy_not-a-key"},
        json={"query": "{ agents { totalCount } }"},
    )
    assert bad.status_code == 401
    assert bad.json() == {"error": "Unauthorized", "detail": "invalid API key"}


async def test_members_keys_audit_usage_and_knowledge_bases(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    await make_member(client, tenant, Role.DEVELOPER)
    created = await gql(
        client,
        'mutation { createKnowledgeBase(input: {name: "handbook"}) { id name chunkSize } }',
        tenant.admin.headers,
    )
    assert "errors" not in created, created
    assert created["data"]["createKnowledgeBase"]["chunkSize"] == 800
    document = await gql(
        client,
        """{
          members(first: 1) { totalCount pageInfo { hasNextPage endCursor }
                              edges { node { email role } } }
          knowledgeBases { nodes { name documents { totalCount } } }
          auditLog(action: "knowledge_base.created") { nodes { action targetType } }
          usageSummary { calls costUsd from to }
          usageSeries(groupBy: MODEL) { groupBy rows { key calls } }
        }""",
        tenant.admin.headers,
    )
    assert "errors" not in document, document
    data = document["data"]
    assert data["members"]["totalCount"] == 2
    assert data["members"]["pageInfo"]["hasNextPage"] is True
    after = data["members"]["pageInfo"]["endCursor"]
    second = await gql(
        client,
        "query($after: String) { members(first: 1, after: $after) { pageInfo { hasNextPage } "
        "nodes { email } } }",
        tenant.admin.headers,
        after=after,
    )
    emails = {data["members"]["edges"][0]["node"]["email"]}
    emails |= {node["email"] for node in second["data"]["members"]["nodes"]}
    assert len(emails) == 2
    assert second["data"]["members"]["pageInfo"]["hasNextPage"] is False
    assert data["knowledgeBases"]["nodes"] == [{"name": "handbook", "documents": {"totalCount": 0}}]
    assert data["usageSummary"]["calls"] == 0
    assert data["usageSeries"] == {"groupBy": "MODEL", "rows": []}


async def test_a_cursor_this_api_did_not_give_is_a_clear_error(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    document = await gql(
        client, '{ agents(after: "bm90LWEtY3Vyc29y") { totalCount } }', tenant.admin.headers
    )
    assert error_names(document) == ["Unprocessable"]
    assert "not a cursor" in document["errors"][0]["message"]
    too_many = await gql(client, "{ agents(first: 500) { totalCount } }", tenant.admin.headers)
    assert "first: must be between 1 and 200" in too_many["errors"][0]["message"]


async def test_each_mutation_of_a_request_stands_on_its_own(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime, client, "acme")
    document = await gql(
        client,
        """mutation {
          first: createAgent(input: {name: "planner"}) { name }
          again: createAgent(input: {name: "planner"}) { name }
          other: createAgent(input: {name: "writer"}) { name }
        }""",
        tenant.admin.headers,
    )
    assert document["data"] == {
        "first": {"name": "planner"},
        "again": None,
        "other": {"name": "writer"},
    }
    assert error_names(document) == ["Conflict"]
    assert document["errors"][0]["path"] == ["again"]
    listed = await client.get("/api/v1/agents", headers=tenant.admin.headers)
    assert sorted(agent["name"] for agent in listed.json()["items"]) == ["planner", "writer"]
